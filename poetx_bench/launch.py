"""Several points at once: `sweep --gpus 0,1,...` (one point per listed GPU), `sweep --jobs N` (N CPU
points), and `sweep --launcher slurm` (one Slurm job per point through submitit).

A small scheduler in the sweep's process: a free slot takes the next pending point. Each point still runs
in its own process (its own session, killed as a group) with the same timeout and statuses as a plain
sweep; only this process appends rows (`results.append_row`, fsynced), so the results file, `--resume`
and the exit codes are those of a plain sweep. Ctrl-C / SIGTERM stops every running point (local process
groups killed, Slurm jobs cancelled) and keeps the finished rows.

Each row gets a `launch` record (not part of the point id): `{"launcher": "local", "slot": 1, "gpu": "1"}`
or `{"launcher": "slurm", "executor": "slurm"|"local", "job_id": ..., "slot": ..., "gpu": ...}`. A plain
sequential sweep writes no `launch` field.

Choices: `--gpus` is for CUDA only (each point process gets CUDA_VISIBLE_DEVICES=<id> and
CUDA_DEVICE_ORDER=PCI_BUS_ID, so ids are nvidia-smi's and NVML watches the same device); concurrent CPU
points use `--jobs N` (each gets OMP_NUM_THREADS = cores // N unless set). `--slurm-local` runs the Slurm
path through submitit's LocalExecutor on this machine (tests, trying a suite before a cluster).
"""

from __future__ import annotations

import copy
import math
import os
import shutil
import threading
import time
from collections import deque
from dataclasses import dataclass, replace

from .errors import UserError

SLURM_KEYS = {  # [slurm] table of a suite -> (type, flag)
    "partition": (str, "--slurm-partition"), "account": (str, "--slurm-account"),
    "time": (int, "--slurm-time"), "gpus_per_job": (int, "--slurm-gpus-per-job"),
    "cpus_per_task": (int, "--slurm-cpus-per-task"), "mem_gb": ((int, float), "--slurm-mem-gb"),
    "max_jobs": (int, "--slurm-max-jobs"), "constraint": (str, "--slurm-constraint"),
}
LOCAL_POLL_S, SLURM_POLL_S, SLURM_LOCAL_POLL_S = 0.5, 10.0, 0.5
SUBMITIT_HINT = "pip install submitit (or pip install 'poetx-bench[slurm]')"


# --- command line ---------------------------------------------------------------------------------------
def add_arguments(p) -> None:
    g = p.add_argument_group("several points at once")
    g.add_argument("--gpus", metavar="IDS",
                   help="run single-GPU points concurrently, one per listed GPU (e.g. 0,1,2,3; nvidia-smi ids)")
    g.add_argument("--jobs", type=int, metavar="N", help="CPU only: run N points concurrently")
    g.add_argument("--launcher", choices=["local", "slurm"], default="local",
                   help="slurm: one Slurm job per point through submitit (default local)")
    for key, (typ, flag) in SLURM_KEYS.items():
        g.add_argument(flag, dest=f"slurm_{key}", type=float if key == "mem_gb" else typ,
                       help=f"overrides [slurm] {key} of the suite" + (" (minutes)" if key == "time" else ""))
    g.add_argument("--slurm-local", action="store_true",
                   help="run the Slurm path through submitit's LocalExecutor on this machine (testing)")


def parse_gpus(text: str) -> list[str]:
    ids = [x.strip() for x in text.split(",")]
    if not text.strip() or any(not x.isdigit() for x in ids):
        raise UserError(f"--gpus {text!r}: expected a comma-separated list of GPU indices, e.g. 0,1,2,3")
    dup = sorted({x for x in ids if ids.count(x) > 1}, key=int)
    if dup:
        raise UserError(f"--gpus {text!r}: GPU {', '.join(dup)} listed twice (one point per GPU at a time)")
    return [str(int(x)) for x in ids]


