"""POET-X layer forward/backward on the first kernel design (block_impl "fused" / "torch"): `poetx_fused_forward`.

y[:, perm_out] = blocks_out(F.linear(blocks_in(x[:, perm_in]), W0)): the permutations are folded into the
stored W0 (reference/layer_base.py), so the input side gathers on load and the output side scatters on
store. Full blocks run in the fused gather/scatter + block-multiply kernels; a tail block (layout.tail > 0) and
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

import functools

import torch
import torch.nn.functional as F

from poetx_bench.reference.cayley import orthogonal_blocks

from .block_perm import block_perm_apply_full_, block_perm_grad
from .cayley import CayleyNeumannFunction


class Side:
    """Static description of one side of a layer: layout numbers and its permutation pair (long, on device),
    plus an identity index (the first design's "no permutation" end). Shared by both designs."""

    __slots__ = ("b", "n_full", "tail", "covered", "dim", "perm", "inv")

    def __init__(self, layout, perm, inv):
        self.b, self.n_full, self.tail = layout.b, layout.n_full, layout.tail
        self.covered, self.dim = layout.covered, layout.dim
        self.perm, self.inv = perm, inv

    @property
    def ident(self) -> torch.Tensor:
        """Looked up on use (first design only), so tracing the row design never meets the lru_cache."""
        return _identity(self.dim, self.perm.device)


@functools.lru_cache(maxsize=256)
def _identity(n: int, device: torch.device) -> torch.Tensor:
    """arange(n) as an index: the kernels' 'no permutation' on one end (loads/stores contiguously)."""
    return torch.arange(n, device=device)


def _blocks_torch(u, g_full, g_tail, side: Side, transpose: bool) -> torch.Tensor:
    """Block products of already-gathered columns u (full blocks, tail, pass-through)."""
    nb = side.n_full * side.b
    v = torch.empty_like(u)
    eq = "nkc,kdc->nkd" if transpose else "nkc,kcd->nkd"
    v[:, :nb] = torch.einsum(eq, u[:, :nb].reshape(-1, side.n_full, side.b), g_full).reshape(-1, nb)
    if side.tail:
        g = g_tail[0].to(u.dtype)
        v[:, nb:side.covered] = u[:, nb:side.covered] @ (g.T if transpose else g)
    if side.covered < side.dim:
        v[:, side.covered:] = u[:, side.covered:]
    return v


def side_apply(x2: torch.Tensor, g_full: torch.Tensor, g_tail: torch.Tensor | None, side: Side,
               transpose: bool, gather: bool, impl: str = "fused") -> torch.Tensor:
    """Block products of one side, with the permutation on the load (gather=True: out = blocks(x2[:, perm]))
    or on the store (gather=False: out[:, perm] = blocks(x2)). transpose selects u G^T or u G.

    Full blocks run in the fused kernel (the other end's index is the identity); tail blocks and
    pass-through coordinates use torch ops on their few columns.
    """
    if impl == "torch":
        u = x2.index_select(1, side.perm) if gather else x2
        v = _blocks_torch(u, g_full, g_tail, side, transpose)
        return v if gather else v.index_select(1, side.inv)
    load, store = (side.perm, side.ident) if gather else (side.ident, side.perm)
    out = torch.empty(x2.shape[0], side.dim, dtype=x2.dtype, device=x2.device)
    block_perm_apply_full_(x2, g_full, load, side.b, transpose, out, store_perm=store)
    nb = side.n_full * side.b
    if side.tail:
        g = g_tail[0].to(x2.dtype)
        prod = x2.index_select(1, load[nb:side.covered]) @ (g.T if transpose else g)
        out.index_copy_(1, store[nb:side.covered], prod)
    if side.covered < side.dim:
        out.index_copy_(1, store[side.covered:], x2.index_select(1, load[side.covered:]))
    return out


def side_grads(gout: torch.Tensor, inp: torch.Tensor, side: Side, gout_perm, inp_perm,
               need_full: bool, need_tail: bool, impl: str = "fused"):
    """(grad_G_full fp32, grad_G_tail) of out_k = inp_k G_k^T given d out = gout, where the block columns
    of gout and inp are read through gout_perm / inp_perm (None: identity)."""
    g_full = g_tail = None
    nb = side.n_full * side.b
    gp = side.ident if gout_perm is None else gout_perm
    ip = side.ident if inp_perm is None else inp_perm
    if need_full and impl == "torch":
        go = gout.index_select(1, gp[:nb]).reshape(-1, side.n_full, side.b)
        xi = inp.index_select(1, ip[:nb]).reshape(-1, side.n_full, side.b)
        g_full = torch.einsum("nkd,nkc->kdc", go, xi).float()
    elif need_full:
        g_full = block_perm_grad(gout, inp, gp, side.b, side.n_full, inp_perm=ip)
    if need_tail and side.tail:
        sl = slice(nb, side.covered)
        g_tail = (gout.index_select(1, gp[sl]).T @ inp.index_select(1, ip[sl])).unsqueeze(0)
    return g_full, g_tail


class POETXTritonFunction(torch.autograd.Function):
    """x2 (tokens, in) -> y2 (tokens, out) given fp32 full blocks and optional torch tail blocks.

    Folded permutations (reference/layer_base.py): c = blocks(x2[:, perm_in]), h = c W0^T,
    y[:, perm_out] = blocks(h).
    """

    @staticmethod
    def forward(ctx, x2, gi, gi_t, go, go_t, weight, sides, mode, impl):
        s_in, s_out = sides
        gi_c, go_c = gi.to(x2.dtype), go.to(x2.dtype)
        h = F.linear(side_apply(x2, gi_c, gi_t, s_in, transpose=True, gather=True, impl=impl), weight)
        y = side_apply(h, go_c, go_t, s_out, transpose=True, gather=False, impl=impl)
        ctx.sides, ctx.mode, ctx.impl = sides, mode, impl
        ctx.save_for_backward(x2, h if mode == "fast" else None, gi, gi_t, go, go_t, weight)
        return y

    @staticmethod
    def backward(ctx, gy):
        x2, h, gi, gi_t, go, go_t, weight = ctx.saved_tensors
        s_in, s_out = ctx.sides
        impl = ctx.impl
        need_x, need_gi, need_git, need_go, need_got = ctx.needs_input_grad[:5]
        dt = x2.dtype
        gi_c, go_c = gi.to(dt), go.to(dt)
        gy = gy.to(dt)
        if h is None:  # mem mode: recompute the GEMM output
            h = F.linear(side_apply(x2, gi_c, gi_t, s_in, transpose=True, gather=True, impl=impl), weight)
        # output side: ge = gy[:, perm_out]; grad G_out = ge^T h (blockwise); gh = ge G_out
        g_go, g_got = side_grads(gy, h, s_out, s_out.perm, None, need_go, need_got, impl)
        del h
        gx = g_gi = g_git = None
        if need_x or need_gi or need_git:
            gh = side_apply(gy, go_c, go_t, s_out, transpose=False, gather=True, impl=impl)
            gc = gh @ weight
            del gh
            # input side: a = x[:, perm_in]; grad G_in = gc^T a (blockwise); gx[:, perm_in] = gc G_in
            g_gi, g_git = side_grads(gc, x2, s_in, None, s_in.perm, need_gi, need_git, impl)
            if need_x:
                gx = side_apply(gc, gi_c, gi_t, s_in, transpose=False, gather=False, impl=impl)
        if g_got is not None:
            g_got = g_got.to(go_t.dtype)
        if g_git is not None:
            g_git = g_git.to(gi_t.dtype)
        return gx, g_gi, g_git, g_go, g_got, None, None, None, None


def _full_blocks(packed_full: torch.Tensor, b: int, layer) -> torch.Tensor:
    """fp32 (n_full, b, b) orthogonal blocks of one side, differentiable in the packed parameters."""
    if layer.cayley == "neumann":
        return CayleyNeumannFunction.apply(packed_full, b, int(layer.neumann_terms))
    return orthogonal_blocks(packed_full.float(), b, layer.cayley, layer.neumann_terms)


def _tail_block(packed_tail, r: int, layer):
    if packed_tail is None:
        return None
    return orthogonal_blocks(packed_tail, r, layer.cayley, layer.neumann_terms)


def poetx_fused_forward(layer, x: torch.Tensor, impl: str = "fused") -> torch.Tensor:
    """The POET-X layer output without bias on the first kernel design: fp32 Cayley kernels and gathers
    folded into the block-multiply loads ("fused") or torch index_select + einsum ("torch")."""
    lay_in, lay_out = layer.layout_in, layer.layout_out
    full_in, tail_in = lay_in.split_params(layer.skew_in)
    full_out, tail_out = lay_out.split_params(layer.skew_out)
    gi = _full_blocks(full_in, lay_in.b, layer)
    go = _full_blocks(full_out, lay_out.b, layer)
    gi_t = _tail_block(tail_in, lay_in.tail, layer)
    go_t = _tail_block(tail_out, lay_out.tail, layer)
    sides = (Side(lay_in, layer.perm_in, layer.inv_perm_in), Side(lay_out, layer.perm_out, layer.inv_perm_out))
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1])
    y2 = POETXTritonFunction.apply(x2, gi, gi_t, go, go_t, layer.weight, sides, layer.mode, impl)
    return y2.reshape(*lead, layer.out_features)
