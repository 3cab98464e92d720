"""Batches, split, caching, BPE tokeniser, eval_loss and the `data` CLI, on small local files only."""

from __future__ import annotations

import argparse
import json
import math
import os
import random

import numpy as np
import pytest
import torch

from poetx_bench.data import DataError, eval_loss, open_dataset, val_tokens
from poetx_bench.data import cli as data_cli
from poetx_bench.data import dataset as dataset_mod


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("POETX_BENCH_CACHE", str(tmp_path / "cache"))


WORDS = ("the king queen lord lady sword crown night day love death honour grace heaven earth fire "
         "water speak hear thou thee thy art hath doth shall will never ever — naïve café").split()


def make_text(n_words: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    lines, line = [], []
    for _ in range(n_words):
        line.append(rng.choice(WORDS))
        if len(line) >= rng.randint(5, 12):
            lines.append(" ".join(line).capitalize() + rng.choice([".", ",", ";", "!", "?"]))
            line = []
    return "\n".join(lines) + "\n"


@pytest.fixture
def positions(tmp_path):
    """A .u32.bin whose token at position i is i: a batch shows exactly where it was read from."""
    n = 50_000
    p = tmp_path / "positions.u32.bin"
    np.arange(n, dtype=np.uint32).tofile(p)
    return open_dataset(str(p), vocab_size=n)


def test_val_split_size():
    assert val_tokens(1_000_000) == 50_000  # 5%
    assert val_tokens(20_000) == 4096  # at least 4096 ...
    assert val_tokens(3000) == 1500  # ... but at most half


def test_train_batch_shape_and_determinism(positions):
    a = positions.train_batch(3, 8, 64, seed=1)
    assert a.shape == (8, 65) and a.dtype == torch.int64
    assert torch.equal(a, positions.train_batch(3, 8, 64, seed=1))
    assert not torch.equal(a, positions.train_batch(4, 8, 64, seed=1))
    assert not torch.equal(a, positions.train_batch(3, 8, 64, seed=2))
    # each row is a contiguous window (inputs/targets are shifted views of it)
    assert torch.all(a[:, 1:] - a[:, :-1] == 1)


def test_train_and_val_disjoint_by_position(positions):
    n_train = positions.n_train
    assert n_train + positions.n_val == 50_000 and positions.n_val == 4096
    train = torch.cat([positions.train_batch(s, 16, 128, seed=0) for s in range(50)])
    val = torch.cat(positions.val_batches(16, 128, 4))
    assert int(train.max()) < n_train
    assert int(val.min()) >= n_train and int(val.max()) < 50_000
    # training offsets cover the split, not just its start
    assert int(train.min()) < n_train // 10 and int(train.max()) > n_train * 9 // 10


def test_val_batches_fixed(positions):
    v1 = positions.val_batches(4, 32, 3)
    v2 = positions.val_batches(4, 32, 3)
    assert len(v1) == 3 and all(b.shape == (4, 33) for b in v1)
    assert all(torch.equal(a, b) for a, b in zip(v1, v2))
    starts = torch.cat(v1)[:, 0]
    assert int(starts[0]) == positions.n_train and int(torch.cat(v1)[-1, -1]) == 50_000 - 1
    assert len(set(starts.tolist())) == 12


def test_bad_batch_args(positions):
    with pytest.raises(DataError, match="batch_size"):
        positions.train_batch(0, 0, 8, 0)
    with pytest.raises(DataError, match="step"):
        positions.train_batch(-1, 2, 8, 0)


def test_bpe_round_trip_and_ids_in_range(tmp_path):
    text = make_text(20_000)
    p = tmp_path / "play.txt"
    p.write_text(text, encoding="utf-8")
    ds = open_dataset(str(p), vocab_size=500, tokenizer="bpe")
    ids = np.asarray(ds.tokens, dtype=np.int64)
    assert ids.max() < 500 and ds.describe()["tokenizer_vocab_size"] <= 500
    assert len(ids) < len(text.encode()) / 2  # merges actually compress
    assert ds.decode(ids.tolist()) == text
    sample = "Thou art naïve, my lord — 日本!\n"  # unseen characters still encode (byte-level)
    tok = ds.get_tokenizer()
    assert tok.decode(tok.encode(sample)) == sample and max(tok.encode(sample)) < 500
    files = sorted(os.listdir(tmp_path / "cache" / "tokenizers"))
    assert len(files) == 1 and files[0].startswith("bpe-v500-") and files[0].endswith(".json")
    batch = ds.train_batch(0, 4, 32, seed=0)
    assert int(batch.max()) < 500


def test_token_cache_reused_and_invalidated(tmp_path, monkeypatch):
    p = tmp_path / "c.jsonl"
    p.write_text("\n".join(json.dumps({"text": make_text(300, s)}) for s in range(20)))
    first = open_dataset(str(p), vocab_size=400)
    calls = []
    real = dataset_mod._tokenize_to_file
    monkeypatch.setattr(dataset_mod, "_tokenize_to_file", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = open_dataset(str(p), vocab_size=400)
    assert calls == [] and again.files["tokens"] == first.files["tokens"]
    assert np.array_equal(np.asarray(again.tokens), np.asarray(first.tokens))
    open_dataset(str(p), vocab_size=400, tokenizer="byte")  # another tokeniser: another stream
    assert calls == [1]
    with open(p, "a") as f:
        f.write("\n" + json.dumps({"text": "one more document"}) + "\n")
    changed = open_dataset(str(p), vocab_size=400)
    assert calls == [1, 1] and changed.files["tokens"] != first.files["tokens"]
    assert len(changed.tokens) > len(first.tokens)


class Uniform(torch.nn.Module):
    """Equal logits everywhere: the loss must be exactly log(V)."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return torch.zeros(*x.shape, self.vocab) + self.w


class Bigram(torch.nn.Module):
    def __init__(self, vocab: int):
        super().__init__()
        torch.manual_seed(0)
        self.emb = torch.nn.Embedding(vocab, vocab)

    def forward(self, x):
        return self.emb(x)


def test_eval_loss(tmp_path):
    p = tmp_path / "c.txt"
    p.write_text(make_text(30_000))
    ds = open_dataset(str(p), tokenizer="byte", vocab_size=256)
    model = Uniform(256).train()
    loss, ppl = eval_loss(model, ds, batch_size=4, seq_len=32, n_batches=2, device="cpu")
    assert loss == pytest.approx(math.log(256), rel=1e-6) and ppl == pytest.approx(256, rel=1e-5)
    assert model.training  # mode restored

    bigram = Bigram(256)
    loss, ppl = eval_loss(bigram, ds, 4, 32, 2, "cpu", autocast_dtype=torch.bfloat16)
    batches = ds.val_batches(4, 32, 2)
    with torch.no_grad():
        ref = torch.stack([torch.nn.functional.cross_entropy(bigram(b[:, :-1]).reshape(-1, 256),
                                                             b[:, 1:].reshape(-1)) for b in batches]).mean()
    assert loss == pytest.approx(float(ref), rel=2e-2) and ppl == pytest.approx(math.exp(loss))

    with pytest.raises(DataError, match="logits"):
        eval_loss(Uniform(100), ds, 2, 16, 1, "cpu")


def _args(argv):
    parser = argparse.ArgumentParser()
    data_cli.add_arguments(parser)
    return parser.parse_args(argv)


def test_cli_prepare_and_info(tmp_path, capsys):
    p = tmp_path / "c.txt"
    p.write_text(make_text(5000))
    cache = str(tmp_path / "cli-cache")
    assert data_cli.main(_args(["prepare", "--data", str(p), "--vocab-size", "300", "--cache-dir", cache])) == 0
    out = capsys.readouterr().out
    assert "wrote" in out and "tokenizer" in out and ".bin" in out and "c.txt" in out
    assert data_cli.main(_args(["prepare", "--data", str(p), "--vocab-size", "300", "--cache-dir", cache])) == 0
    assert "wrote" not in capsys.readouterr().out  # second run: everything already there

    assert data_cli.main(_args(["info", str(p), "--vocab-size", "300", "--cache-dir", cache, "--json"])) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["tokenizer"] == "bpe" and info["n_train_tokens"] > 0 and info["vocab_size"] == 300

    assert data_cli.main(_args(["info", "--cache-dir", cache])) == 0
    out = capsys.readouterr().out
    assert "default corpus: not prepared" in out and "token streams: 1" in out

    with pytest.raises(DataError, match="missing.txt"):
        data_cli.main(_args(["info", str(tmp_path / "missing.txt"), "--cache-dir", cache]))


def test_tokenizer_json_file(tmp_path):
    """A ready-made tokenizers JSON (here: one we trained) can be passed instead of "bpe"/"byte"."""
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text(make_text(8000, seed=1))
    b.write_text(make_text(3000, seed=2))
    trained = open_dataset(str(a), vocab_size=300)
    tok_file = trained.files["tokenizer"]
    ds = open_dataset(str(b), vocab_size=300, tokenizer=tok_file)
    assert ds.describe()["tokenizer"].startswith("file:bpe-v300-")
    assert np.array_equal(np.asarray(ds.tokens), np.asarray(trained.get_tokenizer().encode(b.read_text())))
    with pytest.raises(DataError, match="pass --vocab-size"):
        open_dataset(str(b), vocab_size=256, tokenizer=tok_file)