def launch_settings(args, device: str, suite_slurm: dict | None, suite_path) -> dict:
    """Check the flags in one-line errors; returns the RunOptions fields {gpus, jobs, slurm}."""
    gpus = parse_gpus(args.gpus) if args.gpus is not None else None
    jobs = args.jobs
    if jobs is not None and jobs <= 0:
        raise UserError(f"--jobs {jobs}: must be a positive integer")
    slurm_flags = [flag for key, (_, flag) in SLURM_KEYS.items() if getattr(args, f"slurm_{key}") is not None]
    if args.slurm_local:
        slurm_flags.append("--slurm-local")
    if args.launcher == "slurm":
        if gpus is not None or jobs is not None:
            raise UserError(f"{'--gpus' if gpus is not None else '--jobs'} with --launcher slurm: Slurm allocates "
                            "the devices; use --slurm-gpus-per-job and --slurm-max-jobs")
        return {"slurm": slurm_settings(args, device, suite_slurm or {}, suite_path)}
    if slurm_flags:
        raise UserError(f"{slurm_flags[0]}: only with --launcher slurm")
    if gpus is not None and jobs is not None:
        raise UserError("--gpus and --jobs together: --gpus for CUDA points, --jobs for CPU points")
    if gpus is not None and device != "cuda":
        raise UserError(f"--gpus {args.gpus}: the points run on {device}; --gpus pins CUDA points to GPUs "
                        "(for concurrent CPU points use --jobs N)")
    if jobs is not None and device != "cpu":
        raise UserError(f"--jobs {jobs}: only for --device cpu; on CUDA use --gpus to give each point its own GPU")
    if gpus is not None and not getattr(args, "dry_run", False):
        count = _nvml_gpu_count()
        missing = [g for g in gpus if count is not None and int(g) >= count]
        if missing:
            raise UserError(f"--gpus {args.gpus}: no GPU {missing[0]} on this machine ({count} GPUs: 0-{count - 1})")
    return {"gpus": gpus, "jobs": jobs or 1}


def slurm_settings(args, device: str, table: dict, suite_path) -> dict:
    if not isinstance(table, dict):
        raise UserError(f"{suite_path}: key 'slurm': must be a table")
    out = {}
    for key, value in table.items():
        if key not in SLURM_KEYS:
            raise UserError(f"{suite_path}: unknown key 'slurm.{key}' (allowed: {', '.join(SLURM_KEYS)})")
        typ = SLURM_KEYS[key][0]
        if isinstance(value, bool) or not isinstance(value, typ):
            raise UserError(f"{suite_path}: key 'slurm.{key}': value {value!r} has the wrong type")
        out[key] = value
    for key in SLURM_KEYS:
        value = getattr(args, f"slurm_{key}")
        if value is not None:
            out[key] = value
    for key in ("time", "gpus_per_job", "cpus_per_task", "mem_gb", "max_jobs"):
        if key in out and (out[key] < 0 or (out[key] == 0 and key != "gpus_per_job")):
            where = SLURM_KEYS[key][1] if getattr(args, f"slurm_{key}") is not None else f"{suite_path}: slurm.{key}"
            raise UserError(f"{where} {out[key]}: must be positive")
    out.setdefault("gpus_per_job", 1 if device == "cuda" else 0)
    out["local"] = bool(args.slurm_local)
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise UserError(f"--launcher slurm needs submitit: {SUBMITIT_HINT}") from None
    if not out["local"] and not getattr(args, "dry_run", False) and shutil.which("sbatch") is None:
        raise UserError("--launcher slurm: no sbatch on this machine (run from a Slurm login node, or "
                        "--slurm-local to try the Slurm path here)")
    return out


def _nvml_gpu_count() -> int | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return int(pynvml.nvmlDeviceGetCount())
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - no NVML: leave the check to the point processes
        return None


