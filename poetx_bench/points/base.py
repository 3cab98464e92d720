"""What a point kind declares: one `PointKind` per kind, so the child, the runner, the suite reader, the
gate and the CLI dispatch through one table (poetx_bench.points.KINDS) instead of `if kind == ...` chains.

Kind modules stay cheap to import (no torch at module level): the gate and the results reader look kinds
up without loading a model or a kernel.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TimedMetric:
    """A metric the gate judges on its samples (poetx_bench.gate): where the samples live, which way is
    better."""

    samples: tuple[str, ...]
    higher_is_better: bool = False


@dataclass
class RunContext:
    """What the child gives a point besides its config."""

    world: Any = None              # poetx_bench.distributed.World of this rank
    profile_dir: str | None = None  # --profile: where the profiled pass writes its artifacts
    metrics: dict | None = None     # set by `run` when a later step may still fail: the row keeps them


@dataclass
class Outcome:
    """A point's measurement; `run` may return a bare metrics dict when it always ends ok."""

    metrics: dict
    status: str = "ok"
    error: dict | None = None
    artifacts: dict = field(default_factory=dict)


@dataclass
class SuiteInput:
    """A suite file's keys after the common checks, handed to its kind's `expand`."""

    src: Any          # poetx_bench.points.validate.Origin: blames the file or --set
    raw: dict         # the TOML's keys (with --set applied)
    device: str       # "cpu" or "cuda"


def _never(cfg: dict) -> str | None:
    return None


@dataclass(frozen=True)
class PointKind:
    """One kind of point. `run` executes where the point runs (its own process, or the `correctness`
    command's); everything else in the parent."""

    name: str
    description: str
    config: type                                    # the typed config (a KindConfig dataclass)
    suite_keys: dict[str, tuple]                    # the kind's suite keys: key -> (type(s), required?)
    expand: Callable[[SuiteInput], list[dict]]      # a suite's keys -> point configs (validated)
    run: Callable[[dict, RunContext], Any]          # config -> metrics dict or Outcome (in the child)
    describe: Callable[[dict], str]                 # console label of a config
    estimate_seconds: Callable[[dict, str], float]  # (config, device) -> rough wall time for --dry-run
    label: Callable[..., str]                       # (Point, with_model=True) -> report / gate label
    gated_metrics: tuple[str, ...] = ()             # what the gate judges besides status, in this order
    timed_metrics: dict[str, TimedMetric] = field(default_factory=dict)
    skip_reason: Callable[[dict], str | None] = _never  # why this config cannot run here (None: it can)
    key_fields: tuple[str, ...] = ()                # identity beyond results.point.KEY_FIELDS
    multiprocess: bool = False                      # honours nproc > 1 (torchrun)
    prepare: Callable[[list[dict], bool], None] | None = None  # parent-side set-up before points run

    @property
    def added_defaults(self) -> dict:
        """Keys added after rows of this kind were first recorded, with the value old rows ran with."""
        return self.config.added_defaults()

    def processes(self, cfg: dict) -> int:
        return int(cfg.get("nproc", 1)) if self.multiprocess else 1


# --- typed configs ---------------------------------------------------------------------------------

def knob(default, added: bool = False) -> Any:
    """A config field a suite may set, with its default (the one place that default lives). `added`: the
    key came after rows were first recorded, so at this default it stays out of the point id (old ids,
    `--resume` and the gate's pairing hold) and old rows read as this default."""
    return field(default=default, metadata={"knob": True, "added": added})


def optional() -> Any:
    """A config field written only when set (absent from configs that never had it, so their ids hold)."""
    return field(default=None, metadata={"optional": True})


@dataclass(kw_only=True)
class KindConfig:
    """Base of the per-kind config dataclasses: field order is the order of keys in a row's config."""

    @classmethod
    def defaults(cls) -> dict:
        """The suite-settable fields and their defaults, in config order."""
        return {f.name: f.default for f in dataclasses.fields(cls) if f.metadata.get("knob")}

    @classmethod
    def added_defaults(cls) -> dict:
        return {f.name: f.default for f in dataclasses.fields(cls) if f.metadata.get("added")}

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_dict(cls, cfg: dict):
        """The typed view of a config; a key the kind does not know is a TypeError."""
        return cls(**cfg)

    def to_dict(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None and f.metadata.get("optional"):
                continue
            out[f.name] = value
        return out
