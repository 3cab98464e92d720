"""Reference POET / POET-X / Llama: numerical equality, merges, orthogonality, parameter counts."""

import pytest
import torch

from poetx_bench.methods import METHODS, prepare
from poetx_bench.reference.cayley import (
    cayley_exact,
    cayley_neumann,
    neumann_orthogonality_curve,
    orthogonal_blocks,
    orthogonality_error,
    packed_from_skew,
    skew_from_packed,
)
from poetx_bench.reference.convert import convert_model
from poetx_bench.reference.layer_base import POETLayerBase, trainable_count
from poetx_bench.reference.models import MODEL_CONFIGS, build_model, count_params
from poetx_bench.reference.poet import POETLinear
from poetx_bench.reference.poetx import POETXLinear

SHAPES = [(64, 96, 16), (50, 37, 8), (33, 70, 16), (20, 20, 32), (48, 48, 16)]
F64 = torch.float64


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


def random_layers(i, o, b, bias=True, cayley="neumann", seed=0):
    g = torch.Generator().manual_seed(seed)
    ref = POETLinear(i, o, b, bias=bias, dtype=F64, cayley=cayley)
    ref.redraw_permutations(g)  # as after a merge: non-trivial permutations folded in W0
    assert not torch.equal(ref.perm_in, torch.arange(i))
    with torch.no_grad():
        ref.skew_in.copy_(torch.randn(ref.skew_in.shape, generator=g, dtype=F64) * 0.1)
        ref.skew_out.copy_(torch.randn(ref.skew_out.shape, generator=g, dtype=F64) * 0.1)
        if bias:
            ref.bias.copy_(torch.randn(o, generator=g, dtype=F64))
    sd = ref.state_dict()
    layers = [ref]
    for mode in ("fast", "mem"):
        layer = POETXLinear(i, o, b, mode=mode, bias=bias, dtype=F64, cayley=cayley)
        layer.load_state_dict(sd)
        layers.append(layer)
    return layers


def fwd_bwd(layer, x, gy):
    x = x.detach().clone().requires_grad_(True)
    layer.zero_grad()
    y = layer(x)
    (y * gy).sum().backward()
    grads = {n: p.grad.clone() for n, p in layer.named_parameters() if p.requires_grad}
    return y.detach(), x.grad, grads


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("cayley", ["neumann", "exact"])
def test_poet_poetx_agree_in_float64(shape, cayley):
    i, o, b = shape
    layers = random_layers(i, o, b, cayley=cayley, seed=sum(shape))
    g = torch.Generator().manual_seed(7)
    x = torch.randn(3, 5, i, generator=g, dtype=F64)
    gy = torch.randn(3, 5, o, generator=g, dtype=F64)
    y0, gx0, gp0 = fwd_bwd(layers[0], x, gy)
    w = layers[0].effective_weight()
    assert rel(y0, x @ w.T + layers[0].bias) < 1e-10
    assert rel(layers[0].dense_effective_weight(), w) < 1e-10
    assert set(gp0) == {"skew_in", "skew_out", "bias"}
    for layer in layers[1:]:
        y, gx, gp = fwd_bwd(layer, x, gy)
        assert rel(y, y0) < 1e-10
        assert rel(gx, gx0) < 1e-10
        for name in gp0:
            assert rel(gp[name], gp0[name]) < 1e-10, name
    # the gradient of x @ W^T with W built by effective_weight (pure autograd) agrees too
    xr = x.clone().requires_grad_(True)
    layers[1].zero_grad()
    (((xr @ layers[1].effective_weight().T) + layers[1].bias) * gy).sum().backward()
    assert rel(xr.grad, gx0) < 1e-10
    assert rel(layers[1].skew_in.grad, gp0["skew_in"]) < 1e-10


def test_zero_skew_is_identity_and_weight_is_w0():
    layer = POETXLinear(40, 24, 8, dtype=F64)
    assert torch.equal(layer.effective_weight(), layer.weight)
    # with permutations folded in, the stored W0 is the effective weight with rows/columns permuted
    layer.redraw_permutations(torch.Generator().manual_seed(0))
    w = layer.effective_weight()
    assert torch.equal(w[layer.perm_out][:, layer.perm_in], layer.weight)
    assert not layer.weight.requires_grad
    names = {n for n, p in layer.named_parameters() if p.requires_grad}
    assert names == {"skew_in", "skew_out"}
    norms = layer.weight.norm(dim=1)
    assert torch.allclose(norms, torch.ones_like(norms))


