"""What every training method declares (MethodSpec) and the pieces methods share: the hyperparameter
schema (HParam), the prepared triple (model, optimizer, step hook), the per-step hook and the AdamW builder.

This module and the method modules may import the reference maths and models and the backends registry,
never the report or the gate (tests/test_layering.py checks it).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import nn

from ..reference.layer_base import POETLayerBase


@dataclass(frozen=True)
class HParam:
    """One hyperparameter a suite may set for a method: its type, default and meaning.
    `type` float accepts integers too; `length` makes it a list of that many numbers (e.g. betas)."""

    type: type
    default: Any
    help: str = ""
    length: int | None = None

    def check(self, value) -> str | None:
        """Why `value` is not valid for this hyperparameter, or None."""
        def number_ok(v) -> bool:
            if isinstance(v, bool):
                return self.type is bool
            if self.type is float:
                return isinstance(v, (int, float))
            return isinstance(v, self.type)

        if self.length is not None:
            if not isinstance(value, (list, tuple)) or len(value) != self.length or not all(map(number_ok, value)):
                return f"must be a list of {self.length} {self.type.__name__} values"
            return None
        if not number_ok(value):
            return f"must be of type {self.type.__name__}"
        return None


@dataclass(frozen=True)
class BuildContext:
    """Harness facts a method's build may use: where to put the model, its seed, the merge period, the
    compute dtype (autocast of mixed precision), the POET-X backend, block implementation and what its
    Cayley backward keeps, and
    layer options (cayley, neumann_terms, poetx_cls)."""

    device: Any = None
    seed: int | None = None
    merge_every: int = 200
    compute_dtype: torch.dtype | None = None
    backend: str | None = None
    block_impl: str = "auto"
    cayley_keep: str = "params"
    official_init: str = "own"  # the official backend's W0 / permutations: its own draws, or ours (parity)
    layer_opts: Mapping[str, Any] = field(default_factory=dict)


class Prepared(NamedTuple):
    model: nn.Module
    optimizer: Any  # torch.optim.Optimizer, or a CombinedOptimizer of several
    step_hook: MergeHook


@dataclass(frozen=True)
class MethodSpec:
    """A training method: how it wraps a model and builds its optimizer (`build`), its hyperparameters,
    its model-FLOP count per training step (`train_flops`), and how reports name and colour it.

    build(model, block_size, hp, ctx: BuildContext) -> Prepared, with `hp` the complete hyperparameters
        (defaults filled in) and `model` possibly still on the meta device.
    train_flops(cfg: LlamaConfig, block_size, tokens, seq_len, vocab) -> float
    build_layer(in_features, out_features, block_size, cfg, device, dtype) -> nn.Module, for layer suites
        (None: the method has no single-layer form).
    skip_reason(cfg: dict) -> str | None: why a point of this method cannot measure what it names (its
        package cannot run there, a compile setting it cannot capture); None: it can. The point is then
        recorded as skipped with that one-line reason (child.skip_reason).
    """

    name: str
    display_name: str
    color: str
    description: str
    build: Callable[..., Prepared]
    train_flops: Callable[..., float]
    hparams: Mapping[str, HParam] = field(default_factory=dict)
    uses_blocks: bool = False    # needs a block size (POET family); sweeps expand block_sizes for it
    uses_backend: bool = False   # the POET-X implementation registry (poetx_bench/backends) applies
    build_layer: Callable[..., nn.Module] | None = None
    poet_state: bool = True      # its layer holds POET's state (float W0): the correctness check can load
                                 # a POET layer's state into it and compare (POET-XQ stores W0 in int8)
    skip_reason: Callable[[dict], str | None] | None = None

    def resolve_hparams(self, given: Mapping | None) -> dict:
        """Defaults with `given` on top; an unknown key or bad value is a ValueError naming it."""
        given = dict(given or {})
        for key, value in given.items():
            if key not in self.hparams:
                raise ValueError(f"method {self.name}: unknown hyperparameter {key!r} "
                                 f"(known: {', '.join(self.hparams) or 'none'})")
            why = self.hparams[key].check(value)
            if why:
                raise ValueError(f"method {self.name}: hyperparameter {key}={value!r} {why}")
        return {k: given.get(k, h.default) for k, h in self.hparams.items()}


def poet_layers(model: nn.Module) -> list[POETLayerBase]:
    return [m for m in model.modules() if isinstance(m, POETLayerBase)]


class MergeHook:
    """Call after every optimizer step: every `merge_every` steps, fold the orthogonal transforms into W0,
    redraw permutations, zero the skew parameters and reset their Adam state (moments and step count).
    Methods without POET layers get one too (it never merges) for its autocast context.

    The permutations of merge k come from one generator seeded with (seed, k), shared by the layers in
    model order: every process of a data-parallel run draws the same ones, whatever its own RNG state."""

    def __init__(self, model: nn.Module, optimizer, merge_every: int, autocast_dtype: torch.dtype | None = None,
                 seed: int | None = None):
        self.layers = poet_layers(model)
        self.optimizer = optimizer
        self.merge_every = merge_every
        self.autocast_dtype = autocast_dtype
        self.seed = seed or 0
        self.merges = 0

    def generator(self) -> torch.Generator:
        """The permutation generator of the next merge: seeded from the shared seed and the merge count."""
        return torch.Generator().manual_seed((self.seed * 1_000_003 + self.merges + 1) % 2**63)

    def __call__(self, step: int) -> bool:
        """`step` counts completed optimizer steps (1-based). Returns True when a merge happened."""
        if not self.layers or self.merge_every <= 0 or step % self.merge_every:
            return False
        self.merge_now()
        return True

    @torch.no_grad()
    def merge_now(self) -> None:
        skew = []
        gen = self.generator()
        for layer in self.layers:
            layer.merge_and_reinit(gen)
            skew += [layer.skew_in, layer.skew_out]
        state = [self.optimizer.state[p] for p in skew if p in self.optimizer.state]
        tensors = [v for s in state for v in s.values() if torch.is_tensor(v)]
        floats = [t for t in tensors if t.is_floating_point()]
        if floats and not any(hasattr(t, "device_mesh") for t in floats):
            torch._foreach_zero_(floats)
        else:  # sharded (DTensor) state: one by one
            for t in floats:
                t.zero_()
        for t in tensors:
            if not t.is_floating_point():
                t.zero_()
        self.merges += 1

    def autocast(self, device_type: str):
        """The forward's autocast context for this method (a no-op unless mixed precision)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type, dtype=self.autocast_dtype)


