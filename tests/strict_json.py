"""Strict-JSON check of result rows (conftest's session-wide check, and the test of that check)."""

from __future__ import annotations

import json

from poetx_bench.results import SCHEMA_VERSION


def _refuse(constant: str):
    raise ValueError(f"non-standard JSON constant {constant}")


def strict_rows(root) -> tuple[int, list[str]]:
    """(rows checked, failures) for every current-version row in *.jsonl files under root."""
    checked, failures = 0, []
    for path in sorted(p for p in root.rglob("*.jsonl") if p.is_file()):
        for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a fragment or garbage line a test wrote on purpose
            if not isinstance(row, dict) or row.get("schema_version") != SCHEMA_VERSION:
                continue
            checked += 1
            try:
                json.loads(line, parse_constant=_refuse)
            except ValueError as exc:
                failures.append(f"{path}:{lineno}: {exc}")
    return checked, failures
