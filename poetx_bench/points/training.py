"""One training point, run inside its own process: build, train, measure, return the metrics.

Timed steps use CUDA events (no host synchronisation inside the loop) or perf_counter on CPU; warm-up
steps are excluded from throughput but their losses are kept. Peak memory is reset after the model and
optimizer are built, so it covers the training steps.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time

import torch
import torch.nn.functional as F

from ..backends import run_facts
from ..capture import CudaGraphStep, compiled_frames, make_capturable
from ..distributed import World
from ..flops import train_step_flops
from ..measure import (
    NvmlMonitor,
    StepTimer,
    _nbytes,
    bf16_peak_flops,
    cpu_peak_rss,
    memory_breakdown,
    reset_cpu_peak,
    summarize,
)
from ..methods import prepare
from ..reference.models import build_model, count_params

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
          "float64": torch.float64}


def open_data(cfg: dict):
    """The point's token source: real text (default corpus or --data) or explicit synthetic tokens."""
    vocab = cfg.get("vocab_size", 32000)
    if cfg.get("data") == "synthetic":
        return SyntheticTokens(vocab)
    from ..data import open_dataset

    path = None if cfg.get("data") in (None, "default") else cfg["data"]
    return open_dataset(path, vocab_size=vocab, tokenizer=cfg.get("tokenizer", "bpe"))


class SyntheticTokens:
    """Uniform random tokens for memory/throughput-only runs (data = "synthetic"); loss is meaningless."""

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size

    def describe(self) -> dict:
        return {"source": "synthetic", "vocab_size": self.vocab_size}

    def train_batch(self, step, batch_size, seq_len, seed):
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        return torch.randint(0, self.vocab_size, (batch_size, seq_len + 1), generator=g)

    def val_batches(self, batch_size, seq_len, n_batches):
        return [self.train_batch(-1 - i, batch_size, seq_len, 12345) for i in range(n_batches)]


def _eval(model, batches, device, autocast) -> tuple[float, float]:
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad(), autocast:
        for b in batches:
            b = b.to(device)
            logits = model(b[:, :-1])
            total += F.cross_entropy(logits.float().flatten(0, 1), b[:, 1:].flatten(), reduction="sum").item()
            count += b[:, 1:].numel()
    model.train()
    loss = total / count
    return loss, math.exp(min(loss, 50))


class Trainer:
    """Holds a prepared model and runs steps; shared by the timed pass and the profiling pass."""

    def __init__(self, cfg: dict, device: torch.device, world: World | None = None):
        self.cfg = cfg
        self.device = device
        self.world = world or World()
        dtype = DTYPES[cfg["dtype"]]
        torch.manual_seed(cfg["seed"])
        self.data = open_data(cfg)
        extra = {"vocab_size": cfg["vocab_size"]} if "vocab_size" in cfg else {}
        if cfg["seq_len"] > 4096:
            extra["max_seq_len"] = cfg["seq_len"]
        model = build_model(cfg["model"], dtype=dtype, meta=True, **extra)
        # the method's module wraps the model and builds the optimizer (poetx_bench/methods); the backend
        # matters only to methods that use one
        self.prepared = prepare(model, cfg["method"], cfg.get("block_size"), device=device, seed=cfg["seed"],
                                merge_every=cfg.get("merge_every", 200), hparams=cfg.get("hparams"),
                                backend=cfg.get("backend", "torch"), block_impl=cfg.get("block_impl", "auto"),
                                cayley_keep=cfg.get("cayley_keep", "params"), compute_dtype=dtype,
                                official_init=cfg.get("official_init", "own"),
                                checkpointing=bool(cfg.get("checkpointing", False)))
        self.model, self.opt, self.hook = self.prepared
        self.step_model = self.model  # what a training step calls: the model, or its DDP / FSDP2 wrapping
        if self.world.distributed:
            from ..distributed import wrap

            self.step_model, self.opt = wrap(self.model, self.opt, self.world, device)
            self.hook.optimizer = self.opt
        self.step_no = 0
        self.compile = cfg.get("compile", "none")
        self.graphed = None
        if self.compile == "compile":
            self.forward_model = torch.compile(self.step_model)
        else:
            self.forward_model = self.step_model
        self.model_cayley = None
        if cfg.get("cayley_scope", "layer") != "layer" and cfg.get("backend") == "triton":
            from ..kernels.model_cayley import attach

            self.model_cayley = attach(self.model, cfg["cayley_scope"])
        if self.compile == "cudagraph":
            make_capturable(self.opt)
            self.graphed = CudaGraphStep(self._body, self.opt)

    def batch(self, step: int) -> torch.Tensor:
        """This rank's rows of the step's global batch (batch_size rows per rank, see distributed.py)."""
        from ..distributed import rank_slice

        c, w = self.cfg, self.world
        tokens = self.data.train_batch(step, c["batch_size"] * w.size, c["seq_len"], c["seed"])
        return rank_slice(tokens, w).to(self.device, non_blocking=True)

    def _body(self, tokens: torch.Tensor, ranges: bool = False) -> torch.Tensor:
        """Forward, backward and optimizer step (no zero_grad: see CudaGraphStep)."""
        rng = _ranges if ranges else _no_ranges
        with rng("forward", self.device):
            with self.hook.autocast(self.device.type):
                logits = self.forward_model(tokens[:, :-1])
            loss = F.cross_entropy(logits.float().flatten(0, 1), tokens[:, 1:].flatten())
        with rng("backward", self.device):
            loss.backward()
        with rng("optimizer", self.device):
            self.opt.step()
        return loss

    def step(self, ranges: bool = False) -> torch.Tensor:
        """One optimizer step (then the merge hook); returns the (device) loss. `ranges` adds NVTX/profiler
        ranges (eager only: a replayed graph is one range)."""
        tokens = self.batch(self.step_no)
        if self.graphed is not None:
            loss = self.graphed(tokens)
        else:
            loss = self._body(tokens, ranges).detach()
            self.opt.zero_grad(set_to_none=True)
        self.step_no += 1
        self.hook(self.step_no)
        return loss


