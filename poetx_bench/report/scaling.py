"""Multi-process scaling: each ok train row with nproc > 1 against the same point at nproc 1.

`batch_size` is per rank, so the pair is weak scaling (each rank keeps the single process's batch):
scaling efficiency = global tokens/s at N processes / (N x tokens/s at 1 process), 1.0 is perfect.
Pairs follow the report's machine rule (same device model and memory cap, `--allow-different-devices`).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .. import machines
from ..results.point import KEY_FIELDS, Point
from .document import MISSING, Section, Table, fmt_int, fmt_num

IGNORED = ("nproc", "parallel")


def _single_key(p: Point) -> tuple:
    return tuple(p.cfg(k) for k in KEY_FIELDS if k not in IGNORED)


def scaling_records(points: list[Point], allow_different_devices: bool = False) -> list[dict]:
    singles: dict[tuple, list[Point]] = {}
    for p in points:
        if p.kind == "train" and p.ok and (p.nproc or 1) == 1:
            singles.setdefault(_single_key(p), []).append(p)
    records = []
    for p in points:
        n = p.nproc or 1
        if p.kind != "train" or n <= 1:
            continue
        refs = singles.get(_single_key(p), [])
        if not allow_different_devices:
            refs = [r for r in refs if machines.mismatch(r, p) is None]
        ref = refs[-1] if refs else None
        tps = p.metric("tokens_per_s") if p.ok else None
        tps1 = ref.metric("tokens_per_s") if ref else None
        peak = p.metric("peak_memory_bytes") if p.ok else None
        peak1 = ref.metric("peak_memory_bytes") if ref else None
        per_rank = p.series("peak_memory_bytes_per_rank") if p.ok else None
        comm = _ring_bytes_per_rank(p.metrics.get("comm_bytes_per_step_computed")) if p.ok else None
        records.append({
            "point": p.label(), "nproc": n, "parallel": p.cfg("parallel"), "status": p.status,
            "global_tokens_per_s": tps, "single_tokens_per_s": tps1,
            "scaling_efficiency": tps / (n * tps1) if tps and tps1 else None,
            "max_rank_peak_bytes": peak, "single_peak_bytes": peak1,
            "peak_per_rank_vs_single": peak / peak1 if peak and peak1 else None,
            "peak_bytes_per_rank": per_rank, "comm_ring_send_bytes_per_rank": comm,
            "note": "" if ref else "no ok nproc 1 row of this point (on this machine)",
            "point_id": p.point_id, "single_point_id": ref.point_id if ref else None,
        })
    return records


def _ring_bytes_per_rank(comm) -> float | None:
    """Bytes one rank sends per step over all collectives (ring algorithm), from the row's computed record."""
    if not isinstance(comm, dict):
        return None
    sent = [v["ring_send_bytes_per_rank"] for v in comm.values()
            if isinstance(v, dict) and isinstance(v.get("ring_send_bytes_per_rank"), (int, float))]
    return float(sum(sent)) if sent else None


def _gib_list(values) -> str:
    if not isinstance(values, list) or not values:
        return MISSING
    return " / ".join(fmt_num(v / 2**30) for v in values)


def scaling_section(points: list[Point], out_dir: Path, allow_different_devices: bool = False) -> Section | None:
    """The section, or None (left out of the report) when no row has nproc > 1."""
    from .tables import _save_table, frame

    title = "Multi-process scaling"
    records = scaling_records(points, allow_different_devices)
    if not records:
        return None
    csv = _save_table(frame(records), out_dir, "scaling")
    shown = [{
        "point": r["point"], "N": fmt_int(r["nproc"]), "status": r["status"],
        "global tokens/s": fmt_num(r["global_tokens_per_s"], 0),
        "tokens/s at N=1": fmt_num(r["single_tokens_per_s"], 0),
        "scaling efficiency": fmt_num(r["scaling_efficiency"]) if r["scaling_efficiency"] else (r["note"] or MISSING),
        "max rank peak / N=1 peak": fmt_num(r["peak_per_rank_vs_single"]),
        "peak GiB per rank": _gib_list(r["peak_bytes_per_rank"]),
        "GiB sent per rank and step (computed)": fmt_num(r["comm_ring_send_bytes_per_rank"] / 2**30)
        if r["comm_ring_send_bytes_per_rank"] else MISSING,
    } for r in records]
    sec = Section(title)
    sec.add("Scaling efficiency (computed here, from the rows) = global tokens/s at N processes / (N × tokens/s "
            "of the same point at N = 1); `batch_size` is per rank, so this is weak scaling and 1.0 is perfect. "
            "Peak memory of a multi-process row is its largest rank's. On CPU, torchrun runs each rank with "
            "OMP_NUM_THREADS=1, so a multi-threaded N = 1 point is no fair baseline there. Communication is "
            "computed from parameter sizes, not measured: the bytes one rank sends per step over all collectives "
            "under a ring algorithm (DDP: the gradients' all-reduce; FSDP2: parameter all-gathers and the "
            "gradients' reduce-scatter).")
    sec.add(Table(pd.DataFrame(shown), csv=csv))
    return sec
