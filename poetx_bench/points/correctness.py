"""The correctness kind: checks that say whether a measured layer computes what it claims.

  check = "layer-equivalence": POET-X (fast, mem; torch and, where it can run, triton) and POET in the
          working dtype against weight-centric POET in float64 on the same state, fresh random inputs and
          skew parameters: relative errors of the output and of the gradients w.r.t. x, skew_in, skew_out.
  check = "neumann-orthogonality": ||G^T G - I||_F of the truncated Cayley-Neumann series against ||Q||_2
          (float64 on CPU, whatever the sweep's device).

The `correctness` command (poetx_bench.correctness) is a sweep of these points with the defaults below.
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import KindConfig, PointKind, RunContext, SuiteInput, knob, optional
from .grid import uses_backend
from .validate import err, one_of, positive_ints, validate_fixed

EQUIVALENCE, NEUMANN = "layer-equivalence", "neumann-orthogonality"
CHECK_DTYPES = ("float32", "bfloat16")
TOKENS = 257  # rows of the random input of an equivalence check (odd: no tile-aligned luck)
# suite keys and their defaults: the `correctness` command runs exactly these
SUITE_DEFAULTS = {
    "checks": [EQUIVALENCE, NEUMANN],
    "shapes": [[256, 512, 64], [512, 256, 128], [320, 200, 64], [1024, 1024, 256]],  # in, out, block size
    "dtypes": list(CHECK_DTYPES),
    "backend": ["torch", "triton"],
    "neumann_block_sizes": [16, 64, 256],
    "terms": 3,
}
SUITE_KEYS = {
    "checks": (list, False), "methods": (list, False), "shapes": (list, False), "dtypes": (list, False),
    "backend": ((str, list), False), "neumann_block_sizes": (list, False), "terms": (int, False),
    "seed": (int, False),
}


@dataclass(kw_only=True)
class CorrectnessConfig(KindConfig):
    """One check. Fields a check does not use are absent from its config."""

    kind: str = "correctness"
    check: str
    method: str | None = optional()
    in_features: int | None = optional()
    out_features: int | None = optional()
    block_size: int
    terms: int | None = optional()
    dtype: str
    device: str
    backend: str | None = optional()
    seed: int = knob(0)
    timeout: float = knob(900, added=True)  # rows of the old in-process command had none


def poet_family() -> tuple[str, ...]:
    """Layers that hold POET's float state; POET-XQ (int8 W0) is checked against POET-X on its
    dequantized W0 in tests/test_poetxq.py instead."""
    from ..methods import METHODS

    return tuple(m for m, spec in METHODS.items() if spec.uses_blocks and spec.build_layer is not None
                 and spec.poet_state)


def expand(inp: SuiteInput) -> list[dict]:
    src, raw = inp.src, {**SUITE_DEFAULTS, "methods": list(poet_family()), **inp.raw}
    fixed = {k: raw.get(k, v) for k, v in CorrectnessConfig.defaults().items()}
    validate_fixed(src, fixed)
    checks = one_of(src, "checks", raw["checks"], (EQUIVALENCE, NEUMANN))
    methods = one_of(src, "methods", raw["methods"], poet_family())
    dtypes = one_of(src, "dtypes", raw["dtypes"], CHECK_DTYPES)
    backends = one_of(src, "backend", raw["backend"], ("torch", "triton"), " (or a list of them)")
    shapes = raw["shapes"]
    for s in shapes:
        if (not isinstance(s, list) or len(s) != 3
                or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in s)):
            raise err(src, "shapes", s, "must be [in_features, out_features, block_size] of positive integers")
        if s[2] > min(s[0], s[1]):
            raise err(src, "shapes", s, "has a block size larger than the layer")
    neumann = positive_ints(src, "neumann_block_sizes", raw["neumann_block_sizes"])
    terms = raw["terms"]
    if isinstance(terms, bool) or not isinstance(terms, int) or terms <= 0:
        raise err(src, "terms", terms, "must be a positive integer")
    configs = []
    if EQUIVALENCE in checks:
        for fin, fout, b in shapes:
            for dtype in dtypes:
                for method in methods:
                    for backend in (backends if uses_backend(method) else ["torch"]):
                        configs.append(CorrectnessConfig(
                            check=EQUIVALENCE, method=method, in_features=fin, out_features=fout, block_size=b,
                            dtype=dtype, device=inp.device, backend=backend, **fixed).to_dict())
    if NEUMANN in checks:
        for b in neumann:
            configs.append(CorrectnessConfig(check=NEUMANN, block_size=b, terms=terms, dtype="float64",
                                             device="cpu", **fixed).to_dict())
    return configs


def _rel(a, b) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-300))


def layer_equivalence(fin: int, fout: int, b: int, method: str, dtype: str, device: str, backend: str,
                      seed: int = 0, tokens: int = TOKENS, block_impl: str = "auto") -> dict:
    """Relative errors of one layer against float64 weight-centric POET on the same state (block_impl: how
    our triton backend runs its block work; bench/kernel_bench.py checks each)."""
    import torch

    from ..methods import get_method
    from ..reference.poet import POETLinear

    gen = torch.Generator().manual_seed(seed)
    ref = POETLinear(fin, fout, b, dtype=torch.float64)
    ref.redraw_permutations(gen)  # non-trivial permutations folded into W0, as after a merge
    with torch.no_grad():
        ref.skew_in.copy_(torch.randn(ref.skew_in.shape, generator=gen, dtype=torch.float64) * 0.02)
        ref.skew_out.copy_(torch.randn(ref.skew_out.shape, generator=gen, dtype=torch.float64) * 0.02)
    x = torch.randn(tokens, fin, generator=gen, dtype=torch.float64)
    gy = torch.randn(tokens, fout, generator=gen, dtype=torch.float64)

    def run(layer, xx, gg):
        xx = xx.clone().requires_grad_(True)
        y = layer(xx)
        y.backward(gg)
        return y.detach(), xx.grad, layer.skew_in.grad, layer.skew_out.grad

    expected = run(ref, x, gy)
    dt = getattr(torch, dtype)
    layer = get_method(method).build_layer(fin, fout, b, {"backend": backend, "block_impl": block_impl}, device, dt)
    layer.load_state_dict({k: v.to(device=device, dtype=dt if v.is_floating_point() else v.dtype)
                           for k, v in ref.state_dict().items()})
    got = run(layer, x.to(device, dt), gy.to(device, dt))
    names = ("output", "grad_input", "grad_skew_in", "grad_skew_out")
    return {f"rel_err_{n}": _rel(g.cpu(), e) for n, g, e in zip(names, got, expected)}


def run(cfg: dict, ctx: RunContext) -> dict:
    if cfg["check"] == NEUMANN:
        from ..reference.cayley import neumann_orthogonality_curve

        return {"curve": neumann_orthogonality_curve(b=cfg["block_size"], terms=cfg["terms"], seed=cfg["seed"])}
    return layer_equivalence(cfg["in_features"], cfg["out_features"], cfg["block_size"], cfg["method"],
                             cfg["dtype"], cfg["device"], cfg["backend"], seed=cfg["seed"])


def skip_reason(cfg: dict) -> str | None:
    """A triton check on CPU without the interpreter would silently check the torch path."""
    if cfg["check"] != EQUIVALENCE:
        return None
    from ..backends import skip_reason as backend_skip

    return backend_skip(cfg["method"], cfg.get("backend"), cfg["device"])


def describe(cfg: dict) -> str:
    if cfg["check"] == NEUMANN:
        return f"{NEUMANN} b{cfg['block_size']} terms={cfg['terms']}"
    return (f"{EQUIVALENCE} {cfg['method']} {cfg['in_features']}->{cfg['out_features']} b{cfg['block_size']} "
            f"{cfg['dtype']} backend={cfg['backend']}")


def label(p, with_model: bool = True) -> str:
    if p.cfg("check") == NEUMANN:
        return f"{NEUMANN} b{p.block_size} terms={p.cfg('terms')}"
    return (f"{p.cfg('check')} {p.method} {p.cfg('in_features', '?')}->{p.cfg('out_features', '?')} "
            f"b{p.block_size} {p.cfg('dtype')} {p.cfg('backend')}")


def estimate_seconds(cfg: dict, device: str) -> float:
    """Process start-up plus a float64 reference layer (seconds on CPU for the largest shape)."""
    startup = 20.0 if device == "cuda" else 6.0
    work = (cfg.get("in_features") or 0) * (cfg.get("out_features") or 0) / 1e6
    return startup + 2.0 * work


KIND = PointKind(
    name="correctness", description="POET / POET-X against float64 POET, and Neumann orthogonality",
    config=CorrectnessConfig, suite_keys=SUITE_KEYS, expand=expand, run=run, describe=describe,
    estimate_seconds=estimate_seconds, label=label, skip_reason=skip_reason, key_fields=("check", "terms"),
)
