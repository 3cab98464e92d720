"""Sweep definitions: read a suite TOML, validate every key, expand the Cartesian product into points.

A suite is either `kind = "train"` (whole-model training steps) or `kind = "layer"` (one linear layer,
forward+backward latency). Any bad key or value is a UserError naming the file, the key and the value.
"""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .backends import BACKENDS
from .config_defaults import ADDED_KEY_DEFAULTS, TRAIN_ONLY_KEYS, hashed_view
from .errors import UserError
from .flops import LINEAR
from .methods import METHODS
from .reference.models import MODEL_CONFIGS

# the suites ship as package data of poetx_bench.suites (the repo's suites/ folder in a checkout or an
# editable install, site-packages otherwise)
SUITES_DIR = Path(importlib.util.find_spec("poetx_bench.suites").origin).parent
# layer suites: nn.Linear beside every method with a single-layer form
LAYER_METHODS = (LINEAR, *(name for name, spec in METHODS.items() if spec.build_layer is not None))
DTYPES = ("auto", "float32", "bfloat16", "float16", "float64")
BLOCK_IMPL_CHOICES = ("auto", "rows", "fused", "torch")  # kernels.BLOCK_IMPLS (no triton import here)
COMPILE_CHOICES = ("none", "compile", "cudagraph")
CAYLEY_SCOPES = ("layer", "model")  # kernels.model_cayley.SCOPES (no triton import here)
PARALLEL_CHOICES = ("ddp", "fsdp")  # distributed.PARALLEL_CHOICES (no torch.distributed import here)

# key -> (expected python type(s), required?)
COMMON_KEYS = {
    "name": (str, False), "description": (str, False), "kind": (str, False),
    "methods": (list, True), "block_sizes": (list, False), "dtype": (str, False), "seed": (int, False),
    "timeout": ((int, float), False), "backend": ((str, list), False), "exclude": (list, False),
    "overrides": (dict, False), "repeats": (int, False), "warmup_steps": (int, False),
    "block_impl": (str, False), "compile": ((str, list), False), "cayley_scope": (str, False),
    "gpu": (bool, False),  # meant for a GPU: planning it on CPU warns
    "slurm": (dict, False),  # sweep --launcher slurm settings (poetx_bench.launch.SLURM_KEYS); not in points
}
TRAIN_KEYS = {
    "models": (list, True), "seq_lens": (list, True), "batch_sizes": (list, True), "steps": (int, False),
    "data": (str, False), "eval_every": (int, False), "eval_batches": (int, False),
    "merge_every": (int, False), "tokenizer": (str, False), "vocab_size": (int, False),
    "max_memory_gb": ((int, float), False),
    "checkpointing": (bool, False),  # gradient checkpointing per decoder block, any method
    "hparams": (dict, False),  # [hparams.METHOD]: the method's own hyperparameters (its schema)
    "nproc": ((int, list), False), "parallel": ((str, list), False),
}
LAYER_KEYS = {"shapes": (list, True), "tokens": (list, True)}
# keys a per-method override may change
OVERRIDABLE = {"steps", "warmup_steps", "dtype", "backend", "merge_every", "timeout", "eval_every",
               "repeats", "max_memory_gb", "block_impl", "compile", "cayley_scope", "nproc", "parallel",
               "checkpointing"}

TRAIN_DEFAULTS = {"steps": 10, "warmup_steps": 3, "dtype": "auto", "seed": 0, "data": "default",
                  "eval_every": 0, "eval_batches": 2, "merge_every": 200, "backend": "torch",
                  "tokenizer": "bpe", "timeout": 1800, **ADDED_KEY_DEFAULTS}
LAYER_DEFAULTS = {"dtype": "auto", "seed": 0, "backend": "torch", "repeats": 50, "warmup_steps": 10,
                  "timeout": 900, **{k: v for k, v in ADDED_KEY_DEFAULTS.items() if k not in TRAIN_ONLY_KEYS}}


@dataclass
class Suite:
    name: str
    path: Path
    kind: str
    description: str
    points: list[dict] = field(default_factory=list)
    gpu: bool = False
    slurm: dict = field(default_factory=dict)


