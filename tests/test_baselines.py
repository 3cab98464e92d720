"""The memory-efficient baselines (poetx_bench/methods: lora, adamw8bit, galore, apollo) and the
`checkpointing` key: each baseline's loss falls on real text while a zero-learning-rate control's does not,
its trainable parameters move (frozen ones do not), and its optimizer-state bytes match a formula.
The packages are the optional `baselines` extra: without one, its tests skip."""

from __future__ import annotations

import math

import pytest
import torch

from poetx_bench.measure import memory_breakdown
from poetx_bench.methods import METHODS, prepare
from poetx_bench.methods.checkpointing import enable_checkpointing
from poetx_bench.points.training import Trainer
from poetx_bench.reference.models import build_model


def _trainer(method: str, steps: int, **hparams) -> Trainer:
    """Tiny Llama on the default corpus, float32 (as tests/test_methods.py's Muon test)."""
    cfg = {"kind": "train", "method": method, "model": "tiny", "block_size": None, "seq_len": 32,
           "batch_size": 8, "device": "cpu", "dtype": "float32", "seed": 0, "data": "default",
           "vocab_size": 2048, "tokenizer": "bpe", "steps": steps, "warmup_steps": 0, "merge_every": 200,
           **({"hparams": hparams} if hparams else {})}
    torch.manual_seed(0)
    return Trainer(cfg, torch.device("cpu"))


def _falls(losses: list[float], by: float) -> bool:
    return all(map(math.isfinite, losses)) and sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - by


def _train_check(method: str, steps: int, by: float, zero_lr: dict, **hparams) -> Trainer:
    """Train; assert the loss falls, every trainable parameter moved and no frozen one did; assert the same
    check fails on a run that cannot learn (`zero_lr`). Returns the trained Trainer."""
    tr = _trainer(method, steps, **hparams)
    before = {n: p.detach().clone() for n, p in tr.model.named_parameters()}
    losses = [float(tr.step()) for _ in range(steps)]
    assert _falls(losses, by), losses
    for n, p in tr.model.named_parameters():
        moved = not torch.equal(before[n], p.detach())
        assert moved == p.requires_grad, (n, p.requires_grad)
    control = _trainer(method, 4, **{**hparams, **zero_lr})
    still = [float(control.step()) for _ in range(4)]
    assert not _falls(still, by), still
    return tr


def _state_bytes(tr: Trainer) -> int:
    return memory_breakdown(tr.model, tr.opt, 0)["optimizer_state"]


