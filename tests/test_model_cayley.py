"""cayley_scope = "model" / "block" (kernels/model_cayley.py): the blocks of every POET-X layer of a model computed in
a few batched Cayley evaluations per step give the same outputs and the same gradients as the per-layer
evaluation (same algebra and tiles, so equal to fp32 rounding), in chunks of any size, tails included; the
precomputed blocks are used once per forward. Runs the kernels under TRITON_INTERPRET=1 on CPU."""

from __future__ import annotations

import pytest
import torch
from torch import nn

pytest.importorskip("triton")
pytestmark = pytest.mark.usefixtures("triton_interpret")


def _model(seed):
    from poetx_bench.kernels import POETXTritonLinear

    torch.manual_seed(seed)
    layers = [POETXTritonLinear(64, 96, 32, mode="fast"), nn.GELU(),
              POETXTritonLinear(96, 80, 32, mode="mem"),  # output side 2 full blocks + a tail of 16
              nn.GELU(), POETXTritonLinear(80, 64, 32, mode="fast")]
    model = nn.Sequential(*layers)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, POETXTritonLinear):
                m.skew_in.normal_(0, 0.05)
                m.skew_out.normal_(0, 0.05)
    return model


def _loss_and_grads(model, x):
    loss = model(x).pow(2).mean()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("max_blocks", [2048, 7])
def test_model_scope_matches_layer_scope(max_blocks):
    from poetx_bench.kernels.model_cayley import attach

    x = torch.randn(20, 64, generator=torch.Generator().manual_seed(3))
    ref_loss, ref_grads = _loss_and_grads(_model(0), x)
    model = _model(0)
    hook = attach(model, "model", max_blocks=max_blocks)
    assert len(hook.layers) == 3
    hook._before_forward(model, (x,))  # the hook really hands every layer its blocks
    assert all(m._model_blocks is not None for m in hook.layers)
    for m in hook.layers:
        m._model_blocks = None
    assert (len(hook.chunks) == 1) == (max_blocks == 2048)
    loss, grads = _loss_and_grads(model, x)
    assert torch.allclose(loss, ref_loss, rtol=1e-6, atol=0)
    assert ref_grads.keys() == grads.keys() and any("skew" in k for k in grads)
    for k in ref_grads:
        assert torch.allclose(grads[k], ref_grads[k], rtol=1e-5, atol=1e-7), k
    # the precomputed blocks were consumed by the forward; a second step recomputes them
    assert all(m._model_blocks is None for m in hook.layers)
    model.zero_grad()
    loss2, _ = _loss_and_grads(model, x)
    assert torch.allclose(loss2, ref_loss, rtol=1e-6, atol=0)


def test_block_scope_evaluates_one_chunk_per_transformer_block(monkeypatch):
    """cayley_scope = "block": the layers under one numbered child (a transformer block) share one Cayley
    evaluation, and outputs and gradients match the per-layer evaluation."""
    from poetx_bench.kernels.model_cayley import _owner, attach

    def blocks(seed):
        torch.manual_seed(seed)
        model = nn.Module()
        model.layers = nn.ModuleList([_model(seed + i) for i in range(2)])
        model.forward = lambda x: model.layers[1](model.layers[0](x).narrow(-1, 0, 64))
        return model

    assert _owner("layers.3.mlp.up") == "layers.3" and _owner("lm_head") == "lm_head"
    x = torch.randn(20, 64, generator=torch.Generator().manual_seed(5))
    ref_loss, ref_grads = _loss_and_grads(blocks(0), x)
    model = blocks(0)
    hook = attach(model, "block")
    assert [len(c) for c in hook.chunks] == [3, 3]  # two transformer blocks of three POET-X layers
    assert len(attach(blocks(0), "model").chunks) == 1
    # a transformer block's chunk is cut at BLOCK_MAX_BLOCKS (L2-sized chunks): 5 + 5 + 4 blocks of 32 here
    monkeypatch.setattr("poetx_bench.kernels.model_cayley.BLOCK_MAX_BLOCKS", 10)
    assert [len(c) for c in attach(blocks(0), "block").chunks] == [2, 1, 2, 1]
    hook._before_forward(model, (x,))
    loss, grads = _loss_and_grads(model, x)
    assert torch.allclose(loss, ref_loss, rtol=1e-6, atol=0)
    assert ref_grads.keys() == grads.keys()
    for k in ref_grads:
        assert torch.allclose(grads[k], ref_grads[k], rtol=1e-5, atol=1e-7), k


