"""Defect 9: the host-versus-device summary, on synthetic Chrome-trace events (the GPU logic runs on CPU)
and, marked gpu, on real profiles of a launch-bound and a compute-bound step."""

from __future__ import annotations

import pytest
import torch

from poetx_bench.profiling import host_vs_device, profile_steps


def _range(name, ts, dur, cat="user_annotation"):
    return {"ph": "X", "cat": cat, "name": name, "ts": ts, "dur": dur, "pid": 1, "tid": 1}


def _step(t0, host_us, kernels_us, n_kernels):
    """One step: forward/backward/optimizer ranges on the CPU thread, their GPU mirrors, launches
    (cpu ops and runtime calls) and the kernels they start."""
    third = host_us / 3
    events = []
    for i, name in enumerate(("forward", "backward", "optimizer")):
        events.append(_range(name, t0 + i * third, third))
        events.append(_range(name, t0 + i * third, host_us, cat="gpu_user_annotation"))
    for k in range(n_kernels):
        ts = t0 + k * host_us / n_kernels
        events.append(_range("aten::mm", ts, 5.0, cat="cpu_op"))
        events.append(_range("cudaLaunchKernel", ts, 4.0, cat="cuda_runtime"))
        events.append(_range(f"kernel_{k}", ts + 5.0, kernels_us / n_kernels, cat="kernel"))
    return events


def test_cpu_profile_has_no_device_time():
    events = _step(0.0, 3000.0, 0.0, 0)
    events = [e for e in events if e["cat"] in ("user_annotation", "cpu_op")]
    hv = host_vs_device(events, steps=1, cuda=False)
    assert hv["device_kernel_ms_per_step"] is None and hv["host_bound"] is None
    assert hv["host_ms_per_step"] == pytest.approx({"forward": 1.0, "backward": 1.0, "optimizer": 1.0})
    assert hv["host_total_ms_per_step"] == pytest.approx(3.0)


def test_device_time_counts_kernels_once():
    """The H200 report: a 414 ms step showed 958 ms of device time (launching ops + kernels summed)."""
    events = _step(0.0, 414_000.0, 400_000.0, 50) + _step(500_000.0, 414_000.0, 400_000.0, 50)
    hv = host_vs_device(events, steps=2, cuda=True)
    assert hv["device_kernel_ms_per_step"] == pytest.approx(400.0)
    assert hv["device_kernel_ms_per_step"] <= hv["host_total_ms_per_step"]
    assert all(v > 0 for v in hv["host_ms_per_step"].values())  # forward/backward no longer read 0.0
    assert hv["host_bound"] is False


def test_many_tiny_ops_are_host_bound_and_one_matmul_is_not():
    tiny = host_vs_device(_step(0.0, 20_000.0, 2_000.0, 2000), steps=1, cuda=True)
    assert tiny["host_bound"] is True and tiny["device_busy_fraction"] == pytest.approx(0.1)
    # one large matmul: the launch returns at once, the kernel runs for milliseconds
    matmul = host_vs_device(_step(0.0, 60.0, 5_000.0, 1), steps=1, cuda=True)
    assert matmul["host_bound"] is False


def test_nested_ranges_of_one_name_count_once():
    events = [_range("forward", 0.0, 1000.0), _range("forward", 100.0, 200.0), _range("forward", 900.0, 300.0)]
    hv = host_vs_device(events, steps=1, cuda=False)
    assert hv["host_ms_per_step"]["forward"] == pytest.approx(1.2)


def _tiny_ops(x):
    def step():
        with torch.profiler.record_function("forward"):
            for _ in range(2000):
                x.add_(1.0)
    return step


def _one_matmul(a):
    def step():
        with torch.profiler.record_function("forward"):
            torch.mm(a, a)
    return step


def test_profile_steps_on_cpu(tmp_path):
    hv = profile_steps(_tiny_ops(torch.zeros(4)), tmp_path, 2, cuda=False)["host_vs_device"]
    assert hv["host_ms_per_step"]["forward"] > 0 and hv["device_kernel_ms_per_step"] is None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_real_gpu_profiles(tmp_path):
    tiny = profile_steps(_tiny_ops(torch.zeros(1, device="cuda")), tmp_path / "tiny", 3, cuda=True)
    assert tiny["host_vs_device"]["host_bound"] is True, tiny["host_vs_device"]
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    big = profile_steps(_one_matmul(a), tmp_path / "big", 3, cuda=True)
    hv = big["host_vs_device"]
    assert hv["host_bound"] is False, hv
    assert hv["device_kernel_ms_per_step"] > 0.5  # 1.1 TFLOP: about 1-2 ms on an H100
