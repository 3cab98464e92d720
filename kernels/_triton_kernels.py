"""The Triton kernels themselves (no launch logic; see cayley.py / block_perm.py for the wrappers).

This file is loaded twice at most by `_loader.py`: once as compiled GPU kernels and once under the Triton
interpreter (CPU tensors), so the choice is made per device at call time instead of by whatever
TRITON_INTERPRET said when the module was first imported. Only long-stable Triton APIs are used
(tl.load/store with masks, tl.dot, tl.arange, tl.full, tl.where, tl.static_range, tl.debug_barrier,
tl.atomic_add, constexpr meta-parameters) so the same source compiles on triton 3.0 .. 3.9.
No @jit functions of triton.language's standard library (tl.zeros, tl.cdiv, tl.sum, ...) are used: those
are compiled-or-interpreted according to TRITON_INTERPRET at *triton's* import time, which would tie the
CPU interpreter path to the environment of whoever imported triton first.

Conventions (reference/cayley.py, reference/blocks.py):
  packed skew params: entry t of a block is Q[i, j], i < j, t = i*b - i(i+1)/2 + (j - i - 1); Q[j,i] = -Q[i,j]
  Cayley-Neumann:     G = (I + Q) sum_{k=0..TERMS} Q^k = I + sum_{k=1..M} c_k Q^k, M = TERMS + 1,
                      c_k = 2 for k <= TERMS, c_M = 1 (TERMS = 0: G = I + Q)
  side transform:     out[:, perm[k*b + d]] = sum_c x[:, perm[k*b + c]] * Gt_k[c, d]
                      with Gt_k = G_k^T (x T^T, forward) or G_k (x T, backward); the caller passes Gt's strides.
"""

import triton
import triton.language as tl

# ---------------------------------------------------------------------------------------------------
# Cayley-Neumann
# ---------------------------------------------------------------------------------------------------


@triton.jit
def _q_tile(qp, rows, cols, b):
    """Q[rows, cols] of one block (fp32), read straight from its packed upper triangle."""
    i = rows[:, None]
    j = cols[None, :]
    lo = tl.minimum(i, j)
    hi = tl.maximum(i, j)
    t = lo * b - (lo * (lo + 1)) // 2 + (hi - lo - 1)
    valid = (i != j) & (i < b) & (j < b)
    v = tl.load(qp + t, mask=valid, other=0.0).to(tl.float32)
    return tl.where(i < j, v, -v)


@triton.jit
def _tile(ptr, rows, cols, b):
    """ptr[rows, cols] of a dense row-major b x b block (zero outside), as fp32."""
    m = (rows < b)[:, None] & (cols < b)[None, :]
    return tl.load(ptr + rows[:, None] * b + cols[None, :], mask=m, other=0.0).to(tl.float32)


@triton.jit
def _sym_skew_tile(gg, rows, cols, b):
    """(A, K) tiles at [rows, cols] of A = (Gbar + Gbar^T)/2 and K = (Gbar - Gbar^T)/2 (fp32).

    The transposed operand is loaded as a contiguous tile and transposed in registers (coalesced).
    """
    g = _tile(gg, rows, cols, b)
    gt = tl.trans(_tile(gg, cols, rows, b))
    return 0.5 * (g + gt), 0.5 * (g - gt)


@triton.jit
def cayley_unpack_kernel(packed_ptr, packed2_ptr, n_first, q_ptr, b: tl.constexpr, n_packed, BM: tl.constexpr,
                         BN: tl.constexpr):
    """Dense Q (n, b, b) from the packed upper triangles, by index arithmetic (no torch scatter). Blocks
    below n_first come from packed_ptr, the rest from packed2_ptr: both sides of a layer in one launch.

    Why a separate pass: the power chain then reads Q with contiguous, pipelinable tile loads; reading
    the packed vector inside the chain made every K step a dependent, partly strided gather (measured
    ~95 us for 16 blocks of 256 on an H100, latency-bound).
    """
    blk = tl.program_id(0).to(tl.int64)
    rows = tl.program_id(1) * BM + tl.arange(0, BM)
    if blk < n_first:
        qp = packed_ptr + blk * n_packed
    else:
        qp = packed2_ptr + (blk - n_first) * n_packed
    base = blk * b * b
    for n0 in range(0, b, BN):
        cols = n0 + tl.arange(0, BN)
        m2 = (rows < b)[:, None] & (cols < b)[None, :]
        tl.store(q_ptr + base + rows[:, None] * b + cols[None, :], _q_tile(qp, rows, cols, b), mask=m2)