# --- the scheduler --------------------------------------------------------------------------------------
@dataclass
class Slot:
    index: int
    gpu: str | None = None

    def label(self, launcher: str = "local") -> str:
        if self.gpu is not None:
            return f"gpu {self.gpu}"
        return f"{'job' if launcher == 'slurm' else 'slot'} {self.index}"


def run_scheduled(runner, todo: list[dict], record) -> None:
    """Run `todo` on the runner's slots; `record(point, row, t0, where)` appends and logs each row.
    Raises KeyboardInterrupt after stopping every running point."""
    opts = runner.opts
    wake = threading.Event()  # a local point finished
    tasks: list = []  # every task started, registered before its point starts (nothing escapes a stop)
    if opts.slurm:
        slurm = opts.slurm
        n = slurm.get("max_jobs") or (1 if slurm["local"] else len(todo))
        per = slurm["gpus_per_job"]
        slots = [Slot(i, str(i * per) if slurm["local"] and per else None) for i in range(n)]
        executor = _slurm_executor(runner)
        start = lambda slot, point: SlurmTask(executor, runner, slot, point, len(slots), tasks)  # noqa: E731
        poll = SLURM_LOCAL_POLL_S if slurm["local"] else SLURM_POLL_S
        launcher = "slurm"
    else:
        slots = ([Slot(i, g) for i, g in enumerate(opts.gpus)] if opts.gpus
                 else [Slot(i) for i in range(opts.jobs)])
        start = lambda slot, point: LocalTask(runner, slot, point, len(slots), wake, tasks)  # noqa: E731
        poll, launcher = LOCAL_POLL_S, "local"
    pending = deque(todo)
    free = deque(slots)
    running: list[tuple[Slot, object, float]] = []
    runner.log(f"{len(todo)} points on {len(slots)} {'Slurm jobs at a time' if launcher == 'slurm' else 'slots'}: "
               + ", ".join(s.label(launcher) for s in slots[:8]) + (" ..." if len(slots) > 8 else ""))
    try:
        while pending or running:
            while pending and free:
                slot = free.popleft()
                running.append((slot, start(slot, pending.popleft()), time.monotonic()))
            wake.wait(poll)
            wake.clear()
            still = []
            for slot, task, t0 in running:
                row = task.result()
                if row is None:
                    still.append((slot, task, t0))
                    continue
                row["launch"] = {"launcher": launcher, **task.launch_info(), "slot": slot.index, "gpu": slot.gpu}
                record(task.point, row, t0, slot.label(launcher))
                free.append(slot)
            running = still
    except BaseException:  # Ctrl-C, SIGTERM, or a harness failure: no point is left running
        for task in tasks:
            task.stop()
        raise


class LocalTask:
    """One point in a thread of this process: the thread runs the point's process (Runner.run_point, with
    the slot's environment) and waits for it; this process alone appends the row."""

    def __init__(self, runner, slot: Slot, point: dict, n_slots: int, wake: threading.Event, tasks: list):
        self.point = point
        self.runner = copy.copy(runner)
        self.runner.child = None
        self.runner.child_env = slot_env(slot, n_slots)
        self.row = self.error = None
        self.wake = wake
        self.thread = threading.Thread(target=self._run, name=f"point-{slot.index}", daemon=True)
        tasks.append(self)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.row = self.runner.run_point(self.point)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the sweep's thread
            self.error = exc
        finally:
            self.wake.set()

    def result(self) -> dict | None:
        if self.thread.is_alive():
            return None
        if self.error is not None:
            raise self.error
        return self.row

    def launch_info(self) -> dict:
        return {}

    def stop(self) -> None:
        """Kill the point's process group (again, until the thread is done: it may be starting it)."""
        while self.thread.is_alive():
            self.runner._kill_child()
            self.thread.join(0.1)


def slot_env(slot: Slot, n_slots: int) -> dict:
    env = dict(os.environ)
    if slot.gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = slot.gpu
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # nvidia-smi's and NVML's numbering
    elif n_slots > 1 and "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // n_slots))
    return env


