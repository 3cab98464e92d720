"""The timed callables of the kernel micro-benchmarks: each POET-X kernel (poetx_bench.kernels) and the torch
ops the reference path uses for the same result, with their FLOP and minimum-byte costs (kernels/NOTES.md).

Shared by the kernel kind (one op and implementation per point) and bench/kernel_bench.py (all of them at
once, on the same inputs). Inputs are drawn in a fixed order from a generator seeded with the block size,
so both see the same tensors.
"""

from __future__ import annotations

# op -> implementations that exist for it
IMPLS = {
    "cayley_fwd": ("triton", "torch"),   # packed skew parameters -> G = Cayley-Neumann blocks
    "cayley_bwd": ("triton",),           # dL/dG -> dL/d(packed), the fused backward
    "cayley_fwdbwd": ("torch",),         # the reference path's forward + autograd backward
    "apply": ("triton", "torch"),        # gather + block-diagonal multiply + scatter of activations
    "grad": ("triton", "torch"),         # the blocks' gradient, summed over tokens
    # the row design (kernels/rows.py, the default): each pass of a layer step on its own
    "to_rows": ("triton", "torch"),      # (T, D) -> (D, T) with rows gathered by the permutation
    "from_rows": ("triton", "torch"),    # (D, T) -> (T, D) with columns scattered back
    "rows_apply": ("triton",),           # block-diagonal multiply of (b, T) row blocks (cuBLAS bmm)
    "rows_grad": ("triton",),            # the blocks' gradient, bmm with K = T
    "rows_cayley_fwd": ("triton",),      # packed -> G: unpack + square-form chain (torch: cayley_fwd torch)
    "rows_cayley_bwd": ("triton",),      # dL/dG -> dL/d(packed): unpack, chain backward, pack
}
OPS = tuple(IMPLS)
ROWS_OPS = ("to_rows", "from_rows", "rows_apply", "rows_grad", "rows_cayley_fwd", "rows_cayley_bwd")
TOKEN_FREE = ("cayley_fwd", "cayley_bwd", "cayley_fwdbwd", "rows_cayley_fwd", "rows_cayley_bwd")  # parameters only


def kernel_costs(b, n, tokens, dim, terms, elt) -> dict:
    """FLOPs and bytes (minimum traffic) per kernel; see kernels/NOTES.md."""
    from ..kernels.rows import cayley_units

    npk = n * b * (b - 1) // 2
    m = terms + 1
    bwd_dots = (m - 2) + 3 * (m - 1) if m >= 2 else 0
    move = 2 * tokens * dim * elt  # one read and one write of a (T, D) activation
    units_fwd, units_bwd = cayley_units(terms)
    return {
        "to_rows": (0, move), "from_rows": (0, move),
        "rows_apply": (2 * tokens * dim * b, move + n * b * b * elt),
        "rows_grad": (2 * tokens * dim * b, move + n * b * b * elt),
        # packed in, G out / dL/dG in, packed gradient out (intermediates stay in L2 at a layer's n)
        "rows_cayley_fwd": (units_fwd * 2 * n * b ** 3, npk * elt + n * b * b * elt),
        "rows_cayley_bwd": (units_bwd * 2 * n * b ** 3, npk * elt * 2 + n * b * b * elt),
        "cayley_fwd": (terms * 2 * n * b ** 3, npk * elt + n * b * b * 4),
        "cayley_bwd": (bwd_dots * 2 * n * b ** 3, n * b * b * 4 + npk * (elt + 4)),
        "apply": (2 * tokens * n * b * b, 2 * tokens * dim * elt + n * b * b * elt),
        "grad": (2 * tokens * n * b * b, 2 * tokens * dim * elt + n * b * b * 4),
    }