@triton.jit
def cayley_fwd_kernel(q_ptr, g_ptr, buf_ptr, b: tl.constexpr, buf_stride,
                      TERMS: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
                      PREC: tl.constexpr):
    """One program per (block, row panel of BM rows): G[R, :] = I[R, :] + sum_k c_k (Q^k)[R, :].

    Row panels of the powers only need the panel's own rows of the previous power and all of Q, so the
    chain P_1 = Q[R, :], P_k = P_{k-1} Q needs no cross-program synchronisation: TERMS panel x b x b dots.
    P_k (k >= 2) lives in a per-block fp32 scratch (double buffer, only this program's rows) and G (fp32
    output) is the running sum. tl.debug_barrier orders one step's stores before the next step's loads.
    """
    blk = tl.program_id(0).to(tl.int64)
    rows = tl.program_id(1) * BM + tl.arange(0, BM)
    rmask = rows < b
    base = blk * b * b
    q = q_ptr + base
    for n0 in range(0, b, BN):
        cols = n0 + tl.arange(0, BN)
        m2 = rmask[:, None] & (cols < b)[None, :]
        off = base + rows[:, None] * b + cols[None, :]
        qt = _tile(q, rows, cols, b)
        eye = tl.where(rows[:, None] == cols[None, :], 1.0, 0.0)
        if TERMS == 0:
            tl.store(g_ptr + off, eye + qt, mask=m2)
        else:
            tl.store(g_ptr + off, eye + 2.0 * qt, mask=m2)
    for k in tl.static_range(2, TERMS + 2):
        tl.debug_barrier()
        if k == 2:
            src = q
        else:
            src = buf_ptr + ((k - 1) % 2) * buf_stride + base
        dst = buf_ptr + (k % 2) * buf_stride + base
        for n0 in range(0, b, BN):
            cols = n0 + tl.arange(0, BN)
            m2 = rmask[:, None] & (cols < b)[None, :]
            off = base + rows[:, None] * b + cols[None, :]
            acc = tl.full((BM, BN), 0.0, tl.float32)
            for k0 in range(0, b, BK):
                ks = k0 + tl.arange(0, BK)
                acc = tl.dot(_tile(src, rows, ks, b), _tile(q, ks, cols, b), acc, input_precision=PREC)
            g_old = tl.load(g_ptr + off, mask=m2, other=0.0)
            if k == TERMS + 1:
                tl.store(g_ptr + off, g_old + acc, mask=m2)
            else:
                tl.store(dst + rows[:, None] * b + cols[None, :], acc, mask=m2)
                tl.store(g_ptr + off, g_old + 2.0 * acc, mask=m2)


