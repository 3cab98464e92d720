"""Sweep definitions: read a suite TOML, check the keys every suite shares, and let its kind (`kind = ...`,
poetx_bench.points) validate its own keys and expand them into points.

Kinds: `train` (whole-model training steps, the default), `layer` (one linear layer, forward+backward
latency), `correctness` (POET / POET-X against float64 POET) and `kernel` (one kernel op timed alone).
Any bad key or value is a UserError naming the file (or --set), the key and the value.
"""

from __future__ import annotations

import importlib.util
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UserError
from .points import SuiteInput, kinds
from .points.ids import point_id
from .points.train import TrainConfig
from .points.validate import DTYPES, Origin, check_type, err, resolve_dtype

# the suites ship as package data of poetx_bench.suites (the repo's suites/ folder in a checkout or an
# editable install, site-packages otherwise)
SUITES_DIR = Path(importlib.util.find_spec("poetx_bench.suites").origin).parent

# keys every suite may have, whatever its kind: key -> (expected python type(s), required?)
COMMON_KEYS = {
    "name": (str, False), "description": (str, False), "kind": (str, False),
    "timeout": ((int, float), False), "exclude": (list, False),
    "gpu": (bool, False),  # meant for a GPU: planning it on CPU warns
    "slurm": (dict, False),  # sweep --launcher slurm settings (poetx_bench.launch.SLURM_KEYS); not in points
}
TRAIN_DEFAULTS = TrainConfig.defaults()  # what `run` and train suites start from (poetx_bench.points.train)


__all__ = ["COMMON_KEYS", "DTYPES", "SUITES_DIR", "Suite", "TRAIN_DEFAULTS", "apply_filters", "build_suite",
           "list_suites", "load_suite", "parse_sets", "point_id", "resolve_dtype", "resolve_suite_path"]


@dataclass
class Suite:
    name: str
    path: Path
    kind: str
    description: str
    points: list[dict] = field(default_factory=list)
    gpu: bool = False
    slurm: dict = field(default_factory=dict)


def resolve_suite_path(name_or_path: str) -> Path:
    p = Path(name_or_path)
    named = SUITES_DIR / f"{name_or_path}.toml"
    if p.is_dir() and p.suffix != ".toml" and named.exists():
        return named  # a suite name that is also a folder here (`kernels` in the repository root)
    if p.suffix == ".toml" or p.exists():
        if not p.exists():
            raise UserError(f"{p}: suite file not found")
        if not p.is_file():
            raise UserError(f"{p}: not a file (give a suite name or a .toml path)")
        return p
    cand = SUITES_DIR / f"{name_or_path}.toml"
    if not cand.exists():
        known = ", ".join(sorted(x.stem for x in SUITES_DIR.glob("*.toml")))
        raise UserError(f"unknown suite {name_or_path!r}; known suites: {known}")
    return cand


def list_suites() -> list[tuple[str, str]]:
    out = []
    for p in sorted(SUITES_DIR.glob("*.toml")):
        try:
            desc = tomllib.loads(p.read_text()).get("description", "")
        except tomllib.TOMLDecodeError:
            desc = "(invalid TOML)"
        out.append((p.stem, desc))
    return out


def parse_sets(sets: list[str]) -> dict:
    """--set key=value (TOML value syntax: 300, "triton", [1, 2]) -> {key: value}."""
    out = {}
    for item in sets:
        if "=" not in item:
            raise UserError(f"--set {item!r}: expected key=value")
        key, value = (x.strip() for x in item.split("=", 1))
        try:
            out[key] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            out[key] = value  # a bare word: take it as a string
    return out


def load_suite(name_or_path: str, device: str = "cpu", sets: dict | None = None) -> Suite:
    """Read, validate and expand a suite for `device` ("cpu" or "cuda"); `sets` replace top-level keys
    (validated like the file's own)."""
    path = resolve_suite_path(name_or_path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: invalid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    return build_suite(raw, path, device, sets)


def build_suite(raw: dict, path: Path, device: str = "cpu", sets: dict | None = None) -> Suite:
    """A suite from its keys (a TOML file's, or a command's own, e.g. `correctness`): common checks here,
    the rest by its kind."""
    raw = {**raw, **(sets or {})}
    src = Origin(path, sets or {})
    registry = kinds()
    kind_name = raw.get("kind", "train")
    if kind_name not in registry:
        raise err(src, "kind", kind_name, f"must be one of {', '.join(repr(k) for k in registry)}")
    kind = registry[kind_name]
    allowed = {**COMMON_KEYS, **kind.suite_keys}
    for key, value in raw.items():
        if key not in allowed:
            raise UserError(f"{src.of(key)}: unknown key '{key}' (allowed for kind={kind_name}: "
                            f"{', '.join(sorted(allowed))})")
        check_type(src, key, value, allowed[key][0])
    for key, (_, required) in allowed.items():
        if required and key not in raw:
            raise UserError(f"{path}: missing required key '{key}'")
    excludes = raw.get("exclude", [])
    for i, rule in enumerate(excludes):
        if not isinstance(rule, dict) or not rule:
            raise err(src, f"exclude[{i}]", rule, "must be a non-empty table of key = value")
    configs = kind.expand(SuiteInput(src, raw, device))
    points = [{"config": c} for c in configs]
    points = [p for p in points if not any(_matches(p, rule) for rule in excludes)]
    for p in points:
        p["point_id"] = point_id(p["config"])
    return Suite(raw.get("name", path.stem), path, kind_name, raw.get("description", ""), points,
                 gpu=raw.get("gpu", False), slurm=raw.get("slurm", {}))


def _matches(point: dict, rule: dict) -> bool:
    cfg = point["config"]
    return all(k in cfg and (cfg[k] in v if isinstance(v, list) else cfg[k] == v) for k, v in rule.items())


def apply_filters(points: list[dict], filters: list[str], note=None) -> list[dict]:
    """--filter key=value (repeatable; values compared as strings; a comma means any of).

    A filter on a key a method does not have (absent or None in its configs, e.g. block_size for AdamW)
    keeps that method's points, and `note` (default: print to stderr) gets one line saying so; a key no
    point has is an error (a typo would otherwise keep everything)."""
    import sys

    parsed = []
    for f in filters:
        if "=" not in f:
            raise UserError(f"--filter {f!r}: expected key=value")
        k, v = f.split("=", 1)
        parsed.append((k.strip(), set(v.split(","))))
    kept_without: dict[str, set] = {}
    out = []
    for p in points:
        cfg = p["config"]
        keep = True
        for k, vs in parsed:
            if cfg.get(k) is None:
                kept_without.setdefault(k, set()).add(cfg.get("method"))
            elif str(cfg[k]) not in vs:
                keep = False
        if keep:
            out.append(p)
    for k, _ in parsed:
        if points and all(p["config"].get(k) is None for p in points):
            raise UserError(f"--filter {k}=...: no point of this suite has key '{k}'")
    if kept_without:
        line = "; ".join(f"{', '.join(sorted(map(str, ms)))} (no {k})" for k, ms in kept_without.items())
        msg = f"filter: kept every point of methods without the filtered key: {line}"
        (note or (lambda m: print(m, file=sys.stderr)))(msg)
    return out
