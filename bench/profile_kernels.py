"""Kernel-level profile of one training step or one layer forward+backward, on the GPU.

    python bench/profile_kernels.py --out DIR train --model 8b --method poetx-fast --backend triton [--seq-len 1024]
    python bench/profile_kernels.py --out DIR layer --shape 4096 14336 --method poetx-fast --backend triton

Writes DIR/<tag>.json: wall time per step (host clock around synchronised steps), device kernel time per
step (sum of CUDA kernel and memcpy/memset events only, never their launching ops), GPU-idle share, kernel
launches per step, and the top kernels by total time; plus DIR/<tag>.trace.json.gz (one step) when it fits
in 15 MB. Complements the sweep's `--profile` (which keeps whole traces per point).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from poetx_bench.env import environment  # noqa: E402


def _kernel_events(prof):
    """(name, duration_us) of device-side events: kernels, memcpy, memset."""
    out = []
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            out.append((e.name, e.device_time_total if hasattr(e, "device_time_total") else e.cuda_time_total))
    return out


def _summarise(prof, n_steps: int, wall_ms: float, tag: str, extra: dict) -> dict:
    ev = _kernel_events(prof)
    by_name = defaultdict(lambda: [0.0, 0])
    for name, us in ev:
        by_name[name][0] += us
        by_name[name][1] += 1
    total_us = sum(us for _, us in ev)
    top = sorted(by_name.items(), key=lambda kv: -kv[1][0])[:40]
    device_ms = total_us / 1e3 / n_steps
    return {
        "tag": tag, **extra,
        "wall_ms_per_step": wall_ms,
        "device_kernel_ms_per_step": device_ms,
        "gpu_idle_share": max(0.0, 1 - device_ms / wall_ms) if wall_ms else None,
        "kernel_launches_per_step": len(ev) / n_steps,
        "top_kernels": [{"name": k[:160], "ms_per_step": v[0] / 1e3 / n_steps, "calls_per_step": v[1] / n_steps,
                         "share": v[0] / total_us if total_us else None} for k, v in top],
    }


def _profile(fn, n_steps: int, out: Path, tag: str, extra: dict) -> dict:
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n_steps):
        fn()
    torch.cuda.synchronize()
    wall_ms = (time.perf_counter() - t0) * 1e3 / n_steps
    acts = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=acts) as prof:
        for _ in range(n_steps):
            fn()
        torch.cuda.synchronize()
    summary = _summarise(prof, n_steps, wall_ms, tag, extra)
    summary["env"] = environment()
    (out / f"{tag}.json").write_text(json.dumps(summary, indent=1, default=str))
    with torch.profiler.profile(activities=acts) as prof1:
        fn()
        torch.cuda.synchronize()
    raw = out / f"{tag}.trace.json"
    prof1.export_chrome_trace(str(raw))
    gz = Path(str(raw) + ".gz")
    with open(raw, "rb") as src, gzip.open(gz, "wb") as dst:
        dst.write(src.read())
    raw.unlink()
    if gz.stat().st_size > 15 * 2**20:
        gz.unlink()
    return summary


def _print(summary: dict) -> None:
    print(f"== {summary['tag']}: wall {summary['wall_ms_per_step']:.2f} ms/step, kernels "
          f"{summary['device_kernel_ms_per_step']:.2f} ms/step, idle {100 * (summary['gpu_idle_share'] or 0):.0f}%, "
          f"{summary['kernel_launches_per_step']:.0f} launches/step")
    for k in summary["top_kernels"][:15]:
        print(f"   {k['ms_per_step']:8.3f} ms {k['calls_per_step']:6.0f}x  {k['name'][:100]}")


def train_main(args, out: Path) -> dict:
    from poetx_bench.points.training import Trainer

    cfg = {"kind": "train", "method": args.method, "model": args.model, "block_size": args.block_size,
           "seq_len": args.seq_len, "batch_size": args.batch_size, "device": "cuda", "dtype": "bfloat16",
           "seed": 0, "data": "synthetic", "merge_every": 10_000, "backend": args.backend,
           "compile": args.compile, "cayley_scope": args.cayley_scope, "cayley_keep": args.cayley_keep}
    trainer = Trainer(cfg, torch.device("cuda"))
    for _ in range(args.warmup):
        trainer.step()
    tag = args.tag or f"train-{args.model}-{args.method}-{args.backend}-{args.compile}" + (
        f"-cayley-{args.cayley_scope}" if args.cayley_scope != "layer" else "") + (
        f"-keep-{args.cayley_keep}" if args.cayley_keep != "params" else "")
    extra = {"config": cfg, "peak_memory_bytes": torch.cuda.max_memory_allocated()}
    return _profile(trainer.step, args.steps, out, tag, extra)


def layer_main(args, out: Path) -> dict:
    from poetx_bench.points.layer_timing import build_layer

    fin, fout = args.shape
    cfg = {"method": args.method, "in_features": fin, "out_features": fout, "block_size": args.block_size,
           "backend": args.backend}
    layer = build_layer(cfg, torch.device("cuda"), torch.bfloat16)
    x = torch.randn(args.tokens, fin, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    gy = torch.randn(args.tokens, fout, device="cuda", dtype=torch.bfloat16)

    def fwd_bwd():
        layer(x).backward(gy)
        x.grad = None
        for p in layer.parameters():
            p.grad = None

    for _ in range(args.warmup):
        fwd_bwd()
    tag = args.tag or f"layer-{fin}x{fout}-{args.method}-{args.backend}"
    return _profile(fwd_bwd, args.steps, out, tag, {"config": cfg, "tokens": args.tokens})


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--tag")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=3)
    sub = p.add_subparsers(dest="what", required=True)
    t = sub.add_parser("train")
    t.add_argument("--model", default="8b")
    t.add_argument("--method", default="poetx-fast")
    t.add_argument("--backend", default="triton")
    t.add_argument("--compile", default="none")
    t.add_argument("--cayley-scope", default="layer", choices=["layer", "model"])
    t.add_argument("--cayley-keep", default="params", choices=["params", "qs"])
    t.add_argument("--block-size", type=int, default=256)
    t.add_argument("--seq-len", type=int, default=1024)
    t.add_argument("--batch-size", type=int, default=1)
    la = sub.add_parser("layer")
    la.add_argument("--shape", type=int, nargs=2, default=[4096, 14336])
    la.add_argument("--method", default="poetx-fast")
    la.add_argument("--backend", default="triton")
    la.add_argument("--block-size", type=int, default=256)
    la.add_argument("--tokens", type=int, default=2048)
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    summary = train_main(args, out) if args.what == "train" else layer_main(args, out)
    _print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