@triton.jit
def cayley_bwd_kernel(q_ptr, gg_ptr, gp_ptr, pw_ptr, hb_ptr, b: tl.constexpr, n_packed, buf_stride,
                      TERMS: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
                      PREC: tl.constexpr):
    """grad_packed[t(i,j)] = S[i, j] (i < j) for S = dL/dQ - (dL/dQ)^T, one program per (block, row panel).

    With R = Q^T = -Q, dL/dQ = sum_k c_k sum_{a+j=k-1} R^a Gbar R^j. Because S is skew, only the row panel
    S[R, :] is needed, and splitting Gbar = A + K (symmetric / skew) makes every term row-local:
        S/2 = V_0 + (V_1 + (... + V_{M-1} R) R) R,   V_j = sum_{a>=0} c_{a+j+1} R^a X_{a+j+1},
        X_k = K for odd k, A for even k.
    Phase 1 stores the row panels of R^a (a = 1..M-1) in scratch; phase 2 runs the Horner recurrence
    (step jj handles j = M-2-jj) with the running panel H in a double buffer, as three dots per step in two
    K loops (fewer live tiles: the first version kept six operand tiles live and spilled ~1 KB/thread).
    Cost (M-2) + 3(M-1) panel x b x b dots (11 at TERMS=3). Q is the dense fp32 block from
    cayley_unpack_kernel.
    """
    M: tl.constexpr = TERMS + 1
    blk = tl.program_id(0).to(tl.int64)
    rows = tl.program_id(1) * BM + tl.arange(0, BM)
    rmask = rows < b
    gpp = gp_ptr + blk * n_packed
    base = blk * b * b
    q = q_ptr + base
    gg = gg_ptr + base
    if TERMS == 0:
        # G = I + Q: S = Gbar - Gbar^T = 2K
        for n0 in range(0, b, BN):
            cols = n0 + tl.arange(0, BN)
            a_t, k_t = _sym_skew_tile(gg, rows, cols, b)
            i = rows[:, None]
            jc = cols[None, :]
            t = i * b - (i * (i + 1)) // 2 + (jc - i - 1)
            tl.store(gpp + t, 2.0 * k_t, mask=(i < jc) & (jc < b))
    else:
        # phase 1: row panels of R^a, a = 1..M-1, in pw[a-1]
        for n0 in range(0, b, BN):
            cols = n0 + tl.arange(0, BN)
            m2 = rmask[:, None] & (cols < b)[None, :]
            tl.store(pw_ptr + base + rows[:, None] * b + cols[None, :], -_tile(q, rows, cols, b), mask=m2)
        for a in tl.static_range(2, M):
            tl.debug_barrier()
            src = pw_ptr + (a - 2) * buf_stride + base
            dst = pw_ptr + (a - 1) * buf_stride + base
            for n0 in range(0, b, BN):
                cols = n0 + tl.arange(0, BN)
                m2 = rmask[:, None] & (cols < b)[None, :]
                acc = tl.full((BM, BN), 0.0, tl.float32)
                for k0 in range(0, b, BK):
                    ks = k0 + tl.arange(0, BK)
                    acc = tl.dot(_tile(src, rows, ks, b), -_tile(q, ks, cols, b), acc, input_precision=PREC)
                tl.store(dst + rows[:, None] * b + cols[None, :], acc, mask=m2)
        # phase 2: Horner, step jj handles j = M-2-jj (no constexpr j: it cannot be re-bound per step)
        for jj in tl.static_range(0, M - 1):
            tl.debug_barrier()
            hsrc = hb_ptr + (jj % 2) * buf_stride + base
            hdst = hb_ptr + ((jj + 1) % 2) * buf_stride + base
            for n0 in range(0, b, BN):
                cols = n0 + tl.arange(0, BN)
                m2 = rmask[:, None] & (cols < b)[None, :]
                a_rn, k_rn = _sym_skew_tile(gg, rows, cols, b)
                # c_{j+1} X_{j+1}[R, N] with j + 1 = M-1-jj <= TERMS, so c = 2
                if (M - 1 - jj) % 2 == 1:
                    acc = 2.0 * k_rn
                else:
                    acc = 2.0 * a_rn
                # (1) acc += H (-Q): H = V_{M-1} = c_M X_M (c_M = 1) at the first step, else the scratch panel
                for k0 in range(0, b, BK):
                    ks = k0 + tl.arange(0, BK)
                    if jj == 0:
                        a_rk, k_rk = _sym_skew_tile(gg, rows, ks, b)
                        if M % 2 == 1:
                            h = k_rk
                        else:
                            h = a_rk
                    else:
                        h = _tile(hsrc, rows, ks, b)
                    acc = tl.dot(h, -_tile(q, ks, cols, b), acc, input_precision=PREC)
                # (2) V_j's matrix part PK K + PA A = PS Gbar + PD Gbar^T with PS = (PK+PA)/2, PD = (PA-PK)/2;
                # PK/PA are polynomials in R (row panels from pw): term a multiplies X_k, k = a + M-1-jj,
                # weight c_k = 1 iff k == M else 2; odd k -> K, even k -> A.
                for k0 in range(0, b, BK):
                    ks = k0 + tl.arange(0, BK)
                    ps = tl.full((BM, BK), 0.0, tl.float32)
                    pd = tl.full((BM, BK), 0.0, tl.float32)
                    for a2 in tl.static_range(1, jj + 2):
                        pwt = _tile(pw_ptr + (a2 - 1) * buf_stride + base, rows, ks, b)
                        if a2 == jj + 1:
                            pwt = 0.5 * pwt
                        ps += pwt
                        if (a2 + M - 1 - jj) % 2 == 1:
                            pd -= pwt
                        else:
                            pd += pwt
                    acc = tl.dot(ps, _tile(gg, ks, cols, b), acc, input_precision=PREC)
                    acc = tl.dot(pd, tl.trans(_tile(gg, cols, ks, b)), acc, input_precision=PREC)
                if jj == M - 2:
                    i = rows[:, None]
                    jc = cols[None, :]
                    t = i * b - (i * (i + 1)) // 2 + (jc - i - 1)
                    tl.store(gpp + t, 2.0 * acc, mask=(i < jc) & (jc < b))
                else:
                    tl.store(hdst + rows[:, None] * b + cols[None, :], acc, mask=m2)


