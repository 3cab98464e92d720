"""POET-XQ: POET-X with the frozen W0 stored in int8 (one scale per output row), dequantized where it is used.

W0 is frozen between merges, so it can live in int8: half the bytes of bf16 for the largest tensors of a POET-X
model (at 8B about 6.5 GB saved). The row-design Function (rows.py) receives the int8 weight and its scales
and dequantizes on use, in the forward GEMM and again in the backward one; the dense copy lives only for the
duration of that GEMM and is never saved for backward. A merge dequantizes to fp32, folds the transforms in,
and requantizes in place (the same storage, so CUDA graphs stay valid).

Quantization: symmetric per output row, scale = max|row| / 127, q = round(w / scale) in [-127, 127]; the
element error is at most scale / 2, so a row's relative error is at most sqrt(in_features) / 254 of its
max-normalised norm (about 0.2-0.5% for Gaussian rows).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from .layer import POETXTritonLinear
from .rows import dequantize_rows

QMAX = 127


def quantize_rows(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(q int8, scale fp32 per row) with w ~= q * scale[:, None]."""
    w32 = w.float()
    scale = w32.abs().amax(dim=1).clamp_min(1e-12) / QMAX
    q = torch.round(w32 / scale[:, None]).clamp_(-QMAX, QMAX).to(torch.int8)
    return q, scale


class POETXQLinear(POETXTritonLinear):
    """POET-X layer (row design) with W0 in int8: `weight` is an int8 Parameter (frozen), `weight_scale` an
    fp32 buffer of one scale per output row. Same skew parameters, permutations and function (up to the
    quantization of W0) as POETXTritonLinear."""

    def __init__(self, in_features: int, out_features: int, block_size: int, mode: str = "fast",
                 block_impl: str = "rows", **kwargs):
        if block_impl not in ("rows", "auto"):
            raise ValueError("POET-XQ runs the row design only (block_impl 'rows')")
        super().__init__(in_features, out_features, block_size, mode=mode, block_impl="rows", **kwargs)
        device = self.skew_in.device
        self.weight = nn.Parameter(torch.zeros(out_features, in_features, dtype=torch.int8, device=device),
                                   requires_grad=False)
        self.register_buffer("weight_scale", torch.ones(out_features, dtype=torch.float32, device=device))
        if device.type != "meta":
            self.reset_parameters()

    def extra_repr(self) -> str:
        return super().extra_repr() + ", w0=int8/row"

    def reset_parameters(self) -> None:
        if self.weight.dtype != torch.int8:  # the base __init__ calls this before the int8 weight exists
            return super().reset_parameters()
        with self._as_dense(torch.float32) as dense:
            super().reset_parameters()  # paper init of W0 (into the dense copy), zero skew, identity perms
        self._store(dense)

    def dense_weight(self, dtype: torch.dtype) -> torch.Tensor:
        return dequantize_rows(self.weight, self.weight_scale, dtype)

    @contextlib.contextmanager
    def _as_dense(self, dtype: torch.dtype):
        """`weight.data` temporarily a dense copy (yielded), for the reference's init / merge / effective-weight
        code; the int8 storage is put back after (requantize from the copy with _store where it changed)."""
        q = self.weight.data
        dense = dequantize_rows(q, self.weight_scale, dtype)
        self.weight.data = dense
        try:
            yield dense
        finally:
            self.weight.data = q

    @torch.no_grad()
    def _store(self, dense: torch.Tensor) -> None:
        """Quantize `dense` into the int8 storage and the scales, in place (CUDA graphs keep their addresses)."""
        q, scale = quantize_rows(dense)
        self.weight.data.copy_(q)
        self.weight_scale.copy_(scale)

    def effective_weight(self, weight=None, skew_in=None, skew_out=None) -> torch.Tensor:
        if weight is not None or self.weight.dtype != torch.int8:  # given dense (a merge), or already dense
            return super().effective_weight(weight, skew_in, skew_out)
        with self._as_dense(self.skew_in.dtype):
            return super().effective_weight(None, skew_in, skew_out)

    @torch.no_grad()
    def merge_and_reinit(self, generator: torch.Generator | None = None) -> None:
        with self._as_dense(torch.float32) as dense:
            super().merge_and_reinit(generator)  # folds the transforms into the dense copy
        self._store(dense)

    def _torch_forward(self, x: torch.Tensor) -> torch.Tensor:  # the reference path needs a dense W0
        raise NotImplementedError("POET-XQ runs through the row design (poetx_rows_forward)")
