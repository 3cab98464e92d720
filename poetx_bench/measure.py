"""Measurements inside a point's process: peak memory (with breakdown), step timing, NVML sampling, MFU.

Peak memory: on CUDA the allocator's peak allocated bytes since the reset after the model was built; on
CPU the process's peak RSS (VmHWM, reset through /proc/self/clear_refs where the kernel allows it).
"""

from __future__ import annotations

import os
import resource
import statistics
import threading
import time
from pathlib import Path

import torch

# Per device (matched by substring, most specific first): dense bf16/fp16 tensor-core FLOP/s, fp32 (as tf32)
# tensor FLOP/s and HBM bytes/s, from the vendors' data sheets; None where the name leaves it open (memory
# variants). MFU uses the first column; kernel floors (shared/perf/floors.md) all three.
DEVICE_PEAKS = {
    "H100 80GB HBM3": (989.4e12, 494.7e12, 3.35e12), "H100 SXM": (989.4e12, 494.7e12, 3.35e12),
    "H100 PCIe": (756.0e12, 378.0e12, 2.0e12), "H100": (989.4e12, None, None),
    "H200": (989.4e12, 494.7e12, 4.8e12), "A100": (312.0e12, None, None), "L40S": (362.05e12, None, None),
    "RTX 4090": (165.2e12, None, None),
}
FLOOR_PEAKS = {k: v for k, v in DEVICE_PEAKS.items() if None not in v}  # devices with a complete floor
LATENCY_BOUND_MS = 0.020  # below this a kernel's time is mostly launch latency, whatever its floor


def _device_peaks(device_name: str | None):
    return next((v for k, v in DEVICE_PEAKS.items() if device_name and k in device_name), None)


def floor_ms(flop: float, nbytes: float, device_name: str | None, dtype: str) -> float | None:
    """A kernel's floor in ms on this device: max(FLOPs / the peak of the dtype it computes in, bytes / HBM
    bandwidth); None where the device's peaks are not known."""
    peaks = _device_peaks(device_name)
    if peaks is None or None in peaks:
        return None
    flops = peaks[0] if dtype in ("bfloat16", "float16") else peaks[1]
    return max((flop or 0) / flops, (nbytes or 0) / peaks[2]) * 1e3


def kernel_rates(flop: float | None, nbytes: float | None, median_ms: float | None, device_name: str | None,
                 dtype: str) -> dict:
    """One timed kernel's rates: TFLOP/s, TB/s, its floor (floor_ms) and the fraction of it reached, and
    whether it is launch-latency-bound (under LATENCY_BOUND_MS). device_name None (a CPU time): no floor
    and no latency verdict, since neither says anything about a GPU."""
    s = median_ms * 1e-3 if median_ms else None
    floor = floor_ms(flop, nbytes, device_name, dtype) if device_name and (flop or nbytes) else None
    return {"flop": flop, "bytes": nbytes,
            "tflops": flop / s / 1e12 if flop and s else None,
            "tbps": nbytes / s / 1e12 if nbytes and s else None,
            "floor_ms": floor, "floor_frac": floor / median_ms if floor and median_ms else None,
            "latency_bound": bool(median_ms < LATENCY_BOUND_MS) if device_name and median_ms else None}


def bf16_peak_flops(device_name: str | None, dtype: str = "bfloat16") -> float | None:
    """Dense bf16/fp16 tensor-core peak; None for other compute dtypes (MFU would not be comparable)."""
    if dtype not in ("bfloat16", "float16"):
        return None
    peaks = _device_peaks(device_name)
    return peaks[0] if peaks else None


# --- CPU memory ------------------------------------------------------------------------------------
def _status_field(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def reset_cpu_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0). False where not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def cpu_peak_rss() -> int:
    hwm = _status_field("VmHWM")
    if hwm is not None:
        return hwm
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def cap_cpu_memory(extra_bytes: int) -> None:
    """Let this process allocate at most `extra_bytes` of address space beyond what it has now."""
    current = _status_field("VmSize") or 0
    limit = current + int(extra_bytes)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def is_oom(exc: BaseException) -> bool:
    """Out of memory, also when the allocation failure surfaces as another error (an import under a memory
    cap raises SystemError with the MemoryError as its cause or context)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)):
            return True
        msg = str(exc)
        if "out of memory" in msg.lower() or "can't allocate memory" in msg or "DefaultCPUAllocator" in msg:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


# --- memory breakdown ------------------------------------------------------------------------------
def _local(t: torch.Tensor) -> torch.Tensor:
    """A sharded (DTensor) tensor's own shard, else the tensor: memory is counted per process."""
    return t._local_tensor if hasattr(t, "device_mesh") and hasattr(t, "_local_tensor") else t