class KernelInputs:
    """The tensors of one (dim, block size, tokens) case. `triton_cayley`: build the applied blocks with
    the Triton Cayley kernel (the bench, where Triton runs) or the torch reference (torch-only points)."""

    def __init__(self, device, dtype, tokens: int, dim: int, b: int, terms: int, seed: int = 0,
                 triton_cayley: bool = True):
        import torch

        from ..reference.blocks import BlockLayout
        from ..reference.cayley import cayley_neumann, skew_from_packed

        self.device, self.dtype, self.tokens, self.dim, self.b, self.terms = device, dtype, tokens, dim, b, terms
        self.lay = BlockLayout(dim, b)
        self.n = n = self.lay.n_full
        g = torch.Generator(device="cpu").manual_seed(b + seed)
        self.packed = (torch.randn(n, b * (b - 1) // 2, generator=g) * 0.05).to(device=device, dtype=dtype)
        self.x = torch.randn(tokens, dim, generator=g).to(device=device, dtype=dtype)
        self.go = torch.randn(tokens, dim, generator=g).to(device=device, dtype=dtype)
        self.perm = torch.randperm(dim, generator=g).to(device)
        self.inv = torch.argsort(self.perm)
        if triton_cayley:
            from ..kernels.cayley import cayley_neumann_forward

            self.gblk = cayley_neumann_forward(self.packed, b, terms).to(dtype)
        else:
            self.gblk = cayley_neumann(skew_from_packed(self.packed.float(), b), terms).to(dtype)
        self.gg = torch.randn(n, b, b, generator=g).to(device)
        self.gg_c = self.gg.to(dtype)
        self.pk_req = self.packed.detach().clone().requires_grad_(True)
        self._xt = None

    @property
    def xt(self):
        """x in the row layout, (D, T), built once (torch ops: the same values on every backend)."""
        if self._xt is None:
            self._xt = self.x.t().index_select(0, self.perm).contiguous()
        return self._xt

    def costs(self) -> dict:
        import torch

        elt = torch.empty((), dtype=self.dtype).element_size()
        return kernel_costs(self.b, self.n, self.tokens, self.n * self.b, self.terms, elt)


def _rows_case(inp: KernelInputs, op: str, impl: str):
    """The row design's passes: the kernels (triton) or the torch fallbacks of the same functions (torch)."""
    from ..kernels import rows as R
    from ..kernels.autograd import Side

    b, terms = inp.b, inp.terms
    side = Side(inp.lay, inp.perm, inp.inv)
    if impl == "torch":
        fns = {"to_rows": lambda: inp.x.t().index_select(0, inp.perm),
               "from_rows": lambda: inp.xt.index_select(0, inp.inv).t().contiguous()}
        return fns[op], None
    fns = {"to_rows": lambda: R.to_rows(inp.x, inp.inv, inp.perm),
           "from_rows": lambda: R.from_rows(inp.xt, inp.inv),
           "rows_apply": lambda: R.rows_apply(inp.xt, inp.gblk, None, side, False),
           "rows_grad": lambda: R.rows_grad(inp.xt, inp.xt, side, True, False),
           "rows_cayley_fwd": lambda: R.cayley_forward(R.skew_unpack(inp.packed, b), terms),
           "rows_cayley_bwd": lambda: R.cayley_packed_backward(inp.packed, inp.gg_c, b, terms)}
    return fns[op], None


def case(inp: KernelInputs, op: str, impl: str):
    """(fn, tensors whose .grad the timer clears) of one op and implementation."""
    from ..reference.blocks import block_grad, blockwise_apply
    from ..reference.cayley import cayley_neumann, skew_from_packed

    if op in ROWS_OPS:
        return _rows_case(inp, op, impl)
    b, terms, n = inp.b, inp.terms, inp.n
    if impl == "triton":
        from ..kernels import block_perm_apply_raw, block_perm_grad
        from ..kernels.cayley import cayley_neumann_backward, cayley_neumann_forward

        fns = {"cayley_fwd": lambda: cayley_neumann_forward(inp.packed, b, terms),
               "cayley_bwd": lambda: cayley_neumann_backward(inp.packed, inp.gg, b, terms),
               "apply": lambda: block_perm_apply_raw(inp.x, inp.gblk, inp.perm, b, True),
               "grad": lambda: block_perm_grad(inp.go, inp.x, inp.perm, b, n)}
        return fns[op], None

    def fwdbwd():
        cayley_neumann(skew_from_packed(inp.pk_req, b), terms).backward(inp.gg_c)

    def apply_torch():
        u = inp.x.index_select(-1, inp.perm)
        return blockwise_apply(u, inp.lay, inp.gblk, None, True).index_select(-1, inp.inv)

    fns = {"cayley_fwd": (lambda: cayley_neumann(skew_from_packed(inp.packed, b), terms), None),
           "cayley_fwdbwd": (fwdbwd, [inp.pk_req]),
           "apply": (apply_torch, None),
           "grad": (lambda: block_grad(inp.go.index_select(-1, inp.perm), inp.x.index_select(-1, inp.perm),
                                       inp.lay), None)}
    return fns[op]


def all_cases(inp: KernelInputs) -> list[tuple]:
    """(op, impl, fn, grad_to_none) of every kernel and its torch counterpart, in the bench's order."""
    order = [("cayley_fwd", "triton"), ("cayley_bwd", "triton"), ("cayley_fwd", "torch"),
             ("cayley_fwdbwd", "torch"), ("apply", "triton"), ("apply", "torch"), ("grad", "triton"),
             ("grad", "torch")]
    return [(op, impl, *case(inp, op, impl)) for op, impl in order]