def point_id(config: dict) -> str:
    """Stable hash of a point's config (device and dtype included; added keys at their default left out)."""
    blob = json.dumps(hashed_view(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def resolve_suite_path(name_or_path: str) -> Path:
    p = Path(name_or_path)
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


class _Origin:
    """The suite file, except for keys given with --set: an error blames where its value came from."""

    def __init__(self, path: Path, cli_keys) -> None:
        self.path, self.cli_keys = path, set(cli_keys)

    def of(self, key: str) -> str:
        return "--set" if re.split(r"[.\[]", key, maxsplit=1)[0] in self.cli_keys else str(self.path)


def _err(src: _Origin, key: str, value, why: str) -> UserError:
    return UserError(f"{src.of(key)}: key '{key}': value {value!r} {why}")


def _check_type(src: _Origin, key, value, types):
    if isinstance(value, bool) and types in (int, (int, float)):
        raise _err(src, key, value, "must be a number, not a boolean")
    if not isinstance(value, types):
        tname = types.__name__ if isinstance(types, type) else " or ".join(t.__name__ for t in types)
        raise _err(src, key, value, f"must be of type {tname}")


def _positive_ints(src: _Origin, key, values):
    if not values:
        raise _err(src, key, values, "must be a non-empty list")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise _err(src, key, v, "must be a positive integer")
    return values


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
    raw.update(sets or {})
    src = _Origin(path, sets or {})
    kind = raw.get("kind", "train")
    if kind not in ("train", "layer"):
        raise _err(src, "kind", kind, "must be 'train' or 'layer'")
    allowed = {**COMMON_KEYS, **(TRAIN_KEYS if kind == "train" else LAYER_KEYS)}
    for key, value in raw.items():
        if key not in allowed:
            raise UserError(f"{src.of(key)}: unknown key '{key}' (allowed for kind={kind}: {', '.join(sorted(allowed))})")
        _check_type(src, key, value, allowed[key][0])
    for key, (_, required) in allowed.items():
        if required and key not in raw:
            raise UserError(f"{path}: missing required key '{key}'")
    defaults = TRAIN_DEFAULTS if kind == "train" else LAYER_DEFAULTS
    fixed = {k: raw.get(k, v) for k, v in defaults.items()}
    _validate_fixed(src, fixed)

    _validate_fixed(src, {k: raw[k] for k in ("vocab_size", "max_memory_gb") if k in raw})
    methods = raw["methods"]
    known_methods = METHODS if kind == "train" else LAYER_METHODS
    for m in methods:
        if not isinstance(m, str) or m not in known_methods:
            raise _err(src, "methods", m, f"is not a known method (known: {', '.join(known_methods)})")
    block_sizes = _positive_ints(src, "block_sizes", raw.get("block_sizes", [256]))
    overrides = raw.get("overrides", {})
    for m, ov in overrides.items():
        if m not in methods:
            raise _err(src, "overrides", m, "is not one of this suite's methods")
        if not isinstance(ov, dict):
            raise _err(src, f"overrides.{m}", ov, "must be a table")
        for k, v in ov.items():
            if k not in OVERRIDABLE:
                raise UserError(f"{src.of('overrides')}: key 'overrides.{m}.{k}' cannot be overridden per method "
                                f"(allowed: {', '.join(sorted(OVERRIDABLE))})")
            _validate_fixed(src, {k: v}, prefix=f"overrides.{m}.")
    hparams = _check_hparams(src, raw.get("hparams", {}), methods)
    excludes = raw.get("exclude", [])
    for i, rule in enumerate(excludes):
        if not isinstance(rule, dict) or not rule:
            raise _err(src, f"exclude[{i}]", rule, "must be a non-empty table of key = value")

    if kind == "train":
        points = _train_points(src, raw, fixed, methods, block_sizes, overrides, device, hparams)
    else:
        points = _layer_points(src, raw, fixed, methods, block_sizes, overrides, device)
    points = [p for p in points if not any(_matches(p, rule) for rule in excludes)]
    for p in points:
        p["point_id"] = point_id(p["config"])
    return Suite(raw.get("name", path.stem), path, kind, raw.get("description", ""), points,
                 gpu=raw.get("gpu", False), slurm=raw.get("slurm", {}))


def _check_hparams(src: _Origin, tables: dict, methods: list) -> dict:
    """[hparams.METHOD] tables: each key must be in that method's schema (MethodSpec.hparams), with a
    value of its type."""
    for m, table in tables.items():
        if m not in methods:
            raise _err(src, "hparams", m, "is not one of this suite's methods")
        if not isinstance(table, dict):
            raise _err(src, f"hparams.{m}", table, "must be a table")
        schema = METHODS[m].hparams
        for k, v in table.items():
            if k not in schema:
                raise _err(src, f"hparams.{m}.{k}", v, f"is not a hyperparameter of method '{m}' "
                           f"(known: {', '.join(schema) or 'none'})")
            why = schema[k].check(v)
            if why:
                raise _err(src, f"hparams.{m}.{k}", v, why)
    return tables


def _validate_fixed(src: _Origin, fixed: dict, prefix: str = "") -> None:
    for key, value in fixed.items():
        if key in ("steps", "repeats", "eval_batches", "timeout", "vocab_size") and value is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise _err(src, prefix + key, value, "must be positive")
        if key in ("warmup_steps", "eval_every", "merge_every", "seed"):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise _err(src, prefix + key, value, "must be a non-negative integer")
        if key == "max_memory_gb" and (not isinstance(value, (int, float)) or value <= 0):
            raise _err(src, prefix + key, value, "must be positive")
        if key == "dtype" and value not in DTYPES:
            raise _err(src, prefix + key, value, f"must be one of {', '.join(DTYPES)}")
        if key == "backend":
            values = value if isinstance(value, list) else [value]
            for v in values or [None]:
                if v not in BACKENDS:
                    raise _err(src, prefix + key, v, f"must be one of {', '.join(BACKENDS)} (or a list of them)")
        if key == "cayley_scope" and value not in CAYLEY_SCOPES:
            raise _err(src, prefix + key, value, f"must be one of {', '.join(CAYLEY_SCOPES)}")
        if key == "cayley_scope" and value == "model" and fixed.get("block_impl", "auto") not in ("auto", "rows"):
            raise _err(src, prefix + key, value, f"needs block_impl 'rows' (the model-level batch evaluates the row "
                       f"design's Cayley), not {fixed.get('block_impl')!r}")
        if key == "block_impl" and value not in BLOCK_IMPL_CHOICES:
            raise _err(src, prefix + key, value, f"must be one of {', '.join(BLOCK_IMPL_CHOICES)}")
        if key == "compile":
            for v in (value if isinstance(value, list) else [value]) or [None]:
                if v not in COMPILE_CHOICES:
                    raise _err(src, prefix + key, v, f"must be one of {', '.join(COMPILE_CHOICES)} (or a list of them)")
        if key == "nproc":
            for v in (value if isinstance(value, list) else [value]) or [None]:
                if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                    raise _err(src, prefix + key, v, "must be a positive integer (or a list of them)")
        if key == "parallel":
            for v in (value if isinstance(value, list) else [value]) or [None]:
                if v not in PARALLEL_CHOICES:
                    raise _err(src, prefix + key, v, f"must be one of {', '.join(PARALLEL_CHOICES)} (or a list of them)")
        if key == "tokenizer" and value not in ("bpe", "byte"):
            raise _err(src, prefix + key, value, "must be 'bpe' or 'byte'")


def resolve_dtype(dtype: str, device: str) -> str:
    if dtype == "auto":
        return "bfloat16" if device == "cuda" else "float32"
    return dtype


def _apply_overrides(cfg: dict, overrides: dict, device: str) -> list[dict]:
    """The point's config(s) after per-method overrides. A list-valued `backend` gives one point per backend
    for the POET-X methods (side by side in one sweep) and its first entry for the others; a list-valued
    `compile` gives one point per setting. The official backend compiles its own layers and runs only with
    compile = none: where backends or compile settings are listed side by side it gets that one point (a
    single official backend with another compile setting still plans, and skips with its reason)."""
    cfg = {**cfg, **overrides.get(cfg["method"], {})}
    cfg["dtype"] = resolve_dtype(cfg["dtype"], device)
    spec = METHODS.get(cfg["method"])  # layer suites' nn.Linear is no training method
    uses_backend = spec is not None and spec.uses_backend
    backends = cfg["backend"] if isinstance(cfg["backend"], list) else [cfg["backend"]]
    if not uses_backend:
        backends = backends[:1]
    compiles = cfg["compile"] if isinstance(cfg["compile"], list) else [cfg["compile"]]
    out = []
    for b in backends:
        side_by_side = isinstance(cfg["backend"], list) or isinstance(cfg["compile"], list)
        modes = ["none"] if b == "official" and side_by_side else compiles
        for mode in dict.fromkeys(modes):
            # block_impl / cayley_scope choose among our Triton backend's implementations; elsewhere they stay
            # at their defaults
            ours = b == "triton" and uses_backend
            base = {**cfg, "backend": b, "compile": mode,
                    **({} if ours else {"block_impl": "auto", "cayley_scope": "layer"})}
            out += _parallel_variants(base)
    return out


def _parallel_variants(cfg: dict) -> list[dict]:
    """One config per (nproc, parallel) of list-valued keys; a single-process point has no parallelism to
    choose, so it keeps parallel at its default (one point, and the id it had before these keys)."""
    if "nproc" not in cfg:  # layer points
        return [cfg]
    nprocs = cfg["nproc"] if isinstance(cfg["nproc"], list) else [cfg["nproc"]]
    parallels = cfg["parallel"] if isinstance(cfg["parallel"], list) else [cfg["parallel"]]
    out = {}
    for n in nprocs:
        for par in (parallels if n > 1 else [ADDED_KEY_DEFAULTS["parallel"]]):
            out[(n, par)] = {**cfg, "nproc": n, "parallel": par}
    return list(out.values())


def _train_points(src: _Origin, raw, fixed, methods, block_sizes, overrides, device, hparams) -> list[dict]:
    models = raw["models"]
    for m in models:
        if not isinstance(m, str) or m not in MODEL_CONFIGS:
            raise _err(src, "models", m, f"is not a known model (known: {', '.join(MODEL_CONFIGS)})")
    seq_lens = _positive_ints(src, "seq_lens", raw["seq_lens"])
    batch_sizes = _positive_ints(src, "batch_sizes", raw["batch_sizes"])
    for model in models:
        width = MODEL_CONFIGS[model].hidden
        for b in block_sizes:
            if b > width and any(METHODS[m].uses_blocks for m in methods):
                raise _err(src, "block_sizes", b, f"is larger than the width {width} of model '{model}'")
    for L in seq_lens:
        for model in models:
            if L > MODEL_CONFIGS[model].max_seq_len:
                raise _err(src, "seq_lens", L, f"exceeds the max sequence length of model '{model}'")
    points = []
    for method, model, L, bs in itertools.product(methods, models, seq_lens, batch_sizes):
        for b in (block_sizes if METHODS[method].uses_blocks else [None]):
            cfg = {"kind": "train", "method": method, "model": model, "block_size": b, "seq_len": L,
                   "batch_size": bs, "device": device, **fixed}
            if "vocab_size" in raw:
                cfg["vocab_size"] = raw["vocab_size"]
            if "max_memory_gb" in raw:
                cfg["max_memory_gb"] = raw["max_memory_gb"]
            if hparams.get(method):  # only when set: configs without them keep their point ids
                cfg["hparams"] = dict(hparams[method])
            points += [{"config": c} for c in _apply_overrides(cfg, overrides, device)]
    return points


def _layer_points(src: _Origin, raw, fixed, methods, block_sizes, overrides, device) -> list[dict]:
    shapes = raw["shapes"]
    for s in shapes:
        if (not isinstance(s, list) or len(s) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in s)):
            raise _err(src, "shapes", s, "must be [in_features, out_features] of positive integers")
    tokens = _positive_ints(src, "tokens", raw["tokens"])
    points = []
    for method, (fin, fout), n in itertools.product(methods, shapes, tokens):
        for b in (block_sizes if method != LINEAR else [None]):
            if b is not None and b > min(fin, fout):
                raise _err(src, "block_sizes", b, f"is larger than the layer shape {fin}x{fout}")
            cfg = {"kind": "layer", "method": method, "in_features": fin, "out_features": fout,
                   "tokens": n, "block_size": b, "device": device, **fixed}
            points += [{"config": c} for c in _apply_overrides(cfg, overrides, device)]
    return points


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