@contextlib.contextmanager
def _no_ranges(name, device):
    yield


@contextlib.contextmanager
def _ranges(name, device):
    with torch.profiler.record_function(name):
        if device.type == "cuda":
            torch.cuda.nvtx.range_push(name)
        try:
            yield
        finally:
            if device.type == "cuda":
                torch.cuda.nvtx.range_pop()


def phase_peaks(trainer: Trainer) -> dict:
    """One extra (untimed, unrecorded) step with the allocator peak reset at each phase: where the peak
    falls differs by method (AdamW at the optimizer step, POET during forward/backward), so the bare
    'activations = peak - tensors' split is read together with these."""
    out = {}
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    out["before_step"] = base
    tokens = trainer.batch(trainer.step_no)
    torch.cuda.reset_peak_memory_stats()
    with trainer.hook.autocast("cuda"):
        logits = trainer.step_model(tokens[:, :-1])
    loss = F.cross_entropy(logits.float().flatten(0, 1), tokens[:, 1:].flatten())
    torch.cuda.synchronize()
    out["forward"] = torch.cuda.max_memory_allocated()
    out["activations_saved"] = torch.cuda.memory_allocated() - base
    del logits
    torch.cuda.reset_peak_memory_stats()
    loss.backward()
    torch.cuda.synchronize()
    out["backward"] = torch.cuda.max_memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    trainer.opt.step()
    trainer.opt.zero_grad(set_to_none=True)
    trainer.step_no += 1
    trainer.hook(trainer.step_no)
    torch.cuda.synchronize()
    out["optimizer"] = torch.cuda.max_memory_allocated()
    out["peak_phase"] = max(("forward", "backward", "optimizer"), key=lambda k: out[k])
    return out


class ProgressLog:
    """on_progress for run_train_point: one line to stderr (the point's log) at most every `every_s` seconds,
    at every evaluation and at the last step, so a long point killed from outside (a machine's deadline)
    leaves how far it got and its losses so far. Reading the loss syncs the device: outside timed steps,
    once per line."""

    def __init__(self, every_s: float = 30.0, stream=None, clock=time.monotonic):
        self.every_s, self.stream, self.clock = every_s, stream, clock
        self.start = self.last = clock()

    def __call__(self, step: int, total: int, loss, evaluated: dict | None = None) -> None:
        now = self.clock()
        if evaluated is None and step < total and now - self.last < self.every_s:
            return
        self.last = now
        line = f"progress: step {step}/{total}, loss {float(loss):.4f}, {now - self.start:.0f}s"
        if evaluated is not None:
            line += f", eval loss {evaluated['loss']:.4f} ppl {evaluated['ppl']:.1f}"
        print(line, file=self.stream or sys.stderr, flush=True)


