"""Correctness of the Triton kernels (poetx_bench.kernels) against float64 torch references.

On CPU the kernels run under the Triton interpreter. The interpreter is chosen per call by the loader
(kernels/_loader.py), so this module never sets TRITON_INTERPRET at import time: the fixture below sets it
only while each test runs (needed for the layer-level dispatch) and restores it, so other test files in the
same pytest process keep their behaviour. With a CUDA device, `-m gpu` runs the same checks compiled.
Outputs are poisoned with NaN before each kernel run so an element the kernel fails to write fails the test.
"""

from __future__ import annotations

import pytest
import torch
from devices import DEVICES

from poetx_bench import kernels as K  # importing the package does not import triton
from poetx_bench.kernels.block_perm import apply_config, block_perm_apply_full_, grad_config
from poetx_bench.kernels.cayley import cayley_config
from poetx_bench.reference.blocks import BlockLayout, block_grad, block_stochastic_apply
from poetx_bench.reference.cayley import cayley_neumann, num_skew_params, skew_from_packed
from poetx_bench.reference.poetx import POETXLinear

pytest.importorskip("triton")
pytestmark = pytest.mark.usefixtures("triton_interpret")

CUDA = torch.device("cuda")





def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _close(actual: torch.Tensor, expected: torch.Tensor, rel: float = 1e-4) -> None:
    """Max-norm relative check; NaN anywhere fails."""
    actual = actual.detach().double().cpu()
    expected = expected.detach().double().cpu()
    assert actual.shape == expected.shape
    assert torch.isfinite(actual).all(), "non-finite values (unwritten output?)"
    scale = expected.abs().max().clamp_min(1e-30)
    err = ((actual - expected).abs().max() / scale).item()
    assert err <= rel, f"relative max error {err:.3g} > {rel:g}"


# ------------------------------------------------------------------------------------------- Cayley

