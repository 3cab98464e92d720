"""The method grid that train and layer suites share: methods x block sizes with per-method overrides and
hyperparameters, list-valued backend / compile / nproc / parallel expanded side by side, and the reasons a
method's point cannot run here."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UserError
from .base import SuiteInput
from .validate import err, positive_ints, resolve_dtype, validate_fixed

# suite keys of both method-grid kinds: key -> (expected python type(s), required?)
GRID_KEYS = {
    "methods": (list, True), "block_sizes": (list, False), "dtype": (str, False), "seed": (int, False),
    "backend": ((str, list), False), "overrides": (dict, False), "repeats": (int, False),
    "warmup_steps": (int, False), "block_impl": (str, False), "compile": ((str, list), False),
    "cayley_scope": (str, False), "cayley_keep": (str, False),
}
# keys a per-method override may change
OVERRIDABLE = {"steps", "warmup_steps", "dtype", "backend", "merge_every", "timeout", "eval_every",
               "repeats", "max_memory_gb", "block_impl", "compile", "cayley_scope", "cayley_keep", "nproc",
               "parallel", "checkpointing", "official_init"}
TAG_KEYS = ("backend", "compile", "block_impl", "cayley_scope", "cayley_keep", "official_init", "nproc", "parallel")
# keys that choose among one POET-X backend's own implementations, with their defaults: a point of any other
# backend (or of a method without one) keeps the defaults, and so the id it had before the key existed
BACKEND_KEYS = {"triton": {"block_impl": "auto", "cayley_scope": "layer", "cayley_keep": "params"},
                "official": {"official_init": "own"}}


@dataclass
class Grid:
    fixed: dict        # the kind's knobs: defaults with the suite's values
    methods: list
    block_sizes: list
    overrides: dict
    hparams: dict


def check_grid(inp: SuiteInput, defaults: dict, known_methods, extra=()) -> Grid:
    """Validate the grid keys of a train or layer suite; `extra` are optional keys checked like knobs."""
    src, raw = inp.src, inp.raw
    fixed = {k: raw.get(k, v) for k, v in defaults.items()}
    validate_fixed(src, fixed)
    validate_fixed(src, {k: raw[k] for k in extra if k in raw})
    methods = raw["methods"]
    for m in methods:
        if not isinstance(m, str) or m not in known_methods:
            raise err(src, "methods", m, f"is not a known method (known: {', '.join(known_methods)})")
    block_sizes = positive_ints(src, "block_sizes", raw.get("block_sizes", [256]))
    overrides = raw.get("overrides", {})
    allowed = sorted(x for x in OVERRIDABLE if x in defaults or x in extra)  # this kind's own keys only
    for m, ov in overrides.items():
        if m not in methods:
            raise err(src, "overrides", m, "is not one of this suite's methods")
        if not isinstance(ov, dict):
            raise err(src, f"overrides.{m}", ov, "must be a table")
        for k, v in ov.items():
            if k not in allowed:  # also a key of another kind (e.g. a train-only key in a layer suite)
                raise UserError(f"{src.of('overrides')}: key 'overrides.{m}.{k}' cannot be overridden per method "
                                f"(allowed: {', '.join(allowed)})")
            validate_fixed(src, {k: v}, prefix=f"overrides.{m}.")
    hparams = check_hparams(inp, raw.get("hparams", {}), methods)
    return Grid(fixed, methods, block_sizes, overrides, hparams)


def check_hparams(inp: SuiteInput, tables: dict, methods: list) -> dict:
    """[hparams.METHOD] tables: each key must be in that method's schema (MethodSpec.hparams), with a
    value of its type."""
    from ..methods import METHODS

    src = inp.src
    for m, table in tables.items():
        if m not in methods:
            raise err(src, "hparams", m, "is not one of this suite's methods")
        if not isinstance(table, dict):
            raise err(src, f"hparams.{m}", table, "must be a table")
        schema = METHODS[m].hparams
        for k, v in table.items():
            if k not in schema:
                raise err(src, f"hparams.{m}.{k}", v, f"is not a hyperparameter of method '{m}' "
                          f"(known: {', '.join(schema) or 'none'})")
            why = schema[k].check(v)
            if why:
                raise err(src, f"hparams.{m}.{k}", v, why)
    return tables


def uses_backend(method: str) -> bool:
    from ..methods import METHODS

    spec = METHODS.get(method)  # layer suites' nn.Linear is no training method
    return spec is not None and spec.uses_backend


def apply_overrides(cfg: dict, overrides: dict, device: str, parallel_default: str | None = None) -> list[dict]:
    """The point's config(s) after per-method overrides. A list-valued `backend` gives one point per backend
    for the POET-X methods (side by side in one sweep) and its first entry for the others; a list-valued
    `compile` gives one point per setting. The official backend compiles its own layers and runs only with
    compile = none: where backends or compile settings are listed side by side it gets that one point (a
    single official backend with another compile setting still plans, and skips with its reason)."""
    cfg = {**cfg, **overrides.get(cfg["method"], {})}
    cfg["dtype"] = resolve_dtype(cfg["dtype"], device)
    ours_backend = uses_backend(cfg["method"])
    backends = cfg["backend"] if isinstance(cfg["backend"], list) else [cfg["backend"]]
    if not ours_backend:
        backends = backends[:1]
    compiles = cfg["compile"] if isinstance(cfg["compile"], list) else [cfg["compile"]]
    out = []
    for b in backends:
        side_by_side = isinstance(cfg["backend"], list) or isinstance(cfg["compile"], list)
        modes = ["none"] if b == "official" and side_by_side else compiles
        for mode in dict.fromkeys(modes):
            base = {**cfg, "backend": b, "compile": mode}
            for owner, keys in BACKEND_KEYS.items():
                if not (owner == b and ours_backend):
                    base.update({k: v for k, v in keys.items() if k in base})
            out += parallel_variants(base, parallel_default)
    return out


def parallel_variants(cfg: dict, parallel_default: str | None) -> list[dict]:
    """One config per (nproc, parallel) of list-valued keys; a single-process point has no parallelism to
    choose, so it keeps parallel at its default (one point, and the id it had before these keys)."""
    if "nproc" not in cfg:  # layer points
        return [cfg]
    nprocs = cfg["nproc"] if isinstance(cfg["nproc"], list) else [cfg["nproc"]]
    parallels = cfg["parallel"] if isinstance(cfg["parallel"], list) else [cfg["parallel"]]
    out = {}
    for n in nprocs:
        for par in (parallels if n > 1 else [parallel_default]):
            out[(n, par)] = {**cfg, "nproc": n, "parallel": par}
    return list(out.values())


# --- console labels and skip reasons ---------------------------------------------------------------

def block_tag(cfg: dict) -> str:
    return f" b{cfg['block_size']}" if cfg.get("block_size") else ""


def describe_tags(cfg: dict, added: dict) -> str:
    """` backend=triton compile=cudagraph ...`: what runs beside the method, where not at its default."""
    tags = "".join(f" {k}={cfg[k]}" for k in TAG_KEYS
                   if (cfg.get(k) not in (None, added.get(k))
                       or (k == "parallel" and cfg.get("nproc", 1) > 1))
                   and (k != "backend" or uses_backend(cfg["method"])))
    return tags + "".join(f" {k}={v}" for k, v in (cfg.get("hparams") or {}).items())


def label_head(p) -> list[str]:
    """The start of a method-grid point's report label: method, block size and tags."""
    parts = [p.method]
    if p.block_size is not None:
        parts.append(f"b{p.block_size}")
    return parts + p.tags