# ---------------------------------------------------------------------------------------------------
# permutation + block-diagonal multiply, and the per-block gradient reduction
# ---------------------------------------------------------------------------------------------------


@triton.jit
def block_perm_apply_kernel(x_ptr, gt_ptr, perm_ptr, sperm_ptr, out_ptr, n_rows, b: tl.constexpr, n_tiles_n, n_kn,
                            sxm, sxk, sgb, sgc, sgd, som, sok,
                            BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, PREC: tl.constexpr,
                            UPCAST: tl.constexpr):
    """out[r, sperm[k*b + d]] = sum_c x[r, perm[k*b + c]] Gt_k[c, d] for the full blocks k.

    perm (load) and sperm (store) are separate index vectors: a POET-X layer gathers on the input side
    and scatters on the output side only (identity index on the other end, which loads contiguously).

    Program = (row tile, block k x output column tile), numbered with the block index fastest, so the
    programs resident at one time all work on the same few row tiles: their gathered loads hit L2 lines
    that neighbours just fetched and their 2-byte scattered stores complete whole sectors while the
    lines are still in L2 (row-fastest order thrashed L2 at D = 14336: 3.4 ms for a 2048 x 14336 pass).
    The gather through perm is folded into the x load and the inverse permutation into the store, so no
    permuted copy of x or out exists.
    Gt is G or G^T, given by strides (sgb, sgc, sgd), already in x's dtype. UPCAST (interpreter only)
    does the dot in fp32: the CPU interpreter multiplies bf16 tiles as raw integers (triton 3.9).
    """
    pid = tl.program_id(0)
    pid_kn = pid % n_kn
    pid_m = pid // n_kn
    blk = pid_kn // n_tiles_n
    tn = pid_kn % n_tiles_n
    rows = pid_m * BM + tl.arange(0, BM)
    rmask = rows < n_rows
    rows64 = rows.to(tl.int64)
    d = tn * BN + tl.arange(0, BN)
    dmask = d < b
    pbase = perm_ptr + blk.to(tl.int64) * b
    gbase = gt_ptr + blk.to(tl.int64) * sgb
    acc = tl.full((BM, BN), 0.0, tl.float32)
    for k0 in range(0, b, BK):
        c = k0 + tl.arange(0, BK)
        cmask = c < b
        pc = tl.load(pbase + c, mask=cmask, other=0)
        xt = tl.load(x_ptr + rows64[:, None] * sxm + pc[None, :] * sxk,
                     mask=rmask[:, None] & cmask[None, :], other=0.0)
        gt = tl.load(gbase + c[:, None] * sgc + d[None, :] * sgd,
                     mask=cmask[:, None] & dmask[None, :], other=0.0)
        if UPCAST:
            acc = tl.dot(xt.to(tl.float32), gt.to(tl.float32), acc, input_precision=PREC)
        else:
            acc = tl.dot(xt, gt.to(xt.dtype), acc, input_precision=PREC)
    pd = tl.load(sperm_ptr + blk.to(tl.int64) * b + d, mask=dmask, other=0)
    tl.store(out_ptr + rows64[:, None] * som + pd[None, :] * sok, acc.to(out_ptr.dtype.element_ty),
             mask=rmask[:, None] & dmask[None, :])


