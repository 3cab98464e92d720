"""Fused Cayley-Neumann map on packed skew parameters: forward, backward, autograd wrapper.

`cayley_neumann_packed(packed, b, terms)` maps (n_blocks, b(b-1)/2) packed strict upper triangles to the
(n_blocks, b, b) blocks G = (I + Q) sum_{k<=terms} Q^k for all blocks at once (two launches: unpack the
packed triangles to a dense fp32 Q by index arithmetic, then the power chain), in fp32
(the block products are tiny next to the activations, and fp32 G / fp32 grad_G keep the bf16 layer's
parameter gradient from being rounded twice). The backward is unpack + one chain launch. See _triton_kernels.py
for the math and NOTES.md for cost.
"""

from __future__ import annotations

import torch

from ._loader import dot_precision, kernels_for


def _pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def cayley_config(b: int, device: torch.device, overrides: dict | None = None, which: str = "fwd") -> dict:
    """Tile sizes for the Cayley kernels (pass device="cuda" to get the GPU choice on any machine).

    GPU: row panels of 16/32 rows so a layer side with few blocks still gives >= 64 programs. fwd
    (32, 128, 64), 8 warps: the best of six in a first H100 sweep (b=256, older kernel). bwd keeps more
    tiles live (three dots per Horner step), and (16, 64, 32), 8 warps, 1 stage is the largest tiling
    that compiles for sm_90 without register spills (offline ptxas check, tests/test_kernels_compile.py).
    """
    bp = _pow2(max(b, 16))
    if torch.device(device).type == "cuda":
        if which == "bwd":
            cfg = {"BM": 16, "BN": min(bp, 64), "BK": min(bp, 32), "num_warps": 8 if bp >= 64 else 4,
                   "num_stages": 1}
        elif bp >= 128:
            cfg = {"BM": 32, "BN": min(bp, 128), "BK": 64, "num_warps": 8, "num_stages": 2}
        else:
            cfg = {"BM": 16, "BN": bp, "BK": min(bp, 64), "num_warps": 4, "num_stages": 2}
    else:  # the interpreter pays per tile op, not per FLOP: few, large tiles
        cfg = {"BM": min(bp, 256), "BN": min(bp, 512), "BK": min(bp, 512), "num_warps": 4, "num_stages": 1}
    if overrides:
        cfg.update(overrides)
    return cfg


def _check_packed(packed: torch.Tensor, b: int) -> None:
    if packed.dim() != 2 or packed.shape[1] != b * (b - 1) // 2:
        raise ValueError(f"packed must be (n_blocks, {b * (b - 1) // 2}), got {tuple(packed.shape)}")


def cayley_neumann_forward(packed: torch.Tensor, b: int, terms: int = 3, out: torch.Tensor | None = None,
                           config: dict | None = None) -> torch.Tensor:
    """Packed (n, b(b-1)/2) -> G (n, b, b) fp32, no autograd. `out` (fp32, contiguous) may be given."""
    _check_packed(packed, b)
    if terms < 0:
        raise ValueError("terms must be >= 0")
    n = packed.shape[0]
    packed = packed.contiguous()
    if out is None:
        out = torch.empty(n, b, b, dtype=torch.float32, device=packed.device)
    if n == 0:
        return out
    cfg = cayley_config(b, packed.device, config)
    k = kernels_for(packed.device)
    q = _unpack(k, packed, b, cfg)
    buf = torch.empty(2 if terms >= 2 else 1, n, b, b, dtype=torch.float32, device=packed.device)
    grid = (n, triton_cdiv(b, cfg["BM"]))
    k.cayley_fwd_kernel[grid](q, out, buf, b, n * b * b,
                              TERMS=terms, BM=cfg["BM"], BN=cfg["BN"], BK=cfg["BK"],
                              PREC=dot_precision(packed.dtype), num_warps=cfg["num_warps"],
                              num_stages=cfg["num_stages"])
    return out


