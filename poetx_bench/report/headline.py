"""Headline ratios with their spread: each method against AdamW in tokens/s and in peak memory, one ratio
per trial (`trials` in a suite: the same point in separate processes), shown as min / median / max.

Trial k of a method pairs with trial k of AdamW of the same model / L / batch / dtype / device (the fastest
AdamW row of that trial, across `compile` settings), on the same device model and memory cap unless
allowed otherwise. Only single-process rows; the section appears where some pair has two or more trials.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import pandas as pd

from .. import machines
from ..results.point import Point
from .document import Section, Table, fmt_num

BASELINE = "adamw"


def _group(p: Point, allow_different_devices: bool) -> tuple:
    machine = () if allow_different_devices else (machines.device_name(p), machines.memory_cap_bytes(p))
    return (p.model, p.seq_len, p.batch_size, p.cfg("dtype"), p.cfg("device"), *machine)


def headline_records(points: list[Point], allow_different_devices: bool = False) -> list[dict]:
    from .tables import method_label

    train = [p for p in points if p.kind == "train" and p.ok and (p.nproc or 1) == 1
             and p.metric("tokens_per_s") and p.metric("peak_memory_bytes")]
    base: dict[tuple, dict[int, Point]] = {}
    others: dict[tuple, dict[str, dict[int, Point]]] = {}
    for p in train:
        g, trial = _group(p, allow_different_devices), int(p.cfg("trial") or 0)
        if p.method == BASELINE:
            best = base.setdefault(g, {}).get(trial)
            if best is None or p.metric("tokens_per_s") > best.metric("tokens_per_s"):
                base[g][trial] = p
        else:
            others.setdefault(g, {}).setdefault(method_label(p), {})[trial] = p  # labels carry no trial
    records = []
    for g, by_label in others.items():
        ref = base.get(g, {})
        for label, by_trial in sorted(by_label.items()):
            trials = sorted(set(by_trial) & set(ref))
            if not trials:
                continue
            tps = [by_trial[t].metric("tokens_per_s") / ref[t].metric("tokens_per_s") for t in trials]
            mem = [by_trial[t].metric("peak_memory_bytes") / ref[t].metric("peak_memory_bytes") for t in trials]
            records.append({
                "model": g[0], "seq_len": g[1], "batch_size": g[2], "dtype": g[3], "device": g[4],
                "device_name": g[5] if len(g) > 5 else None, "method": label, "trials": len(trials),
                "tokens_per_s_ratio_min": min(tps), "tokens_per_s_ratio_median": statistics.median(tps),
                "tokens_per_s_ratio_max": max(tps),
                "peak_memory_ratio_min": min(mem), "peak_memory_ratio_median": statistics.median(mem),
                "peak_memory_ratio_max": max(mem),
            })
    return records


def headline_section(points: list[Point], out_dir: Path, allow_different_devices: bool = False) -> Section | None:
    """The section, or None (left out) when no method has two or more trials beside AdamW."""
    from .tables import _save_table, frame

    records = headline_records(points, allow_different_devices)
    if not any(r["trials"] >= 2 for r in records):
        return None
    csv = _save_table(frame(records), out_dir, "headline_ratios")

    def spread(r, key):
        return (f"{fmt_num(r[key + '_median'])} ({fmt_num(r[key + '_min'])}–{fmt_num(r[key + '_max'])})")

    shown = [{"model": r["model"], "L": r["seq_len"], "bs": r["batch_size"], "device": r["device_name"] or r["device"],
              "method": r["method"], "trials": r["trials"],
              "tokens/s vs AdamW: median (min–max)": spread(r, "tokens_per_s_ratio"),
              "peak memory vs AdamW: median (min–max)": spread(r, "peak_memory_ratio")}
             for r in records if r["trials"] >= 2]
    sec = Section("Headline ratios (spread over processes)")
    sec.add("Each method against AdamW, one ratio per trial: trial k of the method over trial k of the fastest "
            "AdamW row (any `compile`) of the same model, L, batch, dtype and device model; every trial is a "
            "separate process (`trials` in the suite). Median with min–max over the trials. Shown: pairs with two "
            "or more trials (the spread is the point); single-trial pairs are in the CSV and the throughput table.")
    sec.add(Table(pd.DataFrame(shown).astype(str), csv=csv))
    return sec