@triton.jit
def block_perm_grad_kernel(go_ptr, in_ptr, perm_ptr, iperm_ptr, out_ptr, n_rows, b: tl.constexpr, n_tiles_d, n_tiles_c,
                           rows_per_split, sgm, sgk, sim, sik,
                           BD: tl.constexpr, BC: tl.constexpr, BR: tl.constexpr,
                           ATOMIC: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr):
    """grad_G_k[d, c] = sum_r gout[r, perm[k*b + d]] * inp[r, iperm[k*b + c]] (fp32 output).

    Program = (block k x (d tile, c tile), row split). Both operands are gathered through perm on load;
    row splits are combined with fp32 atomics (ATOMIC) or, with one split, a plain store.
    UPCAST: fp32 dot for the interpreter's broken bf16 dot (see block_perm_apply_kernel).
    """
    pid = tl.program_id(0)
    pid_s = tl.program_id(1)
    per_blk = n_tiles_d * n_tiles_c
    blk = pid // per_blk
    rem = pid % per_blk
    td = rem // n_tiles_c
    tc = rem % n_tiles_c
    d = td * BD + tl.arange(0, BD)
    c = tc * BC + tl.arange(0, BC)
    dmask = d < b
    cmask = c < b
    pbase = perm_ptr + blk.to(tl.int64) * b
    pd = tl.load(pbase + d, mask=dmask, other=0)
    pc = tl.load(iperm_ptr + blk.to(tl.int64) * b + c, mask=cmask, other=0)
    r_start = pid_s * rows_per_split
    r_end = tl.minimum(n_rows, r_start + rows_per_split)
    acc = tl.full((BD, BC), 0.0, tl.float32)
    for r0 in range(r_start, r_end, BR):
        r = r0 + tl.arange(0, BR)
        rm = r < r_end
        r64 = r.to(tl.int64)
        a = tl.load(go_ptr + r64[None, :] * sgm + pd[:, None] * sgk, mask=dmask[:, None] & rm[None, :], other=0.0)
        x = tl.load(in_ptr + r64[:, None] * sim + pc[None, :] * sik, mask=rm[:, None] & cmask[None, :], other=0.0)
        if UPCAST:
            acc = tl.dot(a.to(tl.float32), x.to(tl.float32), acc, input_precision=PREC)
        else:
            acc = tl.dot(a, x.to(a.dtype), acc, input_precision=PREC)
    off = blk.to(tl.int64) * b * b + d[:, None] * b + c[None, :]
    m2 = dmask[:, None] & cmask[None, :]
    if ATOMIC:
        tl.atomic_add(out_ptr + off, acc, mask=m2)
    else:
        tl.store(out_ptr + off, acc, mask=m2)


# ---------------------------------------------------------------------------------------------------
# Row-domain POET-X (kernels/rows.py): permutations as coalesced transposes, skew pack/unpack
# ---------------------------------------------------------------------------------------------------


@triton.jit
def perm_to_rows_kernel(x_ptr, idx_ptr, out_ptr, T, D, sx, BT: tl.constexpr, BD: tl.constexpr):
    """out[idx[d], t] = x[t, d]: a (T, D) activation to the row domain (D, T), permuted on the way.

    Why it is fast: the x tile is read contiguously along d (16-byte vectors) and each of its columns is
    written as one contiguous run of BT tokens of row idx[d]; the transpose between the two layouts goes
    through shared memory. No element is fetched through a loaded index (the slow pattern of gathers).
    """
    t = tl.program_id(0) * BT + tl.arange(0, BT)
    d = tl.program_id(1) * BD + tl.arange(0, BD)
    mt = t < T
    md = d < D
    tile = tl.load(x_ptr + t[:, None].to(tl.int64) * sx + d[None, :], mask=mt[:, None] & md[None, :], other=0.0)
    rows = tl.load(idx_ptr + d, mask=md, other=0).to(tl.int64)
    tl.store(out_ptr + rows[:, None] * T + t[None, :], tl.trans(tile), mask=md[:, None] & mt[None, :])


@triton.jit
def perm_from_rows_kernel(src_ptr, idx_ptr, y_ptr, T, D, sy, BT: tl.constexpr, BD: tl.constexpr):
    """y[t, m] = src[idx[m], t]: back from the row domain (D, T) to a (T, D) activation.

    Each of the BD source rows is read as one contiguous run of BT tokens; the y tile is written
    contiguously along m.
    """
    t = tl.program_id(0) * BT + tl.arange(0, BT)
    m = tl.program_id(1) * BD + tl.arange(0, BD)
    mt = t < T
    mm = m < D
    rows = tl.load(idx_ptr + m, mask=mm, other=0).to(tl.int64)
    tile = tl.load(src_ptr + rows[:, None] * T + t[None, :], mask=mm[:, None] & mt[None, :], other=0.0)
    tl.store(y_ptr + t[:, None].to(tl.int64) * sy + m[None, :], tl.trans(tile), mask=mt[:, None] & mm[None, :])


