"""POET-XQ (kernels/quantized.py, method poetxq / poetxq-mem): W0 in int8 per output row.

Checked: the row quantization error bound; the layer equals POET-X run on the dequantized W0 (forward and
backward, float64, where only the algebra can differ); against the original fp32 W0 the output error is the
quantization error (tolerance from its bound); a merge keeps the function up to one requantization; W0 is
stored in one byte per element; on real text the loss falls and stays within 2% of POET-X's at the same seed.
"""

from __future__ import annotations

import math

import torch

from poetx_bench.kernels import POETXTritonLinear
from poetx_bench.kernels.quantized import POETXQLinear, quantize_rows
from poetx_bench.kernels.rows import dequantize_rows
from poetx_bench.points.training import Trainer


def test_row_quantization_error_is_within_half_a_step():
    w = torch.randn(37, 300, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    q, scale = quantize_rows(w)
    assert q.dtype == torch.int8 and q.abs().max() <= 127 and scale.shape == (37,)
    err = (dequantize_rows(q, scale, torch.float64) - w).abs()
    assert (err <= scale.double()[:, None] / 2 + 1e-12).all()
    assert (err.max(dim=1).values > 0).all()  # it does quantize


def _pair(mode, dtype=torch.float64, seed=0):
    """(POET-XQ layer, POET-X layer holding the XQ layer's dequantized W0), same skew and permutations."""
    torch.manual_seed(seed)
    xq = POETXQLinear(96, 160, 32, mode=mode, dtype=dtype)
    xq.redraw_permutations()
    with torch.no_grad():
        xq.skew_in.normal_(0, 0.05)
        xq.skew_out.normal_(0, 0.05)
    ref = POETXTritonLinear(96, 160, 32, mode=mode, dtype=dtype)
    with torch.no_grad():
        for name in ("skew_in", "skew_out", "perm_in", "inv_perm_in", "perm_out", "inv_perm_out"):
            getattr(ref, name).copy_(getattr(xq, name))
        ref.weight.copy_(xq.dense_weight(dtype))
    return xq, ref


def _fwd_bwd(layer, x):
    x = x.clone().requires_grad_()
    y = layer(x)
    (y * torch.linspace(-1, 1, y.shape[-1], dtype=y.dtype)).sum().backward()
    return y.detach(), x.grad, layer.skew_in.grad, layer.skew_out.grad


def test_layer_equals_poetx_on_the_dequantized_weight_float64():
    x = torch.randn(24, 96, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for mode in ("fast", "mem"):
        xq, ref = _pair(mode)
        assert xq.weight.dtype == torch.int8 and xq.weight.element_size() == 1
        assert not xq.weight.requires_grad
        for a, b in zip(_fwd_bwd(xq, x), _fwd_bwd(ref, x)):
            assert torch.allclose(a, b, rtol=1e-12, atol=1e-12)


def test_output_error_against_the_unquantized_weight_is_the_quantization_error():
    """With the original W0 in place of the dequantized one, outputs move by the quantization error: the
    bound sqrt(in) * scale / 2 per row, relative ~ 1/254 of a unit row for Gaussian rows -> below 1%."""
    xq, ref = _pair("fast")
    torch.manual_seed(5)
    w = torch.randn(160, 96, dtype=torch.float64)
    w /= w.norm(dim=1, keepdim=True)
    with torch.no_grad():
        xq._store(w)
        ref.weight.copy_(w)
    x = torch.randn(24, 96, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    y_q, y = xq(x), ref(x)
    rel = ((y_q - y).norm() / y.norm()).item()
    assert 0 < rel < 0.01, rel


def test_merge_keeps_the_function_up_to_one_requantization():
    xq, _ = _pair("fast")
    x = torch.randn(16, 96, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    before = xq(x).detach()
    q_storage = xq.weight.data.data_ptr()
    xq.merge_and_reinit(torch.Generator().manual_seed(9))
    assert xq.weight.dtype == torch.int8 and xq.weight.data.data_ptr() == q_storage  # in place
    assert torch.count_nonzero(xq.skew_in) == 0 and torch.count_nonzero(xq.skew_out) == 0
    after = xq(x).detach()
    rel = ((after - before).norm() / before.norm()).item()
    assert 0 < rel < 0.01, rel


def _losses(method, steps):
    cfg = {"kind": "train", "method": method, "model": "tiny", "block_size": 32, "seq_len": 32,
           "batch_size": 8, "device": "cpu", "dtype": "float32", "seed": 0, "data": "default",
           "vocab_size": 2048, "tokenizer": "bpe", "steps": steps, "warmup_steps": 0, "merge_every": 10,
           "backend": "triton" if method.startswith("poetx-") else "torch"}
    torch.manual_seed(0)
    trainer = Trainer(cfg, torch.device("cpu"))
    return [float(trainer.step()) for _ in range(steps)]


def test_poetxq_trains_like_poetx_on_real_text():
    """30 steps with two merges: POET-XQ's loss falls, and its last-5-step mean is within 2% of POET-X's at
    the same seed (the issue's bar for 200 steps at 60m on a GPU, here on CPU at the tiny model)."""
    q = _losses("poetxq", 30)
    x = _losses("poetx-fast", 30)
    assert all(map(math.isfinite, q))
    assert sum(q[-5:]) / 5 < sum(q[:3]) / 3 - 0.5
    assert abs(sum(q[-5:]) - sum(x[-5:])) / sum(x[-5:]) < 0.02
