"""Original POET: weight-centric. Every forward builds W = R W0 P from dense matrices.

This is deliberately the expensive formulation the paper starts from: dense block-diagonal D, dense
permutation matrices, two out x out / in x in products and the W0 products, all kept by autograd. It is
the baseline whose memory and latency POET-X is measured against, so do not "optimise" it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .blocks import dense_block_diagonal, dense_permutation
from .layer_base import POETLayerBase, check_input


class POETLinear(POETLayerBase):
    """y = x (R W0 P)^T + bias, with R and P materialised densely each forward."""

    def dense_transforms(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(R, P) as dense matrices: R = Pi_out^T D_out, P = D_in Pi_in (the permutations that
        complete POET's Pi^T D Pi are folded into the stored W0, see layer_base)."""
        gi_f, gi_t, go_f, go_t = self.transforms()
        dt, dev = self.weight.dtype, self.weight.device
        pi_in = dense_permutation(self.perm_in, dt, dev)
        pi_out = dense_permutation(self.perm_out, dt, dev)
        p = dense_block_diagonal(self.layout_in, gi_f, gi_t) @ pi_in
        r = pi_out.T @ dense_block_diagonal(self.layout_out, go_f, go_t)
        return r, p

    def dense_effective_weight(self) -> torch.Tensor:
        r, p = self.dense_transforms()
        return r @ self.weight @ p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(self, x)
        return F.linear(x, self.dense_effective_weight(), self.bias)
