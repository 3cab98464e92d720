"""The train kind: whole-model training steps of one method on one Llama config (tokens/s, peak memory,
losses). The measurement itself is poetx_bench.points.training; this module declares the kind."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from .base import KindConfig, Outcome, PointKind, RunContext, SuiteInput, TimedMetric, knob, optional
from .grid import GRID_KEYS, apply_overrides, block_tag, check_grid, describe_tags, label_head, skip_reason
from .validate import err, positive_ints


@dataclass(kw_only=True)
class TrainConfig(KindConfig):
    """One train point. Field order is the row's key order; knobs are what a suite (or `run`) sets."""

    kind: str = "train"
    method: str
    model: str
    block_size: int | None
    seq_len: int
    batch_size: int
    device: str
    steps: int = knob(10)
    warmup_steps: int = knob(3)
    dtype: str = knob("auto")
    seed: int = knob(0)
    data: str = knob("default")
    eval_every: int = knob(0)
    eval_batches: int = knob(2)
    merge_every: int = knob(200)
    backend: str = knob("torch")
    tokenizer: str = knob("bpe")
    timeout: float = knob(1800)
    compile: str = knob("none", added=True)          # whole-step capture: none | compile | cudagraph
    block_impl: str = knob("auto", added=True)       # how our POET-X backends run the block work
    cayley_scope: str = knob("layer", added=True)    # triton rows design: Cayley per layer or per model
    cayley_keep: str = knob("params", added=True)    # triton rows design: backward recomputes Q, S | keeps them
    nproc: int = knob(1, added=True)                 # processes (GPUs) per point; > 1 runs under torchrun
    parallel: str = knob("ddp", added=True)          # ddp | fsdp (FSDP2 fully_shard) when nproc > 1
    checkpointing: bool = knob(False, added=True)    # gradient checkpointing of every decoder block
    official_init: str = knob("own", added=True)     # backend official: its own W0/permutations | ours (same seed)
    measure_merge: bool = knob(False, added=True)    # after the timed steps, time one merge (merge_cost)
    trial: int = knob(0, added=True)                 # k-th separate process of the same point (`trials`)
    vocab_size: int | None = optional()
    max_memory_gb: float | None = optional()
    hparams: dict | None = optional()                # the method's own hyperparameters, when a suite sets them


SUITE_KEYS = {
    **GRID_KEYS,
    "models": (list, True), "seq_lens": (list, True), "batch_sizes": (list, True), "steps": (int, False),
    "data": (str, False), "eval_every": (int, False), "eval_batches": (int, False),
    "merge_every": (int, False), "tokenizer": (str, False), "vocab_size": (int, False),
    "max_memory_gb": ((int, float), False),
    "checkpointing": (bool, False),  # gradient checkpointing per decoder block, any method
    "official_init": (str, False),  # the official backend's starting W0 / permutations: "own" | "ours"
    "hparams": (dict, False),  # [hparams.METHOD]: the method's own hyperparameters (its schema)
    "nproc": ((int, list), False), "parallel": ((str, list), False),
    "measure_merge": (bool, False),  # time one merge after the timed steps (POET methods): metrics.merge_cost
    "trials": (int, False),  # each point this many times, each its own process (trial 0..n-1): the spread
}


def expand(inp: SuiteInput) -> list[dict]:
    from ..methods import METHODS
    from ..reference.models import MODEL_CONFIGS

    src, raw, device = inp.src, inp.raw, inp.device
    grid = check_grid(inp, TrainConfig.defaults(), METHODS, extra=("vocab_size", "max_memory_gb"))
    models = raw["models"]
    for m in models:
        if not isinstance(m, str) or m not in MODEL_CONFIGS:
            raise err(src, "models", m, f"is not a known model (known: {', '.join(MODEL_CONFIGS)})")
    seq_lens = positive_ints(src, "seq_lens", raw["seq_lens"])
    batch_sizes = positive_ints(src, "batch_sizes", raw["batch_sizes"])
    for model in models:
        width = MODEL_CONFIGS[model].hidden
        for b in grid.block_sizes:
            if b > width and any(METHODS[m].uses_blocks for m in grid.methods):
                raise err(src, "block_sizes", b, f"is larger than the width {width} of model '{model}'")
    for L in seq_lens:
        for model in models:
            if L > MODEL_CONFIGS[model].max_seq_len:
                raise err(src, "seq_lens", L, f"exceeds the max sequence length of model '{model}'")
    configs = []
    for method in grid.methods:
        for model in models:
            for L in seq_lens:
                for bs in batch_sizes:
                    for b in (grid.block_sizes if METHODS[method].uses_blocks else [None]):
                        # hparams only when set: configs without them keep their point ids
                        cfg = TrainConfig(method=method, model=model, block_size=b, seq_len=L, batch_size=bs,
                                          device=device, **grid.fixed, vocab_size=raw.get("vocab_size"),
                                          max_memory_gb=raw.get("max_memory_gb"),
                                          hparams=dict(grid.hparams[method]) if grid.hparams.get(method) else None)
                        configs += apply_overrides(cfg.to_dict(), grid.overrides, device,
                                                   TrainConfig.defaults()["parallel"])
    trials = raw.get("trials", 1)
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise err(src, "trials", trials, "must be an integer >= 1")
    if "trial" in raw:
        raise err(src, "trial", raw["trial"], "is set per point: use `trials = N` for N separate processes")
    return [{**c, "trial": t} if t else c for c in configs for t in range(trials)]


