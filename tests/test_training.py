"""Training on the default real-text corpus: loss falls for every method, and POET / POET-X are the same
optimisation (identical loss curves at float32 with the same seed and data)."""

import math

import pytest
import torch

from poetx_bench.methods import METHODS
from poetx_bench.train_point import Trainer

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


@pytest.mark.parametrize("method", list(METHODS))
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
