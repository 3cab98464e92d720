"""Loaders for --data PATH: each format on small files, and every bad input as a one-line DataError."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from poetx_bench.data import DataError, open_dataset
from poetx_bench.data import sources as sources_mod
from poetx_bench.errors import UserError


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    """Every test gets its own cache, so nothing touches ~/.cache and tests cannot see each other's."""
    monkeypatch.setenv("POETX_BENCH_CACHE", str(tmp_path / "cache"))


TEXT = "To be, or not to be, that is the question:\nWhether 'tis nobler — café, naïve, 日本.\n" * 200


def all_tokens(ds) -> np.ndarray:
    return np.asarray(ds.tokens, dtype=np.int64)


def byte_text(ds) -> str:
    return bytes(all_tokens(ds).astype(np.uint8)).decode("utf-8")


def expect_error(path, match: str, **kw) -> str:
    with pytest.raises(DataError) as info:
        open_dataset(str(path), tokenizer=kw.pop("tokenizer", "byte"), **kw)
    msg = str(info.value)
    assert isinstance(info.value, UserError)
    assert "\n" not in msg, msg
    assert path.name in msg, msg
    assert match in msg, msg
    return msg


# -- formats ------------------------------------------------------------------------------------------


def test_txt_bytes_round_trip(tmp_path):
    p = tmp_path / "corpus.txt"
    p.write_text(TEXT, encoding="utf-8")
    ds = open_dataset(str(p), tokenizer="byte")
    assert byte_text(ds) == TEXT
    d = ds.describe()
    assert d["n_train_tokens"] + d["n_val_tokens"] == len(TEXT.encode())
    assert d["tokenizer"] == "byte" and d["format"] == "txt" and d["vocab_size"] == 32000
    json.dumps(d)


def test_txt_bom_dropped(tmp_path):
    p = tmp_path / "bom.txt"
    p.write_bytes(b"\xef\xbb\xbf" + TEXT.encode())
    assert byte_text(open_dataset(str(p), tokenizer="byte")) == TEXT


def test_txt_streams_in_small_blocks(tmp_path, monkeypatch):
    """Multi-byte characters split across read blocks and pieces must come out intact."""
    monkeypatch.setattr(sources_mod, "READ_BLOCK", 7)
    monkeypatch.setattr(sources_mod, "PIECE_CHARS", 5)
    text = "ab日本語é\n" * 50 + "x" * 100 + "ü" * 40  # also one long line with no newline
    p = tmp_path / "small.txt"
    p.write_text(text, encoding="utf-8")
    assert byte_text(open_dataset(str(p), tokenizer="byte")) == text


def test_txt_gz(tmp_path):
    p = tmp_path / "c.txt.gz"
    p.write_bytes(gzip.compress(TEXT.encode()))
    assert byte_text(open_dataset(str(p), tokenizer="byte")) == TEXT


RECORDS = [{"text": "first document", "url": "u1"}, {"text": "second — doc", "timestamp": 3}, {"text": ""}]
JOINED = "first document\n\nsecond — doc\n\n\n\n"


def _jsonl(records) -> bytes:
    return ("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n\n").encode()


@pytest.mark.parametrize("name", ["c4.jsonl", "c4.json", "c4.jsonl.gz", "c4.json.gz"])
def test_json_lines(tmp_path, name):
    p = tmp_path / name
    data = _jsonl(RECORDS)
    p.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    ds = open_dataset(str(p), tokenizer="byte")
    assert byte_text(ds) == JOINED
    assert ds.describe()["format"] == ("jsonl.gz" if name.endswith(".gz") else "jsonl")


def test_json_array(tmp_path):
    p = tmp_path / "records.json"
    p.write_text(json.dumps(RECORDS, ensure_ascii=False, indent=1), encoding="utf-8")
    assert byte_text(open_dataset(str(p), tokenizer="byte")) == JOINED


def test_parquet(tmp_path):
    pytest.importorskip("pyarrow")
    import pandas as pd

    p = tmp_path / "c4.parquet"
    pd.DataFrame(RECORDS).to_parquet(p)
    assert byte_text(open_dataset(str(p), tokenizer="byte")) == JOINED


@pytest.mark.parametrize("name,dtype,sidecar", [
    ("tok.u16.bin", np.uint16, None),
    ("tok.u32.bin", np.uint32, None),
    ("tok.bin", np.uint16, None),
    ("side.bin", np.uint32, "uint32"),
    ("side16.bin", np.uint16, "uint16"),
])
def test_bin(tmp_path, name, dtype, sidecar):
    p = tmp_path / name
    ids = (np.arange(20000) * 7919 % 30000).astype(dtype)
    if dtype == np.uint32:
        ids[5] = 70000  # only representable in uint32
    ids.tofile(p)
    if sidecar:
        (tmp_path / (name + ".json")).write_text(json.dumps({"dtype": sidecar}))
    ds = open_dataset(str(p), vocab_size=100000)
    assert np.array_equal(all_tokens(ds), ids.astype(np.int64))
    assert ds.describe()["tokenizer"] == "pretokenized"
    assert not (tmp_path / "cache" / "tokens").exists()  # memmapped in place, nothing copied


# -- bad input ----------------------------------------------------------------------------------------


def test_missing_path(tmp_path):
    expect_error(tmp_path / "nope.txt", "not found")


def test_directory(tmp_path):
    d = tmp_path / "shards.txt"
    d.mkdir()
    expect_error(d, "directory")


def test_unknown_extension(tmp_path):
    p = tmp_path / "data.csv"
    p.write_text("text\nhello\n")
    expect_error(p, "unknown data file extension")


