"""The environment record every result row carries, so a number can be reproduced and compared."""

from __future__ import annotations

import datetime as _dt
import functools
import os
import platform
import socket
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


@functools.lru_cache(maxsize=1)
def git_info() -> dict:
    """The commit, and whether tracked files differ from it. A commit given by POETX_BENCH_GIT_COMMIT (a
    copied tree without its history) says nothing about this tree's git status: dirty is then
    POETX_BENCH_GIT_DIRTY (0/1) when set, else unknown (None)."""
    given = os.environ.get("POETX_BENCH_GIT_COMMIT")
    if given:
        flag = os.environ.get("POETX_BENCH_GIT_DIRTY", "").strip()
        return {"git_commit": given, "git_dirty": {"0": False, "1": True}.get(flag)}
    commit = _git("rev-parse", "HEAD")
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": commit, "git_dirty": bool(dirty) if dirty is not None else None}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def visible_nvml_handle(pynvml):
    """NVML handle of the device this process computes on: the first entry of CUDA_VISIBLE_DEVICES (an
    index or a UUID), else device 0. NVML ignores CUDA_VISIBLE_DEVICES, so a point pinned to GPU 3 (sweep
    --gpus, which also sets CUDA_DEVICE_ORDER=PCI_BUS_ID so both count alike) must not read GPU 0's
    memory, clocks and processes."""
    first = (os.environ.get("CUDA_VISIBLE_DEVICES") or "").split(",")[0].strip()
    if first.startswith(("GPU-", "MIG-")):
        return pynvml.nvmlDeviceGetHandleByUUID(first)
    return pynvml.nvmlDeviceGetHandleByIndex(int(first) if first.isdigit() else 0)


def gpu_info(use_torch: bool = True) -> dict:
    """Device name, driver and memory from NVML (and torch when allowed; None fields on CPU).

    The sweep's parent process passes use_torch=False so it never creates a CUDA context of its own.
    """
    info = {"device_name": None, "driver": None, "gpu_memory_bytes": None, "gpu_count": 0}
    try:
        import pynvml

        pynvml.nvmlInit()
        drv = pynvml.nvmlSystemGetDriverVersion()
        info["driver"] = drv.decode() if isinstance(drv, bytes) else drv
        info["gpu_count"] = pynvml.nvmlDeviceGetCount()
        if info["gpu_count"]:
            h = visible_nvml_handle(pynvml)
            name = pynvml.nvmlDeviceGetName(h)
            info["device_name"] = name.decode() if isinstance(name, bytes) else name
            info["gpu_memory_bytes"] = int(pynvml.nvmlDeviceGetMemoryInfo(h).total)
        pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - environment probing must never fail a run
        pass
    if use_torch:
        try:
            import torch

            if torch.cuda.is_available():
                props = torch.cuda.get_device_properties(0)
                info.update(device_name=props.name, gpu_memory_bytes=props.total_memory,
                            gpu_count=torch.cuda.device_count(), sm_count=props.multi_processor_count)
        except Exception:  # noqa: BLE001
            pass
    return info


@functools.lru_cache(maxsize=2)
def static_env(use_torch_cuda: bool = True) -> dict:
    import torch

    try:
        import triton

        triton_version = triton.__version__
    except Exception:  # noqa: BLE001
        triton_version = None
    env = {
        "torch": torch.__version__,
        "triton": triton_version,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }
    env.update(gpu_info(use_torch_cuda))
    if env["device_name"] is None:
        env["device_name"] = env["cpu"]
    env.update(git_info())
    return env


def environment(use_torch_cuda: bool = True) -> dict:
    """Static facts plus the time of this record."""
    return {**static_env(use_torch_cuda), "time": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")}
