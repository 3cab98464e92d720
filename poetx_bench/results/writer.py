"""Appending rows: one strict-JSON line per point, fsynced as soon as the point ends, so a crash right
after loses nothing that was reported done."""

from __future__ import annotations

import os
from pathlib import Path

from .encode import encode_row


def append_row(path: str | os.PathLike, row: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = encode_row(row) + "\n"
    with open(path, "a", encoding="utf-8") as fh:
        # a writer killed mid-line left no newline: start on a fresh line (the reader skips the fragment)
        if fh.tell() > 0 and not _ends_with_newline(path):
            fh.write("\n")
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"
