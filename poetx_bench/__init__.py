"""poetx-bench: benchmarks for POET / POET-X against standard optimizers."""
__version__ = "0.1.0"