def test_layer_scope_attaches_nothing_and_bad_scope_is_refused():
    from poetx_bench.kernels.model_cayley import attach

    assert attach(_model(0), "layer") is None
    with pytest.raises(ValueError, match="cayley_scope"):
        attach(_model(0), "step")


def test_cayley_keep_qs_matches_recompute_and_is_validated(tmp_path, monkeypatch):
    """cayley_keep = "qs" (backward uses the forward's Q and S instead of recomputing them): the same loss
    and gradients as the default on a model with tails and both modes; unknown values are refused, by the
    layer setter and by a suite (exit 2 naming the key)."""
    from poetx_bench.cli import main
    from poetx_bench.kernels import set_cayley_keep

    x = torch.randn(20, 64, generator=torch.Generator().manual_seed(3))
    ref_loss, ref_grads = _loss_and_grads(_model(0), x)
    model = _model(0)
    assert set_cayley_keep(model, "qs") == 3
    loss, grads = _loss_and_grads(model, x)
    assert torch.allclose(loss, ref_loss, rtol=1e-6, atol=0)
    assert ref_grads.keys() == grads.keys()
    for k in ref_grads:
        assert torch.allclose(grads[k], ref_grads[k], rtol=1e-5, atol=1e-7), k
    # a batched scope honours the setting too: its chunk's Cayley saves Q and S (two dense tensors), and the
    # gradients stay those of the per-layer default
    from poetx_bench.kernels.model_cayley import attach

    batched = _model(0)
    set_cayley_keep(batched, "qs")
    hook = attach(batched, "model")
    hook._before_forward(batched, (x,))
    node = hook.layers[0]._model_blocks[0].grad_fn.next_functions[0][0]
    assert node.keep == "qs" and [t.dim() for t in node.saved_tensors] == [3, 3]
    loss, grads = _loss_and_grads(batched, x)
    for k in ref_grads:
        assert torch.allclose(grads[k], ref_grads[k], rtol=1e-5, atol=1e-7), k
    with pytest.raises(ValueError, match="cayley_keep"):
        set_cayley_keep(model, "everything")
    assert main(["sweep", "--suite", "smoke", "--dry-run", "--set", "cayley_keep=everything"]) == 2


def test_cayley_keep_reaches_the_layers_from_a_point_config():
    """The `cayley_keep` config key is given to every POET-X layer at construction (training and layer
    points); the torch backend, which has no such choice, refuses it."""
    from poetx_bench.backends import make_poetx_layer
    from poetx_bench.points.training import Trainer

    cfg = {"kind": "train", "method": "poetx-fast", "model": "tiny", "block_size": 32, "seq_len": 16,
           "batch_size": 2, "device": "cpu", "dtype": "float32", "seed": 0, "data": "synthetic",
           "merge_every": 200, "backend": "triton", "cayley_keep": "qs"}
    model = Trainer(cfg, torch.device("cpu")).model
    keeps = {m.cayley_keep for m in model.modules() if hasattr(m, "cayley_keep")}
    assert keeps == {"qs"}
    assert make_poetx_layer("triton", 64, 96, 32, "mem", cayley_keep="qs").cayley_keep == "qs"
    with pytest.raises(ValueError, match="cayley_keep"):
        make_poetx_layer("torch", 64, 96, 32, "fast", cayley_keep="qs")


@pytest.mark.parametrize("scope, evaluations", [("block", 2), ("model", 1)])
def test_a_point_config_scope_groups_the_trainers_layers(scope, evaluations):
    """`cayley_scope` from a point config: the tiny Llama's two transformer blocks give two evaluations per
    step under "block" and one under "model" (what train rows record as cayley_evaluations_per_step)."""
    from poetx_bench.points.training import Trainer

    cfg = {"kind": "train", "method": "poetx-fast", "model": "tiny", "block_size": 32, "seq_len": 16,
           "batch_size": 2, "device": "cpu", "dtype": "float32", "seed": 0, "data": "synthetic",
           "merge_every": 200, "backend": "triton", "cayley_scope": scope}
    trainer = Trainer(cfg, torch.device("cpu"))
    assert len(trainer.model_cayley.chunks) == evaluations
    assert sum(len(c) for c in trainer.model_cayley.chunks) == 14  # 2 blocks x 7 linears
