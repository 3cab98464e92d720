"""Old import path of the point model, kept for scripts and tests: it lives in poetx_bench.results.point,
where the gate reads it without the report package."""

from ..results.point import (
    KEY_FIELDS,
    Point,
    dedupe,
    find_result_files,
    load_points,
    number,
    read_jsonl,
    warn,
)

__all__ = ["KEY_FIELDS", "Point", "dedupe", "find_result_files", "load_points", "number", "read_jsonl", "warn"]
