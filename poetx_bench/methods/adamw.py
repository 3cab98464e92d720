"""AdamW on every parameter: `adamw` (parameters and states in the model dtype, pure bf16 on GPU, as the
POET-X paper ran it) and `adamw-mixed` (float32 master weights and states, autocast forward)."""

from __future__ import annotations

import torch

from .base import BETAS, HParam, MergeHook, MethodSpec, Prepared, adamw, materialize_on
from .flops import dense_train_flops

HPARAMS = {
    "lr": HParam(float, 1e-3, "learning rate"),
    "weight_decay": HParam(float, 0.0, "decoupled weight decay"),
    "betas": BETAS,
    "eps": HParam(float, 1e-8, "Adam epsilon"),
}


def _build(master_fp32: bool):
    def build(model, block_size, hp, ctx) -> Prepared:
        if master_fp32:
            model.float()
        device_type = materialize_on(model, ctx.device, ctx.seed)
        opt = adamw(model.parameters(), device_type, lr=hp["lr"], betas=tuple(hp["betas"]),
                    weight_decay=hp["weight_decay"], eps=hp["eps"])
        autocast = None
        if master_fp32 and ctx.compute_dtype is not None and ctx.compute_dtype != torch.float32:
            autocast = ctx.compute_dtype
        return Prepared(model, opt, MergeHook(model, opt, ctx.merge_every, autocast))
    return build


SPECS = [
    MethodSpec("adamw", "AdamW", "#1f77b4",
               "AdamW, parameters and states in the model dtype (pure bf16 on GPU)",
               build=_build(False), train_flops=dense_train_flops, hparams=HPARAMS),
    MethodSpec("adamw-mixed", "AdamW (mixed)", "#17becf",
               "AdamW, fp32 master weights and states, autocast forward",
               build=_build(True), train_flops=dense_train_flops, hparams=HPARAMS),
]
