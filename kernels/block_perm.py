"""Fused permutation + block-diagonal multiply (x T^T / x T) and the per-block gradient reduction.

`block_perm_apply(x, g, perm, b, transpose)` computes, for T = Pi^T D Pi, x T^T (transpose=True) or
x T (transpose=False) with the gather x[:, perm] folded into the kernel's loads and the inverse
permutation into its stores; coordinates beyond the n_blocks*b covered by g pass through unchanged.
`block_perm_grad(gout, inp, perm, b, n_blocks)` is sum_rows gout_k^T inp_k per block (fp32), with both
operands gathered through perm. Launch logic and tile heuristics live here; the kernels are in
_triton_kernels.py.
"""

from __future__ import annotations

import torch

from ._loader import dot_precision, is_interpreted, kernels_for


def _pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _num_sms(device: torch.device) -> int:
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 132 if device.type == "cuda" else 4  # an H100 when asked for GPU tiles on a CPU machine


def _elt(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _upcast(device: torch.device, dtype: torch.dtype) -> bool:
    """The CPU interpreter's tl.dot treats bf16 tiles as raw integers; do those dots in fp32 there."""
    return is_interpreted(device) and dtype == torch.bfloat16


def apply_config(b: int, device: torch.device, overrides: dict | None = None,
                 dtype: torch.dtype = torch.bfloat16) -> dict:
    """Tiles for block_perm_apply. BN covers up to 256 output columns of the block so gathered x tiles
    (uncoalesced: one 32-byte sector per element) are re-read at most b/256 times. GPU values from a first
    H100 sweep at b=256, D=4096 (BM=128, BN=256, BK=32, 8 warps, 2 stages: best of nine); all defaults
    compile for sm_90 without spills (tests/test_kernels_compile.py); fp32 operands take half the BN."""
    bp = _pow2(max(b, 16))
    if torch.device(device).type == "cuda":
        bn = min(bp, 256 if _elt(dtype) <= 2 else 128)
        cfg = {"BM": 128 if bp >= 128 and _elt(dtype) <= 2 else 64, "BN": bn, "BK": min(bp, 32),
               "num_warps": 8 if bn >= 128 else 4, "num_stages": 2}
    else:  # interpreter: few, large tiles
        cfg = {"BM": 64, "BN": min(bp, 256), "BK": min(bp, 256), "num_warps": 4, "num_stages": 1}
    if overrides:
        cfg.update(overrides)
    return cfg


def grad_config(b: int, n_rows: int, n_blocks: int, device: torch.device,
                overrides: dict | None = None, dtype: torch.dtype = torch.bfloat16) -> dict:
    """Tiles and row split for block_perm_grad: enough (tile, split) programs to fill the GPU twice.

    GPU tiles from a first H100 sweep at b=256 (BD=128, BC=256, BR=32, 8 warps best of seven): big tiles
    because every gathered operand element costs a whole sector and is re-read b/BC (b/BD) times.
    fp32 operands take half the BC (spill-free on sm_90).
    """
    bp = _pow2(max(b, 16))
    if torch.device(device).type == "cuda":
        bd, bc = min(bp, 128), min(bp, 256 if _elt(dtype) <= 2 else 128)
        cfg = {"BD": bd, "BC": bc, "BR": 32, "num_warps": 8 if bd * bc >= 128 * 128 else 4, "num_stages": 3,
               "split": None}
    else:  # interpreter: few, large tiles
        cfg = {"BD": min(bp, 256), "BC": min(bp, 256), "BR": 64, "num_warps": 4, "num_stages": 1,
               "split": None}
    if overrides:
        cfg.update(overrides)
    if cfg["split"] is None:
        tiles = n_blocks * _cdiv(b, cfg["BD"]) * _cdiv(b, cfg["BC"])
        want = _cdiv(2 * _num_sms(device), max(tiles, 1))
        cfg["split"] = max(1, min(want, _cdiv(n_rows, 4 * cfg["BR"])))
    return cfg


def _as_2d(x: torch.Tensor) -> torch.Tensor:
    return x if x.dim() == 2 else x.reshape(-1, x.shape[-1])


def block_perm_apply_full_(x2: torch.Tensor, g: torch.Tensor, perm: torch.Tensor, b: int, transpose: bool,
                           out: torch.Tensor, config: dict | None = None,
                           store_perm: torch.Tensor | None = None) -> torch.Tensor:
    """Write the full-block coordinates out[:, store_perm[:n*b]] of the block products of
    x2[:, perm[:n*b]] (store_perm defaults to perm: x2 T^T or x2 T); other columns are untouched.

    x2 and out are 2-D with any strides; g is (n, b, b) and is cast to x2's dtype (tiny) so the tl.dot
    operands match.
    """
    n = g.shape[0]
    n_rows = x2.shape[0]
    if n == 0 or n_rows == 0:
        return out
    gt = g.to(x2.dtype)
    if transpose:
        gt = gt.transpose(1, 2)  # Gt_k[c, d] = G_k[d, c]; a strided view, no copy
    cfg = apply_config(b, x2.device, config, dtype=x2.dtype)
    nt = _cdiv(b, cfg["BN"])
    grid = (_cdiv(n_rows, cfg["BM"]) * n * nt,)
    kernels_for(x2.device).block_perm_apply_kernel[grid](
        x2, gt, perm, perm if store_perm is None else store_perm, out, n_rows, b, nt, n * nt,
        x2.stride(0), x2.stride(1), gt.stride(0), gt.stride(1), gt.stride(2), out.stride(0), out.stride(1),
        BM=cfg["BM"], BN=cfg["BN"], BK=cfg["BK"], PREC=dot_precision(x2.dtype),
        UPCAST=_upcast(x2.device, x2.dtype),
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
    return out


def block_perm_apply_raw(x: torch.Tensor, g: torch.Tensor, perm: torch.Tensor, b: int,
                         transpose: bool = True, config: dict | None = None) -> torch.Tensor:
    """x T^T (transpose) or x T for full blocks g; uncovered coordinates pass through. No autograd."""
    lead = x.shape[:-1]
    dim = x.shape[-1]
    if g.dim() != 3 or g.shape[1:] != (b, b) or g.shape[0] * b > dim or perm.numel() != dim:
        raise ValueError(f"g must be (n, {b}, {b}) with n*b <= {dim} and perm of length {dim}")
    x2 = _as_2d(x)
    perm = perm.to(device=x.device, dtype=torch.long).contiguous()
    out = torch.empty(x2.shape[0], dim, dtype=x.dtype, device=x.device)
    block_perm_apply_full_(x2, g, perm, b, transpose, out, config)
    nb = g.shape[0] * b
    if nb < dim:
        rest = perm[nb:]
        out.index_copy_(1, rest, x2.index_select(1, rest))
    return out.reshape(*lead, dim)


def block_perm_grad(gout: torch.Tensor, inp: torch.Tensor, perm: torch.Tensor, b: int, n_blocks: int,
                    config: dict | None = None, out: torch.Tensor | None = None,
                    inp_perm: torch.Tensor | None = None) -> torch.Tensor:
    """grad_G (n_blocks, b, b) fp32 with grad_G_k[d, c] = sum_rows gout[:, perm[kb+d]] inp[:, iperm[kb+c]],
    iperm = inp_perm (defaults to perm).

    `out` (fp32, contiguous) may be given; it is zeroed first only when the row split needs atomics.
    """
    go2 = _as_2d(gout)
    in2 = _as_2d(inp)
    n_rows = go2.shape[0]
    perm = perm.to(device=go2.device, dtype=torch.long).contiguous()
    iperm = perm if inp_perm is None else inp_perm.to(device=go2.device, dtype=torch.long).contiguous()
    cfg = grad_config(b, n_rows, n_blocks, go2.device, config, dtype=go2.dtype)
    split = cfg["split"]
    rows_per_split = _cdiv(_cdiv(max(n_rows, 1), split), cfg["BR"]) * cfg["BR"]
    split = _cdiv(max(n_rows, 1), rows_per_split)
    atomic = split > 1
    if out is None:
        out = torch.empty(n_blocks, b, b, dtype=torch.float32, device=go2.device)
    if atomic or n_rows == 0:
        out.zero_()
    if n_blocks == 0 or n_rows == 0:
        return out
    ntd, ntc = _cdiv(b, cfg["BD"]), _cdiv(b, cfg["BC"])
    grid = (n_blocks * ntd * ntc, split)
    kernels_for(go2.device).block_perm_grad_kernel[grid](
        go2, in2, perm, iperm, out, n_rows, b, ntd, ntc, rows_per_split,
        go2.stride(0), go2.stride(1), in2.stride(0), in2.stride(1),
        BD=cfg["BD"], BC=cfg["BC"], BR=cfg["BR"], ATOMIC=atomic, PREC=dot_precision(go2.dtype),
        UPCAST=_upcast(go2.device, go2.dtype),
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
    return out


class BlockPermApplyFunction(torch.autograd.Function):
    """Differentiable block_perm_apply (gradients for x and g; perm is an index)."""

    @staticmethod
    def forward(ctx, x, g, perm, b, transpose):
        ctx.save_for_backward(x, g, perm)
        ctx.b, ctx.transpose = b, transpose
        return block_perm_apply_raw(x, g, perm, b, transpose)

    @staticmethod
    def backward(ctx, gout):
        x, g, perm = ctx.saved_tensors
        b, transpose = ctx.b, ctx.transpose
        gx = gg = None
        if ctx.needs_input_grad[0]:
            gx = block_perm_apply_raw(gout, g, perm, b, not transpose)
        if ctx.needs_input_grad[1]:
            # out_k = u_k G_k^T -> dG_k = gout_k^T u_k ; out_k = u_k G_k -> dG_k = u_k^T gout_k
            if transpose:
                gg = block_perm_grad(gout, x, perm, b, g.shape[0])
            else:
                gg = block_perm_grad(x, gout, perm, b, g.shape[0])
            gg = gg.to(g.dtype)
        return gx, gg, None, None, None


def block_perm_apply(x: torch.Tensor, g: torch.Tensor, perm: torch.Tensor, b: int,
                     transpose: bool = True) -> torch.Tensor:
    """x T^T (transpose=True) or x T for T = Pi^T blockdiag(g) Pi, differentiable in x and g.

    Uses the kernels where `use_kernels` allows, else the torch reference ops (same result).
    """
    from ._loader import use_kernels

    if x.dtype == torch.float64 or not use_kernels(x):
        from poetx_bench.reference.blocks import BlockLayout, block_stochastic_apply

        lay = BlockLayout(x.shape[-1], b)
        n = g.shape[0]
        if lay.n_full != n:
            raise ValueError("torch fallback needs g to cover all full blocks of x's last dimension")
        perm = perm.to(x.device)
        return block_stochastic_apply(x, _NoTail(lay), g.to(x.dtype), None, perm, torch.argsort(perm),
                                      transpose)
    return BlockPermApplyFunction.apply(x, g, perm, b, transpose)


class _NoTail:
    """A BlockLayout view without the tail block (the tail coordinates then pass through)."""

    def __init__(self, lay):
        self.dim, self.b, self.n_full, self.tail = lay.dim, lay.b, lay.n_full, 0
        self.covered = lay.n_full * lay.b