def run_train_point(cfg: dict, on_progress=None, world: World | None = None) -> tuple[dict, Trainer]:
    """Run warm-up + timed steps. Returns (metrics, trainer) — the trainer is reused for profiling.
    In a multi-process point every rank runs this; the metrics are the same on all ranks (rank 0 writes
    them): losses are means over ranks, memory per rank, tokens/s of the global batch."""
    from ..distributed import device_for

    world = world or World()
    device = device_for(cfg["device"], world)
    trainer = Trainer(cfg, device, world)
    trainable, total = count_params(trainer.model)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        cpu_baseline = None
    else:
        reset_cpu_peak()
        # the process's own RSS (interpreter, libtorch) beyond the model's tensors, kept out of the breakdown
        params = sum(_nbytes(p) for p in trainer.model.parameters())
        cpu_baseline = max(0, cpu_peak_rss() - params)
    monitor = NvmlMonitor().start() if cuda else None
    state_before = monitor.device_state() if monitor else {}

    losses, evals = [], []
    timer = StepTimer(device)
    warm, steps = cfg["warmup_steps"], cfg["steps"]
    eval_every = cfg.get("eval_every", 0)
    val = trainer.data.val_batches(cfg["batch_size"], cfg["seq_len"], cfg.get("eval_batches", 2)) \
        if eval_every else None
    frames_in_timed = 0  # torch.compile frames compiled inside timed steps (evaluations between them excluded)
    for i in range(warm + steps):
        timed = i >= warm
        if timed:
            frames = compiled_frames()
            timer.start()
        losses.append(trainer.step())
        if timed:
            timer.stop()
            frames_in_timed += compiled_frames() - frames
        evaluated = None
        if eval_every and (i + 1) % eval_every == 0:
            loss, ppl = _eval(trainer.model, val, device, trainer.hook.autocast(device.type))
            evaluated = {"step": i + 1, "loss": loss, "ppl": ppl}
            evals.append(evaluated)
        if on_progress:
            on_progress(i + 1, warm + steps, losses[-1], evaluated)
    times = timer.durations()
    from ..distributed import mean_over_ranks

    losses = [float(x) for x in mean_over_ranks(torch.stack(losses).float(), world).cpu()]

    if cuda:
        peak = torch.cuda.max_memory_allocated()
        reserved = torch.cuda.max_memory_reserved()
        monitor.stop()
        nvml_peak = monitor.peak
        # an extra eager step would accumulate into the graph's static gradients: no phase split there
        phases = phase_peaks(trainer) if trainer.graphed is None else None
    else:
        peak, reserved, nvml_peak = cpu_peak_rss(), None, None
    tokens = cfg["batch_size"] * cfg["seq_len"] * world.size  # the global batch
    tps = [tokens / t for t in times if t > 0]
    stats = summarize(tps)
    step_stats = summarize(times)
    flops = train_step_flops(cfg["model"], cfg["method"], cfg.get("block_size"), cfg["batch_size"],
                             cfg["seq_len"], vocab_size=cfg.get("vocab_size"))
    from ..env import static_env

    peak_flops = bf16_peak_flops(static_env().get("device_name"), cfg["dtype"]) if cuda else None
    mfu = flops / step_stats["median"] / peak_flops if (peak_flops and step_stats["median"]) else None
    metrics = {
        "peak_memory_bytes": int(peak),
        "peak_reserved_bytes": reserved,
        "nvml_peak_bytes": nvml_peak,
        "memory_breakdown_bytes": memory_breakdown(trainer.model, trainer.opt,
                                                   int(peak) - (cpu_baseline or 0)),
        "cpu_process_baseline_bytes": cpu_baseline,
        "tokens_per_s": stats["median"],
        "tokens_per_s_iqr": stats["iqr"],
        "n_timed_steps": stats["n"],
        "noisy": stats["noisy"],
        "step_time_s": step_stats["median"],
        "step_times_s": times,
        "losses": losses,
        "final_loss": losses[-1] if losses else None,
        "eval": evals,
        "flops_per_step": flops,
        "mfu": mfu,
        "trainable_params": trainable,
        "total_params": total,
        "merges": trainer.hook.merges,
        "data": trainer.data.describe(),
        # torch.compile frames compiled during the timed steps (recompiles included): > 0 means compile time
        # is inside tokens/s
        "compiled_frames_in_timed_steps": frames_in_timed,
    }
    if cfg.get("measure_merge"):  # after every timed number and peak above: the merge changes neither
        metrics["merge_cost"] = (measure_merge_cost(trainer, device, step_stats["median"])
                                 if trainer.hook.layers else None)
    if trainer.model_cayley is not None:  # how the layers were grouped: "block" falls back to layer or model
        metrics["cayley_evaluations_per_step"] = len(trainer.model_cayley.chunks)  # scope on unusual names
    metrics.update(run_facts(cfg))
    if timer.delay_ms:
        metrics["injected_delay_ms"] = timer.delay_ms
    if cuda:
        metrics["phase_peaks_bytes"] = phases
        metrics["gpu_state_before"] = state_before
        metrics["gpu_state_after"] = monitor.device_state()
        metrics["other_gpu_processes"] = sorted(monitor.other_processes)
    if world.distributed:
        _distributed_metrics(metrics, trainer, world)
    return metrics, trainer


