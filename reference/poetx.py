"""POET-X: the same function as POET, computed input-centrically.

x -> gather(perm_in) -> block-diagonal batched multiply -> W0 -> block-diagonal -> scatter(perm_out).
The permutations are folded into the stored W0 (layer_base), so there is one gather and one scatter
per forward. No dense block-diagonal or permutation matrix is ever formed.

Modes:
  fast  plain autograd through the input-centric ops (saves intermediates, fastest backward);
  mem   a custom autograd.Function that saves only x and the small orthogonal blocks and recomputes the
        rest (including the W0 GEMM) in backward: least activation memory.
This file is the readable PyTorch implementation (the "torch" backend). Faster backends subclass
POETXLinear and override `forward` (poetx_bench.kernels.POETXTritonLinear); this package never imports
them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .blocks import block_grad, blockwise_apply
from .layer_base import POETLayerBase, check_input

MODES = ("fast", "mem")


def _input_side_and_gemm(x, weight, lay_in, gi_f, gi_t, perm_in):
    """(a, h): a = x gathered by perm_in, h = the W0 GEMM output: what backward needs."""
    a = x.index_select(-1, perm_in)
    return a, F.linear(blockwise_apply(a, lay_in, gi_f, gi_t, transpose=True), weight)


def _forward_parts(x, weight, layouts, gi_f, gi_t, go_f, go_t, perm_in, inv_out):
    """Returns (y, a, h)."""
    lay_in, lay_out = layouts
    a, h = _input_side_and_gemm(x, weight, lay_in, gi_f, gi_t, perm_in)
    y = blockwise_apply(h, lay_out, go_f, go_t, transpose=True).index_select(-1, inv_out)
    return y, a, h


class POETXMemFunction(torch.autograd.Function):
    """Saves x and the orthogonal blocks only; recomputes activations in backward."""

    @staticmethod
    def forward(ctx, x, gi_f, gi_t, go_f, go_t, weight, perm_in, inv_in, perm_out, inv_out, layouts):
        y, _, _ = _forward_parts(x, weight, layouts, gi_f, gi_t, go_f, go_t, perm_in, inv_out)
        ctx.save_for_backward(x, gi_f, gi_t, go_f, go_t, weight, perm_in, inv_in, perm_out, inv_out)
        ctx.layouts = layouts
        return y

    @staticmethod
    def backward(ctx, gy):
        x, gi_f, gi_t, go_f, go_t, weight, perm_in, inv_in, perm_out, inv_out = ctx.saved_tensors
        lay_in, lay_out = ctx.layouts
        # recompute the forward activations that the gradients need (including the W0 GEMM)
        a, h = _input_side_and_gemm(x, weight, lay_in, gi_f, gi_t, perm_in)
        # output side: e = h G_out^T (blockwise), y = e[:, inv_out]
        ge = gy.index_select(-1, perm_out)
        g_go_f, g_go_t = block_grad(ge, h, lay_out)
        gh = blockwise_apply(ge, lay_out, go_f, go_t, transpose=False)
        # W0 is frozen: only the input gradient of the GEMM
        gb = gh @ weight
        g_gi_f, g_gi_t = block_grad(gb, a, lay_in)
        gx = blockwise_apply(gb, lay_in, gi_f, gi_t, transpose=False).index_select(-1, inv_in)
        return (gx, g_gi_f, g_gi_t if gi_t is not None else None, g_go_f,
                g_go_t if go_t is not None else None, None, None, None, None, None, None)


class POETXLinear(POETLayerBase):
    """Input-centric POET layer; same state and function as POETLinear."""

    def __init__(self, in_features: int, out_features: int, block_size: int, mode: str = "fast",
                 bias: bool = False, **kwargs):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        super().__init__(in_features, out_features, block_size, bias=bias, **kwargs)
        self.mode = mode

    def extra_repr(self) -> str:
        return super().extra_repr() + f", mode={self.mode}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(self, x)
        y = self._torch_forward(x)
        return y if self.bias is None else y + self.bias

    def _torch_forward(self, x: torch.Tensor) -> torch.Tensor:
        # the Cayley-Neumann intermediates are recomputed in backward in both modes: they are weights'
        # temporaries, not activations, and keeping them costs GBs at 3B+ (see RecomputedOrthogonalBlocks)
        gi_f, gi_t, go_f, go_t = self.transforms(recompute=True)
        if self.mode == "mem":
            return POETXMemFunction.apply(x, gi_f, gi_t, go_f, go_t, self.weight, self.perm_in,
                                          self.inv_perm_in, self.perm_out, self.inv_perm_out,
                                          (self.layout_in, self.layout_out))
        y, _, _ = _forward_parts(x, self.weight, (self.layout_in, self.layout_out), gi_f, gi_t, go_f, go_t,
                                 self.perm_in, self.inv_perm_out)
        return y
