"""The layer kind: forward+backward latency of one linear layer (nn.Linear or a method's single layer)
with its Cayley / permutation / matmul breakdown. The measurement is poetx_bench.points.layer_timing."""

from __future__ import annotations

from dataclasses import dataclass

from .base import KindConfig, PointKind, RunContext, SuiteInput, TimedMetric, knob
from .grid import GRID_KEYS, apply_overrides, block_tag, check_grid, describe_tags, label_head, skip_reason
from .validate import err, positive_ints


@dataclass(kw_only=True)
class LayerConfig(KindConfig):
    """One layer point. Field order is the row's key order; knobs are what a suite sets."""

    kind: str = "layer"
    method: str
    in_features: int
    out_features: int
    tokens: int
    block_size: int | None
    device: str
    dtype: str = knob("auto")
    seed: int = knob(0)
    backend: str = knob("torch")
    repeats: int = knob(50)
    warmup_steps: int = knob(10)
    timeout: float = knob(900)
    compile: str = knob("none", added=True)
    block_impl: str = knob("auto", added=True)
    cayley_scope: str = knob("layer", added=True)
    cayley_keep: str = knob("params", added=True)
    checkpointing: bool = knob(False, added=True)  # a train key; layer configs carry its default


SUITE_KEYS = {**GRID_KEYS, "shapes": (list, True), "tokens": (list, True)}


def layer_methods() -> tuple[str, ...]:
    """nn.Linear beside every method with a single-layer form."""
    from ..flops import LINEAR
    from ..methods import METHODS

    return (LINEAR, *(name for name, spec in METHODS.items() if spec.build_layer is not None))


def expand(inp: SuiteInput) -> list[dict]:
    from ..flops import LINEAR

    src, raw, device = inp.src, inp.raw, inp.device
    grid = check_grid(inp, LayerConfig.defaults(), layer_methods())
    shapes = raw["shapes"]
    for s in shapes:
        if (not isinstance(s, list) or len(s) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in s)):
            raise err(src, "shapes", s, "must be [in_features, out_features] of positive integers")
    tokens = positive_ints(src, "tokens", raw["tokens"])
    configs = []
    for method in grid.methods:
        for fin, fout in shapes:
            for n in tokens:
                for b in (grid.block_sizes if method != LINEAR else [None]):
                    if b is not None and b > min(fin, fout):
                        raise err(src, "block_sizes", b, f"is larger than the layer shape {fin}x{fout}")
                    cfg = LayerConfig(method=method, in_features=fin, out_features=fout, tokens=n,
                                      block_size=b, device=device, **grid.fixed)
                    configs += apply_overrides(cfg.to_dict(), grid.overrides, device)
    return configs


def run(cfg: dict, ctx: RunContext) -> dict:
    from .layer_timing import run_layer_point

    return run_layer_point(cfg)


def describe(cfg: dict) -> str:
    tags = describe_tags(cfg, LayerConfig.added_defaults())
    return f"{cfg['method']} {cfg['in_features']}->{cfg['out_features']} N{cfg['tokens']}{block_tag(cfg)}{tags}"


def label(p, with_model: bool = True) -> str:
    parts = label_head(p)
    parts += [f"{p.cfg('in_features', '?')}->{p.cfg('out_features', '?')}", f"T{p.cfg('tokens', '?')}"]
    return " ".join(parts)


def estimate_seconds(cfg: dict, device: str) -> float:
    """Process start-up plus the timed and profiled calls at a nominal rate."""
    from ..flops import layer_fwd_bwd_flops

    gpu = device == "cuda"
    rate = 300e12 if gpu else 2e10
    startup = 20.0 if gpu else 6.0
    f = layer_fwd_bwd_flops(cfg["method"], cfg["in_features"], cfg["out_features"], cfg["tokens"],
                            cfg.get("block_size"))
    return startup + f / rate * (cfg.get("repeats", 50) * 3 + 40)


KIND = PointKind(
    name="layer", description="one linear layer's forward+backward latency and its breakdown",
    config=LayerConfig, suite_keys=SUITE_KEYS, expand=expand, run=run, describe=describe,
    estimate_seconds=estimate_seconds, label=label,
    gated_metrics=("peak_memory_bytes", "fwd_bwd_ms", "trainable_params", "total_params"),
    timed_metrics={"fwd_bwd_ms": TimedMetric(("fwd_bwd_ms_samples", "samples_ms"))},
    skip_reason=lambda cfg: skip_reason(cfg, multiprocess=False),
)
