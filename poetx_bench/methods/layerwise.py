"""Per-layer weight updates: one optimizer per parameter, stepped from the parameter's
post-accumulate-grad hook as soon as its gradient is complete, and the gradient freed there, so the
whole model's gradient is never held at once (GaLore's "layer-wise" update; galore-torch and apollo-torch
ship the optimizers but not the hooks). The harness still sees one optimizer: `step` is a no-op (the
hooks already stepped), `state` merges the per-parameter states and adds each low-rank projector's matrix
(kept inside a Python projector object the byte count would miss)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

# points these methods cannot measure as named (child.skip_reason reads MethodSpec.skip_reason)
CUDAGRAPH_REASON = "per-layer optimizer steps run in backward hooks, outside a captured CUDA graph"


def skip_reason(cfg: dict) -> str | None:
    return CUDAGRAPH_REASON if cfg.get("compile") == "cudagraph" else None


class LayerwiseOptimizer:
    """`pairs`: (parameter, its own optimizer). Registers the hooks at construction."""

    # the memory breakdown counts one parameter's gradient, not the model's (each is freed in its hook)
    holds_full_gradients = False

    def __init__(self, pairs: Iterable[tuple[nn.Parameter, torch.optim.Optimizer]]):
        self.pairs = list(pairs)
        self.steps = 0  # hook calls, all parameters together
        self.handles = [p.register_post_accumulate_grad_hook(self._hook(opt)) for p, opt in self.pairs]

    def _hook(self, opt) -> Callable:
        def hook(p: torch.Tensor) -> None:
            opt.step()
            p.grad = None  # the full-rank gradient lives only until its own update
            self.steps += 1
        return hook

    @property
    def optimizers(self) -> list:
        return [opt for _, opt in self.pairs]

    @property
    def param_groups(self) -> list[dict]:
        return [g for opt in self.optimizers for g in opt.param_groups]

    @property
    def state(self) -> dict:
        out = {}
        for opt in self.optimizers:
            for p, st in opt.state.items():
                st = dict(st)
                proj = st.get("projector")
                matrix = getattr(proj, "ortho_matrix", None)
                if torch.is_tensor(matrix):
                    st["projector_matrix"] = matrix
                out[p] = st
        return out

    def step(self, closure=None):
        """The hooks stepped every parameter during backward; nothing is left to do here."""
        return closure() if closure is not None else None

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p, _ in self.pairs:
            p.grad = None

    def state_dict(self) -> dict:
        return {"optimizers": [opt.state_dict() for opt in self.optimizers]}

    def load_state_dict(self, state: dict) -> None:
        for opt, s in zip(self.optimizers, state["optimizers"], strict=True):
            opt.load_state_dict(s)

    def remove_hooks(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


def split_hidden(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(the hidden linear weights that get the low-rank projection: the 2-D weight of every nn.Linear but
    lm_head, every other trainable parameter: embeddings, norms, lm_head)."""
    hidden = [m.weight for name, m in model.named_modules()
              if isinstance(m, nn.Linear) and name.rsplit(".", 1)[-1] != "lm_head" and m.weight.ndim == 2
              and m.weight.requires_grad]
    ids = {id(p) for p in hidden}
    return hidden, [p for p in model.parameters() if p.requires_grad and id(p) not in ids]


def prepare_layerwise(model: nn.Module, ctx, hidden_opt: Callable, rest_opt: Callable):
    """The build shared by the per-layer methods: materialise the model, give each hidden matrix
    `hidden_opt(index, param)` and every other parameter `rest_opt(param)`, step them from hooks."""
    from .base import MergeHook, Prepared, materialize_on

    materialize_on(model, ctx.device, ctx.seed)
    hidden, rest = split_hidden(model)
    pairs = [(p, hidden_opt(i, p)) for i, p in enumerate(hidden)] + [(p, rest_opt(p)) for p in rest]
    opt = LayerwiseOptimizer(pairs)
    return Prepared(model, opt, MergeHook(model, opt, ctx.merge_every))
