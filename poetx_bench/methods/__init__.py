"""Training methods: one module per method, one registry (name -> MethodSpec).

Each method module defines `SPECS`, a list of MethodSpec (base.py): how the method wraps a model and
builds its optimizer and step hook, its hyperparameter schema (suites set them per method under
`[hparams.METHOD]`), its model-FLOP formula, its display name and colour. The harness (suites, training
points, `list`, report, FLOPs) dispatches through `METHODS` / `get_method`; adding a method is one module
here plus one line in `_MODULES`.
"""

from __future__ import annotations

import importlib

from .base import BuildContext, HParam, MergeHook, MethodSpec, Prepared, poet_layers

# the registry: one line per method module, in display order
_MODULES = (
    "adamw",
    "poet",
    "poetx",
    "poetxq",
    "muon",
    "adamw8bit",
    "lora",
    "galore",
    "apollo",
)

METHODS: dict[str, MethodSpec] = {
    spec.name: spec for mod in _MODULES for spec in importlib.import_module(f"{__name__}.{mod}").SPECS
}

# the method other methods' speed is set beside ("relative_to_adamw" in the report)
BASELINE_METHOD = "adamw"

LAYER_OPTIONS = ("cayley", "neumann_terms", "poetx_cls")

__all__ = ["BASELINE_METHOD", "METHODS", "BuildContext", "HParam", "MergeHook", "MethodSpec", "Prepared",
           "get_method", "poet_layers", "prepare"]


def get_method(name: str) -> MethodSpec:
    if name not in METHODS:
        raise KeyError(f"unknown method {name!r}; known: {', '.join(METHODS)}")
    return METHODS[name]


def prepare(model, method: str, block_size: int | None = None, *, device=None, seed: int | None = None,
            merge_every: int | None = None, hparams: dict | None = None, backend: str | None = None,
            block_impl: str = "auto", cayley_keep: str = "params", checkpointing: bool = False,
            official_init: str = "own", **options) -> Prepared:
    """Wrap `model` for `method` and build its optimizer and per-step hook (see MethodSpec.build).

    `model` may still be on the meta device (reference.models.build_model(meta=True)); it is then converted
    there and materialised on `device`, so no weight is allocated twice. `hparams` override the method's
    defaults (unknown keys: ValueError). Options: compute_dtype (autocast of adamw-mixed) and layer options
    (cayley, neumann_terms; poetx_cls, the POET-X layer class of a backend). `checkpointing` runs every
    decoder block under torch.utils.checkpoint (checkpointing.py), whatever the method."""
    spec = get_method(method)
    unknown = set(options) - set(LAYER_OPTIONS) - {"compute_dtype"}
    if unknown:
        raise TypeError(f"unknown prepare() options: {sorted(unknown)}")
    ctx = BuildContext(device=device, seed=seed, merge_every=200 if merge_every is None else merge_every,
                       compute_dtype=options.get("compute_dtype"),
                       backend=backend if spec.uses_backend else None, block_impl=block_impl,
                       cayley_keep=cayley_keep, official_init=official_init,
                       layer_opts={k: v for k, v in options.items() if k in LAYER_OPTIONS})
    prepared = spec.build(model, block_size, spec.resolve_hparams(hparams), ctx)
    if checkpointing:
        from .checkpointing import enable_checkpointing

        enable_checkpointing(prepared.model)
    return prepared
