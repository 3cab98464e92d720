"""`official_init = "ours"`: the official backend starts from exactly our POET-X point's weights, W0 and
permutations (backends/official.transplant), so a loss-parity run compares the two codes on one starting point.

The mapping test needs the official `poet_torch` on PYTHONPATH (a clone, as bench/gpu_setup.sh's device runs
have) and is skipped without it; it evaluates the official layer with its own pure-torch pieces
(pytorch_skew_symmetric, chain_layer_x_pytorch), not its compiled / Triton forward, so it runs on CPU. The
config plumbing tests run everywhere.
"""

from __future__ import annotations

import pytest
import torch

from poetx_bench.errors import UserError
from poetx_bench.methods import prepare
from poetx_bench.reference.models import build_model
from poetx_bench.suite import load_suite

B = 32


def _cayley_poly(q: torch.Tensor) -> torch.Tensor:
    """I + 2Q + 2Q^2 + 2Q^3 + Q^4: the official GPU kernel's series (poet_torch core/triton_ops.py
    cayley_forward_kernel), which is also ours (the paper's (I + Q)(I + Q + Q^2 + Q^3))."""
    eye = torch.eye(q.shape[-1], dtype=q.dtype).expand_as(q)
    q2 = q @ q
    return eye + 2 * q + 2 * q2 + 2 * q2 @ q + q2 @ q2


def test_transplanted_official_layers_compute_our_function():
    """Every layer of the official model, transplanted from ours and given the negated skew parameters,
    computes our layer's output (float64, random input, random skew on both sides); every other weight is
    ours. A wrong permutation direction, a transposed block or a missed sign fails."""
    pytest.importorskip("poet_torch")
    from poet_torch.core.ops import chain_layer_x_pytorch, pytorch_skew_symmetric

    from poetx_bench.backends import official
    from poetx_bench.reference.layer_base import POETLayerBase

    ours = prepare(build_model("tiny", dtype=torch.float64, meta=True), "poetx-fast", B, device="cpu", seed=3,
                   backend="triton").model
    theirs = official.prepare(build_model("tiny", dtype=torch.float64, meta=True), "poetx-fast", B, "cpu", 3, 200,
                              init="ours")[0]
    mods = dict(theirs.named_modules())
    for name, layer in ours.named_modules():  # the point as prepared: our W0 and (identity) permutations
        if isinstance(layer, POETLayerBase):
            assert torch.equal(mods[name].weight, layer.weight), name
            assert torch.equal(mods[name].perm_in.long(), layer.inv_perm_in), name
    # random permutations (as after a merge) so that their direction matters, then transplant again
    g = torch.Generator().manual_seed(0)
    for layer in ours.modules():
        if isinstance(layer, POETLayerBase):
            layer.redraw_permutations(g)
    assert official.transplant(ours, theirs) == 7 * 2  # q, k, v, o, gate, up, down in each of tiny's 2 blocks
    ident = {n: torch.arange(n) for n in (128, 352)}
    for name, layer in ours.named_modules():  # the buffers its backward and mem mode read, and their inverses
        if isinstance(layer, POETLayerBase):
            off = mods[name]
            assert torch.equal(off.perm_in.long(), layer.inv_perm_in) and torch.equal(off.perm_out_inv.long(), layer.perm_out)
            assert torch.equal(off.perm_in[off.perm_in_inv.long()].long(), ident[layer.in_features]), name
            assert torch.equal(off.perm_out[off.perm_out_inv.long()].long(), ident[layer.out_features]), name
    checked = 0
    for name, layer in ours.named_modules():
        if not isinstance(layer, POETLayerBase):
            continue
        off = mods[name]
        with torch.no_grad():
            layer.skew_in.copy_(torch.randn(layer.skew_in.shape, generator=g, dtype=torch.float64) * 0.05)
            layer.skew_out.copy_(torch.randn(layer.skew_out.shape, generator=g, dtype=torch.float64) * 0.05)
        full_in, _ = layer.layout_in.split_params(layer.skew_in)
        full_out, _ = layer.layout_out.split_params(layer.skew_out)
        packed = -torch.cat([full_out, full_in]).detach()  # poet_torch's rows: output blocks first
        r = _cayley_poly(pytorch_skew_symmetric(packed, B, off.rows.long(), off.cols.long()))
        r_out, r_in = r.split([off.num_out_blocks, off.num_in_blocks])
        x = torch.randn(5, layer.in_features, generator=g, dtype=torch.float64)
        want = layer(x)
        got = chain_layer_x_pytorch(x[..., off.perm_in_inv.long()], r_in, off.weight, None, r_out, B)
        got = got[..., off.perm_out.long()]
        assert torch.allclose(got, want, rtol=1e-9, atol=1e-11), (name, (got - want).abs().max())
        checked += 1
    assert checked == 14
    # every other weight and buffer is ours (embeddings and lm_head are random draws: a missed copy shows)
    theirs_all = {**dict(theirs.named_parameters()), **dict(theirs.named_buffers())}
    poet = tuple(n + "." for n, m in ours.named_modules() if isinstance(m, POETLayerBase))
    others = [(n, t) for n, t in [*ours.named_parameters(), *ours.named_buffers()] if not n.startswith(poet)]
    assert {"embed_tokens.weight", "lm_head.weight"} <= {n for n, _ in others}
    for name, t in others:
        assert torch.equal(theirs_all[name], t), name


def test_transplant_refuses_tails():
    """A block size that leaves a tail has no poet_torch layout (it keeps those Linears): a one-line error
    naming the layer."""
    pytest.importorskip("poet_torch")
    from poetx_bench.backends import official

    with pytest.raises(ValueError, match="layers.0.attn.q_proj.*does not divide"):
        official.prepare(build_model("tiny", dtype=torch.float64, meta=True), "poetx-fast", 48, "cpu", 0, 200,
                         init="ours")


SUITE = """
name = "p"
kind = "train"
methods = ["poetx-fast"]
models = ["tiny"]
block_sizes = [32]
seq_lens = [16]
batch_sizes = [2]
backend = ["triton", "official"]
official_init = "{init}"
"""


def _points(tmp_path, init):
    path = tmp_path / f"p-{init}.toml"
    path.write_text(SUITE.format(init=init))
    return {p["config"]["backend"]: p for p in load_suite(str(path), "cpu").points}


def test_official_init_is_a_key_of_official_rows_only(tmp_path):
    """The setting reaches the official rows (and their ids and labels); our backend's rows keep the default,
    and so the ids they had before the key existed. A bad value is refused naming the key, and so is the key
    in a layer suite (a layer point builds no model), also as a per-method override."""
    from poetx_bench.points.train import describe

    points = _points(tmp_path, "ours")
    assert points["official"]["config"]["official_init"] == "ours"
    assert points["triton"]["config"]["official_init"] == "own"
    plain = _points(tmp_path, "own")
    assert points["triton"]["point_id"] == plain["triton"]["point_id"]
    assert points["official"]["point_id"] != plain["official"]["point_id"]
    assert "official_init=ours" in describe(points["official"]["config"])
    with pytest.raises(UserError, match="official_init"):
        _points(tmp_path, "theirs")
    layer = tmp_path / "layer.toml"
    for extra in ('official_init = "ours"', '[overrides.poetx-fast]\nofficial_init = "ours"'):
        layer.write_text('kind = "layer"\nmethods = ["poetx-fast"]\nshapes = [[64, 64]]\ntokens = [16]\n'
                         f'block_sizes = [32]\n{extra}\n')
        with pytest.raises(UserError, match="official_init"):
            load_suite(str(layer), "cpu")
