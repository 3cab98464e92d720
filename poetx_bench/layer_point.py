"""Old import path of the single-layer measurement, kept for scripts and tests; the body lives in
poetx_bench.points.layer_timing (the layer kind is poetx_bench.points.layer)."""

from .points.layer_timing import CATEGORIES, build_layer, classify_op, run_layer_point

__all__ = ["CATEGORIES", "build_layer", "classify_op", "run_layer_point"]