@pytest.mark.parametrize("shape", SHAPES)
def test_merge_keeps_function_and_zeroes_skew(shape):
    i, o, b = shape
    for layer in random_layers(i, o, b, seed=3):
        x = torch.randn(4, i, dtype=F64)
        before = layer(x).detach()
        perm_before = layer.perm_in.clone()
        layer.merge_and_reinit()
        assert rel(layer(x).detach(), before) < 1e-10
        assert layer.skew_in.abs().max() == 0 and layer.skew_out.abs().max() == 0
        assert not torch.equal(layer.perm_in, perm_before) or i < 3
        assert torch.equal(layer.perm_in[layer.inv_perm_in], torch.arange(i))


def test_exact_cayley_orthogonal_and_singular_values_preserved():
    layer = random_layers(48, 40, 16, cayley="exact", seed=11)[1]
    gi_f, gi_t, go_f, go_t = layer.transforms()
    for g in (gi_f, go_f):
        assert orthogonality_error(g) < 1e-12
    s_w = torch.linalg.svdvals(layer.effective_weight())
    s_w0 = torch.linalg.svdvals(layer.weight)
    assert rel(s_w, s_w0) < 1e-12


def test_neumann_orthogonality_error_grows_with_q_norm():
    rows = neumann_orthogonality_curve(b=16, terms=3, norms=(1e-3, 1e-2, 1e-1))
    errors = [r["orthogonality_error"] for r in rows]
    assert errors[0] < errors[1] < errors[2]
    assert errors[0] < 1e-10
    # truncation error is O(||Q||^(k+1)) with k=3: scaling Q by 10 scales the error by ~1e4
    assert 1e3 < errors[1] / errors[0] < 1e5


def test_neumann_series_formula():
    q = skew_from_packed(torch.randn(2, 28, dtype=F64) * 0.1, 8)
    eye = torch.eye(8, dtype=F64)
    expected = eye + 2 * q + 2 * q @ q + 2 * q @ q @ q + q @ q @ q @ q
    assert torch.allclose(cayley_neumann(q, 3), expected, atol=1e-14)
    assert torch.allclose(cayley_neumann(q, 40), cayley_exact(q), atol=1e-12)


def test_packing_round_trip():
    p = torch.randn(3, 45, dtype=F64)
    q = skew_from_packed(p, 10)
    assert torch.allclose(q, -q.transpose(-1, -2))
    assert torch.equal(packed_from_skew(q), p)
    assert orthogonal_blocks(p, 10).shape == (3, 10, 10)


def test_bf16_forward_close_to_float64():
    layers = random_layers(256, 192, 64, bias=False, seed=5)
    x = torch.randn(16, 256, dtype=F64)
    y64 = layers[1](x).detach()
    for layer in layers:
        layer_bf = type(layer)(256, 192, 64, dtype=torch.bfloat16, **(
            {"mode": layer.mode} if isinstance(layer, POETXLinear) else {}))
        layer_bf.load_state_dict({k: v.to(torch.bfloat16) if v.is_floating_point() else v
                                  for k, v in layer.state_dict().items()})
        y = layer_bf(x.to(torch.bfloat16)).double()
        assert rel(y, y64) < 1e-2


def test_state_dict_keys_shared():
    a, b, c = random_layers(32, 24, 8, bias=False)
    assert a.state_dict().keys() == b.state_dict().keys() == c.state_dict().keys()


def expected_trainable(cfg, b):
    def side(d):
        n, r = divmod(d, b)
        return n * b * (b - 1) // 2 + (r * (r - 1) // 2 if r > 1 else 0)

    h, f = cfg.hidden, cfg.intermediate
    per_layer = 4 * (2 * side(h)) + 2 * (side(h) + side(f)) + (side(f) + side(h))
    base = 2 * cfg.vocab_size * h + (2 * cfg.n_layers + 1) * h
    return per_layer * cfg.n_layers + base


@pytest.mark.parametrize("name,b", [("3b", 256), ("3b", 512), ("tiny", 48), ("60m", 128), ("13b", 256)])
def test_trainable_count_matches_block_formula(name, b):
    model = build_model(name, meta=True)
    convert_model(model, "poetx-fast", b)
    layers = [m for m in model.modules() if isinstance(m, POETLayerBase)]
    assert len(layers) == 7 * MODEL_CONFIGS[name].n_layers
    for p in model.parameters():
        p.requires_grad_(True)
    for layer in layers:
        layer.weight.requires_grad_(False)
    trainable, _ = count_params(model)
    assert trainable == expected_trainable(MODEL_CONFIGS[name], b)
    assert sum(trainable_count(m) for m in layers) + 2 * 32000 * MODEL_CONFIGS[name].hidden + \
        (2 * MODEL_CONFIGS[name].n_layers + 1) * MODEL_CONFIGS[name].hidden == trainable
    if (name, b) == ("3b", 256):
        assert round(trainable / 1e6, 2) == 366.64
    if (name, b) == ("3b", 512):
        assert round(trainable / 1e6, 2) == 570.06