# --- Slurm through submitit -----------------------------------------------------------------------------
def _slurm_executor(runner):
    import submitit

    s = runner.opts.slurm
    folder = runner.opts.out_dir / "slurm"
    if s["local"]:
        return submitit.LocalExecutor(folder=folder)
    ex = submitit.AutoExecutor(folder=folder, cluster="slurm")
    params = {"gpus_per_node": s["gpus_per_job"], "tasks_per_node": 1, "nodes": 1,
              "slurm_job_name": f"poetx-{runner.opts.suite_name}"}
    for key, name in (("partition", "slurm_partition"), ("account", "slurm_account"),
                      ("cpus_per_task", "cpus_per_task"), ("mem_gb", "mem_gb"),
                      ("constraint", "slurm_constraint")):
        if s.get(key) is not None:
            params[name] = s[key]
    ex.update_parameters(**params)
    return ex


def _time_limit_min(runner, point: dict) -> int:
    """--slurm-time, else the point's timeout plus 10 minutes (start-up, data, queue-side kill margin)."""
    if runner.opts.slurm.get("time"):
        return int(runner.opts.slurm["time"])
    timeout = runner.opts.timeout or point["config"].get("timeout") or 3600
    return int(math.ceil(timeout / 60)) + 10


def run_point_job(opts, point: dict, env: dict | None = None) -> dict:
    """What a Slurm job runs: the point in its own process, exactly as a plain sweep runs it (timeout,
    statuses, crash handling); the row goes back to the sweep, which appends it. `env` adds to the
    job's environment (the local executor's CPU thread share)."""
    from .runner import Runner

    runner = Runner(opts)
    if env:
        runner.child_env = {**os.environ, **env}
    return runner.run_point(point)


class SlurmTask:
    def __init__(self, executor, runner, slot: Slot, point: dict, n_slots: int, tasks: list):
        self.point, self.runner, self.job = point, runner, None
        self.finished = False
        tasks.append(self)
        params = {"timeout_min": _time_limit_min(runner, point)}
        if runner.opts.slurm["local"]:
            params["gpus_per_node"] = runner.opts.slurm["gpus_per_job"]
            if slot.gpu is not None:
                params["visible_gpus"] = [int(slot.gpu) + k for k in range(runner.opts.slurm["gpus_per_job"])]
        executor.update_parameters(**params)
        job_opts = replace(runner.opts, slurm=None, gpus=None, jobs=1)
        env = None
        if runner.opts.slurm["local"] and slot.gpu is None and n_slots > 1 and "OMP_NUM_THREADS" not in os.environ:
            env = {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // n_slots))}  # as --jobs does
        self.job = executor.submit(run_point_job, job_opts, point, env)

    def launch_info(self) -> dict:
        return {"executor": "local" if self.runner.opts.slurm["local"] else "slurm", "job_id": str(self.job.job_id)}

    def result(self) -> dict | None:
        if not self.job.done():
            return None
        self.finished = True
        try:
            return self.job.result()
        except Exception as exc:  # noqa: BLE001 - the job died (Slurm time limit, node failure, ...)
            message = str(exc).strip().splitlines()
            tail = ""
            try:
                tail = (self.job.stderr() or "")[-3000:]
            except Exception:  # noqa: BLE001
                pass
            return self.runner._row(self.point, "error", {}, {
                "type": "SlurmJobFailed",
                "message": f"job {self.job.job_id}: {message[0][:400] if message else type(exc).__name__}",
                "traceback_tail": tail})

    def stop(self) -> None:
        if self.job is None or self.finished:
            return
        try:
            self.job.cancel(check=False)
        except Exception:  # noqa: BLE001
            pass
        process = getattr(self.job, "_process", None)  # LocalExecutor: wait for its controller to end
        if process is not None:
            try:
                process.wait(timeout=15)
            except Exception:  # noqa: BLE001
                process.kill()
