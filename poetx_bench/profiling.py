"""The profiling pass: after the timed pass, a few more steps under torch.profiler and (CUDA) the
allocator's memory history. Kept separate so profiler overhead never touches reported throughput.

Outputs per point: trace.json.gz (Chrome/Perfetto), memory_snapshot.pickle (open it at
https://pytorch.org/memory_viz), host_vs_device.json (host and device time per step).
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import torch

PROFILE_STEPS = 3


def profile_trainer(trainer, out_dir: Path, steps: int = PROFILE_STEPS) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    cuda = trainer.device.type == "cuda"
    acts = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if cuda else [])
    artifacts = {}
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.memory._record_memory_history(max_entries=200_000)
    with torch.profiler.profile(activities=acts, record_shapes=True, profile_memory=True,
                                with_stack=False) as prof:
        for _ in range(steps):
            trainer.step(ranges=True)
        if cuda:
            torch.cuda.synchronize()
    raw = out_dir / "trace.json"
    prof.export_chrome_trace(str(raw))
    with open(raw, "rb") as src, gzip.open(str(raw) + ".gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    raw.unlink()
    artifacts["trace"] = str(raw) + ".gz"
    if cuda:
        snap = out_dir / "memory_snapshot.pickle"
        torch.cuda.memory._dump_snapshot(str(snap))
        torch.cuda.memory._record_memory_history(enabled=None)
        artifacts["memory_snapshot"] = str(snap)
    summary = host_vs_device(prof, steps, cuda)
    (out_dir / "host_vs_device.json").write_text(json.dumps(summary, indent=2))
    artifacts["host_vs_device"] = summary
    return artifacts


def host_vs_device(prof, steps: int, cuda: bool) -> dict:
    """Host time per step (the ranges' CPU time) against device kernel time per step."""
    host = {}
    for evt in prof.key_averages():
        if evt.key in ("forward", "backward", "optimizer"):
            host[evt.key] = evt.cpu_time_total / 1e3 / steps
    device_ms = None
    if cuda:
        device_ms = sum(e.self_device_time_total for e in prof.key_averages()) / 1e3 / steps
    return {"host_ms_per_step": host, "host_total_ms_per_step": sum(host.values()),
            "device_kernel_ms_per_step": device_ms,
            "host_bound": bool(device_ms is not None and sum(host.values()) > device_ms)}
