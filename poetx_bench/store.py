"""Older import path of the results store; the format lives in `poetx_bench.results`."""

from .results import FINAL_STATUSES, SCHEMA_VERSION, append_row, finished_point_ids, read_rows

__all__ = ["FINAL_STATUSES", "SCHEMA_VERSION", "append_row", "finished_point_ids", "read_rows"]
