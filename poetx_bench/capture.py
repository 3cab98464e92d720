"""Whole-step capture, the `compile` config key: none (eager), compile (torch.compile of the model's
forward; backward through AOTAutograd) or cudagraph (forward, backward and optimizer step captured once
as one CUDA graph and replayed).

Why: at batch 1 and for small models a training step is hundreds of small launches, and the host, not
the GPU, sets the pace (a profile shows it as GPU idle time). Every method gets the same treatment, so
AdamW is compared at its own best setting. Merges run between replays and update W0, permutations,
skew parameters and optimizer state in place, so the captured addresses stay valid.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

COMPILE_MODES = ("none", "compile", "cudagraph")


def unavailable(mode: str, device: str, backend: str | None) -> str | None:
    """Why a point cannot run with this compile mode (None: it can)."""
    if mode not in COMPILE_MODES:
        return f"compile={mode!r} is not one of {', '.join(COMPILE_MODES)}"
    if mode == "cudagraph" and device != "cuda":
        return "compile=cudagraph needs CUDA"
    if mode != "none" and backend == "official":
        return "backend=official compiles its own layers (torch.compile inside poet_torch); use compile=none"
    return None


def compiled_frames() -> int:
    """Frames torch.compile (dynamo) has compiled in this process so far, recompiles included. Its change over
    the timed steps says whether compilation ran inside the timed window (the official backend compiles its
    own layer ops, and its timed steps were slow and noisy on the H100: this tells compile time from speed)."""
    try:
        from torch._dynamo.utils import counters
    except Exception:  # noqa: BLE001 - a torch without dynamo compiles nothing
        return 0
    return int(counters["frames"]["total"])


def make_capturable(optimizer: torch.optim.Optimizer) -> None:
    """Fused/foreach AdamW with device-side step counters, so `step()` can live inside a CUDA graph.
    Must run before the first step (state is created lazily at the first step)."""
    for group in optimizer.param_groups:
        group["capturable"] = True


def _warm_on_side_stream(fn: Callable[[], object], times: int):
    """Eager calls on a side stream before a capture, as torch.cuda.graphs requires; returns the last result."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    out = None
    with torch.cuda.stream(side):
        for _ in range(times):
            out = fn()
    torch.cuda.current_stream().wait_stream(side)
    return out


def graph_callable(fn: Callable[[], object], warmup: int = 2) -> Callable[[], None]:
    """fn (e.g. a layer's forward+backward that leaves gradients unset) captured once as a CUDA graph;
    returns its replay: the timed work is then the GPU work alone, without host launch overhead."""
    _warm_on_side_stream(fn, warmup)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


class CudaGraphStep:
    """Runs `body(tokens) -> loss` (forward, backward, optimizer.step; no zero_grad) as a CUDA graph.

    The first `warmup` calls run eagerly on a side stream (cuBLAS workspaces, autograd and allocator
    state settle there, as torch.cuda.graphs requires), each followed by zero_grad; the next call
    captures the body into a graph with gradients unset (so backward allocates them inside the graph's
    pool and every replay overwrites them) and every call from then on copies its tokens into the static
    input buffer and replays. Returns a copy of the loss (the static output is overwritten by the next
    replay).
    """

    def __init__(self, body: Callable[[torch.Tensor], torch.Tensor], optimizer: torch.optim.Optimizer,
                 warmup: int = 2):
        self.body = body
        self.optimizer = optimizer
        self.warmup = warmup
        self.calls = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_tokens: torch.Tensor | None = None
        self.static_loss: torch.Tensor | None = None

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.graph is None and self.calls <= self.warmup:
            def eager():
                loss = self.body(tokens)
                self.optimizer.zero_grad(set_to_none=True)
                return loss

            return _warm_on_side_stream(eager, 1).detach()
        if self.graph is None:
            self.static_tokens = tokens.clone()
            self.optimizer.zero_grad(set_to_none=True)
            torch.cuda.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self.static_loss = self.body(self.static_tokens).detach()
            self.graph = graph
        else:
            self.static_tokens.copy_(tokens, non_blocking=True)
        self.graph.replay()
        return self.static_loss.clone()
