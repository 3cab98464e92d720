"""POET, weight-centric (dense R W0 P every forward), and the training setup the whole POET family shares.

Defaults follow the POET-X paper: skew parameters lr 5e-4 scaled by 0.5 (so 2.5e-4), no weight decay,
betas (0.9, 0.999), eps 1e-6; base parameters (embeddings, norms, lm_head, biases) lr 1e-3; merge every
`merge_every` steps (fold into W0, new permutations, zero skew parameters and their Adam state).
"""

from __future__ import annotations

import torch

from ..reference.convert import convert_model
from .base import BETAS, HParam, MergeHook, MethodSpec, Prepared, adamw, materialize_on, poet_layers
from .flops import poet_train_flops

HPARAMS = {
    "lr": HParam(float, 5e-4, "skew-parameter learning rate (before lr_scale)"),
    "lr_scale": HParam(float, 0.5, "factor on lr for the skew parameters"),
    "eps": HParam(float, 1e-6, "Adam epsilon of the skew parameters"),
    "base_lr": HParam(float, 1e-3, "learning rate of embeddings, norms, lm_head, biases"),
    "betas": BETAS,
}


def build_poet_family(method: str):
    """The build of a POET-family method: convert the linears (lm_head excluded), freeze W0, AdamW on the
    skew parameters and on the rest, and a merge hook."""

    def build(model, block_size, hp, ctx) -> Prepared:
        if not block_size or block_size <= 0:
            raise ValueError(f"method {method} needs a positive block_size, got {block_size!r}")
        convert_model(model, method, block_size, **ctx.layer_opts)
        device_type = materialize_on(model, ctx.device, ctx.seed)
        layers = poet_layers(model)
        skew = [p for layer in layers for p in (layer.skew_in, layer.skew_out)]
        frozen = {id(layer.weight) for layer in layers}
        special = frozen | {id(p) for p in skew}
        base = [p for p in model.parameters() if id(p) not in special]
        for p in model.parameters():
            p.requires_grad_(id(p) not in frozen)
        groups = [
            {"params": skew, "lr": hp["lr"] * hp["lr_scale"], "weight_decay": 0.0, "eps": hp["eps"]},
            {"params": base, "lr": hp["base_lr"], "weight_decay": 0.0},
        ]
        opt = adamw([g for g in groups if g["params"]], device_type, betas=tuple(hp["betas"]))
        return Prepared(model, opt, MergeHook(model, opt, ctx.merge_every, seed=ctx.seed))
    return build


def mid_training(layer):
    """Random permutations (as after a merge: gathers are not contiguous) and non-trivial transforms, as
    mid-training: what a layer benchmark should time."""
    layer.redraw_permutations()
    with torch.no_grad():
        layer.skew_in.normal_(0, 1e-2)
        layer.skew_out.normal_(0, 1e-2)
    return layer


def _poet_layer(fin, fout, b, cfg, device, dtype):
    from ..reference.poet import POETLinear

    return mid_training(POETLinear(fin, fout, b, device=device, dtype=dtype))


SPECS = [
    MethodSpec("poet", "POET", "#d62728", "original weight-centric POET (dense R W0 P every forward)",
               build=build_poet_family("poet"), train_flops=poet_train_flops, hparams=HPARAMS,
               uses_blocks=True, build_layer=_poet_layer),
]
