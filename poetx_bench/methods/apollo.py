"""APOLLO and APOLLO-Mini (apollo-torch 1.0.3, APOLLOAdamW): Adam moments in a random rank-r projection of
the hidden linear weights' gradient give a channel-wise (APOLLO) or tensor-wise (Mini, rank 1) scaling of
the raw gradient; other parameters plain Adam; all updated per layer in backward hooks (layerwise.py).
Defaults: the APOLLO paper's recipes (APOLLO rank 256, channel, scale 1; Mini rank 1, tensor, scale 128;
random projection renewed every 200 steps, lr 0.01)."""

from __future__ import annotations

from .base import BETAS, HParam, MethodSpec, Prepared, needs_package
from .flops import dense_train_flops
from .layerwise import prepare_layerwise, skip_reason


def _hparams(rank: int, scale_type: str, scale: float) -> dict:
    return {
        "lr": HParam(float, 0.01, "learning rate (all parameters)"),
        "rank": HParam(int, rank, "projection rank"),
        "scale_type": HParam(str, scale_type, "'channel' or 'tensor' gradient scaling"),
        "scale": HParam(float, scale, "APOLLO scale (the update is multiplied by its square root)"),
        "proj": HParam(str, "random", "'random' or 'svd' projection"),
        "update_proj_gap": HParam(int, 200, "steps between projector updates"),
        "proj_type": HParam(str, "std", "'std', 'reverse_std', 'left' or 'right'"),
        "weight_decay": HParam(float, 0.0, "decoupled weight decay"),
        "betas": BETAS,
        "eps": HParam(float, 1e-6, "Adam epsilon (apollo-torch default)"),
    }


def build(model, block_size, hp, ctx) -> Prepared:
    from apollo_torch import APOLLOAdamW

    kw = {"lr": hp["lr"], "betas": tuple(hp["betas"]), "eps": hp["eps"], "weight_decay": hp["weight_decay"]}
    low_rank = {k: hp[k] for k in ("rank", "scale_type", "scale", "proj", "update_proj_gap", "proj_type")}
    def hidden_opt(i, p):
        opt = APOLLOAdamW([{"params": [p], **low_rank}], **kw)
        # one optimizer per parameter would give every projector seed 1: number them over the model, as
        # a single APOLLOAdamW over all parameters does
        opt.state[p]["seed"] = i + 1
        return opt

    return prepare_layerwise(model, ctx, hidden_opt, lambda p: APOLLOAdamW([p], **kw))


SPECS = [
    MethodSpec("apollo", "APOLLO", "#fb9a99",
               "APOLLO (apollo-torch, channel-wise scaling, random rank-256 projection), per-layer updates",
               build=build, train_flops=dense_train_flops, hparams=_hparams(256, "channel", 1.0),
               skip_reason=needs_package("apollo_torch", "apollo-torch", skip_reason)),
    MethodSpec("apollo-mini", "APOLLO-Mini", "#cab2d6",
               "APOLLO-Mini (apollo-torch, tensor-wise scaling, rank 1, scale 128), per-layer updates",
               build=build, train_flops=dense_train_flops, hparams=_hparams(1, "tensor", 128.0),
               skip_reason=needs_package("apollo_torch", "apollo-torch", skip_reason)),
]
