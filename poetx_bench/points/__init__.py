"""Point kinds behind one registry: `train`, `layer`, `correctness`, `kernel`.

Each kind is a module that declares a `PointKind` (poetx_bench.points.base): its typed config and suite
keys, how a suite expands into points, the in-process measurement, its console and report labels, a
wall-time estimate, why a point cannot run here, and the metrics the gate judges. The child, the runner,
the suite reader, the gate and the CLI look kinds up here instead of testing kind names.

Adding a kind = one module with a `KIND` + one line in `_MODULES`. Kinds outside this package (a test's
fake kind, a user's own) are modules named in the environment variable POETX_BENCH_KINDS
(comma-separated, each with a `KIND`); point processes inherit it, so the child finds them too.
"""

from __future__ import annotations

import importlib
import os

from .base import KindConfig, Outcome, PointKind, RunContext, SuiteInput, TimedMetric

_MODULES = ("train", "layer", "correctness", "kernel")
PLUGINS_ENV = "POETX_BENCH_KINDS"

KINDS: dict[str, PointKind] = {}
for _name in _MODULES:
    _kind = importlib.import_module(f"{__name__}.{_name}").KIND
    KINDS[_kind.name] = _kind
_loaded_plugins: set[str] = set()


def register(kind: PointKind) -> PointKind:
    """Add (or replace) a kind in the registry."""
    KINDS[kind.name] = kind
    return kind


def _load_plugins() -> None:
    for module in filter(None, (m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(","))):
        if module not in _loaded_plugins:
            _loaded_plugins.add(module)
            register(importlib.import_module(module).KIND)


def kinds() -> dict[str, PointKind]:
    """Every registered kind, those named in POETX_BENCH_KINDS included."""
    _load_plugins()
    return KINDS


def find_kind(name) -> PointKind | None:
    return kinds().get(name)


def get_kind(name) -> PointKind:
    kind = find_kind(name)
    if kind is None:
        raise KeyError(f"unknown point kind {name!r} (known: {', '.join(kinds())})")
    return kind


def added_defaults(name) -> dict:
    """Keys added to a kind after its rows were first recorded, with the value old rows ran with."""
    kind = find_kind(name)
    return kind.added_defaults if kind is not None else {}


__all__ = ["KINDS", "PLUGINS_ENV", "KindConfig", "Outcome", "PointKind", "RunContext", "SuiteInput",
           "TimedMetric", "added_defaults", "find_kind", "get_kind", "kinds", "register"]
