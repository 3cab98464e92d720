"""The row-domain design (kernels/rows.py), piece by piece, against float64 references on fresh random
inputs: the two permutation transposes, skew pack/unpack, and the Horner Cayley-Neumann forward and
backward. Runs the Triton kernels under TRITON_INTERPRET=1 on CPU (compiled with `-m gpu` on a GPU); the
whole layer is checked in test_kernels.py (test_layer_matches_torch with impl=rows)."""

from __future__ import annotations

import pytest
import torch
from devices import DEVICES

from poetx_bench.kernels import rows as R
from poetx_bench.reference.cayley import cayley_neumann, num_skew_params, skew_from_packed

pytest.importorskip("triton")
pytestmark = pytest.mark.usefixtures("triton_interpret")


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _rel(a, b):
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    assert a.shape == b.shape
    assert torch.isfinite(a).all()
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("T,D", [(70, 96), (64, 64), (33, 250), (1, 17)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_perm_transposes(device, T, D, dtype):
    g = _gen(T * D)
    x = torch.randn(T, D, generator=g).to(device, dtype)
    perm = torch.randperm(D, generator=g).to(device)
    inv = torch.argsort(perm)
    rows = R.to_rows(x, inv, perm)
    assert rows.shape == (D, T)
    assert torch.equal(rows.cpu(), x.cpu().t()[perm.cpu()])  # a pure data move: bit-exact
    back = R.from_rows(rows, inv)
    assert torch.equal(back.cpu(), x.cpu())  # y[:, perm[j]] = rows[j] undoes it
    src = torch.randn(D, T, generator=g).to(device, dtype)
    y = R.from_rows(src, inv)
    assert torch.equal(y.cpu()[:, perm.cpu()], src.cpu().t())


def test_perm_to_rows_strided_rows():
    """x with a row stride larger than its width (a slice of a wider tensor) is read correctly."""
    g = _gen(3)
    big = torch.randn(40, 100, generator=g)
    x = big[:, 10:74]
    perm = torch.randperm(64, generator=g)
    assert torch.equal(R.to_rows(x, torch.argsort(perm), perm), x.t()[perm])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("b,n", [(16, 3), (32, 2), (96, 2), (256, 1)])
def test_skew_unpack_and_pack(device, b, n):
    g = _gen(b + n)
    packed = torch.randn(n, num_skew_params(b), generator=g)
    q = R.skew_unpack(packed.to(device), b)
    assert torch.equal(q.cpu(), skew_from_packed(packed, b))
    s = torch.randn(n, b, b, generator=g)
    iu = torch.triu_indices(b, b, offset=1)
    expected = (s - s.transpose(1, 2))[:, iu[0], iu[1]]
    assert torch.allclose(R.skew_pack_grad(s.to(device)).cpu(), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("terms", [0, 1, 2, 3, 5])
@pytest.mark.parametrize("b", [16, 48])
@pytest.mark.parametrize("keep", ["params", "qs"])
def test_cayley_matches_float64(device, terms, b, keep):
    """Forward and backward of the Cayley-Neumann (square form for t = 2, 3, Horner otherwise; backward
    recomputing Q and S, or keeping the forward's) against autograd through the reference series in
    float64: fp32 lands within 1e-5."""
    g = _gen(terms * 100 + b)
    packed64 = (torch.randn(3, num_skew_params(b), generator=g, dtype=torch.float64) * 0.1).requires_grad_()
    gbar = torch.randn(3, b, b, generator=g, dtype=torch.float64)
    ref = cayley_neumann(skew_from_packed(packed64, b), terms)
    (ref * gbar).sum().backward()
    p = packed64.detach().float().to(device).requires_grad_()
    got = R.cayley_blocks(b, terms, p, keep=keep)
    (got * gbar.float().to(device)).sum().backward()
    assert _rel(got, ref) < 1e-5
    assert _rel(p.grad, packed64.grad) < 1e-5


@pytest.mark.parametrize("terms", [1, 2, 3, 4])
def test_cayley_float64_exact(terms):
    """float64 (torch ops, both forms): gradcheck, and the blocks equal the reference series to rounding."""
    g = _gen(7 + terms)
    packed = (torch.randn(2, num_skew_params(24), generator=g, dtype=torch.float64) * 0.2).requires_grad_()
    gbar = torch.randn(2, 24, 24, generator=g, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda p: (R.cayley_blocks(24, terms, p) * gbar).sum(), (packed,))
    assert torch.autograd.gradcheck(lambda p: (R.cayley_blocks(24, terms, p, keep="qs") * gbar).sum(), (packed,))
    ref = cayley_neumann(skew_from_packed(packed, 24), terms)
    assert _rel(R.cayley_blocks(24, terms, packed), ref) < 1e-13


@pytest.mark.parametrize("device", DEVICES)
def test_cayley_two_packed_tensors_in_one_batch(device):
    """Both sides of a layer in one call (no concatenation): blocks and both gradients equal separate calls."""
    g = _gen(21)
    pa = (torch.randn(2, num_skew_params(32), generator=g) * 0.1).to(device).requires_grad_()
    pb = (torch.randn(3, num_skew_params(32), generator=g) * 0.1).to(device).requires_grad_()
    gbar = torch.randn(5, 32, 32, generator=g).to(device)
    both = R.cayley_blocks(32, 3, pa, pb)
    (both * gbar).sum().backward()
    ga, gb_ = pa.grad.clone(), pb.grad.clone()
    pa.grad = pb.grad = None
    sep = torch.cat([R.cayley_blocks(32, 3, pa), R.cayley_blocks(32, 3, pb)])
    (sep * gbar).sum().backward()
    assert _rel(both, sep) < 1e-6 and _rel(ga, pa.grad) < 1e-6 and _rel(gb_, pb.grad) < 1e-6
    # and both against float64 (one unpack and one pack launch serve the two sides: blocks of the second
    # tensor must come from its own parameters, gradients land in the right tensor)
    pa64, pb64 = (p.detach().double().cpu().requires_grad_() for p in (pa, pb))
    ref = torch.cat([cayley_neumann(skew_from_packed(pa64, 32), 3), cayley_neumann(skew_from_packed(pb64, 32), 3)])
    (ref * gbar.double().cpu()).sum().backward()
    assert _rel(both, ref) < 1e-5 and _rel(ga, pa64.grad) < 1e-5 and _rel(gb_, pb64.grad) < 1e-5


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("b", [16, 40, 64])
@pytest.mark.parametrize("n_pairs", [1, 2, 3])
@pytest.mark.parametrize("with_e", [False, True])
@pytest.mark.parametrize("one_loop", [False, True])
@pytest.mark.parametrize("sym_a1", [False, True])
def test_bgemm_matches_float64(device, b, n_pairs, with_e, one_loop, sym_a1, monkeypatch):
    """The fused batched product (pairs, C, D, identity in one launch; with_e: the first right operand is
    B_0 + eta E; sym_a1: the second left operand is A_1 + A_1^T) against float64 torch on fresh inputs, the
    pairs as separate K loops or as one; b = 40 exercises the masked tile edges (and the mirrored tile's).
    fp32 operands: within 1e-5."""
    if sym_a1 and n_pairs < 2:
        pytest.skip("sym_a1 acts on a second pair")
    monkeypatch.setattr(R, "BGEMM_ONE_LOOP", one_loop)
    g = _gen(b * 10 + n_pairs + 5 * with_e + 17 * sym_a1)
    mats = [torch.randn(3, b, b, generator=g, dtype=torch.float64) for _ in range(2 * n_pairs + 3)]
    alphas = [2.0, -1.0, 0.5][:n_pairs]
    eta = -2.0 if with_e else 0.0
    rights = [mats[2 * i + 1] + (eta * mats[-3] if i == 0 else 0) for i in range(n_pairs)]
    lefts = [mats[2 * i] + (mats[2 * i].transpose(-1, -2) if (i == 1 and sym_a1) else 0) for i in range(n_pairs)]
    expected = sum(a * (lefts[i] @ rights[i]) for i, a in enumerate(alphas))
    expected = expected + 2 * mats[-2] - 0.5 * mats[-1] + 3 * torch.eye(b, dtype=torch.float64)
    dev = [m.float().to(device) for m in mats]
    got = R.bgemm([(a, dev[2 * i], dev[2 * i + 1]) for i, a in enumerate(alphas)],
                  c=dev[-2], beta=2, d=dev[-1], delta=-0.5, gamma=3, e=dev[-3] if with_e else None, eta=eta,
                  sym_a1=sym_a1)
    assert got.dtype == torch.float32
    assert _rel(got, expected) < 1e-5


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_bgemm_sym_a1_low_precision(device, dtype):
    """sym_a1 in 16-bit operands at a ragged block (b = 48: partial tiles, the mirrored tile's masks): the left
    tile A_1 + A_1^T is summed in fp32 and rounded once, so against float64 the result sits within the
    operands' own rounding (bf16 2^-8, fp16 2^-11 relative, summed over a few terms): 1e-2 / 2e-3."""
    b = 48
    g = _gen(48 + (dtype == torch.float16))
    mats = [torch.randn(4, b, b, generator=g, dtype=torch.float64) for _ in range(5)]
    lo = [m.to(dtype).to(device) for m in mats]
    exact = [m.to(dtype).double() for m in mats]  # the rounded operands, multiplied exactly
    expected = 2 * exact[0] @ exact[1] - (exact[2] + exact[2].transpose(-1, -2)) @ exact[3] + 2 * exact[4]
    got = R.bgemm([(2, lo[0], lo[1]), (-1, lo[2], lo[3])], c=lo[4], beta=2, sym_a1=True)
    assert got.dtype == dtype
    assert _rel(got, expected) < (1e-2 if dtype == torch.bfloat16 else 2e-3)


def test_cayley_bf16_tolerance():
    """bf16 parameters: products in bf16 with fp32 accumulation (as the official implementation). Against
    float64 the blocks land within 1e-2 and the gradient within 3e-2 (relative Frobenius): each of the
    ~3 chained products rounds to bf16 (2^-8 relative), and the gradient sums a few such products."""
    b = 64
    g = _gen(11)
    packed64 = (torch.randn(4, num_skew_params(b), generator=g, dtype=torch.float64) * 0.05).requires_grad_()
    gbar = torch.randn(4, b, b, generator=g, dtype=torch.float64)
    ref = cayley_neumann(skew_from_packed(packed64, b), 3)
    (ref * gbar).sum().backward()
    p = packed64.detach().bfloat16().requires_grad_()
    got = R.cayley_blocks(b, 3, p)
    assert got.dtype == torch.bfloat16
    (got.float() * gbar.float()).sum().backward()
    assert _rel(got, ref) < 1e-2
    assert _rel(p.grad, packed64.grad) < 3e-2


def test_kernels_really_run_in_the_interpreter():
    """The module's fixture sets TRITON_INTERPRET=1: the kernels, not the torch fallbacks, are under test."""
    from poetx_bench.kernels import use_kernels

    assert use_kernels(torch.zeros(1))


@pytest.mark.parametrize("device", DEVICES)
def test_permutation_launches_are_named_for_the_layer_breakdown(device):
    """Under a profiler each permutation runs as its torch.library op (`poetx::to_rows` / `poetx::from_rows`),
    which the layer breakdown classifies as permutation (launched inside the layer's autograd Function, its
    kernel time was 'other'); results are the same either way."""
    from poetx_bench.points.layer_timing import classify_op

    x = torch.randn(8, 64, device=device)
    perm = torch.randperm(64, device=device)
    inv = torch.argsort(perm)
    plain = R.to_rows(x, inv, perm)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        rows = R.to_rows(x, inv, perm)
        back = R.from_rows(rows, inv)
    assert torch.equal(rows, plain) and torch.equal(rows, x[:, perm].t()) and torch.equal(back, x)
    names = {e.key for e in prof.key_averages()}
    assert {"poetx::to_rows", "poetx::from_rows"} <= names
    assert classify_op("poetx::to_rows", [[8, 64]], (64, 64), 32, 8) == "permutation"
    assert classify_op("poetx::from_rows", [[64, 8]], (64, 64), 32, 8) == "permutation"