def _distributed_metrics(metrics: dict, trainer: Trainer, world: World) -> None:
    """Per-rank memory (max and list), global batch, computed collective bytes; on every rank."""
    from ..distributed import comm_bytes_per_merge, comm_bytes_per_step, gather

    per_rank = gather({k: metrics.get(k) for k in ("peak_memory_bytes", "peak_reserved_bytes",
                                                   "nvml_peak_bytes", "step_time_s")}, world)
    peaks = [r["peak_memory_bytes"] for r in per_rank]
    metrics["peak_memory_bytes_rank0"] = metrics["peak_memory_bytes"]
    metrics["peak_memory_bytes"] = max(peaks)
    metrics["peak_memory_bytes_per_rank"] = peaks
    if all(r["peak_reserved_bytes"] is not None for r in per_rank):
        metrics["peak_reserved_bytes_per_rank"] = [r["peak_reserved_bytes"] for r in per_rank]
        metrics["peak_reserved_bytes"] = max(metrics["peak_reserved_bytes_per_rank"])
    metrics["step_time_s_per_rank"] = [r["step_time_s"] for r in per_rank]
    metrics["nproc"] = world.size
    metrics["parallel"] = world.parallel
    metrics["global_batch_size"] = trainer.cfg["batch_size"] * world.size
    metrics["tokens_per_s_per_rank"] = (metrics["tokens_per_s"] / world.size
                                        if metrics["tokens_per_s"] is not None else None)
    metrics["tokens_per_s_is_global"] = True
    metrics["memory_breakdown_is_rank0"] = True
    metrics["comm_bytes_per_step_computed"] = comm_bytes_per_step(trainer.model, world)
    per_merge = comm_bytes_per_merge(trainer.model, world)
    if per_merge:
        metrics["comm_bytes_per_merge_computed"] = per_merge


def measure_merge_cost(trainer, device: torch.device, step_time_s: float | None) -> dict:
    """The cost of one merge (fold R, P into W0, redraw permutations, reset the skew state), which timed
    steps never include unless merge_every divides them: the merge alone, a step followed by a merge, and
    the peak memory of that merging step, beside a plain step and amortized over merge_every."""
    cuda = device.type == "cuda"
    timer = StepTimer(device, inject_delay=False)  # the gate's injected delay belongs to timed steps only
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated() if cuda else None
    timer.start()
    trainer.hook.merge_now()
    timer.stop()
    merge_peak = torch.cuda.max_memory_allocated() if cuda else None
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    timer.start()
    trainer.step()
    trainer.hook.merge_now()
    timer.stop()
    step_merge_peak = torch.cuda.max_memory_allocated() if cuda else None
    merge_s, step_merge_s = timer.durations()
    every = trainer.hook.merge_every
    return {
        "merge_time_s": merge_s,
        "merge_step_time_s": step_merge_s,
        "plain_step_time_s": step_time_s,
        "merge_transient_bytes": (merge_peak - before) if cuda else None,
        "merge_step_peak_bytes": step_merge_peak,
        "merge_every": every,
        "amortized_s_per_step": merge_s / every if every > 0 else None,
        "amortized_fraction_of_step": (merge_s / every / step_time_s) if (every > 0 and step_time_s) else None,
    }
