"""Training methods: how a model is converted, which parameters train, and with which optimizer.

Registry names: adamw, adamw-mixed, poet, poetx-fast, poetx-mem.

Defaults follow the POET-X paper: POET skew parameters lr 5e-4 scaled by 0.5 (so 2.5e-4), no weight
decay, betas (0.9, 0.999), eps 1e-6; base parameters (embeddings, norms, lm_head, biases) lr 1e-3.
`adamw` is pure low precision (parameters and optimizer states in the model dtype, as the paper ran it);
`adamw-mixed` keeps float32 master weights and states and autocasts the forward to the compute dtype.
All optimizers use torch's fused (CUDA) or foreach (CPU) AdamW: a per-parameter Python loop makes a
whole-model step host-bound at small batch.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from .convert import convert_model
from .layer_base import POETLayerBase
from .models import materialize


@dataclass(frozen=True)
class MethodSpec:
    name: str
    uses_blocks: bool
    master_fp32: bool
    description: str


METHODS: dict[str, MethodSpec] = {
    m.name: m
    for m in (
        MethodSpec("adamw", False, False, "AdamW, parameters and states in the model dtype (pure bf16 on GPU)"),
        MethodSpec("adamw-mixed", False, True, "AdamW, fp32 master weights and states, autocast forward"),
        MethodSpec("poet", True, False, "original weight-centric POET (dense R W0 P every forward)"),
        MethodSpec("poetx-fast", True, False, "POET-X input-centric, autograd saves activations"),
        MethodSpec("poetx-mem", True, False, "POET-X input-centric, recomputes activations in backward"),
    )
}

DEFAULTS = {
    "poet_lr": 5e-4,
    "poet_lr_scale": 0.5,
    "poet_eps": 1e-6,
    "base_lr": 1e-3,
    "adamw_lr": 1e-3,
    "adamw_weight_decay": 0.0,
    "betas": (0.9, 0.999),
    "merge_every": 200,
}


LAYER_OPTIONS = ("cayley", "neumann_terms", "poetx_cls")


class Prepared(NamedTuple):
    model: nn.Module
    optimizer: torch.optim.Optimizer
    step_hook: MergeHook


def poet_layers(model: nn.Module) -> list[POETLayerBase]:
    return [m for m in model.modules() if isinstance(m, POETLayerBase)]


class MergeHook:
    """Call after every optimizer step: every `merge_every` steps, fold the orthogonal transforms into W0,
    redraw permutations, zero the skew parameters and reset their Adam state (moments and step count).

    The permutations of merge k come from one generator seeded with (seed, k), shared by the layers in
    model order: every process of a data-parallel run draws the same ones, whatever its own RNG state."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, merge_every: int,
                 autocast_dtype: torch.dtype | None = None, seed: int | None = None):
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


def _adamw(groups, device_type: str, **kw) -> torch.optim.AdamW:
    impl = {"fused": True} if device_type == "cuda" else {"foreach": True}
    return torch.optim.AdamW(groups, **kw, **impl)


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def prepare(model: nn.Module, method: str, block_size: int | None = None, *, device=None,
            seed: int | None = None, merge_every: int | None = None, **options) -> Prepared:
    """Convert `model` for `method` and build its optimizer and per-step merge hook.

    `model` may still be on the meta device (see models.build_model(meta=True)); it is then converted
    there and materialised on `device`, so no weight is allocated twice. Options: poet_lr, poet_lr_scale,
    poet_eps, base_lr, adamw_lr, adamw_weight_decay, betas, compute_dtype (for adamw-mixed autocast),
    and layer options (cayley, neumann_terms; poetx_cls, the POET-X layer class of a backend).
    """
    if method not in METHODS:
        raise KeyError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    spec = METHODS[method]
    cfg = {**DEFAULTS, **{k: v for k, v in options.items() if k in DEFAULTS}}
    layer_opts = {k: v for k, v in options.items() if k in LAYER_OPTIONS}
    compute_dtype = options.get("compute_dtype")
    unknown = set(options) - set(DEFAULTS) - set(LAYER_OPTIONS) - {"compute_dtype"}
    if unknown:
        raise TypeError(f"unknown prepare() options: {sorted(unknown)}")
    if merge_every is None:
        merge_every = cfg["merge_every"]

    if spec.uses_blocks:
        if not block_size or block_size <= 0:
            raise ValueError(f"method {method} needs a positive block_size, got {block_size!r}")
        convert_model(model, method, block_size, **layer_opts)
    elif spec.master_fp32:
        model.float()
    if _device_of(model).type == "meta":
        materialize(model, device or "cpu", seed)
    device_type = _device_of(model).type

    autocast_dtype = None
    if spec.master_fp32 and compute_dtype is not None and compute_dtype != torch.float32:
        autocast_dtype = compute_dtype

    if spec.uses_blocks:
        layers = poet_layers(model)
        skew = [p for layer in layers for p in (layer.skew_in, layer.skew_out)]
        frozen = {id(layer.weight) for layer in layers}
        special = frozen | {id(p) for p in skew}
        base = [p for p in model.parameters() if id(p) not in special]
        for p in model.parameters():
            p.requires_grad_(id(p) not in frozen)
        groups = [
            {"params": skew, "lr": cfg["poet_lr"] * cfg["poet_lr_scale"], "weight_decay": 0.0,
             "eps": cfg["poet_eps"]},
            {"params": base, "lr": cfg["base_lr"], "weight_decay": 0.0},
        ]
        optimizer = _adamw([g for g in groups if g["params"]], device_type, betas=cfg["betas"])
    else:
        optimizer = _adamw(model.parameters(), device_type, lr=cfg["adamw_lr"], betas=cfg["betas"],
                           weight_decay=cfg["adamw_weight_decay"])
    return Prepared(model, optimizer, MergeHook(model, optimizer, merge_every, autocast_dtype, seed))

