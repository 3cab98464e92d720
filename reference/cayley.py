"""Skew-symmetric parameters and the Cayley / Cayley–Neumann maps that make them orthogonal blocks.

POET learns, per block of size b, the b(b-1)/2 strictly-upper-triangular entries of a skew-symmetric
matrix Q. The orthogonal block is the Cayley transform G = (I + Q)(I - Q)^-1. POET avoids the inverse
with a truncated Neumann series (I - Q)^-1 ~ I + Q + ... + Q^k, so the default (k = 3) is
G = (I + Q)(I + Q + Q^2 + Q^3) = I + 2Q + 2Q^2 + 2Q^3 + Q^4. It is orthogonal only up to O(||Q||^(k+1)),
which is why `orthogonality_error` exists: the reports show the error as a function of ||Q||.

Packing convention (shared by the Triton kernels): for one block, entry t of the packed vector is
Q[i, j] for the t-th (i, j) of `torch.triu_indices(b, b, offset=1)` (row-major over the upper triangle);
Q[j, i] = -Q[i, j].
"""

from __future__ import annotations

import functools

import torch

DEFAULT_NEUMANN_TERMS = 3


@functools.lru_cache(maxsize=64)
def _upper_flat_index(b: int, device: torch.device) -> torch.Tensor:
    """Flat positions i*b + j of the strict upper triangle, built once per (b, device): rebuilding
    them every forward costs a host round trip per layer."""
    iu = torch.triu_indices(b, b, offset=1, device=device)
    return iu[0] * b + iu[1]


def num_skew_params(b: int) -> int:
    """Free parameters of one b x b skew-symmetric block."""
    return b * (b - 1) // 2


def skew_from_packed(packed: torch.Tensor, b: int) -> torch.Tensor:
    """(n_blocks, b(b-1)/2) packed upper triangles -> (n_blocks, b, b) skew-symmetric Q."""
    n = packed.shape[0]
    upper = packed.new_zeros(n, b * b)
    upper.index_copy_(1, _upper_flat_index(b, packed.device), packed)
    upper = upper.view(n, b, b)
    return upper - upper.transpose(-1, -2)


def packed_from_skew(q: torch.Tensor) -> torch.Tensor:
    """Inverse of `skew_from_packed` (reads the upper triangle)."""
    b = q.shape[-1]
    return q.flatten(-2).index_select(-1, _upper_flat_index(b, q.device))


def cayley_neumann(q: torch.Tensor, terms: int = DEFAULT_NEUMANN_TERMS) -> torch.Tensor:
    """G = (I + Q) * sum_{k=0..terms} Q^k for a batch of skew matrices (..., b, b)."""
    eye = torch.eye(q.shape[-1], dtype=q.dtype, device=q.device).expand_as(q)
    series = eye
    power = eye
    for _ in range(terms):
        power = power @ q
        series = series + power
    return (eye + q) @ series


def cayley_exact(q: torch.Tensor) -> torch.Tensor:
    """G = (I - Q)^-1 (I + Q) (the two factors commute). Exactly orthogonal; used by tests."""
    eye = torch.eye(q.shape[-1], dtype=q.dtype, device=q.device).expand_as(q)
    return torch.linalg.solve(eye - q, eye + q)


def orthogonal_blocks(packed: torch.Tensor, b: int, cayley: str = "neumann",
                      terms: int = DEFAULT_NEUMANN_TERMS) -> torch.Tensor:
    """Packed skew parameters (n_blocks, b(b-1)/2) -> orthogonal blocks (n_blocks, b, b)."""
    q = skew_from_packed(packed, b)
    if cayley == "neumann":
        return cayley_neumann(q, terms)
    if cayley == "exact":
        return cayley_exact(q)
    raise ValueError(f"cayley must be 'neumann' or 'exact', got {cayley!r}")


class RecomputedOrthogonalBlocks(torch.autograd.Function):
    """`orthogonal_blocks` that saves only the packed parameters and recomputes the series in backward.

    Plain autograd would keep Q, its powers and the partial sums of every layer until backward: for a
    Llama-3B at b=256 that is about 4 GB in bf16, more than the activations POET-X is meant to save.
    """

    @staticmethod
    def forward(ctx, packed, b, cayley, terms):
        ctx.save_for_backward(packed)
        ctx.cfg = (b, cayley, terms)
        with torch.no_grad():
            return orthogonal_blocks(packed, b, cayley, terms)

    @staticmethod
    def backward(ctx, grad):
        (packed,) = ctx.saved_tensors
        with torch.enable_grad():
            p = packed.detach().requires_grad_(True)
            (gp,) = torch.autograd.grad(orthogonal_blocks(p, *ctx.cfg), p, grad)
        return gp, None, None, None


def orthogonality_error(g: torch.Tensor) -> torch.Tensor:
    """max_k ||G_k^T G_k - I||_F: how far the Neumann truncation is from orthogonal."""
    eye = torch.eye(g.shape[-1], dtype=g.dtype, device=g.device)
    return torch.linalg.matrix_norm(g.transpose(-1, -2) @ g - eye).max()


def neumann_orthogonality_curve(b: int = 64, terms: int = DEFAULT_NEUMANN_TERMS,
                                norms=(1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0), seed: int = 0) -> list[dict]:
    """Orthogonality error of the truncated series against the spectral norm of Q (float64).

    Each row: {"q_norm": ||Q||_2, "orthogonality_error": ||G^T G - I||_F, "terms": k, "block_size": b}.
    """
    gen = torch.Generator().manual_seed(seed)
    direction = skew_from_packed(torch.randn(1, num_skew_params(b), generator=gen, dtype=torch.float64), b)
    direction = direction / torch.linalg.matrix_norm(direction, ord=2)
    rows = []
    for n in norms:
        g = cayley_neumann(direction * n, terms)
        rows.append({"q_norm": float(n), "orthogonality_error": float(orthogonality_error(g)),
                     "terms": terms, "block_size": b})
    return rows
