"""Tokenisers: byte-level BPE trained with HuggingFace `tokenizers` (cached), and a raw-byte fallback.

Both map any UTF-8 text to ids (< vocab size) with no unknown token: the BPE starts from the 256-byte
alphabet, so whatever the corpus, nothing is out of vocabulary. No special tokens are added; documents are
separated by a blank line in the text itself, which keeps the byte and BPE streams comparable.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .cache import CACHE_FORMAT, atomic_write_bytes, file_lock, subdir
from .errors import DataError, one_line
from .progress import note

TOKENIZER_NAMES = ("bpe", "byte")
BYTE_VOCAB = 256
# BPE is trained on at most this much text from the start of the data: enough for stable merges at 32k,
# bounded time for multi-GB files (training is ~1 s/MB on 2 cores; encoding the rest is streamed).
BPE_TRAIN_BYTES = 32 << 20
_LOUD_TRAIN_BYTES = 4 << 20  # announce training on stderr above this much text


class ByteTokenizer:
    """UTF-8 bytes as ids (0..255). No training, no files: the fallback that always works."""

    name = "byte"
    vocab_size = BYTE_VOCAB
    path: Path | None = None

    def spec(self) -> dict:
        return {"name": "byte"}

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [np.frombuffer(t.encode("utf-8"), dtype=np.uint8) for t in texts]

    def decode(self, ids) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")


class BPETokenizer:
    """A `tokenizers.Tokenizer` behind the same small interface as ByteTokenizer."""

    name = "bpe"

    def __init__(self, tok, path: Path | None, spec: dict):
        self._tok = tok
        self.path = path
        self._spec = spec
        self.vocab_size = tok.get_vocab_size()

    def spec(self) -> dict:
        return dict(self._spec)

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        encs = self._tok.encode_batch(list(texts), add_special_tokens=False)
        return [np.asarray(e.ids, dtype=np.uint32) for e in encs]

    def decode(self, ids) -> str:
        return self._tok.decode([int(i) for i in ids])


def check_vocab_size(vocab_size: int, tokenizer: str) -> None:
    if not isinstance(vocab_size, int) or vocab_size < BYTE_VOCAB:
        raise DataError(f"vocab_size={vocab_size!r} is too small for tokenizer {tokenizer!r}: "
                        f"need at least {BYTE_VOCAB} (one id per byte)")


def train_bpe(texts: Sequence[str], vocab_size: int):
    """Train a byte-level BPE (GPT-2 style pre-tokenisation) with `vocab_size` entries at most."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    return tok


def bpe_tokenizer(sample: Sequence[str], sample_sha256: str, vocab_size: int, root: Path,
                  label: str) -> BPETokenizer:
    """The BPE for this training text + vocab size: from `<cache>/tokenizers/` or trained and saved there."""
    from tokenizers import Tokenizer

    path = subdir(root, "tokenizers") / f"bpe-v{vocab_size}-{sample_sha256[:16]}.json"
    spec = {"name": "bpe", "vocab_size": vocab_size, "train_sha256": sample_sha256, "format": CACHE_FORMAT}
    with file_lock(root, path.name):
        if path.is_file():
            try:
                return BPETokenizer(Tokenizer.from_file(str(path)), path, spec)
            except Exception:  # noqa: BLE001 - a corrupt cache entry is retrained, not fatal
                pass
        n_bytes = sum(len(t) for t in sample)
        loud = n_bytes >= _LOUD_TRAIN_BYTES
        if loud:
            note(f"training byte-level BPE (vocab {vocab_size}) on {n_bytes / 1e6:.1f} MB of {label} ...")
        t0 = time.monotonic()
        tok = train_bpe(sample, vocab_size)
        if loud:
            note(f"BPE trained in {time.monotonic() - t0:.1f} s -> {path}")
        atomic_write_bytes(path, tok.to_str().encode("utf-8"))
    return BPETokenizer(tok, path, spec)


def tokenizer_from_file(path: str | Path, vocab_size: int) -> BPETokenizer:
    """A ready-made `tokenizers` JSON file (e.g. a Llama tokenizer.json); its ids must fit vocab_size."""
    from tokenizers import Tokenizer

    p = Path(path).expanduser()
    try:
        tok = Tokenizer.from_file(str(p))
    except Exception as e:  # noqa: BLE001 - the library raises plain Exception subclasses
        raise DataError(f"{p}: not a usable `tokenizers` JSON file ({one_line(e)[:200]})") from e
    if tok.get_vocab_size() > vocab_size:
        raise DataError(f"{p}: tokenizer has {tok.get_vocab_size()} ids but vocab_size is {vocab_size}; "
                        f"pass --vocab-size {tok.get_vocab_size()} or more")
    digest = hashlib.sha256(p.read_bytes()).hexdigest()
    spec = {"name": "file", "sha256": digest, "format": CACHE_FORMAT}
    bpe = BPETokenizer(tok, p, spec)
    bpe.name = f"file:{p.name}"
    return bpe
