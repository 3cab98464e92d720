"""The one reader of results files, used by resume, the sweep summary, `report` and `gate`.

One rule for every line: a line that is not a result row (invalid JSON, not UTF-8, not an object with a
`config` object) is skipped with a warning naming file and line, wherever it sits. A crash mid-write
leaves a fragment at the end, and a later `--resume` appends after it, so fragments are not only last.
A file with no row at all is an error naming it (exit 2): an empty report must not look like a result.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from ..errors import UserError
from .encode import restore_nonfinite
from .schema import FINAL_STATUSES, SCHEMA_VERSION


def read_numbered(path: str | os.PathLike, warn: bool = True, allow_empty: bool = False) -> list[tuple[int, dict]]:
    """(line number, row) for every row of the file; `allow_empty` returns [] instead of raising."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: results file not found")
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not a results file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot read results file: {exc.strerror or exc}") from None
    rows: list[tuple[int, dict]] = []
    skipped = 0
    for lineno, raw in enumerate(data.split(b"\n"), 1):
        if not raw.strip():
            continue
        row, why = _parse(raw)
        if row is None:
            skipped += 1
            if warn:
                _warn(f"{path}:{lineno}: skipping a line that is not a result row ({why}); "
                      "a write cut short by a crash leaves one")
            continue
        rows.append((lineno, row))
    if not rows and not allow_empty:
        what = f"no valid result row in {skipped} line(s)" if skipped else "results file is empty"
        raise UserError(f"{path}: {what}")
    newest = max((r.get("schema_version") for _, r in rows if isinstance(r.get("schema_version"), int)),
                 default=SCHEMA_VERSION)
    if warn and newest > SCHEMA_VERSION:
        _warn(f"{path}: schema_version {newest} is newer than this poetx-bench reads ({SCHEMA_VERSION})")
    return rows


def read_rows(path: str | os.PathLike, warn: bool = True, allow_empty: bool = False) -> list[dict]:
    return [row for _, row in read_numbered(path, warn=warn, allow_empty=allow_empty)]


def finished_point_ids(path: str | os.PathLike) -> set[str]:
    """Points that already have a final row (what `--resume` skips); none for a missing file."""
    if not Path(path).exists():
        return set()
    return {r["point_id"] for r in read_rows(path, allow_empty=True)
            if r.get("status") in FINAL_STATUSES and "point_id" in r}


def _parse(raw: bytes) -> tuple[dict | None, str]:
    try:
        row = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return None, f"not UTF-8 at column {exc.start + 1}"
    except json.JSONDecodeError as exc:
        return None, f"invalid JSON: {exc.msg}, column {exc.colno}"
    if not isinstance(row, dict):
        return None, f"a JSON {type(row).__name__}, not an object"
    if not isinstance(row.get("config"), dict):
        return None, "no 'config' object"
    return restore_nonfinite(row), ""


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)
