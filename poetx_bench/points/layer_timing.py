"""One single-layer latency point: forward+backward of nn.Linear, POET or POET-X on one input.

The total is timed with `triton.testing.do_bench` on GPU or a perf_counter loop on CPU; either way every
repeat's time is recorded (`samples_ms`) and summarized as median and IQR. The breakdown into Cayley /
permutation / matmul / other comes from a separate torch.profiler pass: each op's self time (device time on
GPU) is classified by op name and input shapes (`classify_op`); forward comes from a forward-only profile,
backward from the forward+backward profile minus it.
"""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn

from ..backends import run_facts
from ..capture import graph_callable
from ..flops import LINEAR, layer_fwd_bwd_flops
from ..measure import apply_injected_delay, bf16_peak_flops, injected_delay_ms, summarize
from ..methods import get_method
from .training import DTYPES

CATEGORIES = ("cayley", "permutation", "matmul", "other")
PERM_OPS = ("index_select", "index_add", "index_put", "gather", "scatter", "index_copy", "aten::index",
            "index_backward")
MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::linear", "aten::matmul",
              "aten::_efficientzerotensor", "linalg_solve", "linalg_lu", "aten::einsum")


def build_layer(cfg: dict, device, dtype) -> nn.Module:
    """nn.Linear, or the method's own single layer (MethodSpec.build_layer), as mid-training."""
    fin, fout, b = cfg["in_features"], cfg["out_features"], cfg.get("block_size")
    if cfg["method"] == LINEAR:
        return nn.Linear(fin, fout, bias=False, device=device, dtype=dtype)
    spec = get_method(cfg["method"])
    if spec.build_layer is None:
        raise ValueError(f"method {cfg['method']} has no single-layer form")
    return spec.build_layer(fin, fout, b, cfg, device, dtype)


def _is_block_shaped(shape, b: int | None) -> bool:
    """Tensors of the Cayley work: stacks of b x b blocks, flattened blocks (k, b*b), packed params."""
    if not shape or not b:
        return False
    if len(shape) >= 2 and shape[-1] == shape[-2] and shape[-1] <= b:
        return True
    return len(shape) == 2 and shape[-1] == b * b


def classify_op(name: str, shapes, layer_dims: tuple[int, int], block_size: int | None = None,
                tokens: int | None = None) -> str:
    """Map one profiled op to a latency category from its name and input shapes.

    cayley       ops on b x b blocks or packed skew parameters (building Q, the Neumann series, grads);
                 fused Triton kernels named *cayley*
    permutation  gathers/scatters of activations, dense permutation-matrix products of weight-centric
                 POET (square dim x dim with dim a layer side), fused Triton gather+block kernels
    matmul       every other matrix product (the W0 / weight GEMMs, block-diagonal activations products)
    other        elementwise, copies, concatenation, allocation
    """
    lname = name.lower()
    if "cayley" in lname:
        return "cayley"
    if "perm" in lname or "block" in lname or "to_rows" in lname or "from_rows" in lname:
        return "permutation"  # fused Triton gather + block-diagonal kernels; the row design's poetx:: ops
    dims = [tuple(s) for s in (shapes or []) if s]
    has_tokens = tokens is not None and any(s[0] == tokens for s in dims)
    if any(k in name for k in PERM_OPS):
        if not has_tokens and dims and _is_block_shaped(dims[0], block_size):
            return "cayley"
        return "permutation"
    if any(k in name for k in MATMUL_OPS):
        if not has_tokens and dims and all(_is_block_shaped(s, block_size) for s in dims):
            return "cayley"
        if (not has_tokens and dims and all(len(s) == 2 and s[0] == s[1] for s in dims)
                and dims[0][0] in layer_dims):
            return "permutation"
        return "matmul"
    return "other"


def _profile_categories(fn, n_iter: int, device, layer_dims, block_size=None, tokens=None) -> dict:
    acts = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        acts.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=acts, record_shapes=True) as prof:
        for _ in range(n_iter):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
    out = dict.fromkeys(CATEGORIES, 0.0)
    for evt in prof.key_averages(group_by_input_shape=True):
        if evt.key.startswith(("ProfilerStep", "autograd::engine")) and device.type != "cuda":
            continue
        # kernel rows repeat the device time their launching op already holds as self device time;
        # Triton launches are attributed through the record_function ranges around them
        if device.type == "cuda" and evt.device_type != torch.autograd.DeviceType.CPU:
            continue
        t = evt.self_device_time_total if device.type == "cuda" else evt.self_cpu_time_total
        if t <= 0:
            continue
        out[classify_op(evt.key, evt.input_shapes, layer_dims, block_size, tokens)] += t / 1e3 / n_iter  # us -> ms
    return out


