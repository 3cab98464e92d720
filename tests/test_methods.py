"""The method registry (poetx_bench/methods): Muon trains on real text, per-method hyperparameters are
validated and applied, `figures` is `report`, and a filter on a key a method lacks keeps its points."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from poetx_bench.cli import main
from poetx_bench.errors import UserError
from poetx_bench.methods import METHODS, prepare
from poetx_bench.methods.muon import hidden_matrices
from poetx_bench.points.training import Trainer
from poetx_bench.reference.models import MODEL_CONFIGS, build_model
from poetx_bench.suite import apply_filters, load_suite

ROOT = Path(__file__).resolve().parent.parent


def _muon_losses(steps: int, **hparams) -> list[float]:
    """Tiny Llama on the default corpus (as tests/test_training.py), Muon with the given hyperparameters."""
    cfg = {"kind": "train", "method": "muon", "model": "tiny", "block_size": None, "seq_len": 32,
           "batch_size": 8, "device": "cpu", "dtype": "float32", "seed": 0, "data": "default",
           "vocab_size": 2048, "tokenizer": "bpe", "steps": steps, "warmup_steps": 0, "merge_every": 200,
           **({"hparams": hparams} if hparams else {})}
    torch.manual_seed(0)
    trainer = Trainer(cfg, torch.device("cpu"))
    return [float(trainer.step()) for _ in range(steps)]


def _falls(losses: list[float], by: float = 0.5) -> bool:
    return all(map(math.isfinite, losses)) and sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - by


def test_muon_loss_falls_on_default_corpus_and_the_check_can_fail():
    assert _falls(_muon_losses(30))
    # the same check on a run that cannot learn (both learning rates zero) fails
    assert not _falls(_muon_losses(6, lr=0.0, adamw_lr=0.0))


def test_muon_optimizes_hidden_matrices_only_with_nesterov():
    model = build_model("tiny", meta=True, vocab_size=500)
    prep = prepare(model, "muon", device="cpu", seed=0)
    muon, other = prep.optimizer.optimizers
    assert isinstance(muon, torch.optim.Muon) and isinstance(other, torch.optim.AdamW)
    assert all(g["nesterov"] for g in muon.param_groups)
    in_muon = {id(p) for g in muon.param_groups for p in g["params"]}
    names = {n for n, p in prep.model.named_parameters() if id(p) in in_muon}
    assert names and all(n.endswith(".weight") and "embed" not in n and "lm_head" not in n and "norm" not in n
                         for n in names)
    assert len(names) == 7 * MODEL_CONFIGS["tiny"].n_layers  # q, k, v, o, gate, up, down per block
    in_adamw = {id(p) for g in other.param_groups for p in g["params"]}
    assert in_muon.isdisjoint(in_adamw) and len(in_muon | in_adamw) == len(list(prep.model.parameters()))
    assert {id(p) for p in hidden_matrices(prep.model)} == in_muon


def test_muon_needs_only_its_module_and_one_registry_line():
    """Proof of the registry: outside its module, the registry line and the paper's name table, no harness
    file names muon."""
    allowed = {"poetx_bench/methods/muon.py", "poetx_bench/methods/__init__.py", "poetx_bench/report/names.py"}
    hits = [str(p.relative_to(ROOT)) for p in (ROOT / "poetx_bench").rglob("*.py")
            if str(p.relative_to(ROOT)) not in allowed and "muon" in p.read_text().lower()]
    assert hits == []
    registry = (ROOT / "poetx_bench" / "methods" / "__init__.py").read_text().lower()
    assert registry.count("muon") == 1


def test_list_shows_every_method(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name, spec in METHODS.items():
        assert name in out and spec.display_name in out


def test_muon_has_its_own_colour():
    from poetx_bench.report import style

    assert style.method_color("muon") == METHODS["muon"].color
    assert METHODS["muon"].color not in style._FALLBACK  # no unknown method can share it
    assert len({style.method_color(m) for m in METHODS}) == len(METHODS)


def _suite(tmp_path, extra: str) -> Path:
    path = tmp_path / "s.toml"
    path.write_text('kind = "train"\nmethods = ["adamw", "muon", "poetx-fast"]\nmodels = ["tiny"]\n'
                    'seq_lens = [16]\nblock_sizes = [32, 64]\nbatch_sizes = [2]\n' + extra)
    return path


def test_hparams_are_validated_per_method(tmp_path, capsys):
    path = _suite(tmp_path, "[hparams.muon]\nlr = 0.01\n[hparams.adamw]\nweight_decay = 0.1\n")
    suite = load_suite(str(path), "cpu")
    cfgs = {p["config"]["method"]: p["config"] for p in suite.points}
    assert cfgs["muon"]["hparams"] == {"lr": 0.01} and cfgs["adamw"]["hparams"] == {"weight_decay": 0.1}
    assert "hparams" not in cfgs["poetx-fast"]  # unset: no key, so existing configs keep their ids

    for bad, key, value in (("[hparams.muon]\nbeta = 0.9\n", "hparams.muon.beta", "0.9"),
                            ("[hparams.adamw]\nlr = \"fast\"\n", "hparams.adamw.lr", "'fast'"),
                            ("[hparams.poet]\nlr = 0.1\n", "hparams", "'poet'")):
        path = _suite(tmp_path, bad)
        assert main(["sweep", "--suite", str(path), "--device", "cpu", "--dry-run"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(path) in err and key in err and value in err, err


def test_hparams_reach_the_optimizer():
    model = build_model("tiny", meta=True, vocab_size=500)
    prep = prepare(model, "adamw", device="cpu", seed=0, hparams={"lr": 0.005, "weight_decay": 0.1})
    assert prep.optimizer.param_groups[0]["lr"] == 0.005 and prep.optimizer.param_groups[0]["weight_decay"] == 0.1
    model = build_model("tiny", meta=True, vocab_size=500)
    prep = prepare(model, "poetx-mem", 32, device="cpu", seed=0, hparams={"lr": 1e-3, "lr_scale": 1.0})
    assert prep.optimizer.param_groups[0]["lr"] == 1e-3
    with pytest.raises(ValueError, match="unknown hyperparameter 'momentum'"):
        prepare(build_model("tiny", meta=True, vocab_size=500), "adamw", device="cpu", hparams={"momentum": 0.9})


def test_filter_on_a_key_a_method_lacks_keeps_its_points(tmp_path):
    points = load_suite(str(_suite(tmp_path, "")), "cpu").points
    notes = []
    kept = apply_filters(points, ["block_size=32"], note=notes.append)
    got = sorted((p["config"]["method"], p["config"]["block_size"] or 0) for p in kept)
    assert got == [("adamw", 0), ("muon", 0), ("poetx-fast", 32)]
    assert len(notes) == 1 and "adamw" in notes[0] and "muon" in notes[0] and "block_size" in notes[0]
    # a key no point has is an error, not a filter that keeps everything
    with pytest.raises(UserError, match="no point"):
        apply_filters(points, ["blocksize=32"], note=notes.append)
    # a filter every point has drops as before, silently
    notes.clear()
    assert {p["config"]["method"] for p in apply_filters(points, ["method=muon"], note=notes.append)} == {"muon"}
    assert notes == []


def test_sweep_filter_prints_one_line_for_kept_methods(tmp_path, capsys):
    path = _suite(tmp_path, "")
    assert main(["sweep", "--suite", str(path), "--device", "cpu", "--dry-run", "--filter", "block_size=64"]) == 0
    cap = capsys.readouterr()
    assert [line for line in cap.err.splitlines() if line.startswith("filter:")] == [
        "filter: kept every point of methods without the filtered key: adamw, muon (no block_size)"]
    assert "3 points" in cap.out


def test_figures_is_a_thin_call_of_report(tmp_path, monkeypatch):
    """`figures --results P` and `report P` run the same code with the same arguments."""
    from poetx_bench.report import cli as report_cli

    assert report_cli.figures_main is report_cli.report_main
    calls = []
    monkeypatch.setattr(report_cli, "_run", lambda *a: calls.append(a) or 0)
    src = tmp_path / "r.jsonl"
    src.write_text("{}\n")
    assert main(["report", str(src), "--out", str(tmp_path / "a"), "--title", "T"]) == 0
    assert main(["figures", "--results", str(src), "--out", str(tmp_path / "a"), "--title", "T"]) == 0
    assert len(calls) == 2 and calls[0] == calls[1]


def test_official_layer_takes_a_token_batch_as_one_sequence():
    """poet_torch's mem-mode op unpacks (batch, seq, features): a layer point's 2-D token batch reaches it as
    (1, tokens, features) and comes back 2-D; 3-D input passes through; oft_R stays reachable."""
    from torch import nn

    from poetx_bench.backends.official import TokensAsSequence

    class ThreeDOnly(nn.Module):
        def __init__(self):
            super().__init__()
            self.oft_R = nn.Parameter(torch.randn(4, 4, dtype=torch.float64))

        def forward(self, x):
            batch, seq, dim = x.shape  # fails on 2-D input, as the official op does
            return x @ self.oft_R

    inner = ThreeDOnly()
    layer = TokensAsSequence(inner)
    x = torch.randn(6, 4, dtype=torch.float64)
    assert torch.equal(layer(x), x @ inner.oft_R) and layer(x).shape == (6, 4)
    assert layer(x[None]).shape == (1, 6, 4)
    assert layer.oft_R is inner.oft_R and list(layer.parameters()) == [inner.oft_R]
