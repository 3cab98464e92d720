"""Kernel micro-benchmarks (`kind = "kernel"` rows): one table, each op's median time per backend, shape
and block size. Absent from reports without kernel rows."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..results.point import Point
from .document import MISSING, Section, Table, status_text, write_csv

COLUMNS = ("op", "backend", "dim", "block_size", "tokens", "dtype", "device")


def _cell(col: str, value) -> str:
    if col == "status":
        return status_text(value)
    if value is None:
        return MISSING
    if isinstance(value, float):
        return f"{value:.4g}" if col.endswith("ms") else f"{value:.3g}"
    return str(value)


def _percent(frac):
    return None if frac is None else round(100 * frac, 1)


def kernel_section(points: list[Point], out_dir: Path) -> Section | None:
    rows = [p for p in points if p.kind == "kernel"]
    if not rows:
        return None
    records = []
    for p in sorted(rows, key=lambda q: tuple(str(q.cfg(c, "")) for c in COLUMNS)):
        rec = {c: p.cfg(c) for c in COLUMNS}
        rec.update({"status": p.status, "median ms": p.metric("kernel_ms") if p.ok else None,
                    "IQR ms": p.metric("kernel_ms_iqr") if p.ok else None,
                    "samples": len(p.series("samples_ms")) if p.ok else None,
                    "TFLOP/s": p.metric("tflops") if p.ok else None, "TB/s": p.metric("tbps") if p.ok else None,
                    "% of floor": _percent(p.metric("floor_frac")) if p.ok else None,
                    "latency-bound": {True: "yes", False: "no"}.get(p.metrics.get("latency_bound")),
                    "timer": p.metrics.get("timer"), "point_id": p.point_id})
        records.append(rec)
    raw = pd.DataFrame.from_records(records)
    rel = "tables/kernels.csv"
    write_csv(raw, out_dir / rel)
    shown = pd.DataFrame.from_records([{k: _cell(k, v) for k, v in rec.items() if k != "point_id"}
                                       for rec in records])
    sec = Section("Kernel micro-benchmarks", [
        "Each POET-X kernel and the torch ops the reference path uses for the same result, timed alone: the "
        "median of every repeat's time (triton.testing.do_bench on CUDA, a perf_counter loop on CPU; CPU "
        "Triton rows ran in the interpreter and say nothing about a GPU). FLOP and bytes are the minimum "
        "work of kernels/NOTES.md; '% of floor' divides the floor max(FLOP / the dtype's peak, bytes / HBM "
        "bandwidth) (shared/perf/floors.md) by the time, on GPUs whose peaks are known; 'latency-bound' marks "
        "kernels under 20 us, where a launch's fixed cost dominates whatever the floor."])
    sec.add(Table(shown.astype(str), csv=rel))
    return sec
