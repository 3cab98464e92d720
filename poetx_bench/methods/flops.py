"""Model-FLOP formulas the methods share (poetx_bench/flops.py dispatches through the registry).

Per token, forward + backward, 2 FLOPs per multiply-accumulate:
  dense layers  N_lin = n_layers (4 h^2 + 3 h f) linear weights, lm_head h V.
  attention     12 n_layers h L (QK^T and AV, forward + backward, not halved for causality; PaLM).
  dense training (every weight trains)  6 (N_lin + h V)  (forward 2, input gradient 2, weight gradient 2);
                optimizer work (e.g. Newton-Schulz iterations) is not model FLOPs.
  POET family   W0 is frozen, so the dense layers cost 4 N_lin (no weight gradient); lm_head 6 h V;
                block-diagonal work per linear: forward 2 (in b_in + out b_out), backward twice that
                (input gradient and block gradient), so 6 (in b_in + out b_out) in all;
                plus, once per step (not per token), the Cayley-Neumann blocks: (terms + 1) block
                products of 2 b^3 forward and twice that backward.
POET (weight-centric) and both POET-X modes are charged the same *model* FLOPs: the dense weight
build of POET and the recomputation of POET-X mem are overheads, which MFU should expose, not reward.
"""

from __future__ import annotations

from ..reference.blocks import BlockLayout

NEUMANN_TERMS = 3


def linear_shapes(h: int, f: int) -> list[tuple[int, int]]:
    return [(h, h)] * 4 + [(h, f), (h, f), (f, h)]


def side_block_work(dim: int, b: int) -> int:
    lay = BlockLayout(dim, b)
    return lay.n_full * lay.b * lay.b + lay.tail * lay.tail  # MACs per token


def side_cayley(dim: int, b: int) -> int:
    lay = BlockLayout(dim, b)
    return lay.n_full * lay.b ** 3 + lay.tail ** 3


def _common(cfg, seq_len: int, vocab: int):
    h, f, n = cfg.hidden, cfg.intermediate, cfg.n_layers
    return h, f, n, n * (4 * h * h + 3 * h * f), 12 * n * h * seq_len


def dense_train_flops(cfg, block_size, tokens: int, seq_len: int, vocab: int) -> float:
    """Every weight trains (AdamW and other dense optimizers): 6 FLOPs per weight per token, plus attention."""
    h, _, _, n_lin, attn = _common(cfg, seq_len, vocab)
    return float(tokens * (6 * (n_lin + h * vocab) + attn))


def poet_train_flops(cfg, block_size, tokens: int, seq_len: int, vocab: int,
                     neumann_terms: int = NEUMANN_TERMS) -> float:
    """Frozen W0, block-diagonal transforms on both sides, Cayley-Neumann blocks once per step."""
    h, f, n, n_lin, attn = _common(cfg, seq_len, vocab)
    block_macs = sum(side_block_work(i, block_size) + side_block_work(o, block_size)
                     for i, o in linear_shapes(h, f)) * n
    cayley_macs = sum(side_cayley(i, block_size) + side_cayley(o, block_size)
                      for i, o in linear_shapes(h, f)) * n
    per_token = 4 * n_lin + 6 * h * vocab + attn + 6 * block_macs
    per_step_cayley = 3 * 2 * (neumann_terms + 1) * cayley_macs
    return float(tokens * per_token + per_step_cayley)