def skip_reason(cfg: dict, multiprocess: bool) -> str | None:
    """Points that cannot measure what they name are skipped, not silently run as something else."""
    from ..backends import skip_reason as backend_skip
    from ..capture import unavailable
    from ..methods import METHODS

    spec = METHODS.get(cfg["method"])
    backend = cfg.get("backend") if spec is not None and spec.uses_backend else None
    return ((spec.skip_reason(cfg) if spec is not None and spec.skip_reason else None)
            or backend_skip(cfg["method"], backend, cfg["device"])
            or unavailable(cfg.get("compile", "none"), cfg["device"], backend)
            or multiprocess_skip_reason(cfg, backend, spec, multiprocess))


def multiprocess_skip_reason(cfg: dict, backend: str | None, spec=None, multiprocess: bool = True) -> str | None:
    """What a multi-process point (nproc > 1) cannot run."""
    if cfg.get("nproc", 1) <= 1:
        return None
    if not multiprocess:
        from . import KINDS

        return f"nproc > 1 applies to {' and '.join(k.name for k in KINDS.values() if k.multiprocess)} points only"
    if cfg.get("compile", "none") == "cudagraph":
        return "compile = cudagraph runs single-process only (nproc = 1): no collectives inside the captured step"
    if backend == "official":
        return "backend = official runs single-process only (its merge draws from rank-local RNG state)"
    if cfg.get("parallel") == "fsdp" and cfg.get("cayley_scope", "layer") != "layer":
        return f"cayley_scope = {cfg['cayley_scope']} with fsdp: its pre-forward hook would read sharded skew parameters"
    if cfg.get("parallel") == "fsdp" and spec is not None and not spec.poet_state:
        return f"{cfg['method']} with fsdp: its quantized W0 and per-row scales are not sharded alike yet"
    if cfg["device"] == "cuda":
        import torch

        if torch.cuda.device_count() < cfg["nproc"]:
            return f"nproc = {cfg['nproc']} needs {cfg['nproc']} GPUs, {torch.cuda.device_count()} visible"
    return None
