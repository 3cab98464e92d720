"""The profiling pass: after the timed pass, a few more steps under torch.profiler and (CUDA) the
allocator's memory history. Kept separate so profiler overhead never touches reported throughput.

Outputs per point: trace.json.gz (Chrome/Perfetto), memory_snapshot.pickle (open it at
https://pytorch.org/memory_viz), host_vs_device.json (host and device time per step).
"""

from __future__ import annotations

import gzip
import json
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

PROFILE_STEPS = 3
STEP_RANGES = ("forward", "backward", "optimizer")
# below this share of the host's step time spent in kernels, the device waits for launches
HOST_BOUND_BUSY = 0.5


def profile_trainer(trainer, out_dir: Path, steps: int = PROFILE_STEPS) -> dict:
    return profile_steps(lambda: trainer.step(ranges=True), out_dir, steps, trainer.device.type == "cuda")


def profile_steps(step: Callable[[], object], out_dir: Path, steps: int, cuda: bool) -> dict:
    """Run `step` (which opens the STEP_RANGES) `steps` times under the profiler; write the artifacts."""
    out_dir.mkdir(parents=True, exist_ok=True)
    acts = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if cuda else [])
    artifacts = {}
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.memory._record_memory_history(max_entries=200_000)
    with torch.profiler.profile(activities=acts, record_shapes=True, profile_memory=True,
                                with_stack=False) as prof:
        for _ in range(steps):
            step()
        if cuda:
            torch.cuda.synchronize()
    raw = out_dir / "trace.json"
    prof.export_chrome_trace(str(raw))
    events = json.loads(raw.read_text(encoding="utf-8")).get("traceEvents", [])
    with open(raw, "rb") as src, gzip.open(str(raw) + ".gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    raw.unlink()
    artifacts["trace"] = str(raw) + ".gz"
    if cuda:
        snap = out_dir / "memory_snapshot.pickle"
        torch.cuda.memory._dump_snapshot(str(snap))
        torch.cuda.memory._record_memory_history(enabled=None)
        artifacts["memory_snapshot"] = str(snap)
    summary = host_vs_device(events, steps, cuda)
    (out_dir / "host_vs_device.json").write_text(json.dumps(summary, indent=2))
    artifacts["host_vs_device"] = summary
    return artifacts


def host_vs_device(events: list[dict], steps: int, cuda: bool) -> dict:
    """Host and device time per step from Chrome-trace events (a pure function: CPU tests feed it
    synthetic GPU events).

    Host: wall time of the step ranges on the CPU thread (`user_annotation`; their `gpu_user_annotation`
    mirrors are device-side spans). Device: `kernel` events only; a launching op's own device time is
    its kernels' time, so adding it would count every kernel twice. None on CPU.
    """
    host = {name: _wall_ms(e for e in events if e.get("cat") == "user_annotation" and e.get("name") == name)
            / steps for name in STEP_RANGES}
    total = sum(host.values())
    device = sum(float(e.get("dur", 0.0)) for e in events if e.get("cat") == "kernel") / 1e3 / steps \
        if cuda else None
    busy = device / total if device is not None and total > 0 else None
    return {"host_ms_per_step": host, "host_total_ms_per_step": total, "device_kernel_ms_per_step": device,
            "device_busy_fraction": busy, "host_bound": None if busy is None else busy < HOST_BOUND_BUSY}


def _wall_ms(ranges: Iterable[dict]) -> float:
    """Covered time of possibly nested or repeated ranges (microsecond ts/dur), in ms."""
    spans = sorted((float(e["ts"]), float(e["ts"]) + float(e.get("dur", 0.0))) for e in ranges)
    covered, end = 0.0, float("-inf")
    for start, stop in spans:
        if stop > end:
            covered += stop - max(start, end)
            end = stop
    return covered / 1e3