def test_non_divisible_layer_is_transformed():
    layer = POETXLinear(70, 33, 16, dtype=F64)
    assert layer.layout_in.tail == 6 and layer.layout_out.tail == 0  # 33 = 2*16 + 1: remainder 1 passes
    assert layer.skew_in.numel() == 4 * 120 + 15
    with torch.no_grad():
        layer.skew_in.normal_(0, 0.1)
    w = layer.effective_weight()
    assert not torch.allclose(w, layer.weight)


def test_methods_registry_and_prepare_trains():
    assert {"adamw", "adamw-mixed", "poet", "poetx-fast", "poetx-mem"} <= set(METHODS)
    torch.manual_seed(0)
    ids = torch.randint(0, 1000, (2, 17))
    for method in METHODS:
        spec = METHODS[method]
        if spec.skip_reason and spec.skip_reason({"kind": "train", "method": method, "device": "cpu",
                                                  "compile": "none"}):
            continue  # a baseline whose package is not installed (the `baselines` extra)
        model = build_model("tiny", meta=True, vocab_size=1000)
        prep = prepare(model, method, block_size=32, device="cpu", seed=0, merge_every=3)
        losses = []
        for step in range(1, 7):
            with prep.step_hook.autocast("cpu"):
                logits = prep.model(ids[:, :-1])
            loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].flatten())
            loss.backward()
            prep.optimizer.step()
            prep.optimizer.zero_grad(set_to_none=True)
            prep.step_hook(step)
            losses.append(loss.item())
        assert losses[-1] < losses[0], (method, losses)
        if METHODS[method].uses_blocks:
            assert prep.step_hook.merges == 2
            layer = next(m for m in prep.model.modules() if isinstance(m, POETLayerBase))
            st = prep.optimizer.state[layer.skew_in]
            assert st["exp_avg"].abs().max() == 0 and float(st["step"]) == 0


def test_merge_hook_resets_state_and_keeps_function():
    model = build_model("tiny", meta=True, vocab_size=500, dtype=F64)
    prep = prepare(model, "poetx-mem", block_size=16, device="cpu", seed=1, merge_every=2)
    ids = torch.randint(0, 500, (1, 9))
    for step in (1, 2):
        loss = prep.model(ids).sum()
        loss.backward()
        prep.optimizer.step()
        prep.optimizer.zero_grad()
        if step == 2:
            before = prep.model(ids).detach()
        prep.step_hook(step)
    assert rel(prep.model(ids).detach(), before) < 1e-10


def test_build_model_dims_and_dtype():
    m = build_model("tiny", dtype=torch.bfloat16, seed=0)
    assert m.embed_tokens.weight.dtype == torch.bfloat16
    assert m.lm_head.weight.shape == (32000, 128)
    for name, (h, f, heads, layers) in {"60m": (512, 1280, 8, 8), "130m": (768, 2048, 12, 12),
                                         "350m": (1024, 2736, 16, 24), "1b": (2048, 5632, 32, 24),
                                         "3b": (2560, 7168, 32, 32), "8b": (4096, 14336, 32, 32),
                                         "13b": (5120, 13824, 40, 40)}.items():
        c = MODEL_CONFIGS[name]
        assert (c.hidden, c.intermediate, c.n_heads, c.n_layers, c.vocab_size) == (h, f, heads, layers, 32000)
    meta = build_model("13b", meta=True)
    assert next(meta.parameters()).device.type == "meta"


def test_dense_permutation_is_the_column_gather():
    """x @ Pi^T == x[:, perm] for a random permutation (Pi is built by a scatter of a scalar, which a CUDA graph
    capture accepts; the index_put it replaced copied a CPU tensor and broke POET's graph-timed layer points)."""
    from poetx_bench.reference.blocks import dense_permutation

    g = torch.Generator().manual_seed(11)
    perm = torch.randperm(37, generator=g)
    x = torch.randn(5, 37, generator=g, dtype=torch.float64)
    pi = dense_permutation(perm, torch.float64)
    assert torch.equal(x @ pi.T, x[:, perm])
    assert torch.equal(pi.sum(0), torch.ones(37, dtype=torch.float64))
