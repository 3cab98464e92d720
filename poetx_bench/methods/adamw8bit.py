"""8-bit AdamW (torchao 0.18, torchao.optim.AdamW8bit): both Adam moments block-wise quantised to 8 bits
(dynamic-tree code book, one float32 scale per `block_size` values) for every parameter of at least 4096
elements whose size the block divides; smaller ones keep float moments. Never a paged optimizer. Its step
is torch.compile'd per parameter shape (torchao's choice), so the first step of a point compiles."""

from __future__ import annotations

from .base import BETAS, HParam, MergeHook, MethodSpec, Prepared, materialize_on, needs_package
from .flops import dense_train_flops

HPARAMS = {
    "lr": HParam(float, 1e-3, "learning rate"),
    "weight_decay": HParam(float, 0.0, "decoupled weight decay"),
    "betas": BETAS,
    "eps": HParam(float, 1e-8, "Adam epsilon"),
    "block_size": HParam(int, 256, "quantisation block of the 8-bit moments"),
}

MIN_QUANT_SIZE = 4096  # torchao.optim: smaller parameters keep float moments


def build(model, block_size, hp, ctx) -> Prepared:
    from torchao.optim import AdamW8bit

    materialize_on(model, ctx.device, ctx.seed)
    opt = AdamW8bit([p for p in model.parameters() if p.requires_grad], lr=hp["lr"], betas=tuple(hp["betas"]),
                    eps=hp["eps"], weight_decay=hp["weight_decay"], block_size=hp["block_size"])
    return Prepared(model, opt, MergeHook(model, opt, ctx.merge_every))


def state_bytes(numel: int, element_size: int, block_size: int = 256) -> int:
    """Optimizer-state bytes of one parameter once stepped: a float32 step count and two moments, each 8-bit
    codes, a float32 scale per block and its own copy of the 256-entry float32 code book; or two moments in
    the parameter's dtype when torchao leaves the parameter unquantised."""
    if numel >= MIN_QUANT_SIZE and numel % block_size == 0:
        return 4 + 2 * (numel + numel // block_size * 4 + 256 * 4)
    return 4 + 2 * numel * element_size


SPECS = [
    MethodSpec("adamw-8bit", "AdamW (8-bit)", "#a6cee3",
               "AdamW with 8-bit block-wise moments (torchao AdamW8bit), parameters in the model dtype",
               build=build, train_flops=dense_train_flops, hparams=HPARAMS,
               skip_reason=needs_package("torchao.optim", "torchao")),
]