@triton.jit
def skew_pack_grad_kernel(s_ptr, out_ptr, out2_ptr, n_first, b: tl.constexpr, n_packed, BM: tl.constexpr,
                          BN: tl.constexpr):
    """out[t(i, j)] = S[i, j] - S[j, i] (i < j) for each dense b x b block S: the packed-parameter gradient
    of Q = U - U^T. The S[j, i] tile is read contiguously and transposed in registers. Blocks below n_first
    write to out_ptr, the rest to out2_ptr (both sides of a layer in one launch)."""
    blk = tl.program_id(0).to(tl.int64)
    rows = tl.program_id(1) * BM + tl.arange(0, BM)
    base = s_ptr + blk * b * b
    if blk < n_first:
        op = out_ptr + blk * n_packed
    else:
        op = out2_ptr + (blk - n_first) * n_packed
    i = rows[:, None]
    for n0 in range(0, b, BN):
        cols = n0 + tl.arange(0, BN)
        j = cols[None, :]
        s = _tile(base, rows, cols, b)
        st = tl.trans(_tile(base, cols, rows, b))
        t = i * b - (i * (i + 1)) // 2 + (j - i - 1)
        tl.store(op + t, s - st, mask=(i < j) & (j < b))


# ---------------------------------------------------------------------------------------------------
# Cayley-Neumann through S = Q^2: a batched b x b product with up to three operand pairs and an epilogue
# ---------------------------------------------------------------------------------------------------


@triton.jit
def _pair_step(acc, alpha, a_ptr, b_ptr, e_ptr, eta, rows, cols, ks, ke, b: tl.constexpr, PREC: tl.constexpr,
               UPCAST: tl.constexpr, HAS_E: tl.constexpr, SYM_A: tl.constexpr = False):
    """acc + alpha A[rows, ks] @ (B + eta E)[ks, cols]: one K step of one pair (E only where ke, else 0).
    alpha scales the A tile before the dot (exact for the powers of two the callers pass), so all pairs share
    one accumulator; B + eta E is formed tile by tile (one product instead of two). SYM_A: the left operand
    is A + A^T, its tile formed from A[rows, ks] and the transposed load of A[ks, rows]."""
    rm = rows < b
    cm = cols < b
    km = ks < b
    a = tl.load(a_ptr + rows[:, None] * b + ks[None, :], mask=rm[:, None] & km[None, :], other=0.0)
    if SYM_A:
        at = tl.load(a_ptr + ks[None, :] * b + rows[:, None], mask=rm[:, None] & km[None, :], other=0.0)
        a = (a.to(tl.float32) + at.to(tl.float32)).to(a.dtype)
    w = tl.load(b_ptr + ks[:, None] * b + cols[None, :], mask=km[:, None] & cm[None, :], other=0.0)
    if HAS_E:
        e = tl.load(e_ptr + ks[:, None] * b + cols[None, :], mask=ke[:, None] & cm[None, :], other=0.0)
        w = (w.to(tl.float32) + eta * e.to(tl.float32)).to(w.dtype)
    if UPCAST:
        return tl.dot(a.to(tl.float32) * alpha, w.to(tl.float32), acc, input_precision=PREC)
    return tl.dot((a * alpha).to(w.dtype), w, acc, input_precision=PREC)


@triton.jit
def _pair_product(acc, alpha, a_ptr, b_ptr, rows, cols, b: tl.constexpr, BK: tl.constexpr, PREC: tl.constexpr,
                  UPCAST: tl.constexpr, e_ptr, eta, HAS_E: tl.constexpr, SYM_A: tl.constexpr = False):
    """acc + alpha A[rows, :] @ (B + eta E)[:, cols] for one pair of dense row-major b x b blocks (A + A^T
    for A with SYM_A)."""
    for k0 in range(0, b, BK):
        ks = k0 + tl.arange(0, BK)
        acc = _pair_step(acc, alpha, a_ptr, b_ptr, e_ptr, eta, rows, cols, ks, ks < b, b, PREC, UPCAST, HAS_E,
                         SYM_A)
    return acc


