"""The Triton-backend POET-X layer: the reference layer's state and function, our kernels' forward.

`POETXTritonLinear` subclasses the reference `POETXLinear` (same parameters, buffers and state-dict keys,
so checkpoints move between backends) and chooses how the block work runs with `block_impl`:

    rows   (default, "auto")  row-domain design (rows.py): coalesced transpose-permutations, cuBLAS bmm
                              block products and gradients, Horner Cayley in the compute dtype
    fused  the first design: fp32 Cayley kernels, gathers folded into block-multiply tile loads
    torch  the first design's Function with torch index_select + einsum for the block work

The dependency runs one way: this package imports the reference, never the reverse.
"""

from __future__ import annotations

import torch

from poetx_bench.reference.layer_base import check_input
from poetx_bench.reference.poetx import POETXLinear

from ._loader import use_kernels
from .autograd import poetx_fused_forward
from .rows import check_cayley_keep, poetx_rows_forward

BLOCK_IMPLS = ("rows", "fused", "torch")
DEFAULT_BLOCK_IMPL = "rows"


def resolve_block_impl(name: str) -> str:
    """"auto" -> the default; anything else must be a known implementation."""
    if name == "auto":
        return DEFAULT_BLOCK_IMPL
    if name not in BLOCK_IMPLS:
        raise ValueError(f"block_impl must be 'auto' or one of {BLOCK_IMPLS}, got {name!r}")
    return name


class POETXTritonLinear(POETXLinear):
    """POET-X layer on our kernels. float64 and devices without kernels run the same algebra through
    torch fallbacks (rows) or the reference's torch path (fused/torch, whose kernels are fp32-only)."""

    def __init__(self, in_features: int, out_features: int, block_size: int, mode: str = "fast",
                 block_impl: str = "auto", cayley_keep: str = "params", **kwargs):
        super().__init__(in_features, out_features, block_size, mode=mode, **kwargs)
        self.block_impl = resolve_block_impl(block_impl)
        self._model_blocks = None  # set for one forward by model_cayley.ModelCayley
        self.cayley_keep = check_cayley_keep(cayley_keep)  # "qs": backward reuses the forward's Q and S

    def extra_repr(self) -> str:
        return super().extra_repr() + f", block_impl={self.block_impl}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(self, x)
        if self.block_impl == "rows":
            y = poetx_rows_forward(self, x)
        elif x.dtype == torch.float64 or self.weight.dtype == torch.float64 or not use_kernels(x):
            y = self._torch_forward(x)
        else:
            y = poetx_fused_forward(self, x, self.block_impl)
        return y if self.bias is None else y + self.bias


def set_cayley_keep(module: torch.nn.Module, keep: str) -> int:
    """Change the `cayley_keep` setting of every POET-X Triton layer of a built `module` (layers built by the
    harness get it at construction); returns how many."""
    check_cayley_keep(keep)
    layers = [m for m in module.modules() if isinstance(m, POETXTritonLinear)]
    for m in layers:
        m.cayley_keep = keep
    return len(layers)
