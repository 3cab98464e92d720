"""Point ids: a stable hash of a point's config (device and dtype included).

A key its kind added after rows were first recorded (`knob(..., added=True)`) is left out at its default,
so adding a key changes no existing id: `--resume` still finds old rows and the gate still pairs them.
"""

from __future__ import annotations

import hashlib
import json

from . import added_defaults


def hashed_view(config: dict) -> dict:
    """The part of `config` that identifies a point (configs without a kind are train configs, the first)."""
    added = added_defaults(config.get("kind", "train"))
    return {k: v for k, v in config.items() if not (k in added and added[k] == v)}


def point_id(config: dict) -> str:
    blob = json.dumps(hashed_view(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