@triton.jit
def _pairs_one_loop(acc, alpha0, alpha1, alpha2, a0_ptr, b0_ptr, a1_ptr, b1_ptr, a2_ptr, b2_ptr, e_ptr, eta, rows,
                    cols, b: tl.constexpr, NP: tl.constexpr, BK: tl.constexpr, PREC: tl.constexpr,
                    UPCAST: tl.constexpr, HAS_E: tl.constexpr):
    """The same sum as _pair_product called per pair, as one loop over (pair, K step): the operands of step
    i are chosen by pointer and E (first pair only) is masked to zero on the other pairs' steps."""
    KT: tl.constexpr = (b + BK - 1) // BK
    for i in range(0, NP * KT):
        p = i // KT
        ks = (i - p * KT) * BK + tl.arange(0, BK)
        a_ptr = tl.where(p == 0, a0_ptr, tl.where(p == 1, a1_ptr, a2_ptr))
        b_ptr = tl.where(p == 0, b0_ptr, tl.where(p == 1, b1_ptr, b2_ptr))
        alpha = tl.where(p == 0, alpha0, tl.where(p == 1, alpha1, alpha2))
        ke = ks < tl.where(p == 0, b, 0)  # no E on the other pairs' steps
        acc = _pair_step(acc, alpha, a_ptr, b_ptr, e_ptr, eta, rows, cols, ks, ke, b, PREC, UPCAST, HAS_E)
    return acc


@triton.jit
def cayley_bgemm_kernel(a0_ptr, b0_ptr, a1_ptr, b1_ptr, a2_ptr, b2_ptr, c_ptr, d_ptr, e_ptr, out_ptr,
                        alpha0, alpha1, alpha2, beta, delta, gamma, eta, b: tl.constexpr, NP: tl.constexpr,
                        HAS_C: tl.constexpr, HAS_D: tl.constexpr, HAS_E: tl.constexpr, BM: tl.constexpr,
                        BN: tl.constexpr, BK: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr,
                        ONE_LOOP: tl.constexpr = False, SYM_A1: tl.constexpr = False):
    """out_k = sum_{p < NP} alpha_p A_p,k @ B_p,k + beta C_k + delta D_k + gamma I for each block k, where
    with HAS_E the first pair's right operand is B_0,k + eta E_k, and with SYM_A1 the second pair's left
    operand is A_1,k + A_1,k^T (formed tile by tile; not with ONE_LOOP).

    Every Cayley-Neumann step of rows.py (forward and backward, t = 2 or 3) is one launch of this kernel:
    the sums of products accumulate in one fp32 tile and the additive terms (including the identity) are
    applied in the epilogue, so no intermediate (n, b, b) tensor is written for them. All operands are
    contiguous (n, b, b) batches of one dtype; grid = (block, row tile, column tile).
    ONE_LOOP runs the pairs as one K loop of NP * b / BK steps, so the load pipeline fills once per program
    instead of once per pair (at K = b = 256 a pair is only four steps of 64).
    """
    blk = tl.program_id(0).to(tl.int64)
    rows = tl.program_id(1) * BM + tl.arange(0, BM)
    cols = tl.program_id(2) * BN + tl.arange(0, BN)
    off = blk * b * b
    acc = tl.full((BM, BN), 0.0, tl.float32)
    if ONE_LOOP:
        acc = _pairs_one_loop(acc, alpha0, alpha1, alpha2, a0_ptr + off, b0_ptr + off, a1_ptr + off, b1_ptr + off,
                              a2_ptr + off, b2_ptr + off, e_ptr + off, eta, rows, cols, b, NP, BK, PREC, UPCAST,
                              HAS_E)
    else:
        acc = _pair_product(acc, alpha0, a0_ptr + off, b0_ptr + off, rows, cols, b, BK, PREC, UPCAST, e_ptr + off,
                            eta, HAS_E)
        if NP > 1:
            acc = _pair_product(acc, alpha1, a1_ptr + off, b1_ptr + off, rows, cols, b, BK, PREC, UPCAST, e_ptr,
                                eta, False, SYM_A1)
        if NP > 2:
            acc = _pair_product(acc, alpha2, a2_ptr + off, b2_ptr + off, rows, cols, b, BK, PREC, UPCAST, e_ptr,
                                eta, False)
    if HAS_C:
        acc += beta * _tile(c_ptr + off, rows, cols, b)
    if HAS_D:
        acc += delta * _tile(d_ptr + off, rows, cols, b)
    acc = tl.where(rows[:, None] == cols[None, :], acc + gamma, acc)
    m = (rows < b)[:, None] & (cols < b)[None, :]
    tl.store(out_ptr + off + rows[:, None] * b + cols[None, :], acc.to(out_ptr.dtype.element_ty), mask=m)
