"""Results store: one JSON line per point, appended and fsynced as soon as the point finishes.

Reading tolerates a truncated last line (a sweep killed mid-write) and reports it; a corrupt line
anywhere else is an error naming the file and line.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from .errors import UserError

SCHEMA_VERSION = 1
FINAL_STATUSES = ("ok", "oom", "error", "timeout", "diverged", "skipped")


def append_row(path: str | os.PathLike, row: dict) -> None:
    """Append one row and fsync, so a crash right after loses nothing that was reported done."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(row, separators=(",", ":"), default=_json_default) + "\n"
    with open(path, "a", encoding="utf-8") as fh:
        # a previous writer killed mid-line leaves no newline: start on a fresh line
        if fh.tell() > 0 and not _ends_with_newline(path):
            fh.write("\n")
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"


def _json_default(obj):
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    return str(obj)


def read_rows(path: str | os.PathLike, warn=True) -> list[dict]:
    """All complete rows of a JSONL file; a truncated final line is skipped with a warning."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such results file")
    rows = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if i == len(lines) or all(not rest.strip() for rest in lines[i:]) or _is_fragment(line):
                if warn:
                    print(f"warning: {path}:{i}: truncated line ignored (interrupted write)", file=sys.stderr)
                continue
            raise UserError(f"{path}:{i}: invalid JSON ({exc.msg})") from None
    return rows


def _is_fragment(line: str) -> bool:
    """A line cut mid-write, followed by rows appended after a resume, starts a row but never closes."""
    return line.startswith("{") and not line.rstrip().endswith("}")


def finished_point_ids(path: str | os.PathLike) -> set[str]:
    path = Path(path)
    if not path.exists():
        return set()
    return {r["point_id"] for r in read_rows(path) if r.get("status") in FINAL_STATUSES and "point_id" in r}
