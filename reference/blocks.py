"""How a dimension is split into orthogonal blocks, and the block-stochastic transform applied to inputs.

Block layout (any dimension, divisible or not): a dimension `dim` with block size `b` is covered by
`dim // b` full blocks plus, when `dim % b = r > 1`, one smaller tail block of size r. A remainder of 1
gets no block (a 1x1 orthogonal matrix from the Cayley map is always +1), but the permutation is redrawn
at every merge, so that coordinate lands in a real block next time; no layer is ever left dense-only.
If b >= dim the whole dimension is one block. All blocks' packed skew parameters are concatenated into
one flat vector per side: full blocks first, then the tail.

Permutations are folded into W0 (see layer_base): a layer stores Wp = Pi_out W Pi_in^T and computes
y = x Pi_in^T D_in^T Wp^T D_out^T Pi_out, where Pi is the permutation with (x Pi^T)[:, j] = x[:, perm[j]]
and D = blockdiag(G_1, ..., G_m). Input-centric application never forms D or Pi: a gather of x's
columns, block products, the GEMM, block products, a scatter of y's columns.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .cayley import DEFAULT_NEUMANN_TERMS, RecomputedOrthogonalBlocks, num_skew_params, orthogonal_blocks


@dataclass(frozen=True)
class BlockLayout:
    """The block structure of one side (input or output) of a POET layer."""

    dim: int
    block_size: int

    def __post_init__(self):
        if self.dim <= 0 or self.block_size <= 0:
            raise ValueError(f"dim and block_size must be positive, got {self.dim}, {self.block_size}")

    @property
    def b(self) -> int:
        """Size of a full block (the block size, capped at the dimension)."""
        return min(self.block_size, self.dim)

    @property
    def n_full(self) -> int:
        return self.dim // self.b

    @property
    def tail(self) -> int:
        """Size of the smaller last block (0 when there is none)."""
        r = self.dim - self.n_full * self.b
        return r if r > 1 else 0

    @property
    def covered(self) -> int:
        """Leading coordinates (after permutation) that belong to a block."""
        return self.n_full * self.b + self.tail

    @property
    def n_params(self) -> int:
        return self.n_full * num_skew_params(self.b) + num_skew_params(self.tail)

    def split_params(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Flat packed vector -> (full (n_full, b(b-1)/2), tail (1, r(r-1)/2) or None)."""
        n_main = self.n_full * num_skew_params(self.b)
        # no slice when there is no tail: a slice's backward allocates a zero tensor of the whole vector and
        # copies the gradient into it (two extra launches per side and step, measured in the 3B profile)
        full = (flat[:n_main] if self.tail else flat).view(self.n_full, num_skew_params(self.b))
        tail = flat[n_main:].view(1, -1) if self.tail else None
        return full, tail

    def blocks(self, flat: torch.Tensor, cayley: str = "neumann", terms: int = DEFAULT_NEUMANN_TERMS,
               recompute: bool = False):
        """Orthogonal blocks: (n_full, b, b) and the tail (1, r, r) or None.

        recompute=True keeps only the packed parameters for backward (see RecomputedOrthogonalBlocks).
        """
        full, tail = self.split_params(flat)
        if recompute and flat.requires_grad and torch.is_grad_enabled():
            make = RecomputedOrthogonalBlocks.apply
        else:
            make = orthogonal_blocks
        g_full = make(full, self.b, cayley, terms)
        g_tail = make(tail, self.tail, cayley, terms) if tail is not None else None
        return g_full, g_tail


def blockwise_apply(u: torch.Tensor, layout: BlockLayout, g_full: torch.Tensor,
                    g_tail: torch.Tensor | None, transpose: bool) -> torch.Tensor:
    """Multiply each block of the last dimension of u (already permuted) by G^T (transpose) or G.

    Row-vector convention: returns u_k @ G_k^T when transpose, else u_k @ G_k.
    """
    lead = u.shape[:-1]
    nb = layout.n_full * layout.b
    main = u[..., :nb].reshape(-1, layout.n_full, layout.b)
    eq = "nkc,kdc->nkd" if transpose else "nkc,kcd->nkd"
    parts = [torch.einsum(eq, main, g_full).reshape(*lead, nb)]
    if g_tail is not None:
        g = g_tail[0]
        parts.append(u[..., nb:layout.covered] @ (g.T if transpose else g))
    if layout.covered < layout.dim:
        parts.append(u[..., layout.covered:])
    return torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]


def block_grad(grad_out: torch.Tensor, inp: torch.Tensor, layout: BlockLayout):
    """Gradient w.r.t. G of out_k = inp_k @ G_k^T, summed over rows: grad_G_k = grad_out_k^T inp_k."""
    nb = layout.n_full * layout.b
    go = grad_out[..., :nb].reshape(-1, layout.n_full, layout.b)
    x = inp[..., :nb].reshape(-1, layout.n_full, layout.b)
    g_full = torch.einsum("nkd,nkc->kdc", go, x)
    g_tail = None
    if layout.tail:
        go_t = grad_out[..., nb:layout.covered].reshape(-1, layout.tail)
        x_t = inp[..., nb:layout.covered].reshape(-1, layout.tail)
        g_tail = (go_t.T @ x_t).unsqueeze(0)
    return g_full, g_tail


def block_stochastic_apply(x: torch.Tensor, layout: BlockLayout, g_full, g_tail, perm: torch.Tensor,
                           inv_perm: torch.Tensor, transpose: bool = True) -> torch.Tensor:
    """x T^T (transpose=True) or x T (transpose=False) for T = Pi^T D Pi, without forming D or Pi.

    A general-purpose op (kernels' fallback and tests); the layers use the folded form directly."""
    u = x.index_select(-1, perm)
    u = blockwise_apply(u, layout, g_full, g_tail, transpose)
    return u.index_select(-1, inv_perm)


def dense_block_diagonal(layout: BlockLayout, g_full: torch.Tensor, g_tail) -> torch.Tensor:
    """D = blockdiag(G_1, ..., G_m, [tail], [1]) as a dense dim x dim matrix (weight-centric POET)."""
    mats = list(g_full.unbind(0))
    if g_tail is not None:
        mats.append(g_tail[0])
    d = torch.block_diag(*mats)
    pad = layout.dim - layout.covered
    if pad:
        eye = torch.eye(pad, dtype=d.dtype, device=d.device)
        d = torch.block_diag(d, eye)
    return d


def dense_permutation(perm: torch.Tensor, dtype, device=None) -> torch.Tensor:
    """Pi with Pi[j, perm[j]] = 1, so x @ Pi^T == x[:, perm]."""
    n = perm.numel()
    pi = torch.zeros(n, n, dtype=dtype, device=device or perm.device)
    # scatter of a scalar, not an index_put of 1: that copies a CPU scalar tensor, which a CUDA graph capture
    # refuses (the POET layer-latency points failed on the H100 that way)
    return pi.scatter_(1, perm.to(pi.device).view(n, 1), 1.0)
