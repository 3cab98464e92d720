"""The orthogonal blocks of every POET-X layer of a model in a few batched Cayley evaluations per step.

Why: evaluated layer by layer, a step of Llama-3B runs ~200 small Cayley evaluations (8 launches each, of
12-72 blocks of 256), latency-bound at 90-210 TFLOP/s; they cost ~15% of the step on an H100
(reports/h100/speed). Batched over the model, the same products run as a few launches over thousands of
blocks. The blocks are computed at the start of the model's forward (a forward pre-hook) and each layer
takes its slice; backward evaluates the Cayley gradient once per chunk, after every layer's backward.

Memory: the blocks themselves are held until each layer's backward either way (the layer saves them). What
this adds is that the gradients of all blocks wait for the chunk's Cayley backward, and the Cayley
intermediates (Q, S, ...) are sized by the chunk, not the layer: chunks of at most `max_blocks` blocks
(layer granularity) bound both.

Switched on by the config key `cayley_scope = "model"` (the default "layer" evaluates per layer). "block"
is the middle: one evaluation per transformer block (the layers under one numbered child, e.g. `layers.3`):
~190 blocks of 256 at 3B, ~340 at 8B, operands of 25-45 MB that may still sit in L2 (50 MB on an H100),
where per layer the chain is launch-bound and over the whole model HBM-bound (kernels/NOTES.md).
"""

from __future__ import annotations

import torch
from torch import nn

from .layer import POETXTritonLinear
from .rows import cayley_blocks, tail_blocks

SCOPES = ("layer", "block", "model")
MAX_BLOCKS = 2048
# "block" scope cuts a transformer block's chunk at this many blocks of its layers: 160 blocks of 256 are
# 20 MiB per bf16 operand, so a product launch's operands stay in the H100's 50 MB L2. A whole 3B block (194
# blocks, 24 MiB) ran 4.8% faster than per layer, a whole 8B block (344, 43 MiB) 5.5% slower (reports/h100/
# speed, update 5); cut, a 3B block is two chunks (attention + gate + up 156, down 38) and ran as fast as whole,
# an 8B block three (attention 128, gate + up 144, down 72) and ran as fast as per layer.
BLOCK_MAX_BLOCKS = 160


class ModelCayley:
    """Forward pre-hook on `model` that precomputes the full blocks of its row-design POET-X layers."""

    def __init__(self, model: nn.Module, max_blocks: int = MAX_BLOCKS, per_block: bool = False):
        named = [(name, m) for name, m in model.named_modules()
                 if isinstance(m, POETXTritonLinear) and m.block_impl == "rows" and m.cayley == "neumann"
                 and m.layout_in.n_full and m.layout_out.n_full and m.layout_in.b == m.layout_out.b]
        self.layers = [m for _, m in named]
        owners = [_owner(name) if per_block else None for name, _ in named]
        self.chunks = _chunks(self.layers, max_blocks, owners)
        self.handle = model.register_forward_pre_hook(self._before_forward)

    def remove(self) -> None:
        self.handle.remove()
        for layer in self.layers:
            layer._model_blocks = None

    def _before_forward(self, module, args) -> None:
        for chunk in self.chunks:
            packed, sizes = [], []
            for layer in chunk:
                for lay, skew in ((layer.layout_in, layer.skew_in), (layer.layout_out, layer.skew_out)):
                    full, _ = lay.split_params(skew)
                    packed.append(full)
                    sizes.append(lay.n_full)
            first = chunk[0]
            # one packed tensor (a single concatenation) -> one unpack and one pack launch per chunk
            g = cayley_blocks(first.layout_in.b, int(first.neumann_terms), torch.cat(packed),
                              keep=first.cayley_keep)
            # one joint slice per layer (both sides, input first): the layer splits it (rows._split_sides)
            parts = g.split([sizes[2 * i] + sizes[2 * i + 1] for i in range(len(chunk))])
            for part, layer in zip(parts, chunk):
                ti, to = tail_blocks(layer)
                layer._model_blocks = (part, ti, None, to)


def _owner(name: str) -> str:
    """The transformer block a layer belongs to: its qualified name through the first numbered part
    ("layers.3.mlp.up" -> "layers.3"); a name without one is its own owner."""
    parts = name.split(".")
    for i, part in enumerate(parts):
        if part.isdigit():
            return ".".join(parts[:i + 1])
    return name


def _chunks(layers: list, max_blocks: int, owners: list | None = None) -> list[list]:
    """Consecutive layers grouped by (block size, terms, keep, dtype[, owner]), each cut at max_blocks blocks."""
    out, cur, key, count = [], [], None, 0
    owners = owners or [None] * len(layers)
    for layer, owner in zip(layers, owners):
        k = (layer.layout_in.b, int(layer.neumann_terms), layer.cayley_keep, layer.skew_in.dtype,
             layer.skew_in.device, owner)
        n = layer.layout_in.n_full + layer.layout_out.n_full
        if cur and (k != key or count + n > max_blocks):
            out.append(cur)
            cur, count = [], 0
        cur.append(layer)
        key, count = k, count + n
    if cur:
        out.append(cur)
    return out


def attach(model: nn.Module, scope: str, max_blocks: int | None = None) -> ModelCayley | None:
    """Apply a `cayley_scope` setting to a prepared model: "model" and "block" attach the hook (chunks of at
    most `max_blocks` blocks; by default MAX_BLOCKS, or BLOCK_MAX_BLOCKS for "block"), "layer" does nothing."""
    if scope not in SCOPES:
        raise ValueError(f"cayley_scope must be one of {SCOPES}, got {scope!r}")
    if scope == "layer":
        return None
    per_block = scope == "block"
    cap = max_blocks if max_blocks is not None else (BLOCK_MAX_BLOCKS if per_block else MAX_BLOCKS)
    return ModelCayley(model, cap, per_block=per_block)
