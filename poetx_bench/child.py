"""Entry point of a point's own process: `python -m poetx_bench.child SPEC.json RESULT.json`.

Runs exactly one point and writes {status, metrics, error, env, artifacts} to RESULT.json. Any failure of
the point becomes a status here (oom, error, diverged); only a crash of the interpreter itself leaves no
result, which the parent records as an error with the stderr tail.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path


def _apply_memory_cap(cfg: dict, cap_gb: float | None) -> None:
    if not cap_gb:
        return
    import torch

    from .measure import cap_cpu_memory

    if cfg["device"] == "cuda":
        total = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, cap_gb * 1024**3 / total))
    else:
        # modules torch imports lazily on first use (model init reaches torch._dynamo) load before the cap:
        # an import failing under it raises SystemError, not MemoryError, and the cap is for the point's data
        import torch._dynamo  # noqa: F401

        cap_cpu_memory(int(cap_gb * 1024**3))


def _peak_reached(device: str) -> int | None:
    try:
        import torch

        if device == "cuda":
            return int(torch.cuda.max_memory_allocated())
        from .measure import cpu_peak_rss

        return cpu_peak_rss()
    except Exception:  # noqa: BLE001
        return None


def skip_reason(cfg: dict) -> str | None:
    """Points that cannot measure what they name are skipped, not silently run as something else (the
    kind says why: poetx_bench.points)."""
    from .points import get_kind

    return get_kind(cfg["kind"]).skip_reason(cfg)


def run(spec: dict) -> dict:
    from .distributed import World, init, launched_world
    from .env import environment
    from .measure import is_oom
    from .points import Outcome, RunContext, get_kind

    cfg = spec["config"]
    result = {"status": "ok", "metrics": {}, "error": None, "artifacts": {}}
    world = World()
    ctx = None
    try:
        result["env"] = environment()
        reason = skip_reason(cfg)
        if reason:
            result["status"] = "skipped"
            result["error"] = {"type": "Skipped", "message": reason, "traceback_tail": ""}
            return result
        if launched_world().distributed:  # one rank of a torchrun launch (runner: nproc > 1)
            world = init(cfg["device"], cfg.get("parallel", "ddp"))
        cap_gb = spec.get("max_memory_gb") or cfg.get("max_memory_gb")
        _apply_memory_cap(cfg, cap_gb)
        ctx = RunContext(world=world, profile_dir=spec.get("profile_dir"))
        out = get_kind(cfg["kind"]).run(cfg, ctx)
        if not isinstance(out, Outcome):
            out = Outcome(out)
        result["metrics"] = out.metrics
        if out.status != "ok":
            result["status"] = out.status
            result["error"] = out.error
        if out.artifacts:
            result["artifacts"] = out.artifacts
        if cap_gb:  # rows under different caps are not compared (poetx_bench.machines)
            result["metrics"]["memory_cap_bytes"] = int(cap_gb * 1024**3)
    except BaseException as exc:  # noqa: BLE001 - every failure is a recorded status
        tb = traceback.format_exc()
        status = "oom" if is_oom(exc) else "error"
        if ctx is not None and ctx.metrics is not None and not result["metrics"]:
            result["metrics"] = ctx.metrics  # measured before the failure (train: before the profiled pass)
        result["status"] = status
        result["error"] = {"type": type(exc).__name__, "message": str(exc).splitlines()[0][:500] if str(exc) else "",
                           "traceback_tail": tb[-3000:]}
        if status == "oom":
            result["metrics"]["peak_memory_bytes"] = _peak_reached(cfg["device"])
        cap_gb = spec.get("max_memory_gb") or cfg.get("max_memory_gb")
        if cap_gb:
            result["metrics"]["memory_cap_bytes"] = int(cap_gb * 1024**3)
    return result


def _die_with_parent() -> None:
    """The point runs in its own session (so Ctrl-C reaches only the sweep); if the sweep is killed
    outright (kill -9), the kernel sends this process SIGKILL too (Linux prctl PR_SET_PDEATHSIG)."""
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass


FAILED = ("oom", "error")


def rank_result_path(out: Path, rank: int) -> Path:
    """Where rank `rank` of a multi-process point writes its own result (the runner reads these when the
    point fails: an OOM on any rank makes the point `oom`)."""
    return out.with_name(f"{out.stem}.rank{rank}{out.suffix}")


def _write(path: Path, result: dict) -> None:
    from .results import encode_row

    tmp = path.with_suffix(".tmp")
    tmp.write_text(encode_row(result))
    os.replace(tmp, path)


def main(argv=None) -> int:
    argv = argv if argv is not None else sys.argv[1:]
    _die_with_parent()
    spec = json.loads(Path(argv[0]).read_text())
    from .distributed import launched_world, shutdown

    world = launched_world()
    result = run(spec)
    out = Path(argv[1])
    if not world.distributed:
        _write(out, result)
        return 0
    _write(rank_result_path(out, world.rank), result)
    if result["status"] in FAILED:
        return 1  # torchrun then stops the other ranks; the runner reads the rank files
    if world.rank == 0:
        _write(out, result)  # the row's result: every rank holds the same (gathered) metrics
    shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
