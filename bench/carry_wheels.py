"""Download the `baselines` extra's pinned wheels (and the dependencies a bare GPU machine lacks) for
another machine's Python and platform, into a folder to carry there (the device machines have no network).

    python bench/carry_wheels.py --dest .carry/whl [--python-version 3.12]

then, on the GPU machine (the pins of pyproject.toml's `baselines` extra):

    python -m pip install --no-index --find-links .carry/whl peft==0.21.2 torchao==0.18.0 \\
        galore-torch==1.0 apollo-torch==1.0.3 bitsandbytes==0.50.2

bitsandbytes ships one library per CUDA/ROCm version (43 MB); `--keep-cuda 130` rewrites its wheel with
only that CUDA's library and the CPU one (same version and code; RECORD updated), so the set fits the
device tool's 64 MiB transfer. torch, numpy and what torch brings are not downloaded: the machine has them.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def pinned_baselines() -> list[str]:
    """The `baselines` extra of pyproject.toml: the one place its versions are pinned."""
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["baselines"]


# the transitive dependencies a torch-only machine may lack
DEPENDENCIES = ["transformers==5.24.0", "accelerate==1.15.0", "safetensors==0.8.0", "huggingface_hub==2.4.0",
                "hf_xet==1.8.0", "tokenizers==0.23.3", "regex", "pyyaml", "psutil", "tqdm", "filelock",
                "fsspec", "packaging", "httpx2==2.16.2", "httpcore2==2.16.2", "h11", "anyio", "idna", "typer",
                "click", "rich", "shellingham", "markdown-it-py", "mdurl", "pygments", "annotated-doc",
                "typing_extensions", "certifi", "sniffio"]
PLATFORMS = ["manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_24_x86_64", "manylinux_2_28_x86_64"]


def slim_bitsandbytes(wheel: Path, keep_cuda: str) -> int:
    """Rewrite the wheel in place without the other CUDA/ROCm libraries; returns the bytes saved."""
    def drop(name: str) -> bool:
        return (name.startswith("bitsandbytes/libbitsandbytes_")
                and not name.endswith((f"_cuda{keep_cuda}.so", "_cpu.so")))

    before = wheel.stat().st_size
    tmp = wheel.with_suffix(".tmp")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            if drop(info.filename):
                continue
            data = src.read(info.filename)
            if info.filename.endswith(".dist-info/RECORD"):
                lines = [ln for ln in data.decode().splitlines() if not drop(ln.split(",")[0])]
                data = ("\n".join(lines) + "\n").encode()
            dst.writestr(info, data)
    tmp.replace(wheel)
    return before - wheel.stat().st_size


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dest", type=Path, required=True)
    ap.add_argument("--python-version", default="3.12")
    ap.add_argument("--keep-cuda", default="130", help="bitsandbytes CUDA library to keep ('' keeps all)")
    args = ap.parse_args(argv)
    args.dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
           "--python-version", args.python_version, "--dest", str(args.dest)]
    for plat in PLATFORMS:
        cmd += ["--platform", plat]
    proc = subprocess.run(cmd + pinned_baselines() + DEPENDENCIES)
    if proc.returncode:
        print(f"error: pip download failed (exit {proc.returncode})", file=sys.stderr)
        return 1
    if args.keep_cuda:
        for wheel in args.dest.glob("bitsandbytes-*.whl"):
            saved = slim_bitsandbytes(wheel, args.keep_cuda)
            print(f"{wheel.name}: kept CUDA {args.keep_cuda} and CPU libraries ({saved / 2**20:.0f} MiB less)")
    total = sum(p.stat().st_size for p in args.dest.glob("*.whl"))
    print(f"{len(list(args.dest.glob('*.whl')))} wheels, {total / 2**20:.1f} MiB in {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
