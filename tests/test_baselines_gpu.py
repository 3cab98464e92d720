"""Baselines that only run on CUDA (bitsandbytes' 8-bit optimizers): does each make real updates?

galore-torch 1.0's `GaLoreAdamW8bit` calls bitsandbytes' `update_step` positionally; bitsandbytes >= 0.50
changed that signature, and the issue reports that the optimizer then silently makes zero updates. The suite's
`galore` method uses `GaLoreAdamW` (no bitsandbytes); these tests show on a GPU that it moves its parameters
and record what `GaLoreAdamW8bit` does with the pinned bitsandbytes."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.gpu


def _moves(opt_cls, steps: int = 3, **group) -> float:
    """Largest absolute change of a 256x512 weight after `steps` steps of random gradients."""
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(256, 512, device="cuda"))
    before = w.detach().clone()
    opt = opt_cls([{"params": [w], **group}], lr=1e-2)
    for _ in range(steps):
        w.grad = torch.randn_like(w)
        opt.step()
    torch.cuda.synchronize()
    return float((w.detach() - before).abs().max())


GALORE_GROUP = {"rank": 32, "update_proj_gap": 200, "scale": 0.25, "proj_type": "std"}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_galore_adamw_moves_parameters():
    galore_torch = pytest.importorskip("galore_torch")
    assert _moves(galore_torch.GaLoreAdamW, **GALORE_GROUP) > 1e-4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_galore_adamw8bit_with_pinned_bitsandbytes():
    """Records the known defect: with bitsandbytes 0.50.x, GaLoreAdamW8bit either raises or leaves the weight
    unchanged. If this fails, the pair works again and a `galore-8bit` method can be offered."""
    galore_torch = pytest.importorskip("galore_torch")
    bnb = pytest.importorskip("bitsandbytes")
    try:
        moved = _moves(galore_torch.GaLoreAdamW8bit, **GALORE_GROUP)
    except (TypeError, RuntimeError) as exc:  # a loud failure is also "no working 8-bit GaLore"
        pytest.skip(f"GaLoreAdamW8bit fails loudly with bitsandbytes {bnb.__version__}: {exc}")
    assert moved == 0.0, f"GaLoreAdamW8bit moved the weight by {moved} with bitsandbytes {bnb.__version__}"
    # the plain 8-bit AdamW of the same bitsandbytes does move it: the defect is galore-torch's call
    assert _moves(bnb.optim.AdamW8bit) > 1e-4