# --- checkpointing ----------------------------------------------------------------------------------------
def _loss_and_grads(checkpointing: bool, method: str = "adamw", block_size=None):
    torch.manual_seed(0)
    prep = prepare(build_model("tiny", meta=True, vocab_size=300), method, block_size, device="cpu", seed=0,
                   checkpointing=checkpointing)
    tokens = torch.randint(0, 300, (2, 17), generator=torch.Generator().manual_seed(1))
    packed = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: packed.append(t) or t, lambda t: t):
        logits = prep.model(tokens[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())
    loss.backward()
    grads = {n: p.grad.clone() for n, p in prep.model.named_parameters() if p.grad is not None}
    return loss.detach(), grads, len(packed)


@pytest.mark.parametrize("method,block_size", [("adamw", None), ("poetx-fast", 32)])
def test_checkpointing_gives_the_same_loss_and_gradients(method, block_size):
    loss, grads, saved = _loss_and_grads(False, method, block_size)
    loss_c, grads_c, saved_c = _loss_and_grads(True, method, block_size)
    assert torch.equal(loss, loss_c)
    assert grads.keys() == grads_c.keys() and grads
    for n in grads:
        torch.testing.assert_close(grads_c[n], grads[n], rtol=1e-5, atol=1e-7, msg=n)
    # and it did checkpoint: the blocks' activations are no longer saved for backward
    assert saved_c < saved / 2, (saved_c, saved)


def test_checkpointing_key_defaults_off_and_keeps_point_ids(tmp_path):
    from poetx_bench.points.train import TrainConfig
    from poetx_bench.suite import load_suite, point_id

    assert TrainConfig.added_defaults()["checkpointing"] is False
    path = tmp_path / "s.toml"
    base = 'kind = "train"\nmethods = ["adamw"]\nmodels = ["tiny"]\nseq_lens = [16]\nbatch_sizes = [2]\n'
    path.write_text(base)
    cfg = load_suite(str(path), "cpu").points[0]["config"]
    assert cfg["checkpointing"] is False
    assert point_id(cfg) == point_id({k: v for k, v in cfg.items() if k != "checkpointing"})
    path.write_text(base + "checkpointing = true\n")
    on = load_suite(str(path), "cpu").points[0]
    assert on["config"]["checkpointing"] is True and on["point_id"] != point_id(cfg)


def test_checkpointing_reaches_the_trainer():
    cfg_tr = _trainer("adamw", 1)
    assert not any(getattr(m.forward, "checkpointed", False) for m in cfg_tr.model.layers)
    tr = Trainer({**cfg_tr.cfg, "checkpointing": True}, torch.device("cpu"))
    assert all(getattr(m.forward, "checkpointed", False) for m in tr.model.layers)
    assert enable_checkpointing(tr.model) == len(tr.model.layers)  # idempotent


# --- LoRA -------------------------------------------------------------------------------------------------
def test_lora_trains_adapters_only_and_state_matches_formula():
    pytest.importorskip("peft")
    from poetx_bench.methods.lora import adapter_params

    tr = _train_check("lora-r160", 20, 0.1, {"lr": 0.0}, lr=3e-3)
    base = build_model("tiny", vocab_size=2048)
    n_adapter = adapter_params(160, base)
    trainable = [p for p in tr.model.parameters() if p.requires_grad]
    assert sum(p.numel() for p in trainable) == n_adapter
    assert all(p.dtype == torch.float32 for p in trainable)
    # AdamW: two float32 moments per adapter element and a float32 step count per tensor
    assert _state_bytes(tr) == 2 * 4 * n_adapter + 4 * len(trainable)
    frozen = memory_breakdown(tr.model, tr.opt, 0)["frozen_params"]
    assert frozen == 4 * sum(p.numel() for p in base.parameters())


def test_lora_adapters_stay_in_the_model_dtype_and_both_ranks_are_registered():
    pytest.importorskip("peft")
    from poetx_bench.report.names import PAPER_METHODS

    assert {PAPER_METHODS["LoRA-r160"], PAPER_METHODS["LoRA-r320"]} <= set(METHODS)
    prep = prepare(build_model("tiny", meta=True, vocab_size=300, dtype=torch.bfloat16), "lora-r320",
                   device="cpu", seed=0)
    trainable = {n: p for n, p in prep.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n and p.dtype == torch.bfloat16 for n, p in trainable.items())
    assert {p.shape[0] for n, p in trainable.items() if "lora_A" in n} == {320}


# --- 8-bit AdamW (torchao) --------------------------------------------------------------------------------
@pytest.fixture
def eager_torchao(monkeypatch):
    """torchao compiles its 8-bit step per parameter shape (about 15 s a shape here on CPU): the CPU tests run
    the same step function eagerly."""
    pytest.importorskip("torchao.optim")
    monkeypatch.setattr(torch, "compile", lambda fn=None, **kw: fn)


def test_adamw8bit_trains_and_state_matches_formula(eager_torchao):
    from poetx_bench.methods.adamw8bit import state_bytes

    tr = _train_check("adamw-8bit", 12, 0.5, {"lr": 0.0}, lr=2e-3)
    params = [p for p in tr.model.parameters() if p.requires_grad]
    assert _state_bytes(tr) == sum(state_bytes(p.numel(), p.element_size()) for p in params)
    # 8-bit moments: well under a quarter of float32 AdamW's two moments
    assert _state_bytes(tr) < 0.3 * 2 * 4 * sum(p.numel() for p in params)


# --- GaLore and APOLLO ------------------------------------------------------------------------------------
def _low_rank_state_bytes(tr: Trainer, rank: int, element_size: int = 4, apollo: bool = False) -> int:
    """Per hidden (m, n) weight: projector and two moments of the rank-r projected gradient (left projection
    when m < n, right otherwise; GaLore's SVD gives at most min(m, n) directions, APOLLO's random
    projection exactly r), APOLLO's scalar norm-growth limiter; per other parameter two full moments."""
    from poetx_bench.methods.layerwise import split_hidden

    hidden, rest = split_hidden(tr.model)
    total = 0
    for p in hidden:
        m, n = p.shape
        r = rank if apollo else min(rank, m, n)
        low = r * n if m < n else m * r
        proj = m * r if m < n else r * n
        total += (2 * low + proj) * element_size + (element_size if apollo else 0)
    return total + sum(2 * p.numel() * p.element_size() for p in rest)


def test_galore_updates_per_layer_and_state_matches_formula():
    pytest.importorskip("galore_torch")
    from poetx_bench.methods.layerwise import LayerwiseOptimizer

    tr = _train_check("galore", 20, 0.5, {"lr": 0.0}, rank=32)
    assert isinstance(tr.opt, LayerwiseOptimizer)
    assert tr.opt.steps == 20 * len(tr.opt.pairs)  # every parameter stepped from its hook, every step
    assert all(p.grad is None for p in tr.model.parameters())  # no full gradient left behind
    assert _state_bytes(tr) == _low_rank_state_bytes(tr, 32)


def test_layerwise_frees_each_gradient_before_the_backward_ends():
    pytest.importorskip("galore_torch")
    prep = prepare(build_model("tiny", meta=True, vocab_size=300), "galore", device="cpu", seed=0,
                   hparams={"rank": 8})
    held = []
    first = prep.model.layers[-1].mlp.down_proj.weight  # among the first gradients backward completes
    # while backward reaches the embedding, the last block's gradient is already applied and freed
    prep.model.embed_tokens.weight.register_hook(lambda g: held.append(first.grad is None))
    tokens = torch.randint(0, 300, (2, 9))
    torch.nn.functional.cross_entropy(prep.model(tokens[:, :-1]).flatten(0, 1), tokens[:, 1:].flatten()).backward()
    assert held == [True]


@pytest.mark.parametrize("method,rank", [("apollo", 16), ("apollo-mini", 1)])
def test_apollo_trains_and_state_matches_formula(method, rank):
    pytest.importorskip("apollo_torch")
    hp = {"rank": rank} if method == "apollo" else {}
    tr = _train_check(method, 20, 0.5, {"lr": 0.0}, **hp)
    assert _state_bytes(tr) == _low_rank_state_bytes(tr, rank, apollo=True)
    # projector seeds are numbered over the model, not 1 in every per-parameter optimizer
    seeds = [st["projector"].seed for st in tr.opt.state.values() if "projector" in st]
    assert len(set(seeds)) == len(seeds)


def test_layerwise_methods_skip_cudagraph_with_a_reason():
    pytest.importorskip("galore_torch")  # without the packages the reason is the missing package
    pytest.importorskip("apollo_torch")
    from poetx_bench.child import skip_reason

    base = {"kind": "train", "device": "cuda", "compile": "cudagraph"}
    for m in ("galore", "apollo", "apollo-mini"):
        why = skip_reason({**base, "method": m})
        assert why and "\n" not in why and "hook" in why
    assert skip_reason({**base, "method": m, "compile": "none"}) is None


def test_a_missing_package_skips_its_points_with_a_one_line_reason(monkeypatch):
    import importlib.util

    from poetx_bench.child import skip_reason

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "peft" else real(name, *a))
    why = skip_reason({"kind": "train", "device": "cpu", "compile": "none", "method": "lora-r160"})
    assert why and "\n" not in why and "peft" in why and "baselines" in why


