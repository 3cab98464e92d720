"""Model FLOPs per training step, for MFU: each method declares its formula (MethodSpec.train_flops;
the shared formulas and their derivation are in poetx_bench/methods/flops.py)."""

from __future__ import annotations

from .methods import get_method
from .methods.flops import side_block_work
from .reference.models import MODEL_CONFIGS

LINEAR = "linear"  # layer suites' nn.Linear baseline (not a training method)


def train_step_flops(model: str, method: str, block_size: int | None, batch_size: int, seq_len: int,
                     vocab_size: int | None = None) -> float:
    cfg = MODEL_CONFIGS[model]
    vocab = vocab_size or cfg.vocab_size
    return get_method(method).train_flops(cfg, block_size, batch_size * seq_len, seq_len, vocab)


def layer_fwd_bwd_flops(method: str, fin: int, fout: int, tokens: int, block_size: int | None) -> float:
    """One linear layer forward + backward (nn.Linear trains its weight; POET's W0 is frozen)."""
    gemm = 2 * fin * fout * tokens
    if method == LINEAR:
        return 3.0 * gemm
    block = 2 * tokens * (side_block_work(fin, block_size) + side_block_work(fout, block_size))
    return 2.0 * gemm + 3.0 * block
