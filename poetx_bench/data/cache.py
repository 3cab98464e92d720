"""Cache directory, keys, atomic writes and locks.

Everything derived (corpus, tokenizers, token streams) lives under one cache root so that a prepared cache
can be copied to a machine without network and used there (set POETX_BENCH_CACHE to it).

Layout::

    <cache>/corpus/shakespeare-milton.txt     default corpus, UTF-8, documents separated by a blank line
    <cache>/corpus/manifest.json              source, version, sha256, n_bytes, files (with byte offsets)
    <cache>/tokenizers/bpe-v<V>-<hash16>.json HuggingFace `tokenizers` JSON, keyed by training-text sha256 + V
    <cache>/tokens/<name>-<tok>-<key16>.bin   token stream (uint16 if the vocab fits, else uint32)
    <cache>/tokens/<name>-<tok>-<key16>.json  its metadata; written last, so its presence marks a complete .bin
    <cache>/locks/                            flock files so that several ranks do the work once
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import DataError, one_line

ENV_CACHE = "POETX_BENCH_CACHE"
# Bump when the meaning of cached token streams / tokenizers changes, so stale caches are not reused.
CACHE_FORMAT = 1


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache root: the argument, else $POETX_BENCH_CACHE, else ~/.cache/poetx_bench (created)."""
    if cache_dir is None:
        cache_dir = os.environ.get(ENV_CACHE) or Path.home() / ".cache" / "poetx_bench"
    root = Path(cache_dir).expanduser()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cache directory {root} cannot be created ({one_line(e)}); "
                        f"set {ENV_CACHE} to a writable folder") from e
    return root


def subdir(root: Path, name: str) -> Path:
    path = root / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def short_hash(obj: object, n: int = 16) -> str:
    """A stable hex key for a JSON-able object (sorted keys), used in cache file names."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:n]


def safe_name(text: str, max_len: int = 40) -> str:
    """A file-name-safe, human-readable prefix so cache files say what they came from."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "data"
    return name[:max_len]


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temp file + rename so a crash or a concurrent reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_json(path: Path, obj: object) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: Path) -> dict | None:
    """The JSON object in `path`, or None when it is missing or unreadable (treated as a cache miss)."""
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


@contextlib.contextmanager
def file_lock(root: Path, key: str) -> Iterator[None]:
    """An exclusive advisory lock, so N ranks opening the same dataset tokenise it once, not N times.

    No-op where fcntl is unavailable (non-POSIX); writes are atomic anyway, locking only saves work.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    lock_path = subdir(root, "locks") / f"{safe_name(key, 80)}.lock"
    with open(lock_path, "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