def _time_cpu(fn, warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    return samples


def run_layer_point(cfg: dict) -> dict:
    device = torch.device(cfg["device"])
    dtype = DTYPES[cfg["dtype"]]
    torch.manual_seed(cfg["seed"])
    layer = build_layer(cfg, device, dtype)
    x = torch.randn(cfg["tokens"], cfg["in_features"], device=device, dtype=dtype, requires_grad=True)
    gy = torch.randn(cfg["tokens"], cfg["out_features"], device=device, dtype=dtype)

    def fwd():
        with torch.no_grad():
            layer(x)

    def fwd_train():
        return layer(x)

    def fwd_bwd():
        layer(x).backward(gy)
        x.grad = None
        for p in layer.parameters():
            p.grad = None

    eager_fwd_bwd = fwd_bwd
    delay_ms = injected_delay_ms()
    mode = cfg.get("compile", "none")
    if mode == "compile":
        layer = torch.compile(layer)
    elif mode == "cudagraph":
        fwd_bwd = graph_callable(fwd_bwd)

    if delay_ms:  # the gate's self-test: every timed call (not the plain peak-memory pass) gets slower
        timed_call = fwd_bwd

        def fwd_bwd():
            timed_call()
            apply_injected_delay(delay_ms, device.type == "cuda")

    repeats, warmup = cfg.get("repeats", 50), cfg.get("warmup_steps", 10)
    if device.type == "cuda":
        import triton.testing

        # every repeat's time (CUDA events, L2 flushed before each), so the gate can test them
        samples = [float(t) for t in triton.testing.do_bench(
            fwd_bwd, warmup=max(25, warmup), rep=max(100, repeats * 2), return_mode="all")]
        s = summarize(samples)
        median, iqr = s["median"], s["iqr"]
        qf = triton.testing.do_bench(fwd_train, warmup=25, rep=100, quantiles=[0.25, 0.5, 0.75])
        fwd_ms = qf[1]
    else:
        samples = _time_cpu(fwd_bwd, warmup, repeats)
        s = summarize(samples)
        median, iqr = s["median"], s["iqr"]
        fwd_ms = statistics.median(_time_cpu(fwd_train, 2, max(3, repeats // 2)))
    dims = (cfg["in_features"], cfg["out_features"])
    n_prof = 5 if device.type == "cuda" else 2
    extra = (cfg.get("block_size"), cfg["tokens"])
    fwd_cat = _profile_categories(fwd_train, n_prof, device, dims, *extra)
    # the eager call, whatever was timed: a CUDA-graph replay has no launching ops to attribute kernel time
    # to (its breakdown came out empty), and the eager call runs the same kernels
    all_cat = _profile_categories(eager_fwd_bwd, n_prof, device, dims, *extra)
    bwd_cat = {k: max(0.0, all_cat[k] - fwd_cat[k]) for k in CATEGORIES}
    flops = layer_fwd_bwd_flops(cfg["method"], dims[0], dims[1], cfg["tokens"], cfg.get("block_size"))
    metrics = {
        "fwd_bwd_ms": median,
        "fwd_bwd_ms_iqr": iqr,
        "fwd_ms": fwd_ms,
        "noisy": bool(iqr / median > 0.10) if median else None,
        "samples_ms": samples,
        "breakdown_ms": {"forward": fwd_cat, "backward": bwd_cat},
        "breakdown_source": "torch.profiler self %s time by op name and shape, eager calls"
                            % ("device" if device.type == "cuda" else "CPU"),
        "flops": flops,
        "tflops": flops / (median * 1e-3) / 1e12 if median else None,
        "trainable_params": sum(p.numel() for p in layer.parameters() if p.requires_grad),
        "total_params": sum(p.numel() for p in layer.parameters()),
    }
    metrics.update(run_facts(cfg))
    if delay_ms:
        metrics["injected_delay_ms"] = delay_ms
    if device.type == "cuda":
        from ..env import static_env

        peak = bf16_peak_flops(static_env().get("device_name"), cfg["dtype"])
        metrics["mfu"] = metrics["tflops"] * 1e12 / peak if peak and metrics["tflops"] else None
        # peak of one plain forward+backward only (not do_bench's L2-flush buffer or the profiler)
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        eager_fwd_bwd()
        torch.cuda.synchronize()
        metrics["peak_memory_bytes"] = torch.cuda.max_memory_allocated() - before
        metrics["memory_before_bytes"] = before
    return metrics
