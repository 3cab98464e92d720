"""POET-XQ: POET-X with W0 stored in int8 per output row (kernels/quantized.py), fast and mem modes.

Same optimisation, hyperparameters and merges as POET-X; the layers are always our row design (Triton kernels
where they run, their torch fallbacks elsewhere), so the POET-X backend key does not apply.
"""

from __future__ import annotations

from dataclasses import replace

from .base import MethodSpec, Prepared
from .flops import poet_train_flops
from .poet import HPARAMS, build_poet_family, mid_training


def _spec(name: str, mode: str, display: str, color: str, description: str) -> MethodSpec:
    ours = build_poet_family(f"poetx-{mode}")

    def build(model, block_size, hp, ctx) -> Prepared:
        from ..kernels.quantized import POETXQLinear

        return ours(model, block_size, hp, replace(ctx, layer_opts={**ctx.layer_opts, "poetx_cls": POETXQLinear}))

    def build_layer(fin, fout, b, cfg, device, dtype):
        from ..kernels.quantized import POETXQLinear

        return mid_training(POETXQLinear(fin, fout, b, mode=mode, device=device, dtype=dtype))

    return MethodSpec(name, display, color, description, build=build, train_flops=poet_train_flops,
                      hparams=HPARAMS, uses_blocks=True, build_layer=build_layer, poet_state=False)


SPECS = [
    _spec("poetxq", "fast", "POET-XQ (fast)", "#a0522d", "POET-X fast with W0 in int8 (per-row scales)"),
    _spec("poetxq-mem", "mem", "POET-XQ (mem)", "#d2a679", "POET-X mem with W0 in int8 (per-row scales)"),
]
