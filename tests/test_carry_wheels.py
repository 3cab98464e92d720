"""bench/carry_wheels.py: the slimmed bitsandbytes wheel keeps the chosen CUDA library, the CPU one and
everything else, and its RECORD lists exactly what is left."""

from __future__ import annotations

import importlib.util
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("carry_wheels", ROOT / "bench" / "carry_wheels.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_slim_bitsandbytes_keeps_one_cuda_library(tmp_path):
    names = ["bitsandbytes/__init__.py", "bitsandbytes/libbitsandbytes_cpu.so",
             "bitsandbytes/libbitsandbytes_cuda130.so", "bitsandbytes/libbitsandbytes_cuda126.so",
             "bitsandbytes/libbitsandbytes_rocm64.so"]
    wheel = tmp_path / "bitsandbytes-0.50.2-py3-none-manylinux_2_24_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for n in names:
            z.writestr(n, b"x" * 1000)
        z.writestr("bitsandbytes-0.50.2.dist-info/RECORD",
                   "".join(f"{n},sha256=abc,1000\n" for n in names) + "bitsandbytes-0.50.2.dist-info/RECORD,,\n")
    saved = _module().slim_bitsandbytes(wheel, "130")
    assert saved > 0
    with zipfile.ZipFile(wheel) as z:
        kept = set(z.namelist())
        record = z.read("bitsandbytes-0.50.2.dist-info/RECORD").decode()
    assert kept == {"bitsandbytes/__init__.py", "bitsandbytes/libbitsandbytes_cpu.so",
                    "bitsandbytes/libbitsandbytes_cuda130.so", "bitsandbytes-0.50.2.dist-info/RECORD"}
    listed = {line.split(",")[0] for line in record.splitlines() if line}
    assert listed == kept