class CombinedOptimizer:
    """Several optimizers stepped as one (e.g. a matrix optimizer for the hidden matrices, AdamW for the rest): the
    harness sees one `step`, `zero_grad`, `param_groups` and `state`."""

    def __init__(self, *optimizers):
        self.optimizers = [o for o in optimizers if o is not None]

    @property
    def param_groups(self) -> list[dict]:
        return [g for o in self.optimizers for g in o.param_groups]

    @property
    def state(self) -> dict:
        out = {}
        for o in self.optimizers:
            out.update(o.state)
        return out

    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for o in self.optimizers:
            o.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {"optimizers": [o.state_dict() for o in self.optimizers]}

    def load_state_dict(self, state: dict) -> None:
        for o, s in zip(self.optimizers, state["optimizers"], strict=True):
            o.load_state_dict(s)


def adamw(groups, device_type: str, **kw) -> torch.optim.AdamW:
    """torch's fused (CUDA) or foreach (CPU) AdamW: a per-parameter Python loop makes a whole-model step
    host-bound at small batch."""
    impl = {"fused": True} if device_type == "cuda" else {"foreach": True}
    return torch.optim.AdamW(groups, **kw, **impl)


def device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def materialize_on(model: nn.Module, device, seed: int | None) -> str:
    """Materialise a meta-device model on `device` (no weight allocated twice); its device type."""
    from ..reference.models import materialize

    if device_of(model).type == "meta":
        materialize(model, device or "cpu", seed)
    return device_of(model).type


def needs_package(module: str, dist: str, extra: Callable[[dict], str | None] | None = None):
    """A MethodSpec.skip_reason: a one-line reason when `module` (distribution `dist`, in the `baselines`
    extra) is not importable, else `extra`'s verdict."""
    def reason(cfg: dict) -> str | None:
        import importlib.util

        try:  # find_spec of a submodule imports its parent, which raises when the parent is missing
            missing = importlib.util.find_spec(module) is None
        except ModuleNotFoundError:
            missing = True
        if missing:
            return f"{dist} is not installed (pip install -e \".[baselines]\")"
        return extra(cfg) if extra else None
    return reason


BETAS = HParam(float, (0.9, 0.999), "Adam betas", length=2)