def _unpack(k, packed: torch.Tensor, b: int, cfg: dict) -> torch.Tensor:
    """Dense fp32 Q (n, b, b) from packed parameters (one launch, index arithmetic in the kernel)."""
    n = packed.shape[0]
    q = torch.empty(n, b, b, dtype=torch.float32, device=packed.device)
    bm = min(cfg["BM"], 64)
    k.cayley_unpack_kernel[(n, triton_cdiv(b, bm))](packed, packed, n, q, b, packed.shape[1], BM=bm,
                                                    BN=cfg["BN"], num_warps=4)
    return q


def cayley_neumann_backward(packed: torch.Tensor, grad_g: torch.Tensor, b: int, terms: int = 3,
                            out: torch.Tensor | None = None, config: dict | None = None) -> torch.Tensor:
    """grad_G (n, b, b) -> grad_packed (n, b(b-1)/2) fp32: grad[t(i,j)] = dQ[i,j] - dQ[j,i]."""
    _check_packed(packed, b)
    n = packed.shape[0]
    packed = packed.contiguous()
    grad_g = grad_g.contiguous()
    if grad_g.shape != (n, b, b):
        raise ValueError(f"grad_g must be {(n, b, b)}, got {tuple(grad_g.shape)}")
    if out is None:
        out = torch.empty(n, packed.shape[1], dtype=torch.float32, device=packed.device)
    if n == 0 or packed.shape[1] == 0:
        return out
    cfg = cayley_config(b, packed.device, config, which="bwd")
    k = kernels_for(packed.device)
    q = _unpack(k, packed, b, cfg)
    m = terms + 1
    pw = torch.empty(max(m - 1, 1), n, b, b, dtype=torch.float32, device=packed.device)
    hb = torch.empty(2 if m > 2 else 1, n, b, b, dtype=torch.float32, device=packed.device)
    grid = (n, triton_cdiv(b, cfg["BM"]))
    k.cayley_bwd_kernel[grid](q, grad_g, out, pw, hb, b, packed.shape[1], n * b * b,
                              TERMS=terms, BM=cfg["BM"], BN=cfg["BN"], BK=cfg["BK"],
                              PREC=dot_precision(packed.dtype), num_warps=cfg["num_warps"],
                              num_stages=cfg["num_stages"])
    return out


def triton_cdiv(a: int, b: int) -> int:
    return -(-a // b)


class CayleyNeumannFunction(torch.autograd.Function):
    """packed (param dtype) -> G (fp32); backward returns grad_packed in the parameter's dtype."""

    @staticmethod
    def forward(ctx, packed, b, terms):
        ctx.save_for_backward(packed)
        ctx.b, ctx.terms = b, terms
        return cayley_neumann_forward(packed, b, terms)

    @staticmethod
    def backward(ctx, grad_g):
        (packed,) = ctx.saved_tensors
        gp = cayley_neumann_backward(packed, grad_g.float(), ctx.b, ctx.terms)
        return gp.to(packed.dtype), None, None


def cayley_neumann_packed(packed: torch.Tensor, b: int, terms: int = 3) -> torch.Tensor:
    """Differentiable fused Cayley-Neumann: (n, b(b-1)/2) -> (n, b, b) fp32 blocks.

    Falls back to the torch reference (in fp32) where the kernels are not usable (no triton, CPU
    without TRITON_INTERPRET=1, float64 parameters).
    """
    from ._loader import use_kernels

    if packed.dtype == torch.float64 or not use_kernels(packed):
        from poetx_bench.reference.cayley import cayley_neumann, skew_from_packed

        work = packed if packed.dtype == torch.float64 else packed.float()
        return cayley_neumann(skew_from_packed(work, b), terms)
    return CayleyNeumannFunction.apply(packed, b, terms)


__all__ = ["cayley_neumann_packed", "cayley_neumann_forward", "cayley_neumann_backward",
           "CayleyNeumannFunction", "cayley_config"]
