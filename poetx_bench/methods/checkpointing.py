"""Gradient checkpointing for every method (config key `checkpointing`, default false): each decoder block
of the Llama model runs under torch.utils.checkpoint (use_reentrant=False), so its activations are
recomputed in backward instead of kept. Applied by `prepare` after the method has wrapped the model, so it
works the same for POET layers, LoRA adapters and plain linears."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..reference.models import Block


def _checkpointed(forward):
    def run(x, *args, **kwargs):
        if not torch.is_grad_enabled():
            return forward(x, *args, **kwargs)
        return checkpoint(forward, x, *args, use_reentrant=False, **kwargs)
    run.checkpointed = True
    return run


def enable_checkpointing(model: nn.Module) -> int:
    """Checkpoint every decoder block of `model` (found by class, so wrappers such as PeftModel are fine);
    returns how many blocks now run checkpointed. Idempotent."""
    n = 0
    for m in model.modules():
        if isinstance(m, Block):
            if not getattr(m.forward, "checkpointed", False):
                m.forward = _checkpointed(m.forward)
            n += 1
    if n == 0:
        raise ValueError("checkpointing: the model has no decoder block (reference.models.Block) to checkpoint")
    return n
