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
from . import names
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
            # one scaling line: the same point (every key field but nproc), parallelism and device model
            "curve": (_single_key(p), p.cfg("parallel"), str(machines.device_name(p)),
                      machines.memory_cap_bytes(p)),
            "method": p.method, "model": p.model, "seq_len": p.seq_len, "block_size": p.block_size,
            "batch_size": p.batch_size, "dtype": p.cfg("dtype"), "device": p.cfg("device"),
            "single_point": ref.label() if ref else None,
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
    curve = _scaling_figure(records, out_dir)
    if curve is not None:
        sec.add(curve)
    paper_rows = _paper_per_gpu(records)
    if paper_rows:
        sec.add(f"Tokens/s per GPU at our largest N beside the paper's 64 GPUs (8 nodes × 8 H100, "
                f"{names.PAPER_CITATION}), batch 1 bf16 only. Not a ratio: 64 GPUs on 8 nodes against one "
                "host, the paper's parallel strategy is not ours, and an eager (`compile = none`) POET-X row of ours is "
                "host-bound (see the throughput section's CUDA-graph rows).")
        csv64 = _save_table(frame(paper_rows), out_dir, "scaling_vs_paper_64gpu")
        shown64 = [{k: fmt_num(v, 0) if k.endswith("(64 GPUs)") or k.startswith("ours") else v
                    for k, v in r.items()} for r in paper_rows]
        sec.add(Table(pd.DataFrame(shown64).astype(str), csv=csv64))
    return sec


def _scaling_figure(records: list[dict], out_dir: Path):
    """Global tokens/s and efficiency against N, one line per method x model x parallel (with its N = 1
    point); drawn only where some line has two or more multi-process points (one N is a table, not a curve)."""
    from . import style

    lines: dict[tuple, dict[int, dict]] = {}
    for r in records:
        if r["scaling_efficiency"]:
            lines.setdefault(r["curve"], {})[r["nproc"]] = r  # the last row of an N counts, as in tables
    lines = {k: [v[n] for n in sorted(v)] for k, v in lines.items() if len(v) >= 2}
    if not lines:
        return None
    data = []
    with style.styled():
        fig = style.new_figure(11.0, 3.8)
        ax_tps, ax_eff = fig.subplots(1, 2)
        for rs in lines.values():
            method, block, model, seq_len, parallel = (rs[0][k] for k in ("method", "block_size", "model",
                                                                         "seq_len", "parallel"))
            xs = [1] + [r["nproc"] for r in rs]
            tps = [rs[0]["single_tokens_per_s"]] + [r["global_tokens_per_s"] for r in rs]
            eff = [1.0] + [r["scaling_efficiency"] for r in rs]
            label = f"{method}{f' b{block}' if block else ''} {model} L{seq_len} {parallel}"
            style_kw = {"color": style.method_color(method), "marker": "o",
                        "linestyle": "-" if parallel == "ddp" else "--"}
            ax_tps.plot(xs, tps, label=label, **style_kw)
            ax_eff.plot(xs, eff, label=label, **style_kw)
            data += [{"line": label, "nproc": x, "global_tokens_per_s": t, "scaling_efficiency": e}
                     for x, t, e in zip(xs, tps, eff, strict=True)]
        for ax in (ax_tps, ax_eff):
            ax.set_xscale("log", base=2)
            ax.set_xlabel("GPUs (processes)")
        ax_tps.set_ylabel("global tokens/s")
        ax_eff.set_ylabel("scaling efficiency")
        ax_eff.axhline(1.0, color="0.6", linewidth=0.8)
        ax_eff.legend(fontsize=7, loc="lower left")
        return style.save(fig, pd.DataFrame(data), out_dir, "scaling",
                          "Weak scaling: global tokens/s and efficiency against the number of GPUs "
                          "(solid: DDP, dashed: FSDP2; batch per GPU fixed).")


def _paper_per_gpu(records: list[dict]) -> list[dict]:
    """At the largest N of each method x model x L x parallel: our tokens/s per GPU, the paper's 64-GPU
    tokens/s per GPU (its global tokens/s / 64) where the paper has the cell."""
    from . import paper

    best: dict[tuple, dict] = {}
    for r in records:
        if r["global_tokens_per_s"] and r["batch_size"] in (None, 1) and r["dtype"] in (None, "bfloat16") \
                and r["device"] in (None, "cuda"):
            k = r["curve"]
            if k not in best or r["nproc"] > best[k]["nproc"]:
                best[k] = r
    out = []
    for r in sorted(best.values(), key=lambda r: str(r["curve"])):
        method, block, model, seq_len, parallel = (r[k] for k in ("method", "block_size", "model", "seq_len",
                                                                  "parallel"))
        cell = paper.throughput_cell(method, model, seq_len, block, gpus=64)
        if cell is None or cell.value is None:
            continue
        ours = r["global_tokens_per_s"] / r["nproc"]
        theirs = cell.value / 64
        out.append({"method": method + (f" b{block}" if block else ""), "model": model, "L": seq_len,
                    "parallel": parallel, "device": r["curve"][2], "N": r["nproc"], "ours tokens/s per GPU": ours,
                    "paper tokens/s per GPU (64 GPUs)": theirs})
    return out