def run(cfg: dict, ctx: RunContext) -> Outcome:
    """Train, then judge divergence and (with --profile) run the separate profiled pass."""
    from .training import ProgressLog, run_train_point

    progress = ProgressLog() if ctx.world is None or ctx.world.rank == 0 else None
    metrics, trainer = run_train_point(cfg, on_progress=progress, world=ctx.world)
    ctx.metrics = metrics  # a failing profiled pass keeps the timed run's metrics
    out = Outcome(metrics)
    if any(not math.isfinite(x) for x in metrics["losses"]):
        out.status = "diverged"
        out.error = {"type": "Diverged", "message": "non-finite loss", "traceback_tail": ""}
    if ctx.profile_dir and ctx.world is not None and ctx.world.distributed:
        metrics["profile_skipped"] = "--profile covers single-process points only"
    elif ctx.profile_dir:
        from ..profiling import profile_trainer

        out.artifacts = profile_trainer(trainer, Path(ctx.profile_dir))
    return out


def describe(cfg: dict) -> str:
    tags = describe_tags(cfg, TrainConfig.added_defaults())
    trial = f" trial={cfg['trial']}" if cfg.get("trial") else ""
    return f"{cfg['method']} {cfg['model']}{block_tag(cfg)} L{cfg['seq_len']} B{cfg['batch_size']}{tags}{trial}"


def label(p, with_model: bool = True) -> str:
    """Short report label, e.g. 'poetx-fast b256 8b L1024 bs1'."""
    parts = label_head(p)
    if with_model and p.model is not None:
        parts.append(p.model)
    if p.seq_len is not None:
        parts.append(f"L{p.seq_len}")
    if p.batch_size is not None:
        parts.append(f"bs{p.batch_size}")
    if p.cfg("trial"):
        parts.append(f"trial{p.cfg('trial')}")
    return " ".join(parts)


def estimate_seconds(cfg: dict, device: str) -> float:
    """Process start-up plus steps at a nominal rate."""
    from ..flops import train_step_flops

    gpu = device == "cuda"
    rate = 300e12 if gpu else 2e10
    startup = 20.0 if gpu else 6.0
    f = train_step_flops(cfg["model"], cfg["method"], cfg.get("block_size"), cfg["batch_size"],
                         cfg["seq_len"])
    return startup + f / rate * (cfg["steps"] + cfg["warmup_steps"])


def prepare(configs: list[dict], quiet: bool) -> None:
    """Open each distinct dataset once in the parent: fails fast on bad data (exit 2) and fills the caches
    (corpus, tokenizer, token stream) so points don't race to build them."""
    import json
    import sys

    seen = set()
    for cfg in configs:
        if cfg.get("data") == "synthetic":
            continue
        key = (cfg.get("data"), cfg.get("vocab_size", 32000), cfg.get("tokenizer", "bpe"))
        if key in seen:
            continue
        seen.add(key)
        from .training import open_data

        ds = open_data(cfg)
        if not quiet:
            print(f"data: {json.dumps(ds.describe())}", file=sys.stderr)


KIND = PointKind(
    name="train", description="whole-model training steps: tokens/s, peak memory, losses",
    config=TrainConfig, suite_keys=SUITE_KEYS, expand=expand, run=run, describe=describe,
    estimate_seconds=estimate_seconds, label=label,
    gated_metrics=("peak_memory_bytes", "tokens_per_s", "final_loss", "trainable_params", "total_params"),
    timed_metrics={"tokens_per_s": TimedMetric(("step_times_s",), higher_is_better=True)},
    skip_reason=lambda cfg: skip_reason(cfg, multiprocess=True), multiprocess=True, prepare=prepare,
    key_fields=("trial",),
)