CAYLEY_CASES = [
    # (b, n_blocks, terms, gpu_tiles)
    (16, 3, 3, True), (32, 2, 3, True), (64, 2, 3, True), (128, 2, 3, False), (256, 1, 3, False),
    (512, 1, 3, False),
    (32, 2, 0, True), (32, 2, 1, True), (32, 2, 2, True), (32, 2, 4, True), (48, 2, 3, True),
    pytest.param(128, 1, 3, True, marks=pytest.mark.slow),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("b,n,terms,gpu_tiles", CAYLEY_CASES)
def test_cayley_neumann_forward_backward(device, b, n, terms, gpu_tiles):
    g = _gen(b * 10 + terms)
    packed64 = (torch.randn(n, num_skew_params(b), generator=g, dtype=torch.float64) * 0.05)
    grad64 = torch.randn(n, b, b, generator=g, dtype=torch.float64)
    cfg = cayley_config(b, CUDA) if gpu_tiles else None
    cfg_bwd = cayley_config(b, CUDA, which="bwd") if gpu_tiles else None
    packed = packed64.float().to(device)

    out = torch.full((n, b, b), float("nan"), device=device)
    got = K.cayley_neumann_forward(packed, b, terms, out=out, config=cfg)
    assert got.data_ptr() == out.data_ptr()

    p = packed64.clone().requires_grad_(True)
    ref = cayley_neumann(skew_from_packed(p, b), terms)
    (ref * grad64).sum().backward()
    _close(got, ref)

    gout = torch.full((n, num_skew_params(b)), float("nan"), device=device)
    gp = K.cayley_neumann_backward(packed, grad64.float().to(device), b, terms, out=gout, config=cfg_bwd)
    _close(gp, p.grad)


def test_cayley_noncontiguous_and_autograd():
    b, n = 32, 3
    g = _gen(1)
    base = torch.randn(num_skew_params(b), n, generator=g, dtype=torch.float64) * 0.05
    leaf = base.float().requires_grad_(True)
    packed = leaf.T  # non-contiguous (n, P) view
    assert not packed.is_contiguous()
    got = K.cayley_neumann_packed(packed, b, 3)
    w = torch.randn(n, b, b, generator=g, dtype=torch.float64)
    (got.double() * w).sum().backward()
    p = base.T.clone().requires_grad_(True)
    ref = cayley_neumann(skew_from_packed(p, b), 3)
    (ref * w).sum().backward()
    _close(got, ref)
    _close(leaf.grad.T, p.grad)
    assert leaf.grad.dtype == torch.float32


# ------------------------------------------------------------------------------- block permutation

APPLY_CASES = [
    # (b, n_blocks, extra pass-through coords, rows, gpu_tiles)
    (16, 3, 2, 7, True), (32, 2, 5, 33, True), (64, 2, 0, 33, True), (128, 2, 3, 7, True),
    (256, 2, 1, 7, False), (512, 1, 0, 3, False), (48, 2, 7, 9, True), (128, 1, 0, 33, False),
]


def _ref_apply(x64, g64, perm, b, n, transpose):
    dim = x64.shape[-1]
    lay = _FullOnly(dim, b, n)
    return block_stochastic_apply(x64, lay, g64, None, perm, torch.argsort(perm), transpose)


class _FullOnly:
    """Layout with n full blocks and every other coordinate passed through (no tail)."""

    def __init__(self, dim, b, n):
        self.dim, self.b, self.n_full, self.tail, self.covered = dim, b, n, 0, n * b


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("transpose", [True, False])
@pytest.mark.parametrize("b,n,extra,rows,gpu_tiles", APPLY_CASES)
def test_block_perm_apply(device, transpose, b, n, extra, rows, gpu_tiles):
    dim = n * b + extra
    g = _gen(b + rows + extra)
    x64 = torch.randn(rows, dim, generator=g, dtype=torch.float64)
    g64 = torch.randn(n, b, b, generator=g, dtype=torch.float64) / b ** 0.5
    perm = torch.randperm(dim, generator=g)
    cfg = apply_config(b, CUDA) if gpu_tiles else None
    x = x64.float().to(device)
    out = torch.full((rows, dim), float("nan"), device=device)
    block_perm_apply_full_(x, g64.float().to(device), perm.to(device), b, transpose, out, cfg)
    ref = _ref_apply(x64, g64, perm, b, n, transpose)
    covered = perm[: n * b]
    _close(out[:, covered.to(device)], ref[:, covered])
    if extra:  # the kernel must leave uncovered coordinates alone
        assert torch.isnan(out[:, perm[n * b:].to(device)]).all()
    full = K.block_perm_apply_raw(x, g64.float().to(device), perm.to(device), b, transpose, config=cfg)
    _close(full, ref)


@pytest.mark.parametrize("device", DEVICES)
def test_block_perm_apply_noncontiguous_and_3d(device):
    b, n, rows = 32, 3, 11
    dim = n * b + 4
    g = _gen(7)
    big = torch.randn(dim, 2 * rows, generator=g, dtype=torch.float64)
    x64 = big[:, ::2].T  # (rows, dim), strides (2, 2*rows): transposed and sliced
    g64 = torch.randn(n, b, b, generator=g, dtype=torch.float64) / b ** 0.5
    perm = torch.randperm(dim, generator=g)
    x = big.float().to(device)[:, ::2].T
    assert not x.is_contiguous()
    for transpose in (True, False):
        got = K.block_perm_apply_raw(x, g64.float().to(device), perm.to(device), b, transpose)
        _close(got, _ref_apply(x64, g64, perm, b, n, transpose))
    x3 = torch.randn(2, 5, dim, generator=g, dtype=torch.float64)
    got = K.block_perm_apply_raw(x3.float().to(device), g64.float().to(device), perm.to(device), b, True)
    assert got.shape == x3.shape
    _close(got, _ref_apply(x3.reshape(-1, dim), g64, perm, b, n, True).reshape(x3.shape))


GRAD_CASES = [
    # (b, n_blocks, extra, rows, split (None = heuristic), gpu_tiles)
    (16, 3, 1, 33, 1, True), (32, 2, 3, 33, 3, True), (64, 2, 0, 7, 1, True), (128, 2, 2, 33, 1, True),
    (256, 1, 0, 7, 1, False), (512, 1, 0, 3, 1, False), (64, 2, 0, 300, None, True), (48, 2, 5, 20, 1, True),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("b,n,extra,rows,split,gpu_tiles", GRAD_CASES)
def test_block_perm_grad(device, b, n, extra, rows, split, gpu_tiles):
    dim = n * b + extra
    g = _gen(3 * b + rows)
    go64 = torch.randn(rows, dim, generator=g, dtype=torch.float64)
    in64 = torch.randn(2 * rows, dim, generator=g, dtype=torch.float64)[::2]  # non-contiguous rows
    perm = torch.randperm(dim, generator=g)
    cfg = dict(grad_config(b, rows, n, CUDA)) if gpu_tiles else {}
    cfg["split"] = split
    if split is None:
        cfg.pop("split")
    out = torch.full((n, b, b), float("nan"), device=device)
    got = K.block_perm_grad(go64.float().to(device), in64.float().to(device), perm.to(device), b, n,
                            config=cfg, out=out)
    ref, _ = block_grad(go64[:, perm], in64[:, perm], BlockLayout(n * b, b))
    _close(got, ref)


@pytest.mark.parametrize("transpose", [True, False])
def test_block_perm_apply_autograd(transpose):
    b, n, rows = 32, 2, 9
    dim = n * b + 3
    g = _gen(11)
    x64 = torch.randn(rows, dim, generator=g, dtype=torch.float64)
    g64 = torch.randn(n, b, b, generator=g, dtype=torch.float64) / b ** 0.5
    w = torch.randn(rows, dim, generator=g, dtype=torch.float64)
    perm = torch.randperm(dim, generator=g)
    xr, gr = x64.clone().requires_grad_(True), g64.clone().requires_grad_(True)
    (_ref_apply(xr, gr, perm, b, n, transpose) * w).sum().backward()
    xt, gt = x64.float().requires_grad_(True), g64.float().requires_grad_(True)
    y = K.block_perm_apply(xt, gt, perm, b, transpose)
    (y * w.float()).sum().backward()
    _close(y, _ref_apply(x64, g64, perm, b, n, transpose))
    _close(xt.grad, xr.grad)
    _close(gt.grad, gr.grad)


def test_bf16_apply_and_grad():
    """bf16 activations (the benchmark dtype): fp32 accumulation, one bf16 rounding of the output."""
    b, n, rows = 64, 2, 17
    dim = n * b
    g = _gen(5)
    x = torch.randn(rows, dim, generator=g).bfloat16()
    gb = (torch.randn(n, b, b, generator=g) / b ** 0.5).bfloat16()
    perm = torch.randperm(dim, generator=g)
    got = K.block_perm_apply_raw(x, gb, perm, b, True)
    assert got.dtype == torch.bfloat16
    _close(got, _ref_apply(x.double(), gb.double(), perm, b, n, True), rel=1e-2)
    gg = K.block_perm_grad(x, x, perm, b, n)
    ref, _ = block_grad(x.double()[:, perm], x.double()[:, perm], BlockLayout(dim, b))
    _close(gg, ref, rel=1e-5)


# ------------------------------------------------------------------------------------- full layer

LAYER_CASES = [
    # (in, out, block, extra kwargs)
    (64, 128, 32, {}),                      # divisible
    (100, 70, 32, {}),                      # tail blocks on both sides (4 and 6)
    (49, 33, 16, {}),                       # one pass-through coordinate per side
    (64, 96, 128, {}),                      # b >= dim: one block per side, b=96 not a power of two
    (96, 64, 32, {"neumann_terms": 2}),
    (64, 48, 16, {"cayley": "exact"}),
    (48, 80, 16, {"bias": True}),
]


def _pair(i, o, blk, kw, mode, device, seed, impl="fused"):
    torch.manual_seed(seed)
    ref = POETXLinear(i, o, blk, mode=mode, dtype=torch.float64, **kw)
    ref.redraw_permutations()  # non-trivial permutations folded into W0, as after a merge
    with torch.no_grad():
        ref.skew_in.normal_(0, 0.05)
        ref.skew_out.normal_(0, 0.05)
        if ref.bias is not None:
            ref.bias.normal_()
    tri = K.POETXTritonLinear(i, o, blk, mode=mode, device=device, block_impl=impl, **kw)
    tri.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in ref.state_dict().items()})
    return ref, tri