def _nbytes(t: torch.Tensor) -> int:
    t = _local(t)
    return t.numel() * t.element_size()


def _storage_tensors(v) -> list[torch.Tensor]:
    """The plain tensors holding `v`'s bytes: `v` itself, or the inner tensors of a wrapper subclass such as
    torchao's 8-bit optimizer state (codes, scales, code book), whose own numel * element_size would count
    it at its outer dtype; not a tensor: none."""
    if not torch.is_tensor(v):
        return []
    if type(v) is not torch.Tensor and hasattr(v, "__tensor_flatten__"):
        names, _ = v.__tensor_flatten__()
        return [t for n in names for t in _storage_tensors(getattr(v, n))]
    return [v]


def memory_breakdown(model: torch.nn.Module, optimizer: torch.optim.Optimizer, peak: int) -> dict:
    """Bytes of frozen params, trainable params, gradients, optimizer state; the rest of the peak is
    activations and everything else (workspace, allocator fragmentation, temporaries)."""
    frozen = sum(_nbytes(p) for p in model.parameters() if not p.requires_grad)
    trainable = sum(_nbytes(p) for p in model.parameters() if p.requires_grad)
    if getattr(optimizer, "holds_full_gradients", True):
        grads = trainable  # every trainable parameter holds a gradient of its own dtype at the peak
    else:  # per-layer updates free each gradient in its hook: at most about one is alive at a time
        grads = max((_nbytes(p) for p in model.parameters() if p.requires_grad), default=0)
    seen = set()
    state = 0
    for st in optimizer.state.values():
        for v in st.values():
            for t in _storage_tensors(_local(v) if torch.is_tensor(v) else v):
                if t.data_ptr() not in seen:
                    seen.add(t.data_ptr())
                    state += _nbytes(t)
    other = peak - (frozen + trainable + grads + state)
    return {"frozen_params": frozen, "trainable_params": trainable, "gradients": grads,
            "optimizer_state": state, "activations_other": other}


# --- timing ------------------------------------------------------------------------------------------
INJECTED_DELAY_ENV = "POETX_BENCH_INJECTED_DELAY_MS"


def injected_delay_ms() -> float:
    """The gate's self-test: ms of extra work added to every timed step or layer call, from
    POETX_BENCH_INJECTED_DELAY_MS (0 when unset). Not a config field, so a slowed run keeps its points'
    keys and pairs with the baseline; rows record it as `injected_delay_ms`. Bad values exit 2 upstream."""
    raw = os.environ.get(INJECTED_DELAY_ENV, "").strip()
    if not raw:
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"{INJECTED_DELAY_ENV}={raw!r}: expected a finite number of milliseconds >= 0")
    return value


_CYCLES_PER_MS: dict[int, float] = {}


def _gpu_cycles_per_ms() -> float:
    """Calibrate torch.cuda._sleep (a spin of N clock cycles) against CUDA events once per device."""
    dev = torch.cuda.current_device()
    if dev not in _CYCLES_PER_MS:
        n = 2_000_000
        torch.cuda._sleep(n)  # warm-up
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        torch.cuda._sleep(n)
        b.record()
        b.synchronize()
        _CYCLES_PER_MS[dev] = n / max(a.elapsed_time(b), 1e-6)
    return _CYCLES_PER_MS[dev]


def apply_injected_delay(ms: float, cuda: bool) -> None:
    """Add `ms` of work in stream order: a GPU spin on CUDA (so event timing sees it even when the host
    runs ahead), a sleep on CPU."""
    if ms <= 0:
        return
    if cuda:
        torch.cuda._sleep(int(ms * _gpu_cycles_per_ms()))
    else:
        time.sleep(ms / 1e3)


