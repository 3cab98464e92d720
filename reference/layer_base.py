"""State and bookkeeping shared by the weight-centric (POET) and input-centric (POET-X) layers.

Both layers hold exactly the same state, under the same state_dict keys, so a checkpoint of one loads
into the other:
  weight        frozen W0 (out x in), a Parameter with requires_grad=False, stored with the current
                permutations folded in (see below)
  skew_in       packed skew parameters of the input-side blocks (flat, see blocks.BlockLayout)
  skew_out      packed skew parameters of the output-side blocks
  bias          optional, trainable
  perm_in, inv_perm_in, perm_out, inv_perm_out   long buffers
The layer computes y = x W^T + bias with the dense weight
    W = Pi_out^T D_out W0 D_in Pi_in,
D = blockdiag of Cayley(-Neumann) orthogonal blocks and Pi the permutation matrix with
(x Pi^T)[:, j] = x[:, perm[j]]. This is POET's block-stochastic W = R W_prev P with R = Pi_out^T D_out
Pi_out and P = Pi_in^T D_in Pi_in applied to the previously merged weight W_prev, with the permutations
folded into the stored W0 = Pi_out W_prev Pi_in^T at each merge, as POET-X does: the input-centric
forward then needs one gather of x's columns and one scatter of y's columns, not four permuted passes.
Permutations start as the identity (W0 is i.i.d. Gaussian with unit rows, so permuting it changes
nothing in distribution) and are redrawn at every merge; with zero skew parameters, W == W0 at start.
"""

from __future__ import annotations

import torch
from torch import nn

from .blocks import BlockLayout, blockwise_apply
from .cayley import DEFAULT_NEUMANN_TERMS


