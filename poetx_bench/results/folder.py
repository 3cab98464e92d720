"""The results folder of a sweep or run: checked before any point runs, and held by one sweep at a time.

Checks give one-line errors instead of tracebacks (`--out` is a file, `results.jsonl` is a folder, the
folder is not writable). The claim refuses rows from an earlier run unless `--resume` (duplicates would
otherwise pile up silently), and holds an flock on `.sweep.lock` so a second sweep on the same folder
refuses, naming the holder's PID, instead of running the same points twice. The kernel drops the lock
when its holder dies, even by kill -9, so `--resume` is never blocked by a stale lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from ..errors import UserError
from .reader import read_rows

RESULTS_FILE = "results.jsonl"
LOCK_FILE = ".sweep.lock"


def check_out_folder(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Create the output folder, or say in one line why it cannot be one."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path}: exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{flag} {path}: cannot create the folder: {exc.strerror or exc}") from None
    return path


@contextlib.contextmanager
def claim_folder(out_dir: str | os.PathLike, resume: bool):
    """Hold `out_dir` for one sweep; yields the results file path."""
    out_dir = check_out_folder(out_dir)
    results = out_dir / RESULTS_FILE
    if results.exists() and not results.is_file():
        raise UserError(f"{results}: is not a file; remove it or choose another --out")
    with _lock(out_dir):
        if not resume and results.exists() and results.stat().st_size > 0:
            n = len(read_rows(results, warn=False, allow_empty=True))
            raise UserError(f"{results}: already holds {n} row(s) from an earlier run; pass --resume to run "
                            "only the points without a row, or choose another --out")
        yield results


@contextlib.contextmanager
def _lock(folder: Path):
    path = folder / LOCK_FILE
    try:
        fh = open(path, "a+", encoding="utf-8")
    except OSError as exc:
        raise UserError(f"--out {folder}: cannot write there: {exc.strerror or exc}") from None
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            raise UserError(f"--out {folder}: in use by another sweep (PID {holder}); wait for it to "
                            "finish or choose another --out") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        yield
    finally:
        fh.close()  # closing drops the flock
