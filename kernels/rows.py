"""POET-X in the row domain: the layer's block work on (D, T) activations, where permutations are row moves.

A column permutation of a (T, D) activation is a row permutation of its transpose, and rows of a (D, T)
tensor are contiguous runs of T tokens. So this implementation carries the activations between the two
permutations transposed:

    aT = to_rows(x, inv_in)         aT[j] = x[:, perm_in[j]]          (one coalesced transpose pass)
    cT = G_in  aT   (blockwise)     cuBLAS bmm over contiguous (b, T) row blocks
    hT = W0 cT                      cuBLAS GEMM, same FLOPs as x W0^T
    eT = G_out hT   (blockwise)     cuBLAS bmm
    y  = from_rows(eT, inv_out)     y[:, perm_out[j]] = eT[j]         (one coalesced transpose pass)

and the backward mirrors it (gradients of G are bmm reductions over tokens, K = T, no atomics). The two
permutation kernels read and write 16-byte vectors; nothing is loaded through an index inside a matrix
product. The orthogonal blocks come from `cayley_blocks` (both sides of a layer in one batch; for t = 2, 3
the S = Q^2 form, each step one fused batched-product launch in the compute dtype with fp32 accumulation). Every piece has a torch fallback, so the same algebra
runs on CPU (and under TRITON_INTERPRET=1 with the kernels).

Saved for backward: fast mode keeps x and hT (as the torch path keeps x and h); mem mode keeps x only and
recomputes aT, cT, hT (one extra GEMM). Both recompute aT from x rather than keep it (it would cost one
(T, D_in) tensor per layer, where x is often shared by q/k/v).
"""

from __future__ import annotations

import functools

import torch

from poetx_bench.reference.cayley import RecomputedOrthogonalBlocks

from ._loader import dot_precision, is_interpreted, kernels_for, use_kernels
from .autograd import Side

PERM_TILE = {"BT": 64, "BD": 64, "num_warps": 4}


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


# --- permutations as transposes ---------------------------------------------------------------------