def init_frozen_weight_(w: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """The paper's W0: Gaussian entries, each output row normalised to unit L2 norm."""
    with torch.no_grad():
        tmp = torch.randn(w.shape, dtype=torch.float32, device=w.device, generator=generator)
        tmp /= tmp.norm(dim=1, keepdim=True).clamp_min(1e-12)
        w.copy_(tmp)
    return w


class POETLayerBase(nn.Module):
    """Common parameters, permutations, effective weight and merge for POET and POET-X layers."""

    def __init__(self, in_features: int, out_features: int, block_size: int, bias: bool = False,
                 cayley: str = "neumann", neumann_terms: int = DEFAULT_NEUMANN_TERMS,
                 device=None, dtype=None):
        super().__init__()
        if block_size <= 0:
            raise ValueError(f"block_size must be positive, got {block_size}")
        if cayley not in ("neumann", "exact"):
            raise ValueError(f"cayley must be 'neumann' or 'exact', got {cayley!r}")
        factory = {"device": device, "dtype": dtype}
        self.in_features = in_features
        self.out_features = out_features
        self.block_size = block_size
        self.cayley = cayley
        self.neumann_terms = neumann_terms
        self.layout_in = BlockLayout(in_features, block_size)
        self.layout_out = BlockLayout(out_features, block_size)
        self.weight = nn.Parameter(torch.empty(out_features, in_features, **factory), requires_grad=False)
        self.skew_in = nn.Parameter(torch.zeros(self.layout_in.n_params, **factory))
        self.skew_out = nn.Parameter(torch.zeros(self.layout_out.n_params, **factory))
        self.bias = nn.Parameter(torch.zeros(out_features, **factory)) if bias else None
        long = {"device": device, "dtype": torch.long}
        for name, n in (("perm_in", in_features), ("perm_out", out_features)):
            self.register_buffer(name, torch.arange(n, **long))
            self.register_buffer("inv_" + name, torch.arange(n, **long))
        if self.weight.device.type != "meta":
            self.reset_parameters()

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"block_size={self.block_size}, bias={self.bias is not None}, cayley={self.cayley}")

    # --- initialisation and permutations -------------------------------------------------------
    def reset_parameters(self) -> None:
        """W0 from the paper's init, zero skew (identity transforms), identity permutations."""
        init_frozen_weight_(self.weight)
        with torch.no_grad():
            self.skew_in.zero_()
            self.skew_out.zero_()
            if self.bias is not None:
                self.bias.zero_()
            for name, n in (("perm_in", self.in_features), ("perm_out", self.out_features)):
                ident = torch.arange(n, device=self.weight.device)
                getattr(self, name).copy_(ident)
                getattr(self, "inv_" + name).copy_(ident)

    @torch.no_grad()
    def redraw_permutations(self, generator: torch.Generator | None = None) -> None:
        for name, n in (("perm_in", self.in_features), ("perm_out", self.out_features)):
            perm = torch.randperm(n, generator=generator).to(self.weight.device)
            getattr(self, name).copy_(perm)
            getattr(self, "inv_" + name).copy_(torch.argsort(perm))

    # --- transforms ----------------------------------------------------------------------------
    def transforms(self, recompute: bool = False, skew_in=None, skew_out=None):
        """(G_in_full, G_in_tail, G_out_full, G_out_tail): the orthogonal blocks of both sides (of the
        layer's own skew parameters, or of the ones given)."""
        skew_in = self.skew_in if skew_in is None else skew_in
        skew_out = self.skew_out if skew_out is None else skew_out
        gi = self.layout_in.blocks(skew_in, self.cayley, self.neumann_terms, recompute)
        go = self.layout_out.blocks(skew_out, self.cayley, self.neumann_terms, recompute)
        return (*gi, *go)

    def effective_weight(self, weight=None, skew_in=None, skew_out=None) -> torch.Tensor:
        """W = Pi_out^T D_out W0 D_in Pi_in as a dense out x in matrix, with layer(x) == x @ W.T (+ bias).

        Computed with block products and index ops on W0, so no dense D or Pi is built. `weight`,
        `skew_in`, `skew_out` replace the layer's own tensors (the merge of a sharded layer passes the
        gathered ones).
        """
        weight = self.weight if weight is None else weight
        gi_f, gi_t, go_f, go_t = self.transforms(skew_in=skew_in, skew_out=skew_out)
        a = blockwise_apply(weight, self.layout_in, gi_f, gi_t, transpose=False)  # W0 D_in
        a = a.index_select(1, self.inv_perm_in)  # (.) Pi_in
        c = blockwise_apply(a.T, self.layout_out, go_f, go_t, transpose=True).T  # D_out (.)
        return c.index_select(0, self.inv_perm_out)  # Pi_out^T (.)

    @torch.no_grad()
    def merge_and_reinit(self, generator: torch.Generator | None = None) -> None:
        """Fold the transforms into W0, draw new permutations and fold them in too, zero the skew
        parameters: W0 <- Pi'_out W Pi'_in^T with W the current effective weight.

        The layer's function is unchanged up to rounding (the fold is computed in float32 at least).
        Resetting the optimizer state of the skew parameters is the optimizer owner's job (methods.py).

        Sharded layers (FSDP2 DTensor parameters) merge too: every rank gathers W0 and the skew
        parameters, computes the same merged weight and keeps its own shard. The permutations must then
        be drawn from a `generator` seeded alike on every rank (methods.MergeHook does), never from
        rank-local RNG state.
        """
        work = torch.float64 if self.weight.dtype == torch.float64 else torch.float32
        sharded = _is_dtensor(self.weight)
        tensors = [_full(t).to(work) for t in (self.weight, self.skew_in, self.skew_out)]
        merged = self.effective_weight(*tensors)
        self.redraw_permutations(generator)
        merged = merged.index_select(0, self.perm_out).index_select(1, self.perm_in)
        if sharded:
            _copy_into_shard(self.weight, merged)
        else:
            self.weight.copy_(merged)
        self.skew_in.zero_()
        self.skew_out.zero_()


def _is_dtensor(t: torch.Tensor) -> bool:
    return hasattr(t, "full_tensor") and hasattr(t, "device_mesh")


def _full(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor: a DTensor's shards gathered (a collective: every rank must call it), else t."""
    return t.full_tensor() if _is_dtensor(t) else t


def _copy_into_shard(param: torch.Tensor, full: torch.Tensor) -> None:
    """Write this rank's shard of `full` (the same on every rank) into the DTensor `param`, in place
    (FSDP2 gathers from that storage), with no communication."""
    from torch.distributed.tensor import distribute_tensor

    local = distribute_tensor(full.to(param.dtype), param.device_mesh, param.placements,
                              src_data_rank=None).to_local()
    param.to_local().copy_(local)


def trainable_count(layer: POETLayerBase) -> int:
    """Block-stochastic formula for one layer: sum over blocks of b_i (b_i - 1) / 2 (+ bias)."""
    n = layer.layout_in.n_params + layer.layout_out.n_params
    return n + (layer.out_features if layer.bias is not None else 0)


def check_input(layer: POETLayerBase, x: torch.Tensor) -> None:
    if x.shape[-1] != layer.in_features:
        raise ValueError(f"expected last dim {layer.in_features}, got {tuple(x.shape)}")


