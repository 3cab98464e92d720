"""Runs points, each in a freshly spawned process with a timeout, and appends one row per point.

A point's failure (OOM, exception, crash, timeout, divergence) becomes its row's status; the sweep goes
on. Ctrl-C kills the running point and stops; every finished row is already on disk (fsynced), and
`--resume` skips the points that have a final row.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .env import environment
from .points import get_kind
from .results import SCHEMA_VERSION, append_row, finished_point_ids, restore_nonfinite

EXIT_OK, EXIT_HARNESS, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


@dataclass
class RunOptions:
    out_dir: Path
    resume: bool = False
    max_memory_gb: float | None = None
    timeout: float | None = None
    quiet: bool = False
    profile: bool = False
    suite_name: str = "adhoc"
    # several points at once (poetx_bench.launch): GPU ids, CPU slots, Slurm settings
    gpus: list[str] | None = None
    jobs: int = 1
    slurm: dict | None = None
    # run each point inside this process (the `correctness` command's quick checks): same rows, minus the
    # isolation, the timeout and point_wall_s of a point process
    in_process: bool = False


def describe_point(cfg: dict) -> str:
    """The console label of a point's config (its kind's)."""
    return get_kind(cfg["kind"]).describe(cfg)


def _fmt_s(s: float) -> str:
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def point_summary(row: dict) -> str:
    m = row.get("metrics") or {}
    parts = [row["status"]]
    if m.get("tokens_per_s"):
        parts.append(f"{m['tokens_per_s']:.0f} tok/s")
    if m.get("fwd_bwd_ms") or m.get("kernel_ms"):
        parts.append(f"{m.get('fwd_bwd_ms') or m['kernel_ms']:.3f} ms")
    if m.get("peak_memory_bytes"):
        parts.append(f"peak {m['peak_memory_bytes'] / 2**30:.2f} GiB")
    if m.get("final_loss") is not None:
        parts.append(f"loss {m['final_loss']:.3f}")
    if m.get("noisy"):
        parts.append("NOISY")
    if m.get("other_gpu_processes"):
        parts.append("WARNING: other processes on the GPU")
    if row.get("error") and row["status"] != "ok":
        parts.append(f"({row['error'].get('type')}: {row['error'].get('message', '')[:80]})")
    return ", ".join(parts)


class Runner:
    def __init__(self, opts: RunOptions):
        self.opts = opts
        self.results = opts.out_dir / "results.jsonl"
        self.last_env: dict | None = None
        self.child: subprocess.Popen | None = None
        self.child_env: dict | None = None  # a slot's environment (launch.py); None: this process's

    def log(self, msg: str) -> None:
        if not self.opts.quiet:
            print(msg, file=sys.stderr, flush=True)

    def run(self, points: list[dict]) -> int:
        self.opts.out_dir.mkdir(parents=True, exist_ok=True)
        done = finished_point_ids(self.results) if self.opts.resume else set()
        todo = [p for p in points if p["point_id"] not in done]
        if done:
            self.log(f"resume: {len(points) - len(todo)} of {len(points)} points already have a row")
        started = time.monotonic()
        rows = []
        previous = _interrupt_on_termination()

        def record(point: dict, row: dict, t0: float, where: str = "") -> None:
            append_row(self.results, row)  # the one writer, also when points run concurrently
            rows.append(row)
            i = len(rows)
            eta = (time.monotonic() - started) / i * (len(todo) - i)
            self.log(f"[{i}/{len(todo)}] {where + ': ' if where else ''}{describe_point(point['config'])}: "
                     f"{point_summary(row)} ({time.monotonic() - t0:.1f}s, ETA {_fmt_s(eta)})")

        try:
            if self.opts.gpus or self.opts.jobs > 1 or self.opts.slurm:
                from .launch import run_scheduled

                run_scheduled(self, todo, record)
            else:
                for point in todo:
                    t0 = time.monotonic()
                    record(point, self.run_point(point), t0)
        except KeyboardInterrupt:
            self._kill_child()
            self.log(f"interrupted: {len(rows)} finished rows kept in {self.results}")
            return EXIT_INTERRUPTED
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return EXIT_OK

    def _kill_child(self) -> None:
        if self.child and self.child.poll() is None:
            if self.child.args[1:3] == ["-m", "torch.distributed.run"]:
                # torchrun stops its ranks on SIGTERM (they run in sessions of their own; each also dies
                # with its parent, see child._die_with_parent)
                try:
                    os.killpg(self.child.pid, signal.SIGTERM)
                    self.child.wait(timeout=15)
                except (ProcessLookupError, PermissionError, subprocess.TimeoutExpired):
                    pass
            if self.child.poll() is None:
                try:
                    os.killpg(self.child.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    self.child.kill()
            self.child.wait()

    def run_point(self, point: dict) -> dict:
        if self.opts.in_process:
            return self._run_in_process(point)
        cfg = point["config"]
        pid = point["point_id"]
        work = self.opts.out_dir / "points"
        work.mkdir(parents=True, exist_ok=True)
        spec_path, result_path, log_path = (work / f"{pid}.spec.json", work / f"{pid}.result.json",
                                            work / f"{pid}.log")
        result_path.unlink(missing_ok=True)
        nproc = get_kind(cfg["kind"]).processes(cfg)
        for stale in work.glob(f"{pid}.result.rank*.json"):
            stale.unlink()
        spec = {"config": cfg, "point_id": pid, "max_memory_gb": self.opts.max_memory_gb}
        if self.opts.profile:
            spec["profile_dir"] = str(self.opts.out_dir / "profiles" / pid)
        spec_path.write_text(json.dumps(spec))
        timeout = self.opts.timeout or cfg.get("timeout")
        t0 = time.monotonic()
        with open(log_path, "w") as log:
            self.child = subprocess.Popen(
                point_command(nproc, spec_path, result_path),
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=self.child_env)
            try:
                rc = self.child.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._kill_child()
                return self._row(point, "timeout", {}, {"type": "Timeout", "message":
                                 f"no result after {timeout:.0f}s", "traceback_tail": _tail(log_path)})
            except KeyboardInterrupt:
                self._kill_child()
                raise
        wall = time.monotonic() - t0
        if nproc > 1:
            failed = failed_rank_result(result_path, nproc)
            if failed is not None:
                res, rank = failed
                metrics = res.get("metrics") or {}
                metrics.update({"point_wall_s": wall, "nproc": nproc, "failed_rank": rank})
                self.last_env = res.get("env") or self.last_env
                return self._row(point, res["status"], metrics, res.get("error"), res.get("env"))
        if result_path.exists():
            res = restore_nonfinite(json.loads(result_path.read_text()))
            self.last_env = res.get("env") or self.last_env
            metrics = res.get("metrics") or {}
            metrics["point_wall_s"] = wall
            row = self._row(point, res["status"], metrics, res.get("error"), res.get("env"))
            if res.get("artifacts"):
                row["artifacts"] = res["artifacts"]
            return row
        why = f"point process exited with code {rc} and no result"
        if rc is not None and rc < 0:
            why = f"point process killed by signal {-rc}" + (" (host out of memory?)" if rc == -9 else "")
        return self._row(point, "error", {"point_wall_s": wall},
                         {"type": "Crash", "message": why, "traceback_tail": _tail(log_path)})

    def _run_in_process(self, point: dict) -> dict:
        from .child import run as run_spec

        res = run_spec({"config": point["config"], "point_id": point["point_id"],
                        "max_memory_gb": self.opts.max_memory_gb})
        if (res.get("error") or {}).get("type") == "KeyboardInterrupt":
            raise KeyboardInterrupt
        self.last_env = res.get("env") or self.last_env
        return self._row(point, res["status"], res.get("metrics") or {}, res.get("error"), res.get("env"))

    def _row(self, point, status, metrics, error, env=None) -> dict:
        if env is None:
            env = self.last_env or environment(use_torch_cuda=False)
        if self.opts.max_memory_gb and isinstance(metrics, dict):  # also on rows the point never wrote
            metrics.setdefault("memory_cap_bytes", int(self.opts.max_memory_gb * 1024**3))
        if self.opts.timeout and isinstance(metrics, dict):  # --timeout replaced the config's own timeout
            metrics.setdefault("timeout_applied_s", float(self.opts.timeout))
        row = {"schema_version": SCHEMA_VERSION, "point_id": point["point_id"], "status": status,
               "suite": self.opts.suite_name, "kind": point["config"]["kind"],
               "config": point["config"], "metrics": metrics, "env": env}
        if error:
            row["error"] = error
        return row


def point_command(nproc: int, spec_path: Path, result_path: Path) -> list[str]:
    """The point's process: the child itself, or torchrun running `nproc` of them (one per rank/GPU)."""
    child = ["-m", "poetx_bench.child", str(spec_path), str(result_path)]
    if nproc <= 1:
        return [sys.executable, *child]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *child]


