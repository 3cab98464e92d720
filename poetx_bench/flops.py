"""Model FLOPs per training step, for MFU.

Formula (per token, forward + backward, 2 FLOPs per multiply-accumulate):
  dense layers  N_lin = n_layers (4 h^2 + 3 h f) linear weights, lm_head h V.
  attention     12 n_layers h L (QK^T and AV, forward + backward, not halved for causality; PaLM).
  AdamW         6 (N_lin + h V)  (forward 2, input gradient 2, weight gradient 2).
  POET family   W0 is frozen, so the dense layers cost 4 N_lin (no weight gradient); lm_head 6 h V;
                block-diagonal work per linear: forward 2 (in b_in + out b_out), backward twice that
                (input gradient and block gradient), so 6 (in b_in + out b_out) in all;
                plus, once per step (not per token), the Cayley-Neumann blocks: (terms + 1) block
                products of 2 b^3 forward and twice that backward.
POET (weight-centric) and both POET-X modes are charged the same *model* FLOPs: the dense weight
build of POET and the recomputation of POET-X mem are overheads, which MFU should expose, not reward.
"""

from __future__ import annotations

from .reference.blocks import BlockLayout
from .reference.methods import METHODS
from .reference.models import MODEL_CONFIGS


def _linear_shapes(h: int, f: int) -> list[tuple[int, int]]:
    return [(h, h)] * 4 + [(h, f), (h, f), (f, h)]


def _side_block_work(dim: int, b: int) -> int:
    lay = BlockLayout(dim, b)
    return lay.n_full * lay.b * lay.b + lay.tail * lay.tail  # MACs per token


def _side_cayley(dim: int, b: int) -> int:
    lay = BlockLayout(dim, b)
    return lay.n_full * lay.b ** 3 + lay.tail ** 3


def train_step_flops(model: str, method: str, block_size: int | None, batch_size: int, seq_len: int,
                     neumann_terms: int = 3, vocab_size: int | None = None) -> float:
    cfg = MODEL_CONFIGS[model]
    h, f, n = cfg.hidden, cfg.intermediate, cfg.n_layers
    V = vocab_size or cfg.vocab_size
    tokens = batch_size * seq_len
    n_lin = n * (4 * h * h + 3 * h * f)
    attn = 12 * n * h * seq_len
    if not METHODS[method].uses_blocks:
        return float(tokens * (6 * (n_lin + h * V) + attn))
    block_macs = sum(_side_block_work(i, block_size) + _side_block_work(o, block_size)
                     for i, o in _linear_shapes(h, f)) * n
    cayley_macs = sum(_side_cayley(i, block_size) + _side_cayley(o, block_size)
                      for i, o in _linear_shapes(h, f)) * n
    per_token = 4 * n_lin + 6 * h * V + attn + 6 * block_macs
    per_step_cayley = 3 * 2 * (neumann_terms + 1) * cayley_macs
    return float(tokens * per_token + per_step_cayley)


def layer_fwd_bwd_flops(method: str, fin: int, fout: int, tokens: int, block_size: int | None) -> float:
    """One linear layer forward + backward (nn.Linear trains its weight; POET's W0 is frozen)."""
    gemm = 2 * fin * fout * tokens
    if method == "linear":
        return 3.0 * gemm
    block = 2 * tokens * (_side_block_work(fin, block_size) + _side_block_work(fout, block_size))
    return 2.0 * gemm + 3.0 * block