@pytest.mark.parametrize("impl", ["rows", "fused"])
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", ["fast", "mem"])
@pytest.mark.parametrize("i,o,blk,kw", LAYER_CASES)
def test_layer_matches_torch(device, mode, i, o, blk, kw, impl):
    ref, tri = _pair(i, o, blk, kw, mode, device, seed=i * o + blk, impl=impl)
    g = _gen(i + o)
    x64 = torch.randn(2, 7, i, generator=g, dtype=torch.float64)
    gy = torch.randn(2, 7, o, generator=g, dtype=torch.float64)
    xr = x64.clone().requires_grad_(True)
    yr = ref(xr)
    yr.backward(gy)
    xt = x64.float().to(device).requires_grad_(True)
    yt = tri(xt)
    yt.backward(gy.float().to(device))
    _close(yt, yr)
    _close(xt.grad, xr.grad)
    _close(tri.skew_in.grad, ref.skew_in.grad)
    _close(tri.skew_out.grad, ref.skew_out.grad)
    if ref.bias is not None:
        _close(tri.bias.grad, ref.bias.grad)


@pytest.mark.parametrize("impl", ["rows", "fused"])
@pytest.mark.parametrize("mode", ["fast", "mem"])
def test_layer_noncontiguous_input_and_partial_grads(mode, impl):
    i, o, blk = 64, 80, 32
    ref, tri = _pair(i, o, blk, {}, mode, "cpu", seed=3, impl=impl)
    g = _gen(9)
    big = torch.randn(i, 66, generator=g, dtype=torch.float64)
    x64 = big[:, ::2].T  # (33, i) non-contiguous
    gy = torch.randn(33, o, generator=g, dtype=torch.float64)
    yr = ref(x64)
    yr.backward(gy)
    xt = big.float()[:, ::2].T
    assert not xt.is_contiguous()
    tri.skew_in.requires_grad_(False)  # only skew_out needs a gradient
    yt = tri(xt)
    yt.backward(gy.float())
    _close(yt, yr)
    assert tri.skew_in.grad is None
    _close(tri.skew_out.grad, ref.skew_out.grad)