_COLLECTIVE_FAILURE = ("DistBackendError", "DistNetworkError", "Connection closed", "Connection reset",
                       "NCCL", "Gloo", "gloo")


def failed_rank_result(result_path: Path, nproc: int) -> tuple[dict, int] | None:
    """(result, rank) of the rank that made a multi-process point fail, or None when no rank failed: an
    OOM on any rank first (the point is `oom`), then an error that is not a collective failing because
    another rank died, then any error."""
    from .child import FAILED, rank_result_path

    failed = []
    for rank in range(nproc):
        path = rank_result_path(result_path, rank)
        if path.exists():
            try:
                res = restore_nonfinite(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue
            if res.get("status") in FAILED:
                failed.append((res, rank))

    def order(item):
        res, rank = item
        err = res.get("error") or {}
        secondary = any(s in f"{err.get('type', '')} {err.get('message', '')}" for s in _COLLECTIVE_FAILURE)
        return (res["status"] != "oom", secondary, rank)

    return min(failed, key=order) if failed else None


def _interrupt_on_termination() -> dict:
    """SIGTERM / SIGHUP (a scheduler's kill, a lost terminal) stop the sweep like Ctrl-C does, so the
    running point's process is killed instead of left running on the GPU."""
    def handler(signum, frame):
        raise KeyboardInterrupt

    previous = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        try:
            previous[sig] = signal.signal(sig, handler)
        except (ValueError, OSError):  # not the main thread
            pass
    return previous


def _tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def estimate_seconds(cfg: dict) -> float:
    """Rough wall time of a point for --dry-run (its kind's estimate)."""
    return get_kind(cfg["kind"]).estimate_seconds(cfg, cfg["device"])
