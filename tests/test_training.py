"""Training on the default real-text corpus: loss falls for every method, and POET / POET-X are the same
optimisation (identical loss curves at float32 with the same seed and data)."""

import math

import pytest
import torch

from poetx_bench.methods import METHODS
from poetx_bench.points.training import Trainer

VOCAB = 2048


def config(method, steps, merge_every=20, **kw):
    return {"kind": "train", "method": method, "model": "tiny", "block_size": 32, "seq_len": 32,
            "batch_size": 8, "device": "cpu", "dtype": "float32", "seed": 0, "data": "default",
            "vocab_size": VOCAB, "tokenizer": "bpe", "steps": steps, "warmup_steps": 0,
            "merge_every": merge_every, **kw}


def train(method, steps, **kw):
    torch.manual_seed(0)
    trainer = Trainer(config(method, steps, **kw), torch.device("cpu"))
    return [float(trainer.step()) for _ in range(steps)]


# the memory-efficient baselines have their own loss-falls test with a zero-lr control (tests/test_baselines.py):
# LoRA's frozen random base learns too slowly for this threshold at its defaults, and AdamW 8-bit's compiled
# step would compile here for minutes
BASELINES_TESTED_ELSEWHERE = {"adamw-8bit", "lora-r160", "lora-r320", "galore", "apollo", "apollo-mini"}


@pytest.mark.parametrize("method", [m for m in METHODS if m not in BASELINES_TESTED_ELSEWHERE])
def test_loss_falls_on_default_corpus(method):
    losses = train(method, 30)
    assert all(math.isfinite(x) for x in losses)
    start = sum(losses[:3]) / 3
    end = sum(losses[-3:]) / 3
    assert end < start - 0.5, (method, losses)


def test_poet_and_poetx_follow_the_same_loss_curve():
    curves = {m: train(m, 50) for m in ("poet", "poetx-fast", "poetx-mem")}
    ref = curves["poet"]
    for m in ("poetx-fast", "poetx-mem"):
        diff = max(abs(a - b) for a, b in zip(ref, curves[m]))
        assert diff < 1e-5, (m, diff)
    # the merges (every 20 steps) happened inside the compared window
    assert len(ref) == 50


def test_train_rows_count_compilation_inside_the_timed_steps(monkeypatch):
    """`compiled_frames_in_timed_steps`: 0 for an eager point; a step that compiles a new frame on each timed
    step (as a recompiling backend would) is counted once per timed step, warm-up compiles are not."""
    from poetx_bench.points import training

    cfg = config("adamw", steps=3, warmup_steps=2, data="synthetic")
    metrics, _ = training.run_train_point(cfg)
    assert metrics["compiled_frames_in_timed_steps"] == 0

    plain_step = training.Trainer.step
    calls = {"n": 0}

    def recompiling_step(self):
        calls["n"] += 1
        f = torch.compile(lambda x: x * 2 + calls["n"], backend="eager", dynamic=False)
        f(torch.ones(calls["n"]))  # a new function object: one new frame per call
        return plain_step(self)

    monkeypatch.setattr(training.Trainer, "step", recompiling_step)
    metrics, _ = training.run_train_point(cfg)
    assert calls["n"] == 5 and metrics["compiled_frames_in_timed_steps"] == 3


def test_progress_lines_throttle_and_carry_the_losses():
    """A long point writes where it is to its log: a line at most every `every_s` seconds (fake clock), at
    every evaluation and at the last step, each with the step's loss."""
    import io

    from poetx_bench.points.training import ProgressLog

    now = [0.0]
    out = io.StringIO()
    log = ProgressLog(every_s=30.0, stream=out, clock=lambda: now[0])
    for step, t in enumerate([1, 10, 31, 40, 50, 69], start=1):
        now[0] = float(t)
        log(step, 8, torch.tensor(5.0 - step / 10), {"step": step, "loss": 4.5, "ppl": 90.0} if step == 4 else None)
    now[0] = 71.0
    log(8, 8, torch.tensor(4.0))
    lines = out.getvalue().splitlines()
    assert [line.split(",")[0] for line in lines] == ["progress: step 3/8", "progress: step 4/8",
                                                      "progress: step 8/8"]
    assert "loss 4.7000" in lines[0] and "eval loss 4.5000 ppl 90.0" in lines[1] and lines[2].endswith("71s")


def test_train_point_reports_progress_through_its_hook():
    """run_train_point calls on_progress once per step with the step's loss and the evaluation it ran."""
    from poetx_bench.points import training

    seen = []
    cfg = config("adamw", steps=4, warmup_steps=1, eval_every=2, eval_batches=1)
    metrics, _ = training.run_train_point(cfg, on_progress=lambda *a: seen.append(a))
    assert [a[0] for a in seen] == [1, 2, 3, 4, 5] and all(a[1] == 5 for a in seen)
    assert [float(a[2]) for a in seen] == pytest.approx(metrics["losses"])
    assert [a[3]["step"] for a in seen if a[3]] == [2, 4] == [e["step"] for e in metrics["eval"]]
