"""The row design's kernel entry points as `torch.library` custom ops (namespace `poetx`).

Why: torch.compile cannot trace into a Triton launch made through our per-device loader; as custom ops with
fake (shape-only) implementations, each launch becomes one opaque node of the compiled graph instead of a
graph break, and AOT autograd can trace the autograd Functions around them (their backward calls the same
ops). rows.py routes through these ops only while compiling (`torch.compiler.is_compiling()`), and the
permutations also while a profiler runs (their kernel time then carries the op's name), so eager calls keep
their lower dispatch cost. Every op returns a new tensor (no aliasing, no mutation).
"""

from __future__ import annotations

import torch
from torch.library import custom_op

from . import rows as R


@custom_op("poetx::to_rows", mutates_args=())
def to_rows(x2: torch.Tensor, inv: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    return R._to_rows(x2, inv, perm)


@to_rows.register_fake
def _(x2, inv, perm):
    return x2.new_empty(x2.shape[1], x2.shape[0])


@custom_op("poetx::from_rows", mutates_args=())
def from_rows(src: torch.Tensor, inv: torch.Tensor) -> torch.Tensor:
    return R._from_rows(src, inv)


@from_rows.register_fake
def _(src, inv):
    return src.new_empty(src.shape[1], src.shape[0])


@custom_op("poetx::skew_unpack", mutates_args=())
def skew_unpack(packed: torch.Tensor, b: int) -> torch.Tensor:
    return R._skew_unpack(packed, b)


@skew_unpack.register_fake
def _(packed, b):
    return packed.new_empty(packed.shape[0], b, b)


@custom_op("poetx::skew_pack_grad", mutates_args=())
def skew_pack_grad(s: torch.Tensor) -> torch.Tensor:
    return R._skew_pack_grad(s)


@skew_pack_grad.register_fake
def _(s):
    b = s.shape[-1]
    return s.new_empty(s.shape[0], b * (b - 1) // 2)


@custom_op("poetx::bgemm", mutates_args=())
def bgemm(a0: torch.Tensor, b0: torch.Tensor, a1: torch.Tensor | None, b1: torch.Tensor | None,
          a2: torch.Tensor | None, b2: torch.Tensor | None, c: torch.Tensor | None, d: torch.Tensor | None,
          alphas: list[float], beta: float, delta: float, gamma: float, e: torch.Tensor | None = None,
          eta: float = 0.0, sym_a1: bool = False) -> torch.Tensor:
    pairs = [(alpha, a, b) for alpha, a, b in zip(alphas, (a0, a1, a2), (b0, b1, b2))]
    return R._bgemm(pairs, c, beta, d, delta, gamma, e, eta, sym_a1)


@bgemm.register_fake
def _(a0, b0, a1, b1, a2, b2, c, d, alphas, beta, delta, gamma, e=None, eta=0.0, sym_a1=False):
    if sym_a1 and a1 is None:
        raise ValueError("bgemm: sym_a1 needs a second pair")
    return a0.new_empty(a0.shape)