def test_missing_package_is_a_skip_reason_even_for_a_submodule():
    """find_spec of a submodule imports its parent: a missing parent must read as 'not installed', not raise
    (a baseline's point would otherwise end as an error instead of a skip)."""
    from poetx_bench.methods.base import needs_package

    why = needs_package("no_such_package_xyz.optim", "no-such-package")({})
    assert why and "not installed" in why and "\n" not in why


def test_layerwise_breakdown_counts_one_gradient_not_the_model():
    """GaLore/APOLLO free each gradient in its hook: the breakdown must not book the whole model's gradients
    (on the H100 that made their `activations_other` negative)."""
    from torch import nn

    from poetx_bench.methods.layerwise import LayerwiseOptimizer

    model = nn.Sequential(nn.Linear(8, 16), nn.Linear(16, 4))
    plain = memory_breakdown(model, torch.optim.SGD(model.parameters(), lr=0.1), 10_000)
    layerwise = memory_breakdown(model, LayerwiseOptimizer(
        (p, torch.optim.SGD([p], lr=0.1)) for p in model.parameters()), 10_000)
    assert plain["gradients"] == plain["trainable_params"] == 4 * (8 * 16 + 16 + 16 * 4 + 4)
    assert layerwise["gradients"] == 4 * 8 * 16  # the largest parameter
    assert layerwise["activations_other"] > plain["activations_other"]
