"""POET-X layer forward/backward on the Triton kernels: `poetx_triton_forward(layer, x)`.

y = side(F.linear(side(x, G_in), W0), G_out) with side(x, G) = x T^T, T = Pi^T blockdiag(G) Pi.
Full blocks run in the fused gather + block-multiply kernels; a tail block (layout.tail > 0) and
pass-through coordinates are done with torch ops on their few columns (correctness over speed there).
The W0 GEMM stays cuBLAS (F.linear). Orthogonal blocks of the full blocks come from the fused
Cayley-Neumann kernel in fp32 (CayleyNeumannFunction), so their gradients stay fp32 end to end.

Saved for backward:
  fast: x and h = c W0^T (the GEMM output, the output side's input); the permuted inputs are gathers of
        these and are never stored.
  mem:  x only; c and h are recomputed in backward (one extra block pass and one extra GEMM).
Both also keep the fp32 blocks G (n b^2 each, small) and W0 (a parameter, no copy).
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from ._loader import use_kernels
from .block_perm import block_perm_apply_full_, block_perm_grad
from .cayley import CayleyNeumannFunction

BLOCK_IMPLS = ("triton", "torch")


def block_impl() -> str:
    """How the permuted block multiplies and grad-G reductions run inside POETXTritonFunction.

    "triton" (default): the fused gather/scatter kernels. "torch": index_select + batched matmul +
    index_select (the reference's ops) while the Cayley kernels and the lean autograd stay. A knob because
    the fused kernels' gathers are sector-bound (NOTES.md) and which is faster depends on D and b; set
    POETX_BLOCK_IMPL or `set_block_impl` (read at every call).
    """
    impl = os.environ.get("POETX_BLOCK_IMPL", _BLOCK_IMPL[0])
    if impl not in BLOCK_IMPLS:
        raise ValueError(f"POETX_BLOCK_IMPL must be one of {BLOCK_IMPLS}, got {impl!r}")
    return impl


_BLOCK_IMPL = ["triton"]


def set_block_impl(impl: str) -> None:
    """Process-wide default for `block_impl()` (the POETX_BLOCK_IMPL environment variable wins)."""
    if impl not in BLOCK_IMPLS:
        raise ValueError(f"impl must be one of {BLOCK_IMPLS}, got {impl!r}")
    _BLOCK_IMPL[0] = impl


class _Side:
    """Static description of one side: layout numbers and the permutations (long, on device)."""

    __slots__ = ("b", "n_full", "tail", "covered", "dim", "perm", "inv")

    def __init__(self, layout, perm, inv=None):
        self.b, self.n_full, self.tail = layout.b, layout.n_full, layout.tail
        self.covered, self.dim = layout.covered, layout.dim
        self.perm = perm
        self.inv = inv


def _side_apply_torch(x2, g_full, g_tail, side: _Side, transpose: bool) -> torch.Tensor:
    """The reference's ops: gather, batched block multiply, gather with the inverse permutation."""
    u = x2.index_select(1, side.perm)
    nb = side.n_full * side.b
    v = torch.empty_like(u)
    eq = "nkc,kdc->nkd" if transpose else "nkc,kcd->nkd"
    v[:, :nb] = torch.einsum(eq, u[:, :nb].reshape(-1, side.n_full, side.b), g_full).reshape(-1, nb)
    if side.tail:
        g = g_tail[0].to(x2.dtype)
        v[:, nb:side.covered] = u[:, nb:side.covered] @ (g.T if transpose else g)
    if side.covered < side.dim:
        v[:, side.covered:] = u[:, side.covered:]
    inv = side.inv if side.inv is not None else torch.argsort(side.perm)
    return v.index_select(1, inv)


def side_apply(x2: torch.Tensor, g_full: torch.Tensor, g_tail: torch.Tensor | None, side: _Side,
               transpose: bool) -> torch.Tensor:
    """x2 T^T (transpose) or x2 T for one side: kernel for full blocks, torch for tail/pass-through."""
    if block_impl() == "torch":
        return _side_apply_torch(x2, g_full, g_tail, side, transpose)
    out = torch.empty(x2.shape[0], side.dim, dtype=x2.dtype, device=x2.device)
    block_perm_apply_full_(x2, g_full, side.perm, side.b, transpose, out)
    nb = side.n_full * side.b
    if side.tail:
        idx = side.perm[nb:side.covered]
        g = g_tail[0].to(x2.dtype)
        out.index_copy_(1, idx, x2.index_select(1, idx) @ (g.T if transpose else g))
    if side.covered < side.dim:
        idx = side.perm[side.covered:]
        out.index_copy_(1, idx, x2.index_select(1, idx))
    return out


def side_grads(gout: torch.Tensor, inp: torch.Tensor, side: _Side, need_full: bool, need_tail: bool):
    """(grad_G_full fp32, grad_G_tail) of out = side(inp, G) (transpose=True) given d out = gout."""
    g_full = g_tail = None
    if need_full and block_impl() == "torch":
        nb = side.n_full * side.b
        idx = side.perm[:nb]
        go = gout.index_select(1, idx).reshape(-1, side.n_full, side.b)
        xi = inp.index_select(1, idx).reshape(-1, side.n_full, side.b)
        g_full = torch.einsum("nkd,nkc->kdc", go, xi).float()
    elif need_full:
        g_full = block_perm_grad(gout, inp, side.perm, side.b, side.n_full)
    if need_tail and side.tail:
        idx = side.perm[side.n_full * side.b:side.covered]
        g_tail = (gout.index_select(1, idx).T @ inp.index_select(1, idx)).unsqueeze(0)
    return g_full, g_tail


class POETXTritonFunction(torch.autograd.Function):
    """x2 (tokens, in) -> y2 (tokens, out) given fp32 full blocks and optional torch tail blocks."""

    @staticmethod
    def forward(ctx, x2, gi, gi_t, go, go_t, weight, sides, mode):
        s_in, s_out = sides
        gi_c, go_c = gi.to(x2.dtype), go.to(x2.dtype)
        c = side_apply(x2, gi_c, gi_t, s_in, transpose=True)
        h = F.linear(c, weight)
        del c
        y = side_apply(h, go_c, go_t, s_out, transpose=True)
        ctx.sides, ctx.mode = sides, mode
        ctx.save_for_backward(x2, h if mode == "fast" else None, gi, gi_t, go, go_t, weight)
        return y

    @staticmethod
    def backward(ctx, gy):
        x2, h, gi, gi_t, go, go_t, weight = ctx.saved_tensors
        s_in, s_out = ctx.sides
        need_x, need_gi, need_git, need_go, need_got = ctx.needs_input_grad[:5]
        dt = x2.dtype
        gi_c, go_c = gi.to(dt), go.to(dt)
        gy = gy.to(dt)
        if h is None:  # mem mode: recompute the GEMM output
            h = F.linear(side_apply(x2, gi_c, gi_t, s_in, transpose=True), weight)
        g_go, g_got = side_grads(gy, h, s_out, need_go, need_got)
        del h
        gx = g_gi = g_git = None
        if need_x or need_gi or need_git:
            gh = side_apply(gy, go_c, go_t, s_out, transpose=False)
            gc = gh @ weight
            del gh
            g_gi, g_git = side_grads(gc, x2, s_in, need_gi, need_git)
            if need_x:
                gx = side_apply(gc, gi_c, gi_t, s_in, transpose=False)
        if g_got is not None:
            g_got = g_got.to(go_t.dtype)
        if g_git is not None:
            g_git = g_git.to(gi_t.dtype)
        return gx, g_gi, g_git, g_go, g_got, None, None, None


def _full_blocks(packed_full: torch.Tensor, b: int, layer) -> torch.Tensor:
    """fp32 (n_full, b, b) orthogonal blocks of one side, differentiable in the packed parameters."""
    if layer.cayley == "neumann":
        return CayleyNeumannFunction.apply(packed_full, b, int(layer.neumann_terms))
    from poetx_bench.reference.cayley import orthogonal_blocks

    return orthogonal_blocks(packed_full.float(), b, layer.cayley, layer.neumann_terms)


def _tail_block(packed_tail, r: int, layer):
    if packed_tail is None:
        return None
    from poetx_bench.reference.cayley import orthogonal_blocks

    return orthogonal_blocks(packed_tail, r, layer.cayley, layer.neumann_terms)


def poetx_triton_forward(layer, x: torch.Tensor) -> torch.Tensor:
    """The POET-X layer output without bias, on the Triton kernels when usable (else the torch path).

    Reads layer.{skew_in, skew_out, weight, perm_in, perm_out, layout_in, layout_out, neumann_terms,
    cayley, mode}. float64 and devices without kernels use `layer._torch_forward` (same function).
    """
    if (x.dtype == torch.float64 or layer.weight.dtype == torch.float64 or not use_kernels(x)
            or layer.mode not in ("fast", "mem")):
        return layer._torch_forward(x)
    lay_in, lay_out = layer.layout_in, layer.layout_out
    full_in, tail_in = lay_in.split_params(layer.skew_in)
    full_out, tail_out = lay_out.split_params(layer.skew_out)
    gi = _full_blocks(full_in, lay_in.b, layer)
    go = _full_blocks(full_out, lay_out.b, layer)
    gi_t = _tail_block(tail_in, lay_in.tail, layer)
    go_t = _tail_block(tail_out, lay_out.tail, layer)
    sides = (_Side(lay_in, layer.perm_in, layer.inv_perm_in), _Side(lay_out, layer.perm_out, layer.inv_perm_out))
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1])
    y2 = POETXTritonFunction.apply(x2, gi, gi_t, go, go_t, layer.weight, sides, layer.mode)
    return y2.reshape(*lead, layer.out_features)
