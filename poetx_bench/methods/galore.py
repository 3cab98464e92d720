"""GaLore (galore-torch 1.0, GaLoreAdamW): Adam moments of the hidden linear weights kept in a rank-r
projection of the gradient (SVD projector renewed every `update_proj_gap` steps), other parameters plain
Adam, all updated per layer in backward hooks (layerwise.py) so the full gradient is never held.
Defaults: the GaLore paper's LLaMA-7B recipe (rank 1024, gap 500, scale 0.25, lr 0.005); its 60M-1B runs
used rank 128-512, gap 200, lr 0.01."""

from __future__ import annotations

from .base import BETAS, HParam, MethodSpec, Prepared, needs_package
from .flops import dense_train_flops
from .layerwise import prepare_layerwise, skip_reason

HPARAMS = {
    "lr": HParam(float, 0.005, "learning rate (all parameters)"),
    "rank": HParam(int, 1024, "projection rank"),
    "update_proj_gap": HParam(int, 500, "steps between SVD projector updates"),
    "scale": HParam(float, 0.25, "GaLore scale of the projected-back update"),
    "proj_type": HParam(str, "std", "'std', 'reverse_std', 'left', 'right' or 'full' (galore-torch)"),
    "weight_decay": HParam(float, 0.0, "decoupled weight decay"),
    "betas": BETAS,
    "eps": HParam(float, 1e-6, "Adam epsilon (galore-torch default)"),
}


def build(model, block_size, hp, ctx) -> Prepared:
    from galore_torch import GaLoreAdamW

    kw = {"lr": hp["lr"], "betas": tuple(hp["betas"]), "eps": hp["eps"], "weight_decay": hp["weight_decay"],
          "no_deprecation_warning": True}
    low_rank = {"rank": hp["rank"], "update_proj_gap": hp["update_proj_gap"], "scale": hp["scale"],
                "proj_type": hp["proj_type"]}
    return prepare_layerwise(model, ctx, lambda i, p: GaLoreAdamW([{"params": [p], **low_rank}], **kw),
                             lambda p: GaLoreAdamW([p], **kw))


SPECS = [
    MethodSpec("galore", "GaLore", "#b15928",
               "GaLore (galore-torch GaLoreAdamW) on the hidden matrices, per-layer updates in backward hooks",
               build=build, train_flops=dense_train_flops, hparams=HPARAMS,
               skip_reason=needs_package("galore_torch", "galore-torch", skip_reason)),
]
