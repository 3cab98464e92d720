"""Triton kernels for POET-X: fused Cayley-Neumann and fused permutation + block-diagonal multiply.

Importing this package does not import triton; kernels are built on first use for the device of the
tensors (compiled on CUDA, interpreted on CPU when TRITON_INTERPRET=1), see _loader.py. NOTES.md has the
per-kernel cost model and measurements.
"""

from ._loader import triton_available, use_kernels
from .autograd import POETXTritonFunction, poetx_fused_forward, side_apply
from .block_perm import (
    BlockPermApplyFunction,
    block_perm_apply,
    block_perm_apply_raw,
    block_perm_grad,
)
from .cayley import (
    CayleyNeumannFunction,
    cayley_neumann_backward,
    cayley_neumann_forward,
    cayley_neumann_packed,
)
from .layer import BLOCK_IMPLS, POETXTritonLinear, resolve_block_impl, set_cayley_keep
from .rows import cayley_blocks, poetx_rows_forward

__all__ = [
    "triton_available",
    "use_kernels",
    "poetx_fused_forward",
    "POETXTritonFunction",
    "side_apply",
    "POETXTritonLinear",
    "BLOCK_IMPLS",
    "resolve_block_impl",
    "set_cayley_keep",
    "poetx_rows_forward",
    "cayley_blocks",
    "block_perm_apply",
    "block_perm_apply_raw",
    "block_perm_grad",
    "BlockPermApplyFunction",
    "cayley_neumann_packed",
    "cayley_neumann_forward",
    "cayley_neumann_backward",
    "CayleyNeumannFunction",
]
