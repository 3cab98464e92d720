"""The kernel kind: one POET-X kernel op (or the torch ops it replaces) at one shape, block size and
backend, timed alone. Metric `kernel_ms`: the median of every repeat's time (`samples_ms`), from
triton.testing.do_bench on CUDA (CUDA events, L2 flushed before each) or a perf_counter loop on CPU.

On CPU a Triton point runs only under TRITON_INTERPRET=1 (the interpreter: checks that it runs, its times
mean nothing for a GPU); otherwise it is skipped with that reason, like layer points of the triton backend.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from .base import KindConfig, PointKind, RunContext, SuiteInput, TimedMetric, knob, optional
from .kernel_ops import IMPLS, OPS, TOKEN_FREE
from .validate import err, one_of, positive_ints, resolve_dtype, validate_fixed

BACKENDS = ("triton", "torch")
KERNEL_DTYPES = ("float32", "bfloat16", "float16")
SUITE_DEFAULTS = {"backend": list(BACKENDS), "tokens": [2048]}
SUITE_KEYS = {
    "ops": (list, True), "dims": (list, True), "block_sizes": (list, True), "tokens": (list, False),
    "backend": ((str, list), False), "dtype": (str, False), "terms": (int, False), "seed": (int, False),
    "repeats": (int, False), "warmup_steps": (int, False),
}


@dataclass(kw_only=True)
class KernelConfig(KindConfig):
    """One kernel point; `tokens` is absent for the ops that work on parameters only (Cayley)."""

    kind: str = "kernel"
    op: str
    backend: str
    dim: int
    tokens: int | None = optional()
    block_size: int
    device: str
    dtype: str = knob("auto")
    terms: int = knob(3)           # Neumann terms of the Cayley ops
    seed: int = knob(0)
    repeats: int = knob(50)        # CPU: timed calls; CUDA: do_bench runs max(100, 2 * repeats) ms
    warmup_steps: int = knob(10)   # CPU: untimed calls first; CUDA: do_bench warms up max(25, this) ms
    timeout: float = knob(600)


def expand(inp: SuiteInput) -> list[dict]:
    src, raw, device = inp.src, {**SUITE_DEFAULTS, **inp.raw}, inp.device
    fixed = {k: raw.get(k, v) for k, v in KernelConfig.defaults().items()}
    validate_fixed(src, fixed)
    fixed["dtype"] = resolve_dtype(fixed["dtype"], device)
    if fixed["dtype"] not in KERNEL_DTYPES:
        raise err(src, "dtype", fixed["dtype"], f"must be one of auto, {', '.join(KERNEL_DTYPES)} for kernel points")
    if isinstance(fixed["terms"], bool) or not isinstance(fixed["terms"], int) or fixed["terms"] <= 0:
        raise err(src, "terms", fixed["terms"], "must be a positive integer")
    ops = one_of(src, "ops", raw["ops"], OPS)
    backends = one_of(src, "backend", raw["backend"], BACKENDS, " (or a list of them)")
    dims = positive_ints(src, "dims", raw["dims"])
    blocks = positive_ints(src, "block_sizes", raw["block_sizes"])
    tokens = positive_ints(src, "tokens", raw["tokens"])
    for op in ops:
        if not set(IMPLS[op]) & set(backends):
            raise err(src, "ops", op, f"has no implementation on backend {', '.join(backends)} "
                      f"(it has: {', '.join(IMPLS[op])})")
    for d in dims:
        for b in blocks:
            if b > d:
                raise err(src, "block_sizes", b, f"is larger than dim {d}")
    configs: dict[str, dict] = {}  # the Cayley ops ignore tokens: one point, not one per token count
    for op in ops:
        for d in dims:
            for b in blocks:
                for n in ([None] if op in TOKEN_FREE else tokens):
                    for backend in backends:
                        if backend in IMPLS[op]:
                            cfg = KernelConfig(op=op, backend=backend, dim=d, tokens=n, block_size=b,
                                               device=device, **fixed).to_dict()
                            configs.setdefault(json.dumps(cfg, sort_keys=True), cfg)
    return list(configs.values())


def _time_cpu(fn, clear, warmup: int, repeats: int) -> list[float]:
    import time

    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        for t in clear:
            t.grad = None
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    return samples


def run(cfg: dict, ctx: RunContext) -> dict:
    import torch

    from ..measure import apply_injected_delay, injected_delay_ms, kernel_rates, summarize
    from .kernel_ops import KernelInputs, case

    device = torch.device(cfg["device"])
    torch.manual_seed(cfg["seed"])
    inp = KernelInputs(device, getattr(torch, cfg["dtype"]), cfg.get("tokens") or 1, cfg["dim"], cfg["block_size"],
                       cfg["terms"], seed=cfg["seed"], triton_cayley=cfg["backend"] == "triton")
    fn, clear = case(inp, cfg["op"], cfg["backend"])
    delay_ms = injected_delay_ms()
    if delay_ms:  # the gate's self-test: every timed call gets slower
        timed_call = fn

        def fn():
            timed_call()
            apply_injected_delay(delay_ms, device.type == "cuda")

    fn()  # compile / warm caches outside the timed region
    repeats, warmup = cfg["repeats"], cfg["warmup_steps"]
    if device.type == "cuda":
        import triton.testing

        samples = [float(t) for t in triton.testing.do_bench(
            fn, warmup=max(25, warmup), rep=max(100, repeats * 2), grad_to_none=clear, return_mode="all")]
        timer = "triton.testing.do_bench"
    else:
        samples = _time_cpu(fn, clear or [], warmup, repeats)
        timer = "perf_counter"
    s = summarize(samples)
    flop, nbytes = inp.costs().get(cfg["op"], (None, None))  # none for the torch forward+backward
    device_name = None
    if device.type == "cuda":  # floors and latency verdicts judge GPU times only (shared/perf/floors.md)
        from ..env import static_env

        device_name = static_env().get("device_name")
    metrics = {
        "kernel_ms": s["median"], "kernel_ms_iqr": s["iqr"], "noisy": s["noisy"], "samples_ms": samples,
        "n_samples": s["n"], "timer": timer, "n_blocks": inp.n,
        **kernel_rates(flop, nbytes, s["median"], device_name, cfg["dtype"]),
    }
    if delay_ms:
        metrics["injected_delay_ms"] = delay_ms
    return metrics


def skip_reason(cfg: dict) -> str | None:
    if cfg["backend"] != "triton":
        return None
    from ..kernels import triton_available
    from ..kernels._loader import interpret_requested

    if not triton_available():
        return "backend=triton but triton is not importable"
    if cfg["device"] != "cuda" and not interpret_requested():
        return ("backend=triton kernel points on CPU need TRITON_INTERPRET=1 (the interpreter; its times say "
                "nothing about a GPU)")
    return None


def describe(cfg: dict) -> str:
    n = f" N{cfg['tokens']}" if cfg.get("tokens") else ""
    return f"{cfg['op']} {cfg['backend']} D{cfg['dim']} b{cfg['block_size']}{n} {cfg['dtype']}"


def label(p, with_model: bool = True) -> str:
    n = f" T{p.cfg('tokens')}" if p.cfg("tokens") else ""
    return f"{p.cfg('op')} {p.cfg('backend')} D{p.cfg('dim')} b{p.block_size}{n} {p.cfg('dtype')}"


def estimate_seconds(cfg: dict, device: str) -> float:
    """Process start-up plus do_bench's budget (CUDA) or the timed calls at a nominal rate (CPU; the
    Triton interpreter runs far slower)."""
    from .kernel_ops import kernel_costs

    if device == "cuda":
        return 20.0 + (max(25, cfg["warmup_steps"]) + max(100, 2 * cfg["repeats"])) / 1e3 * 3
    b, d = cfg["block_size"], cfg["dim"]
    flop = kernel_costs(b, d // b, cfg.get("tokens") or 1, d, cfg["terms"], 4).get(cfg["op"], (1e6, 0))[0]
    slow = 200.0 if cfg["backend"] == "triton" else 1.0
    return 6.0 + flop / 2e10 * slow * (cfg["repeats"] + cfg["warmup_steps"] + 1)


KIND = PointKind(
    name="kernel", description="one kernel op at one shape / block size / backend, timed alone",
    config=KernelConfig, suite_keys=SUITE_KEYS, expand=expand, run=run, describe=describe,
    estimate_seconds=estimate_seconds, label=label, gated_metrics=("kernel_ms",),
    timed_metrics={"kernel_ms": TimedMetric(("samples_ms",))}, skip_reason=skip_reason,
    key_fields=("op", "dim", "terms"),
)
