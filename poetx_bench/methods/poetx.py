"""POET-X, input-centric: `poetx-fast` (autograd saves activations) and `poetx-mem` (recomputes them in
backward). Same optimisation and hyperparameters as POET; the layers come from a POET-X backend
(poetx_bench/backends: torch, triton, or the authors' official code, which builds its own optimizer)."""

from __future__ import annotations

from .base import MethodSpec, Prepared
from .flops import poet_train_flops
from .poet import HPARAMS, build_poet_family, mid_training


def _build(method: str):
    ours = build_poet_family(method)
    mode = method.split("-")[1]

    def build(model, block_size, hp, ctx) -> Prepared:
        if ctx.backend == "official":
            from ..backends import official

            return Prepared(*official.prepare(model, method, block_size, ctx.device, ctx.seed, ctx.merge_every,
                                              init=ctx.official_init))
        if ctx.backend and "poetx_cls" not in ctx.layer_opts:
            from dataclasses import replace

            from ..backends import poetx_layer_class

            cls = poetx_layer_class(ctx.backend, ctx.block_impl, ctx.cayley_keep)
            ctx = replace(ctx, layer_opts={**ctx.layer_opts, "poetx_cls": cls})
        return ours(model, block_size, hp, ctx)

    def build_layer(fin, fout, b, cfg, device, dtype):
        import torch

        from ..backends import make_poetx_layer

        backend = cfg.get("backend", "torch")
        layer = make_poetx_layer(backend, fin, fout, b, mode, block_impl=cfg.get("block_impl", "auto"),
                                 cayley_keep=cfg.get("cayley_keep", "params"), device=device, dtype=dtype)
        if backend != "official":
            return mid_training(layer)
        with torch.no_grad():  # non-trivial transforms, as mid-training (its permutations start random)
            layer.oft_R.normal_(0, 1e-2)
        return layer

    return build, build_layer


def _spec(name: str, display: str, color: str, description: str) -> MethodSpec:
    build, build_layer = _build(name)
    return MethodSpec(name, display, color, description, build=build, train_flops=poet_train_flops,
                      hparams=HPARAMS, uses_blocks=True, uses_backend=True, build_layer=build_layer)


SPECS = [
    _spec("poetx-fast", "POET-X (fast)", "#ff7f0e", "POET-X input-centric, autograd saves activations"),
    _spec("poetx-mem", "POET-X (mem)", "#2ca02c", "POET-X input-centric, recomputes activations in backward"),
]