@pytest.mark.parametrize("impl", ["rows", "fused"])
def test_layer_bf16_close_to_fp64(impl):
    """bf16 activations, weights and blocks (rows: Cayley products in bf16 with fp32 accumulation, as the
    official code; fused: fp32 Cayley) against float64: within 2e-2 of the output and 5e-2 of the skew
    gradients, the spread of bf16 rounding (2^-8 relative) over sums of ~100 terms and three
    Neumann products."""
    i, o, blk = 64, 64, 32
    ref, _ = _pair(i, o, blk, {}, "fast", "cpu", seed=4)
    tri = K.POETXTritonLinear(i, o, blk, block_impl=impl, dtype=torch.bfloat16)
    tri.load_state_dict({k: v.to(torch.bfloat16) if v.is_floating_point() else v
                         for k, v in ref.state_dict().items()})
    x = torch.randn(9, i, generator=_gen(2)).bfloat16()
    y = tri(x)
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    ref.load_state_dict({k: v.double() if v.is_floating_point() else v for k, v in tri.state_dict().items()})
    yr = ref(x.double())
    yr.sum().backward()
    _close(y, yr, rel=2e-2)
    _close(tri.skew_in.grad, ref.skew_in.grad, rel=5e-2)
    _close(tri.skew_out.grad, ref.skew_out.grad, rel=5e-2)


# ------------------------------------------------------------------------------------- dispatch


def test_dispatch_falls_back_without_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert not K.use_kernels(torch.zeros(1))

    def boom(*a, **k):
        raise AssertionError("kernels must not run")

    monkeypatch.setattr("poetx_bench.kernels.autograd.POETXTritonFunction.apply", boom)
    monkeypatch.setattr("poetx_bench.kernels._loader.kernels_for", boom)
    monkeypatch.setattr("poetx_bench.kernels.rows.kernels_for", boom)
    for impl in ("fused", "rows"):  # fused -> reference path; rows -> its torch fallbacks
        _, tri = _pair(32, 32, 16, {}, "fast", "cpu", seed=1, impl=impl)
        x = torch.randn(5, 32)
        torch.testing.assert_close(tri(x), tri._torch_forward(x), rtol=1e-5, atol=1e-5)


def test_dispatch_float64(monkeypatch):
    """float64: the fused design's fp32 kernels never run (reference path); rows runs its algebra in
    float64 (pure data moves in the kernels, products through torch)."""
    def boom(*a, **k):
        raise AssertionError("kernels must not run for float64")

    monkeypatch.setattr("poetx_bench.kernels.autograd.POETXTritonFunction.apply", boom)
    ref, _ = _pair(32, 48, 16, {}, "mem", "cpu", seed=2)
    tri = K.POETXTritonLinear(32, 48, 16, mode="mem", block_impl="fused", dtype=torch.float64)
    tri.load_state_dict(ref.state_dict())
    x = torch.randn(5, 32, dtype=torch.float64)
    torch.testing.assert_close(tri(x), ref._torch_forward(x))
    rows = K.POETXTritonLinear(32, 48, 16, mode="mem", block_impl="rows", dtype=torch.float64)
    rows.load_state_dict(ref.state_dict())
    torch.testing.assert_close(rows(x), ref(x), rtol=1e-12, atol=1e-12)


def test_triton_available_and_lazy_import():
    assert K.triton_available()
    import poetx_bench.kernels._loader as L

    assert L.kernels_for(torch.device("cpu")) is L.kernels_for(torch.device("cpu"))


@pytest.mark.parametrize("mode", ["fast", "mem"])
def test_layer_block_impl_torch(mode):
    """block_impl=torch: Cayley kernels + reference gathers/einsum inside the first design's Function."""
    i, o, blk = 100, 70, 32
    ref, tri = _pair(i, o, blk, {}, mode, "cpu", seed=5, impl="torch")
    assert tri.block_impl == "torch"
    g = _gen(6)
    x64 = torch.randn(13, i, generator=g, dtype=torch.float64)
    gy = torch.randn(13, o, generator=g, dtype=torch.float64)
    xr = x64.clone().requires_grad_(True)
    ref(xr).backward(gy)
    xt = x64.float().requires_grad_(True)
    yt = tri(xt)
    yt.backward(gy.float())
    _close(yt, ref(x64))
    _close(xt.grad, xr.grad)
    _close(tri.skew_in.grad, ref.skew_in.grad)
    _close(tri.skew_out.grad, ref.skew_out.grad)
    with pytest.raises(ValueError):
        K.resolve_block_impl("nope")
    assert K.resolve_block_impl("auto") == "rows"