def to_rows(x2: torch.Tensor, inv: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """(T, D) -> (D, T) with out[j] = x2[:, perm[j]] (equivalently out[inv[d]] = x2[:, d])."""
    if _as_named_op():
        return torch.ops.poetx.to_rows(x2, inv, perm)
    return _to_rows(x2, inv, perm)


def _to_rows(x2: torch.Tensor, inv: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    T, D = x2.shape
    if not use_kernels(x2) or x2.stride(1) != 1:
        return x2.t().index_select(0, perm)
    out = torch.empty(D, T, dtype=x2.dtype, device=x2.device)
    _launch_perm("perm_to_rows_kernel", x2, inv, out, T, D, x2.stride(0))
    return out


def from_rows(src: torch.Tensor, inv: torch.Tensor) -> torch.Tensor:
    """(D, T) -> (T, D) with y[:, m] = src[inv[m]] (equivalently y[:, perm[j]] = src[j])."""
    if _as_named_op():
        return torch.ops.poetx.from_rows(src, inv)
    return _from_rows(src, inv)


def _from_rows(src: torch.Tensor, inv: torch.Tensor) -> torch.Tensor:
    D, T = src.shape
    if not use_kernels(src):
        return src.index_select(0, inv).t().contiguous()
    src = src.contiguous()
    y = torch.empty(T, D, dtype=src.dtype, device=src.device)
    _launch_perm("perm_from_rows_kernel", src, inv, y, T, D, y.stride(0))
    return y


def _as_named_op() -> bool:
    """Route a permutation through its torch.library op (ops.py): while compiling (an opaque graph node), and
    while a profiler runs, so the layer breakdown finds its kernel time under the op's name (launched
    directly inside the layer's autograd Function it was counted as 'other'; a record_function range does
    not collect kernel time)."""
    return torch.compiler.is_compiling() or torch.autograd._profiler_enabled()


def _launch_perm(name: str, src, inv, dst, T: int, D: int, row_stride: int) -> None:
    """One permutation kernel over a (T-tile, D-tile) grid; row_stride is that of the (T, D) operand."""
    cfg = {"BT": 32, "BD": 32, "num_warps": 1} if is_interpreted(src.device) else PERM_TILE
    grid = (_cdiv(T, cfg["BT"]), _cdiv(D, cfg["BD"]))
    getattr(kernels_for(src.device), name)[grid](src, inv, dst, T, D, row_stride, BT=cfg["BT"], BD=cfg["BD"],
                                                 num_warps=cfg["num_warps"])


# --- Cayley-Neumann through batched matrix products ---------------------------------------------------


@functools.lru_cache(maxsize=64)
def _triu_flat(b: int, device: torch.device) -> torch.Tensor:
    iu = torch.triu_indices(b, b, offset=1, device=device)
    return iu[0] * b + iu[1]


def skew_unpack(packed: torch.Tensor, b: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """(n, b(b-1)/2) packed upper triangles -> dense skew Q (n, b, b) in the packed dtype (into `out`, a
    contiguous (n, b, b) tensor, when given)."""
    if torch.compiler.is_compiling():
        q = torch.ops.poetx.skew_unpack(packed, b)
        return q if out is None else out.copy_(q)
    return _skew_unpack(packed, b, out)


def _skew_unpack(packed: torch.Tensor, b: int, out: torch.Tensor | None = None) -> torch.Tensor:
    n = packed.shape[0]
    if use_kernels(packed) and n and packed.dtype != torch.float64:  # the kernel works in fp32
        q = torch.empty(n, b, b, dtype=packed.dtype, device=packed.device) if out is None else out
        packed = packed.contiguous()
        return _launch_unpack(packed, packed, n, q)
    upper = packed.new_zeros(n, b * b)
    upper.index_copy_(1, _triu_flat(b, packed.device), packed)
    upper = upper.view(n, b, b)
    if out is None:
        return upper - upper.transpose(-1, -2)
    return torch.sub(upper, upper.transpose(-1, -2), out=out)


def skew_pack_grad(s: torch.Tensor) -> torch.Tensor:
    """Gradient of the packed parameters from dL/dQ = s (n, b, b): (s - s^T) on the strict upper triangle."""
    if torch.compiler.is_compiling():
        return torch.ops.poetx.skew_pack_grad(s)
    return _skew_pack_grad(s)


def _skew_pack_grad(s: torch.Tensor) -> torch.Tensor:
    n, b, _ = s.shape
    if use_kernels(s) and n and s.dtype != torch.float64:  # the kernel works in fp32
        out = torch.empty(n, b * (b - 1) // 2, dtype=s.dtype, device=s.device)
        _launch_pack(s, out, out, n)
        return out
    return (s - s.transpose(-1, -2)).flatten(1).index_select(1, _triu_flat(b, s.device))


def _launch_unpack(p0: torch.Tensor, p1: torch.Tensor, n_first: int, q: torch.Tensor) -> torch.Tensor:
    """One cayley_unpack_kernel launch into q (n, b, b): blocks below n_first from p0, the rest from p1."""
    b = q.shape[-1]
    bm = 32 if not is_interpreted(q.device) else 64
    kernels_for(q.device).cayley_unpack_kernel[(q.shape[0], _cdiv(b, bm))](
        p0, p1, n_first, q, b, p0.shape[1], BM=bm, BN=min(128, _pow2(b)), num_warps=4)
    return q


def _launch_pack(s: torch.Tensor, out0: torch.Tensor, out1: torch.Tensor, n_first: int) -> None:
    """One skew_pack_grad_kernel launch over s (n, b, b): blocks below n_first into out0, the rest into out1."""
    b = s.shape[-1]
    bm = 32 if not is_interpreted(s.device) else 64
    kernels_for(s.device).skew_pack_grad_kernel[(s.shape[0], _cdiv(b, bm))](
        s.contiguous(), out0, out1, n_first, b, out0.shape[1], BM=bm, BN=min(64, _pow2(b)), num_warps=4)


def _pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def _add_diag_(m: torch.Tensor, value: float) -> torch.Tensor:
    """m + value * I in place on a batch of square matrices: touches n*b elements, not n*b*b."""
    m.diagonal(dim1=-2, dim2=-1).add_(value)
    return m


def horner_blocks(q: torch.Tensor, terms: int) -> torch.Tensor:
    """G = I + 2Q + ... + 2Q^t + Q^(t+1) = (I + Q) sum_k Q^k, as Horner: P_t = 2I + Q, P_k = 2I + Q P_(k+1),
    G = I + Q P_1 (t batched products; the identities are added on the diagonal in place)."""
    if terms == 0:
        return _add_diag_(q.clone(), 1.0)
    p = _add_diag_(q.clone(), 2.0)
    for _ in range(terms - 1):
        p = _add_diag_(torch.bmm(q, p), 2.0)
    return _add_diag_(torch.bmm(q, p), 1.0)


def horner_backward_dq(q: torch.Tensor, grad_g: torch.Tensor, t: int) -> torch.Tensor:
    """dL/dQ (dense, before the skew projection) of G = horner_blocks(Q, t), given dL/dG.

    Reverse mode through the Horner chain, with Q^T = -Q:
        dQ = sum_{k=0..t} Pbar_k P_(k+1)^T,  Pbar_0 = Gbar, Pbar_(k+1) = -Q Pbar_k, P_(t+1) = I,
    evaluated as ONE product [Pbar_0 .. Pbar_t] @ [P_1^T; ...; P_t^T; I] with K = (t+1) b, so the sum
    accumulates in fp32 once. The chains are kept transposed (Pbar_k^T = Pbar_(k-1)^T Q,
    P_k^T = 2I - P_(k+1)^T Q) so every operand is a contiguous slot of one buffer.
    """
    n, b = q.shape[0], q.shape[-1]
    xt = torch.empty(n, t + 1, b, b, dtype=q.dtype, device=q.device)  # slot k: Pbar_k^T
    vt = torch.empty(n, t + 1, b, b, dtype=q.dtype, device=q.device)  # slot k: P_(k+1)^T
    xt[:, 0] = grad_g.transpose(-1, -2)
    for k in range(t):
        torch.bmm(xt[:, k], q, out=xt[:, k + 1])
    vt[:, t] = 0
    _add_diag_(vt[:, t], 1.0)
    if t:
        torch.neg(q, out=vt[:, t - 1])
        _add_diag_(vt[:, t - 1], 2.0)
        for k in range(t - 1, 0, -1):
            torch.bmm(vt[:, k], q, out=vt[:, k - 1])
            vt[:, k - 1].neg_()
            _add_diag_(vt[:, k - 1], 2.0)
    return torch.bmm(xt.view(n, (t + 1) * b, b).transpose(1, 2), vt.view(n, (t + 1) * b, b))


# --- Cayley-Neumann through S = Q^2 (t = 2, 3): few products, every step one fused launch -----------------

SQUARE_FORM_TERMS = (2, 3)
# kernel_bench --sections bgemm on the H100 (reports/h100/speed/kernels-bgemm.jsonl): 64 x 128 tiles are best or
# within 5% of best at n = 12..72 blocks of 256 (small n leaves SMs idle with 128 x 128 tiles: 11.3 vs 8.9 us)
BGEMM_TILE = {"BM": 64, "BN": 128, "BK": 64, "num_warps": 4, "num_stages": 3}
# the pairs of one launch as one K loop (the pipeline fills once per program, not once per pair); a config's
# own "ONE_LOOP" wins (the bench sweeps both). Off: on the H100 it sped the two-pair product at n = 16 (9.1 ->
# 8.1 us) but not at n = 56 / 72, and 3B steps with it ran at 0.844-0.845x AdamW on two machines against
# 0.856-0.859x without it on three (reports/h100/speed/README.md, update 4)
BGEMM_ONE_LOOP = False


def bgemm(pairs, c=None, beta: float = 0.0, d=None, delta: float = 0.0, gamma: float = 0.0, e=None,
          eta: float = 0.0, sym_a1: bool = False) -> torch.Tensor:
    """sum_p alpha_p A_p @ B_p + beta C + delta D + gamma I over contiguous (n, b, b) batches of one dtype,
    where the first pair's right operand is B_0 + eta E when `e` is given (formed tile by tile, rounded to
    the operand dtype once: one product where two would be needed), and with `sym_a1` the second pair's left
    operand is A_1 + A_1^T (likewise: its tile plus the transposed load of the mirrored tile).

    pairs: up to three (alpha, A, B), alpha a power of two (the kernel scales the A tile by it, exactly).
    One `cayley_bgemm_kernel` launch where kernels run (fp32 accumulation, the additive terms in its
    epilogue); the same algebra with torch ops otherwise (float64, CPU without the interpreter, b < 16).
    """
    if torch.compiler.is_compiling():
        ops = [t for _, A, B in pairs for t in (A, B)] + [None] * (6 - 2 * len(pairs))
        return torch.ops.poetx.bgemm(*ops, c, d, [float(a) for a, _, _ in pairs], float(beta), float(delta),
                                     float(gamma), e, float(eta), bool(sym_a1))
    return _bgemm(pairs, c, beta, d, delta, gamma, e, eta, sym_a1)


def _bgemm(pairs, c=None, beta: float = 0.0, d=None, delta: float = 0.0, gamma: float = 0.0, e=None,
           eta: float = 0.0, sym_a1: bool = False) -> torch.Tensor:
    if sym_a1 and len(pairs) < 2:
        raise ValueError("bgemm: sym_a1 needs a second pair")
    a0 = pairs[0][1]
    n, b, _ = a0.shape
    if use_kernels(a0) and n and b >= 16 and a0.dtype != torch.float64:
        ops = [t.contiguous() for _, A, B in pairs for t in (A, B)]
        ops += [ops[0]] * (6 - len(ops))
        alphas = [float(a) for a, _, _ in pairs] + [1.0] * (3 - len(pairs))
        out = torch.empty(n, b, b, dtype=a0.dtype, device=a0.device)  # row-major, as the kernel writes
        interp = is_interpreted(a0.device)
        if interp:
            cfg = {"BM": min(32, _pow2(b)), "BN": min(32, _pow2(b)), "BK": min(32, _pow2(b)), "num_warps": 1}
        elif b >= 128:
            cfg = BGEMM_TILE
        else:
            cfg = {"BM": 64, "BN": 64, "BK": max(16, min(64, _pow2(b))), "num_warps": 4, "num_stages": 3}
        cfg = {"ONE_LOOP": BGEMM_ONE_LOOP, **cfg}
        sym_warps = cfg.pop("SYM_WARPS", 8)  # BGEMM_TILE's 64 x 128 with the mirrored tile: 4 warps spill 24 B/thread
        if sym_a1:  # the one-loop variant picks operands per step: no mirrored tile there
            cfg["ONE_LOOP"] = False
            if not interp and b >= 128:  # (sm_90, offline compile)
                cfg["num_warps"] = sym_warps
        grid = (n, _cdiv(b, cfg["BM"]), _cdiv(b, cfg["BN"]))
        kernels_for(a0.device).cayley_bgemm_kernel[grid](
            *ops, c.contiguous() if c is not None else ops[0], d.contiguous() if d is not None else ops[0],
            e.contiguous() if e is not None else ops[0], out, *alphas, float(beta), float(delta), float(gamma),
            float(eta), b, len(pairs), c is not None, d is not None, e is not None,
            PREC=dot_precision(a0.dtype), UPCAST=_upcast(a0), SYM_A1=bool(sym_a1), **cfg)
        return out
    out = None
    for i, (alpha, A, B) in enumerate(pairs):
        if i == 0 and e is not None:
            B = B + eta * e
        if i == 1 and sym_a1:
            A = A + A.transpose(-1, -2)
        out = torch.bmm(A, B).mul_(alpha) if out is None else torch.baddbmm(out, A, B, alpha=alpha)
    if c is not None:
        out.add_(c, alpha=beta)
    if d is not None:
        out.add_(d, alpha=delta)
    return _add_diag_(out, gamma) if gamma else out


def square_form_blocks(q: torch.Tensor, t: int, s: torch.Tensor | None = None) -> torch.Tensor:
    """G = I + 2Q + ... + 2Q^t + Q^(t+1) for t = 2, 3 with S = Q^2 (Q and S small, the identity added last):
    t = 2: G = I + 2Q + 2S + Q S;   t = 3: G = I + 2Q + 2S + S (2Q + S), the right factor formed inside the
    product's tile loads. Two launches, 2 b^3 units (one when S = Q^2 is given)."""
    s = bgemm([(1, q, q)]) if s is None else s
    if t == 2:
        return bgemm([(1, q, s)], c=q, beta=2, d=s, delta=2, gamma=1)
    return bgemm([(1, s, s)], c=q, beta=2, d=s, delta=2, gamma=1, e=q, eta=2)


def square_form_backward_dq(q: torch.Tensor, grad_g: torch.Tensor, t: int,
                            s: torch.Tensor | None = None) -> torch.Tensor:
    """dL/dQ of square_form_blocks up to a symmetric part, with S^T = S and Q^T = -Q:
    t = 3 (G = I + 2Q + 2S + S B, B = 2Q + S): Sbar = 2Gb + Gb (S - 2Q) + S Gb,  dQ = 2Gb + 2 S Gb - Sbar Q - Q Sbar;
    t = 2 (G = I + 2Q + 2S + Q S):             Sbar = 2Gb - Q Gb,              dQ = 2Gb + Gb S - Sbar Q - Q Sbar.
    Only dQ - dQ^T reaches the packed gradient (skew_pack_grad), and there Sbar Q + Q Sbar equals
    (Sbar + Sbar^T) Q: with U = Sbar + Sbar^T symmetric, (UQ)^T = -QU. So the last launch computes
    ... - (Sbar + Sbar^T) Q, one product where two were, its left tile formed from Sbar and its mirror
    (bgemm sym_a1). The result is not dQ itself; pack it. Three launches (S recomputed unless given), 4 or 5
    b^3 units."""
    gb = grad_g.to(q.dtype).contiguous()
    s = bgemm([(1, q, q)]) if s is None else s
    if t == 2:
        sbar = bgemm([(-1, q, gb)], c=gb, beta=2)
        return bgemm([(1, gb, s), (-1, sbar, q)], c=gb, beta=2, sym_a1=True)
    sbar = bgemm([(1, gb, s), (1, s, gb)], c=gb, beta=2, e=q, eta=-2)
    return bgemm([(2, s, gb), (-1, sbar, q)], c=gb, beta=2, sym_a1=True)


def cayley_units(terms: int) -> tuple[int, int]:
    """(forward, backward) count of b x b x b products per block: what the kernel bench divides by."""
    if terms == 3:
        return 2, 5
    if terms == 2:
        return 2, 4
    return terms, 3 * terms


def cayley_forward(q: torch.Tensor, terms: int, s: torch.Tensor | None = None) -> torch.Tensor:
    """G of dense skew blocks Q: the square form for t = 2, 3 (S = Q^2 given or computed), Horner otherwise."""
    return square_form_blocks(q, terms, s) if terms in SQUARE_FORM_TERMS else horner_blocks(q, terms)


def cayley_backward_dq(q: torch.Tensor, grad_g: torch.Tensor, terms: int,
                       s: torch.Tensor | None = None) -> torch.Tensor:
    return (square_form_backward_dq(q, grad_g, terms, s) if terms in SQUARE_FORM_TERMS
            else horner_backward_dq(q, grad_g, terms))


def _two_sided(tensors) -> bool:
    """Whether two packed tensors (or their gradients) go through one kernel launch (both sides of a layer)."""
    return (len(tensors) == 2 and not torch.compiler.is_compiling() and use_kernels(tensors[0])
            and tensors[0].dtype != torch.float64 and tensors[0].dtype == tensors[1].dtype
            and all(t.shape[0] for t in tensors))


def _unpack_all(packed: tuple[torch.Tensor, ...], b: int) -> torch.Tensor:
    """Dense Q of several packed tensors (one per side of a layer) into one batch, with no concatenation
    of the packed parameters (each is unpacked straight into its slice; two sides in one launch)."""
    sizes = [p.shape[0] for p in packed]
    q = torch.empty(sum(sizes), b, b, dtype=packed[0].dtype, device=packed[0].device)
    if _two_sided(packed):
        p0, p1 = (p.contiguous() for p in packed)
        return _launch_unpack(p0, p1, sizes[0], q)
    for p, part in zip(packed, q.split(sizes)):
        skew_unpack(p, b, out=part)
    return q


def _pack_all(dq: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
    """Packed-parameter gradients of each part of dQ (split by sizes; two parts in one launch)."""
    parts = dq.split(sizes)
    b = dq.shape[-1]
    if not _two_sided(parts) or b < 2:
        return [skew_pack_grad(part) for part in parts]
    outs = [torch.empty(n, b * (b - 1) // 2, dtype=dq.dtype, device=dq.device) for n in sizes]
    _launch_pack(dq, outs[0], outs[1], sizes[0])
    return outs


def _upcast(t: torch.Tensor) -> bool:
    """Whether the kernels' dots run in fp32 (the CPU interpreter has no bf16/fp16 dot)."""
    return is_interpreted(t.device) and t.dtype != torch.float32


CAYLEY_KEEPS = ("params", "qs")


def check_cayley_keep(keep: str) -> str:
    """`keep` if it is a CayleyFunction setting (checked where a layer is built, not per call)."""
    if keep not in CAYLEY_KEEPS:
        raise ValueError(f"cayley_keep must be one of {CAYLEY_KEEPS}, got {keep!r}")
    return keep


class CayleyFunction(torch.autograd.Function):
    """(b, terms, keep, packed_1, packed_2, ...) -> G (sum n_i, b, b) in the packed dtype: the orthogonal blocks
    of every packed tensor in one batch. keep = "params" saves only the packed parameters (backward recomputes
    Q and S: one unpack and one product launch); keep = "qs" saves the dense Q and S = Q^2 of the forward
    instead (2 n b^2 values more held until backward, those two launches fewer)."""

    @staticmethod
    def forward(ctx, b, terms, keep, *packed):
        ctx.b, ctx.terms, ctx.keep, ctx.sizes = b, terms, keep, [p.shape[0] for p in packed]
        q = _unpack_all(packed, b)
        if keep == "params":
            ctx.save_for_backward(*packed)
            return cayley_forward(q, terms)
        s = bgemm([(1, q, q)]) if terms in SQUARE_FORM_TERMS else None
        ctx.save_for_backward(q, s)
        return cayley_forward(q, terms, s)

    @staticmethod
    def backward(ctx, grad_g):
        if ctx.keep == "params":
            q, s = _unpack_all(ctx.saved_tensors, ctx.b), None
        else:
            q, s = ctx.saved_tensors
        dq = cayley_backward_dq(q, grad_g, ctx.terms, s)
        return (None, None, None, *_pack_all(dq, ctx.sizes))


def cayley_packed_backward(packed: torch.Tensor, grad_g: torch.Tensor, b: int, t: int) -> torch.Tensor:
    """Gradient of the packed parameters given dL/dG (the Cayley backward as one call, for benchmarks)."""
    return skew_pack_grad(cayley_backward_dq(skew_unpack(packed, b), grad_g, t))


def cayley_blocks(b: int, terms: int, *packed: torch.Tensor, keep: str = "params") -> torch.Tensor:
    return CayleyFunction.apply(b, terms, keep, *packed)


# --- block products in the row domain ---------------------------------------------------------------


def rows_apply(u: torch.Tensor, g_full, g_tail, side: Side, transpose: bool) -> torch.Tensor:
    """out_k = G_k u_k (transpose=False) or G_k^T u_k on the (b, T) row blocks of u (D, T)."""
    nb = side.n_full * side.b
    T = u.shape[1]
    g = g_full.transpose(-1, -2) if transpose else g_full
    if nb == side.dim:
        return torch.bmm(g, u.view(side.n_full, side.b, T)).view(side.dim, T)
    out = torch.empty_like(u)
    if side.n_full:
        torch.bmm(g, u[:nb].view(side.n_full, side.b, T), out=out[:nb].view(side.n_full, side.b, T))
    if side.tail:
        gt = g_tail[0].to(u.dtype)
        torch.mm(gt.t() if transpose else gt, u[nb:side.covered], out=out[nb:side.covered])
    if side.covered < side.dim:
        out[side.covered:] = u[side.covered:]
    return out


def rows_grad(gout: torch.Tensor, inp: torch.Tensor, side: Side, need_full: bool, need_tail: bool, out=None):
    """Gradients of G for out_k = G_k inp_k: sum over tokens of gout_k inp_k^T (bmm with K = T), the full
    blocks' written into `out` (n_full, b, b) when given."""
    nb = side.n_full * side.b
    T = gout.shape[1]
    g_full = g_tail = None
    if need_full and side.n_full:
        g_full = torch.bmm(gout[:nb].view(side.n_full, side.b, T),
                           inp[:nb].view(side.n_full, side.b, T).transpose(1, 2), out=out)
    if need_tail and side.tail:
        sl = slice(nb, side.covered)
        g_tail = (gout[sl] @ inp[sl].t()).unsqueeze(0)
    return g_full, g_tail


def _split_sides(gi, go, s_in):
    """(G_in, G_out) of the full blocks: `go is None` means gi holds both sides in one batch (input side
    first), as one Cayley evaluation returns them; split here, inside the Function, so autograd never sees
    the split (its backward would concatenate the two block gradients: one extra pass per layer and step)."""
    return (gi[:s_in.n_full], gi[s_in.n_full:]) if go is None else (gi, go)


class POETXRowsFunction(torch.autograd.Function):
    """x2 (T, D_in) -> y2 (T, D_out) given the orthogonal blocks of both sides (module docstring). The full
    blocks come as (G_in, G_out), or as one joint batch in `gi` with `go = None` (see _split_sides)."""

    @staticmethod
    def forward(ctx, x2, gi, gi_t, go, go_t, weight, scale, sides, mode):
        s_in, s_out = sides
        dt = x2.dtype
        gi_c, go_c = (g.to(dt) for g in _split_sides(gi, go, s_in))
        h_t = _w0(weight, scale, dt) @ rows_apply(to_rows(x2, s_in.inv, s_in.perm), gi_c, gi_t, s_in,
                                                  transpose=False)
        y = from_rows(rows_apply(h_t, go_c, go_t, s_out, transpose=False), s_out.inv)
        ctx.sides, ctx.mode = sides, mode
        ctx.save_for_backward(x2, h_t if mode == "fast" else None, gi, gi_t, go, go_t, weight, scale)
        return y

    @staticmethod
    def backward(ctx, gy):
        x2, h_t, gi, gi_t, go, go_t, weight, scale = ctx.saved_tensors
        s_in, s_out = ctx.sides
        need_x, need_gi, need_git, need_go, need_got = ctx.needs_input_grad[:5]
        joint = go is None
        if joint:  # one gradient buffer for both sides; each side's bmm writes its slice
            need_go = need_gi
            g_joint = torch.empty_like(gi, dtype=x2.dtype) if need_gi else None
            out_in, out_out = _split_sides(g_joint, None, s_in) if need_gi else (None, None)
        else:
            out_in = out_out = None
        dt = x2.dtype
        gi_c, go_c = (g.to(dt) for g in _split_sides(gi, go, s_in))
        weight = _w0(weight, scale, dt)  # POET-XQ: dequantized for this backward only
        a_t = to_rows(x2, s_in.inv, s_in.perm)
        if h_t is None:  # mem mode: recompute the GEMM output
            h_t = weight @ rows_apply(a_t, gi_c, gi_t, s_in, transpose=False)
        ge_t = to_rows(gy.to(dt).contiguous(), s_out.inv, s_out.perm)
        g_go, g_got = rows_grad(ge_t, h_t, s_out, need_go, need_got, out=out_out)
        del h_t
        gx = g_gi = g_git = None
        if need_x or need_gi or need_git:
            gc_t = weight.t() @ rows_apply(ge_t, go_c, go_t, s_out, transpose=True)
            del ge_t
            g_gi, g_git = rows_grad(gc_t, a_t, s_in, need_gi, need_git, out=out_in)
            if need_x:
                gx = from_rows(rows_apply(gc_t, gi_c, gi_t, s_in, transpose=True), s_in.inv)
        if joint:
            return (gx, _cast(g_joint, gi), _cast(g_git, gi_t), None, _cast(g_got, go_t), None, None, None, None)
        return (gx, _cast(g_gi, gi), _cast(g_git, gi_t), _cast(g_go, go), _cast(g_got, go_t),
                None, None, None, None)


def dequantize_rows(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """q * scale[:, None] in `dtype` (int8 values are exact in bf16/fp16/fp32: one rounding, at the product)."""
    return torch.mul(q.to(dtype), scale.to(dtype)[:, None])


def _w0(weight: torch.Tensor, scale: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """W0 in the compute dtype: as stored, or dequantized from int8 rows (POET-XQ, quantized.py)."""
    return weight if scale is None else dequantize_rows(weight, scale, dtype)


def _cast(g, like):
    return None if g is None or like is None else g.to(like.dtype)


def layer_blocks(layer):
    """(G_in_full, G_in_tail, G_out_full, G_out_tail) of a POET-X layer in its parameter dtype; G_out_full is
    None when G_in_full holds both sides' full blocks in one batch (_split_sides).

    Blocks precomputed for this forward by a model-level batch (model_cayley.py) are taken once and used.
    Otherwise the full blocks of both sides go through one batched Cayley when their sizes match (the usual
    case); tails (a smaller last block) through the same Function at their own size.
    """
    pre = getattr(layer, "_model_blocks", None)
    if pre is not None:
        layer._model_blocks = None
        return pre
    lay_in, lay_out = layer.layout_in, layer.layout_out
    full_in, tail_in = lay_in.split_params(layer.skew_in)
    full_out, tail_out = lay_out.split_params(layer.skew_out)
    terms = int(layer.neumann_terms)
    if layer.cayley != "neumann":  # the exact map solves a system: in fp32 at least (no bf16 LU)
        def exact(packed, r):
            work = packed if packed.dtype in (torch.float32, torch.float64) else packed.float()
            return RecomputedOrthogonalBlocks.apply(work, r, layer.cayley, terms)

        return (exact(full_in, lay_in.b), None if tail_in is None else exact(tail_in, lay_in.tail),
                exact(full_out, lay_out.b), None if tail_out is None else exact(tail_out, lay_out.tail))
    keep = layer.cayley_keep
    if lay_in.b == lay_out.b and lay_in.n_full and lay_out.n_full:
        gi, go = cayley_blocks(lay_in.b, terms, full_in, full_out, keep=keep), None  # joint (_split_sides)
    else:
        gi = cayley_blocks(lay_in.b, terms, full_in, keep=keep)
        go = cayley_blocks(lay_out.b, terms, full_out, keep=keep)
    ti, to = tail_blocks(layer)
    return gi, ti, go, to


def tail_blocks(layer):
    """(G_in_tail, G_out_tail) of a Neumann POET-X layer (None where a side has no tail): the same Cayley
    Function as the full blocks, at the tail's size (torch ops below 16, the kernels with masks above)."""
    terms = int(layer.neumann_terms)
    _, tail_in = layer.layout_in.split_params(layer.skew_in)
    _, tail_out = layer.layout_out.split_params(layer.skew_out)

    def tail(packed, r):
        return None if packed is None else cayley_blocks(r, terms, packed)

    return tail(tail_in, layer.layout_in.tail), tail(tail_out, layer.layout_out.tail)


def poetx_rows_forward(layer, x: torch.Tensor) -> torch.Tensor:
    """The POET-X layer output without bias, in the row domain (any device; kernels where usable)."""
    gi, gi_t, go, go_t = layer_blocks(layer)
    sides = (Side(layer.layout_in, layer.perm_in, layer.inv_perm_in),
             Side(layer.layout_out, layer.perm_out, layer.inv_perm_out))
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1])
    y2 = POETXRowsFunction.apply(x2, gi, gi_t, go, go_t, layer.weight, getattr(layer, "weight_scale", None),
                                 sides, layer.mode)
    return y2.reshape(*lead, layer.out_features)


from . import ops as _ops  # noqa: E402,F401  (registers the torch.library ops above, used while compiling)
