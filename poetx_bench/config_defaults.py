"""Old home of the added config keys, kept for scripts and tests: each kind now declares its own
(`knob(..., added=True)` in poetx_bench/points/<kind>.py) and poetx_bench.points.ids drops them from ids."""

from __future__ import annotations

from .points.ids import hashed_view
from .points.train import TrainConfig

ADDED_KEY_DEFAULTS = TrainConfig.added_defaults()  # the train kind's: a superset of the layer kind's


def with_defaults(config: dict) -> dict:
    """`config` with every added key present (old rows lack them)."""
    return {**ADDED_KEY_DEFAULTS, **config}


__all__ = ["ADDED_KEY_DEFAULTS", "hashed_view", "with_defaults"]
