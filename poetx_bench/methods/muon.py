"""Muon (torch.optim.Muon, torch >= 2.9) on the 2-D hidden weight matrices, with Nesterov momentum and
Newton-Schulz orthogonalised updates; AdamW on everything else (embeddings, lm_head, norms, biases)."""

from __future__ import annotations

import torch
from torch import nn

from .base import BETAS, CombinedOptimizer, HParam, MergeHook, MethodSpec, Prepared, adamw, materialize_on
from .flops import dense_train_flops

HPARAMS = {
    "lr": HParam(float, 0.02, "Muon learning rate of the hidden matrices"),
    "momentum": HParam(float, 0.95, "Muon momentum (Nesterov)"),
    "weight_decay": HParam(float, 0.0, "Muon decoupled weight decay"),
    "ns_steps": HParam(int, 5, "Newton-Schulz iterations"),
    "adjust_lr_fn": HParam(str, "original", "'original' or 'match_rms_adamw' (torch.optim.Muon)"),
    "adamw_lr": HParam(float, 1e-3, "AdamW learning rate of the other parameters"),
    "adamw_weight_decay": HParam(float, 0.0, "AdamW weight decay of the other parameters"),
    "betas": BETAS,
}


def hidden_matrices(model: nn.Module) -> list[nn.Parameter]:
    """The 2-D weights of the hidden linear layers: every nn.Linear but lm_head (embeddings and norms are
    not linears)."""
    return [m.weight for name, m in model.named_modules()
            if isinstance(m, nn.Linear) and name.rsplit(".", 1)[-1] != "lm_head" and m.weight.ndim == 2]


def build(model, block_size, hp, ctx) -> Prepared:
    device_type = materialize_on(model, ctx.device, ctx.seed)
    hidden = hidden_matrices(model)
    ids = {id(p) for p in hidden}
    rest = [p for p in model.parameters() if id(p) not in ids]
    muon = torch.optim.Muon(hidden, lr=hp["lr"], momentum=hp["momentum"], nesterov=True,
                            weight_decay=hp["weight_decay"], ns_steps=hp["ns_steps"],
                            adjust_lr_fn=hp["adjust_lr_fn"])
    other = adamw(rest, device_type, lr=hp["adamw_lr"], betas=tuple(hp["betas"]),
                  weight_decay=hp["adamw_weight_decay"]) if rest else None
    opt = CombinedOptimizer(muon, other)
    return Prepared(model, opt, MergeHook(model, opt, ctx.merge_every))


SPECS = [
    MethodSpec("muon", "Muon", "#6a3d9a", "Muon (Nesterov) on the hidden matrices, AdamW on the rest",
               build=build, train_flops=dense_train_flops, hparams=HPARAMS),
]
