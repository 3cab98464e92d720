"""Old import path of the training measurement, kept for scripts and tests; the body lives in
poetx_bench.points.training (the train kind is poetx_bench.points.train)."""

from .points.training import DTYPES, SyntheticTokens, Trainer, open_data, phase_peaks, run_train_point

__all__ = ["DTYPES", "SyntheticTokens", "Trainer", "open_data", "phase_peaks", "run_train_point"]
