"""Adapter for the authors' POET-X implementation, `poet_torch` (github.com/Sphere-AI-Lab/poet).

It is imported from wherever the user put it (a clone on PYTHONPATH), called through its public API as its
README shows (POETLinear / replace_linear_with_poet, get_poet_optimizer, merge_and_reinitialize), and never
copied here. Its own choices stay its own: torch.compile of the layer forward in fast mode, Triton
recomputation in mem mode, its AdamW with POET scaling, unit-norm rows of the copied W0.
"""

from __future__ import annotations

import functools

import torch
from torch import nn


@functools.lru_cache(maxsize=1)
def import_error() -> str | None:
    try:
        import poet_torch  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any import failure means "not available"
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return None


def version() -> str | None:
    """poet_torch's version and the commit of the clone it came from (a COMMIT file beside the package,
    written when the clone was copied, or the clone's own git HEAD)."""
    if import_error():
        return None
    import pathlib
    import subprocess

    import poet_torch

    root = pathlib.Path(poet_torch.__file__).resolve().parent.parent
    commit = ""
    if (root / "COMMIT").is_file():
        commit = (root / "COMMIT").read_text().strip()[:12]
    elif (root / ".git").exists():
        try:
            commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
                                    capture_output=True, text=True, timeout=5).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            commit = ""
    return f"{poet_torch.__version__}" + (f"+{commit}" if commit else "")


class TokensAsSequence(nn.Module):
    """A layer point's (tokens, features) input as one sequence (1, tokens, features) for a POETLinear: its
    mem-mode op unpacks (batch, seq, features) and fails on 2-D input (found on the H100: 'not enough values
    to unpack'), where in a model it always gets 3-D activations."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    @property
    def oft_R(self) -> nn.Parameter:  # noqa: N802 - poet_torch's name
        return self.layer.oft_R

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x.unsqueeze(0)).squeeze(0) if x.dim() == 2 else self.layer(x)


def build_layer(in_features: int, out_features: int, block_size: int, mode: str, device, dtype) -> nn.Module:
    """One official POETLinear, W0 drawn like ours (Gaussian, unit rows), random permutations (its default),
    taking 2-D token batches like our layers (TokensAsSequence)."""
    from poet_torch import POETLinear

    layer = POETLinear(in_features, out_features, block_size=block_size, bias=False, device=device, dtype=dtype,
                       mem_efficient_mode=(mode == "mem"))
    with torch.no_grad():
        w = torch.randn(out_features, in_features, device=device, dtype=torch.float32)
        layer.weight.copy_(w / w.norm(dim=1, keepdim=True))
    return TokensAsSequence(layer)


class OfficialMergeHook:
    """Calls poet_torch's merge_and_reinitialize after each optimizer step (its own interval logic)."""

    def __init__(self, model: nn.Module, merge_every: int):
        self.model = model
        self.merge_every = merge_every
        self.merges = 0

    def __call__(self, step: int) -> bool:
        from poet_torch import merge_and_reinitialize

        if self.merge_every <= 0 or step % self.merge_every:
            return False
        merge_and_reinitialize(self.model, step=step, merge_interval=self.merge_every)
        self.merges += 1
        return True

    def autocast(self, device_type: str):
        import contextlib

        return contextlib.nullcontext()


def prepare(model: nn.Module, method: str, block_size: int, device, seed: int | None, merge_every: int):
    """Materialise our Llama, let poet_torch replace its Linear layers (lm_head excluded, as its default),
    and build its optimizer. Returns (model, optimizer, hook) like poetx_bench.methods.prepare."""
    from poet_torch import POETConfig, get_poet_optimizer, replace_linear_with_poet

    from ..reference.models import materialize

    if next(model.parameters()).device.type == "meta":
        materialize(model, device, seed)
    mode = method.split("-")[1]
    config = POETConfig(block_size=block_size, mem_efficient_mode=(mode == "mem"), merge_interval=merge_every)
    replace_linear_with_poet(model, block_size=block_size, exclude_modules=config.exclude_modules,
                             mem_efficient_mode=config.mem_efficient_mode)
    optimizer = get_poet_optimizer(model, config)
    return model, optimizer, OfficialMergeHook(model, merge_every)