class StepTimer:
    """Per-step wall time from a start and an end mark around each step: CUDA events on GPU (no host
    sync inside the loop), perf_counter on CPU. Work between steps (eval, progress) is never counted."""

    def __init__(self, device: torch.device, inject_delay: bool = True):
        self.cuda = device.type == "cuda"
        self.pairs: list = []
        self.delay_ms = injected_delay_ms() if inject_delay else 0.0
        if self.delay_ms and self.cuda:
            _gpu_cycles_per_ms()  # calibrate now, not inside the first timed step

    def _now(self):
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            return ev
        return time.perf_counter()

    def start(self) -> None:
        self.pairs.append([self._now(), None])

    def stop(self) -> None:
        apply_injected_delay(self.delay_ms, self.cuda)
        self.pairs[-1][1] = self._now()

    def durations(self) -> list[float]:
        if self.cuda and self.pairs:
            torch.cuda.synchronize()
            return [a.elapsed_time(b) / 1e3 for a, b in self.pairs]
        return [b - a for a, b in self.pairs]


def summarize(samples: list[float]) -> dict:
    """Median, IQR and n; `noisy` when IQR/median exceeds 10%."""
    if not samples:
        return {"median": None, "iqr": None, "n": 0, "noisy": None}
    med = statistics.median(samples)
    if len(samples) >= 4:
        q = statistics.quantiles(samples, n=4, method="inclusive")
        iqr = q[2] - q[0]
    else:
        iqr = max(samples) - min(samples)
    return {"median": med, "iqr": iqr, "n": len(samples), "noisy": bool(med and iqr / med > 0.10)}


# --- NVML ----------------------------------------------------------------------------------------------
class NvmlMonitor:
    """Polls this process's GPU memory from NVML in a thread; records clocks, temperature, throttle reasons
    and whether other processes share the GPU. Every failure degrades to None fields."""

    def __init__(self, interval_s: float = 0.02, index: int | None = None):
        self.interval = interval_s
        self.index = index
        self.peak = None
        self.other_processes: set[int] = set()
        self._stop = threading.Event()
        self._thread = None
        self.handle = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self.nvml = pynvml
            if index is None:  # the device CUDA_VISIBLE_DEVICES pins this process to (sweep --gpus)
                from .env import visible_nvml_handle

                self.handle = visible_nvml_handle(pynvml)
            else:
                self.handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        except Exception:  # noqa: BLE001
            self.nvml = None

    def _sample(self) -> None:
        pid = os.getpid()
        try:
            procs = self.nvml.nvmlDeviceGetComputeRunningProcesses(self.handle)
        except Exception:  # noqa: BLE001
            return
        for p in procs:
            if p.pid == pid and p.usedGpuMemory is not None:
                self.peak = max(self.peak or 0, int(p.usedGpuMemory))
            elif p.pid != pid:
                self.other_processes.add(int(p.pid))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def start(self) -> NvmlMonitor:
        if self.handle is not None:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=1)
        if self.handle is not None:
            self._sample()

    def device_state(self) -> dict:
        """Clocks (MHz), temperature (C), power (W), throttle reasons bitmask and their names."""
        if self.handle is None:
            return {}
        n, h, out = self.nvml, self.handle, {}
        probes = {
            "sm_clock_mhz": lambda: n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_SM),
            "mem_clock_mhz": lambda: n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_MEM),
            "temperature_c": lambda: n.nvmlDeviceGetTemperature(h, n.NVML_TEMPERATURE_GPU),
            "power_w": lambda: n.nvmlDeviceGetPowerUsage(h) / 1000.0,
            "throttle_reasons": lambda: int(n.nvmlDeviceGetCurrentClocksEventReasons(h)),
        }
        for key, fn in probes.items():
            try:
                out[key] = fn()
            except Exception:  # noqa: BLE001
                out[key] = None
        out["throttle_reason_names"] = _throttle_names(n, out.get("throttle_reasons"))
        return out


def _throttle_names(nvml, mask) -> list[str]:
    if not mask:
        return []
    names = []
    for attr in dir(nvml):
        if attr.startswith("nvmlClocksEventReason") and attr not in ("nvmlClocksEventReasonAll",
                                                                     "nvmlClocksEventReasonNone"):
            val = getattr(nvml, attr)
            if isinstance(val, int) and val and mask & val == val:
                names.append(attr.replace("nvmlClocksEventReason", ""))
    return sorted(set(names))
