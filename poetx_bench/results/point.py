"""The point model: result rows as `Point` objects, shared by the report and the gate (so the gate needs
nothing of the report package).

Tolerant of missing optional metrics (accessors return None). Files are read by the one results reader
(`poetx_bench.results.reader`): lines that are not rows are skipped with a warning, a file without rows is
a UserError naming it. What differs by kind (labels, added keys, identity fields) comes from the kind
registry (poetx_bench.points).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..points import added_defaults, find_kind
from .reader import read_numbered
from .schema import OK

# Config fields that identify a point (besides point_id), used for matching and labels.
KEY_FIELDS = (
    "kind", "method", "model", "block_size", "seq_len", "batch_size", "dtype", "device",
    "steps", "seed", "in_features", "out_features", "tokens", "backend", "compile", "block_impl",
    "cayley_scope", "cayley_keep", "official_init",
    "nproc", "parallel",
)


@dataclass
class Point:
    row: dict[str, Any]
    file: str = ""
    line: int = 0
    config: dict[str, Any] = field(init=False)
    metrics: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        cfg = self.row.get("config")
        self.config = cfg if isinstance(cfg, dict) else {}
        met = self.row.get("metrics")
        self.metrics = met if isinstance(met, dict) else {}

    # --- identity -------------------------------------------------------------------------
    @property
    def point_id(self) -> str | None:
        pid = self.row.get("point_id")
        return str(pid) if pid not in (None, "") else None

    @property
    def status(self) -> str:
        return str(self.row.get("status") or "unknown")

    @property
    def ok(self) -> bool:
        return self.status == OK

    @property
    def kind(self) -> str:
        kind = self.row.get("kind") or self.config.get("kind")
        if kind:
            return str(kind)
        return "layer" if "fwd_bwd_ms" in self.metrics or "in_features" in self.config else "train"

    @property
    def suite(self) -> str | None:
        return self.row.get("suite")

    def cfg(self, name: str, default=None):
        if name == "kind":
            return self.kind
        value = self.config.get(name, added_defaults(self.kind).get(name, default))
        return default if value is None else value

    def key(self) -> tuple:
        """Config tuple used when point_ids differ (KEY_FIELDS, then the kind's own identity fields)."""
        kind = find_kind(self.kind)
        extra = kind.key_fields if kind is not None else ()
        return tuple(_hashable(self.cfg(name)) for name in KEY_FIELDS + extra)

    @property
    def method(self) -> str:
        return str(self.cfg("method", "?"))

    @property
    def model(self) -> str | None:
        model = self.cfg("model")
        return None if model is None else str(model)

    @property
    def block_size(self) -> int | None:
        return _int(self.cfg("block_size"))

    @property
    def seq_len(self) -> int | None:
        return _int(self.cfg("seq_len"))

    @property
    def batch_size(self) -> int | None:
        return _int(self.cfg("batch_size"))

    @property
    def uses_backend(self) -> bool:
        """Whether the POET-X backend registry applies to this row's method (its MethodSpec says so)."""
        from ..methods import METHODS

        spec = METHODS.get(str(self.method))
        return spec is not None and spec.uses_backend

    @property
    def tags(self) -> list[str]:
        """What runs beside the method, where it is not the default: the POET-X backend (and a
        non-default block implementation), a whole-step capture mode."""
        out = []
        if self.uses_backend and self.cfg("backend"):
            impl = self.cfg("block_impl")
            out.append(str(self.cfg("backend")) + (f"/{impl}" if impl not in (None, "auto") else ""))
        if self.cfg("cayley_scope") not in (None, "layer"):
            out.append(f"cayley/{self.cfg('cayley_scope')}")
        if self.cfg("cayley_keep") not in (None, "params"):
            out.append(f"cayley-keep/{self.cfg('cayley_keep')}")
        if self.cfg("official_init") not in (None, "own"):
            out.append(f"init/{self.cfg('official_init')}")
        if self.cfg("compile") not in (None, "none"):
            out.append(str(self.cfg("compile")))
        hparams = self.cfg("hparams")
        if isinstance(hparams, dict):  # a method's hyperparameters set by its suite
            out += [f"{k}={v}" for k, v in hparams.items()]
        if (self.nproc or 1) > 1:
            out.append(f"{self.cfg('parallel')}x{self.nproc}")
        return out

    @property
    def nproc(self) -> int | None:
        """Processes (GPUs) of the point; 1 for rows recorded before the key existed."""
        return _int(self.cfg("nproc"))

    def label(self, with_model: bool = True) -> str:
        """Short human label, e.g. 'poetx-fast b256 8b L1024 bs1' (its kind's; a row of a kind not
        registered here reads like a train row)."""
        kind = find_kind(self.kind) or find_kind("train")
        return kind.label(self, with_model)

    # --- metrics --------------------------------------------------------------------------
    def metric(self, name: str) -> float | None:
        """A numeric metric or None (missing, null, non-numeric, NaN)."""
        return number(self.metrics.get(name))

    def series(self, name: str) -> list[float]:
        """A list metric as floats (non-numeric entries dropped; NaN/inf kept)."""
        values = self.metrics.get(name)
        if not isinstance(values, list):
            return []
        out = []
        for v in values:
            if isinstance(v, bool):
                continue
            try:
                out.append(float(v))
            except (TypeError, ValueError):
                continue
        return out

    def breakdown(self) -> dict[str, float]:
        raw = self.metrics.get("memory_breakdown_bytes")
        if not isinstance(raw, dict):
            return {}
        return {k: v for k, v in ((k, number(v)) for k, v in raw.items()) if v is not None}

    def latency_breakdown(self) -> dict[str, dict[str, float]]:
        raw = self.metrics.get("breakdown_ms")
        if not isinstance(raw, dict):
            return {}
        out: dict[str, dict[str, float]] = {}
        for phase, ops in raw.items():
            if isinstance(ops, dict):
                out[str(phase)] = {k: v for k, v in ((k, number(v)) for k, v in ops.items()) if v is not None}
        return out

    @property
    def error_type(self) -> str:
        err = self.row.get("error")
        return str(err.get("type") or "") if isinstance(err, dict) else ""

    @property
    def error_line(self) -> str:
        """First non-empty line of the error message ('' if none)."""
        err = self.row.get("error")
        if not isinstance(err, dict):
            return ""
        for text in (err.get("message"), err.get("traceback_tail")):
            if text:
                for ln in str(text).splitlines():
                    if ln.strip():
                        return ln.strip()
        return ""

    @property
    def env(self) -> dict[str, Any]:
        env = self.row.get("env")
        return env if isinstance(env, dict) else {}


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def number(value) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(out) else out


def _int(value) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _hashable(value):
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    return value


def find_result_files(paths) -> list[Path]:
    """Expand files and directories (searched recursively for *.jsonl) into a sorted file list."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*.jsonl") if p.is_file())
            if not found:
                raise UserError(f"{path}: no *.jsonl result files found in this directory")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise UserError(f"{path}: results file not found")
    return files


def read_jsonl(path: Path) -> list[Point]:
    """One results file as points (see `poetx_bench.results.read_numbered` for the rules)."""
    return [Point(row, file=str(path), line=lineno) for lineno, row in read_numbered(path)]


def load_points(paths) -> list[Point]:
    """All points from files/directories, in file order."""
    points: list[Point] = []
    for path in find_result_files(paths):
        points.extend(read_jsonl(path))
    return points


def _measured_at(p: Point) -> str | None:
    """The row's measurement time (env.time, ISO 8601 UTC as env.environment writes it), or None."""
    t = p.env.get("time")
    return t if isinstance(t, str) and t else None


def dedupe(points: list[Point]) -> tuple[list[Point], int]:
    """Keep one row per point (same point_id, or config key when point_id is absent): the row measured
    later replaces the other. 'Later' is the recorded env.time (the latest measured one seen) when the rows
    have one, so a re-run in a file that sorts first still wins over an older run; else the order read. A
    'skipped' row never replaces another, and any other row replaces a skipped one.
    Returns (points, number of superseded rows)."""
    kept: dict[object, Point] = {}
    latest: dict[object, str] = {}
    dropped = 0
    for p in points:
        ident = ("id", p.point_id) if p.point_id else ("key", p.key())
        old = kept.get(ident)
        t_new = _measured_at(p)
        if old is not None:
            dropped += 1
            if p.status == "skipped":
                continue
            older = t_new is not None and ident in latest and t_new < latest[ident]
            if older and old.status != "skipped":
                continue
        kept[ident] = p
        # a skipped row's time orders nothing: it never replaces a measured row
        if p.status != "skipped" and t_new is not None and (ident not in latest or t_new > latest[ident]):
            latest[ident] = t_new
    return list(kept.values()), dropped
