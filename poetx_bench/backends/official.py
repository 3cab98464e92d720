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


INITS = ("own", "ours")


def prepare(model: nn.Module, method: str, block_size: int, device, seed: int | None, merge_every: int,
            init: str = "own"):
    """Materialise our Llama, let poet_torch replace its Linear layers (lm_head excluded, as its default),
    and build its optimizer. Returns (model, optimizer, hook) like poetx_bench.methods.prepare.

    init = "own": its layers keep their own draws (its W0 is our Llama's dense weight with unit rows, its
    permutations torch.randperm). init = "ours": every weight, W0 and permutation is set to what our POET-X
    point of the same seed starts from (`transplant`), so a loss-parity run compares the two codes on one
    starting point, not two draws."""
    import copy

    from poet_torch import POETConfig, get_poet_optimizer, replace_linear_with_poet

    from ..reference.models import materialize

    if init not in INITS:
        raise ValueError(f"official init must be one of {INITS}, got {init!r}")
    twin = None
    if init == "ours":
        if next(model.parameters()).device.type != "meta":
            raise ValueError("official init 'ours' needs the model on the meta device (built, not materialised)")
        twin = our_twin(copy.deepcopy(model), method, block_size, device, seed)
    if next(model.parameters()).device.type == "meta":
        materialize(model, device, seed)
    mode = method.split("-")[1]
    config = POETConfig(block_size=block_size, mem_efficient_mode=(mode == "mem"), merge_interval=merge_every)
    replace_linear_with_poet(model, block_size=block_size, exclude_modules=config.exclude_modules,
                             mem_efficient_mode=config.mem_efficient_mode)
    if twin is not None:
        transplant(twin, model)
        del twin
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # the twin's blocks would stay reserved and count in the reserved/NVML peaks
    optimizer = get_poet_optimizer(model, config)
    return model, optimizer, OfficialMergeHook(model, merge_every)


def our_twin(meta_model: nn.Module, method: str, block_size: int, device, seed: int | None) -> nn.Module:
    """Our POET-X model of the same seed, materialised as our own point would be (reference layers: the same
    parameters, buffers and draws as the Triton backend's, which subclasses them)."""
    from ..reference.convert import convert_model
    from ..reference.models import materialize

    convert_model(meta_model, method, block_size)
    return materialize(meta_model, device, seed)


@torch.no_grad()
def transplant(ours: nn.Module, official: nn.Module) -> int:
    """Give a poet_torch model exactly our model's starting point; returns how many POET layers were set.

    Ours computes y[:, perm_out] = blocks_out(F.linear(blocks_in(x[:, perm_in]), W0)) with W0 stored permuted
    (folded) and blocks u_k G_k^T; poet_torch computes y = (blocks(x[:, perm_in_inv] ...) W^T ...)[:, perm_out]
    with blocks u_k R_k and W stored in the same permuted frame. So: its W = our W0, its perm_in_inv = our
    perm_in (perm_in = our inv_perm_in), its perm_out = our inv_perm_out (perm_out_inv = our perm_out), and
    R_k = G_k^T, i.e. its skew parameters are the negatives of ours (both start at zero, and Adam maps a sign
    flip of every gradient to a sign flip of every update, so they stay negatives while the two agree).
    Every other parameter and buffer (embeddings, norms, lm_head) is copied by name."""
    from ..reference.layer_base import POETLayerBase

    mods = dict(official.named_modules())
    done, poet_names = 0, set()
    for name, layer in ours.named_modules():
        if not isinstance(layer, POETLayerBase):
            continue
        poet_names.add(name)
        theirs = mods.get(name)
        if theirs is None or not hasattr(theirs, "oft_R"):
            raise ValueError(f"transplant: our POET layer {name!r} has no poet_torch layer of that name (poet_torch "
                             f"keeps a Linear whose dimensions its block_size does not divide)")
        if layer.layout_in.tail or layer.layout_out.tail or layer.layout_in.b != theirs.block_size:
            raise ValueError(f"transplant: {name!r}: block layout {layer.layout_in.b} with tails does not map to "
                             f"poet_torch's block_size {theirs.block_size}")
        theirs.weight.copy_(layer.weight.to(theirs.weight.dtype))
        theirs.perm_in.copy_(layer.inv_perm_in.to(theirs.perm_in.dtype))
        theirs.perm_in_inv.copy_(layer.perm_in.to(theirs.perm_in_inv.dtype))
        theirs.perm_out.copy_(layer.inv_perm_out.to(theirs.perm_out.dtype))
        theirs.perm_out_inv.copy_(layer.perm_out.to(theirs.perm_out_inv.dtype))
        theirs.oft_R.zero_()
        done += 1
    inside = tuple(n + "." for n in poet_names)
    targets = {**dict(official.named_parameters()), **dict(official.named_buffers())}
    for name, t in [*ours.named_parameters(), *ours.named_buffers()]:
        if name.startswith(inside):
            continue
        if name not in targets or targets[name].shape != t.shape:
            raise ValueError(f"transplant: our {name!r} {tuple(t.shape)} has no poet_torch counterpart")
        targets[name].copy_(t.to(targets[name].dtype))
    return done
