"""Strict-JSON rows: NaN and ±inf are not JSON, so a row carries null in their place and, in the object
that holds the field, `"nonfinite": {"final_loss": "nan", "losses[3]": "inf"}` naming each one.

Strict parsers (JavaScript, jq, Go) read every row; `restore_nonfinite` gives Python readers the
original floats back.
"""

from __future__ import annotations

import json
import math
import re

from .schema import NONFINITE_KEY

_KINDS = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
_PATH = re.compile(r"^(?P<key>.*?)(?P<index>(?:\[\d+\])*)$")


def encode_row(row: dict) -> str:
    """One row as a line of strict JSON (no trailing newline)."""
    return json.dumps(_clean_dict(row), separators=(",", ":"), allow_nan=False)


def _clean_dict(obj: dict) -> dict:
    record: dict[str, str] = {}
    out = {str(k): _clean(v, str(k), record) for k, v in obj.items() if k != NONFINITE_KEY}
    if record:
        out[NONFINITE_KEY] = record
    elif NONFINITE_KEY in obj:
        out[NONFINITE_KEY] = obj[NONFINITE_KEY]
    return out


def _clean(value, path: str, record: dict):
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        record[path] = "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
        return None
    if isinstance(value, dict):
        return _clean_dict(value)
    if isinstance(value, (list, tuple, set)):
        return [_clean(v, f"{path}[{i}]", record) for i, v in enumerate(value)]
    if hasattr(value, "tolist"):  # numpy / torch scalars and arrays
        return _clean(value.tolist(), path, record)
    return str(value)


def restore_nonfinite(obj):
    """Put the recorded NaN/inf back in place of their nulls (in place) and drop the records."""
    if isinstance(obj, list):
        for v in obj:
            restore_nonfinite(v)
    elif isinstance(obj, dict):
        for v in obj.values():
            restore_nonfinite(v)
        record = obj.get(NONFINITE_KEY)
        if isinstance(record, dict) and all(isinstance(k, str) and k in _KINDS for k in record.values()):
            del obj[NONFINITE_KEY]
            for path, kind in record.items():
                _put(obj, path, _KINDS[kind])
    return obj


def _put(obj: dict, path: str, value: float) -> None:
    m = _PATH.match(path)
    try:
        container, key = obj, m["key"]
        for i in re.findall(r"\d+", m["index"]):
            container, key = container[key], int(i)
        if container[key] is None:
            container[key] = value
    except (KeyError, IndexError, TypeError):
        pass  # a record that names no null of this row is left alone