@pytest.mark.parametrize("name", ["empty.txt", "empty.jsonl", "empty.bin", "empty.parquet"])
def test_empty_file(tmp_path, name):
    p = tmp_path / name
    p.write_bytes(b"")
    expect_error(p, "empty")


def test_blank_jsonl(tmp_path):
    p = tmp_path / "blank.jsonl"
    p.write_text("\n\n  \n")
    expect_error(p, "no records")


def test_empty_gz(tmp_path):
    p = tmp_path / "e.txt.gz"
    p.write_bytes(gzip.compress(b""))
    expect_error(p, "no text")


def test_corrupt_gz(tmp_path):
    p = tmp_path / "bad.jsonl.gz"
    p.write_bytes(gzip.compress(_jsonl(RECORDS))[:-12])
    expect_error(p, "cannot read")


def test_non_utf8_txt_offset(tmp_path):
    p = tmp_path / "latin1.txt"
    p.write_bytes("hello\nwörld".encode("latin-1"))
    msg = expect_error(p, "not valid UTF-8")
    assert "byte offset 7" in msg and "0xf6" in msg


@pytest.mark.parametrize("raw", [
    "日本語\n".encode() * 10 + b"ab\xffcd",  # many blocks in
    b"ab" + "日".encode() + b"\xff",  # right after a character split across two blocks
])
def test_non_utf8_offset_across_blocks(tmp_path, monkeypatch, raw):
    """The reported offset is the file offset, also when the bad byte is many blocks in."""
    monkeypatch.setattr(sources_mod, "READ_BLOCK", 4)
    p = tmp_path / "late.txt"
    p.write_bytes(raw)
    bad = raw.index(b"\xff")
    assert f"byte offset {bad}" in expect_error(p, "not valid UTF-8")


def test_non_utf8_jsonl(tmp_path):
    p = tmp_path / "bad.jsonl"
    raw = b'{"text": "ok"}\n{"text": "caf\xe9"}\n'
    p.write_bytes(raw)
    bad = raw.index(b"\xe9")
    assert f"byte offset {bad}" in expect_error(p, "not valid UTF-8")


def test_missing_text_field_line_number(tmp_path):
    p = tmp_path / "c4.jsonl"
    p.write_text('{"text": "a"}\n\n{"content": "b", "url": "x"}\n')
    msg = expect_error(p, "line 3")
    assert '"text"' in msg and "content" in msg


def test_text_not_string(tmp_path):
    p = tmp_path / "c4.jsonl"
    p.write_text('{"text": "a"}\n{"text": 5}\n')
    expect_error(p, "line 2")


def test_invalid_json_line(tmp_path):
    p = tmp_path / "c4.json"
    p.write_text('{"text": "a"}\n{"text": "b"\n')
    expect_error(p, "line 2: invalid JSON")


def test_json_array_missing_text(tmp_path):
    p = tmp_path / "arr.json"
    p.write_text(json.dumps([{"text": "a"}, {"body": "b"}]))
    expect_error(p, "record 2")


def test_parquet_missing_column(tmp_path):
    pytest.importorskip("pyarrow")
    import pandas as pd

    p = tmp_path / "c4.parquet"
    pd.DataFrame({"content": ["a", "b"]}).to_parquet(p)
    expect_error(p, "no \"text\" column")


def test_parquet_null_text(tmp_path):
    pytest.importorskip("pyarrow")
    import pandas as pd

    p = tmp_path / "nulls.parquet"
    pd.DataFrame({"text": ["a", None]}).to_parquet(p)
    expect_error(p, "row 2")


def test_bin_size_not_multiple(tmp_path):
    p = tmp_path / "odd.u32.bin"
    p.write_bytes(b"\x01\x00\x00\x00\x02\x00")
    expect_error(p, "not a multiple of 4")


def test_bin_id_too_large(tmp_path):
    p = tmp_path / "big.u16.bin"
    ids = np.zeros(100, np.uint16)
    ids[42] = 500
    ids.tofile(p)
    msg = expect_error(p, "token id 500 at position 42", vocab_size=256)
    assert "vocab_size 256" in msg


def test_bin_bad_sidecar(tmp_path):
    p = tmp_path / "t.bin"
    np.zeros(10, np.uint16).tofile(p)
    (tmp_path / "t.bin.json").write_text('{"dtype": "int8"}')
    expect_error(p, "int8")


def test_bin_name_and_sidecar_disagree(tmp_path):
    p = tmp_path / "t.u16.bin"
    np.zeros(10, np.uint16).tofile(p)
    (tmp_path / "t.u16.bin.json").write_text('{"dtype": "uint32"}')
    expect_error(p, "says")


def test_corpus_shorter_than_a_sequence(tmp_path):
    p = tmp_path / "short.txt"
    p.write_text("x" * 300)
    ds = open_dataset(str(p), tokenizer="byte")  # opening is fine: seq_len is not known yet
    assert ds.n_train + ds.n_val == 300
    for call in (lambda: ds.train_batch(0, 2, 256, 0), lambda: ds.val_batches(2, 256, 1)):
        with pytest.raises(DataError) as info:
            call()
        msg = str(info.value)
        assert "short.txt" in msg and "needs 257" in msg and "300 tokens" in msg and "\n" not in msg


def test_bad_tokenizer_and_vocab(tmp_path):
    p = tmp_path / "c.txt"
    p.write_text(TEXT)
    with pytest.raises(DataError, match="unknown tokenizer 'wordpiece'"):
        open_dataset(str(p), tokenizer="wordpiece")
    with pytest.raises(DataError, match="at least 256"):
        open_dataset(str(p), tokenizer="bpe", vocab_size=100)
