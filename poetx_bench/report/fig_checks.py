"""Correctness checks and host-versus-device time: the report sections that say whether a number can
be trusted (the layers compute what they claim) and where a step's time goes (host-bound or not)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..results.point import Point
from . import style
from .document import MISSING, Section, Table, fmt_num, no_data, write_csv

ERR_KEYS = ("rel_err_output", "rel_err_grad_input", "rel_err_grad_skew_in", "rel_err_grad_skew_out")


def correctness_section(points: list[Point], out_dir: Path) -> Section:
    title = "Correctness"
    rows = [p for p in points if p.kind == "correctness"]
    if not rows:
        return no_data(title, "no `correctness` rows (run `python -m poetx_bench correctness`).")
    sec = Section(title)
    sec.add("Relative error (‖got − expected‖ / ‖expected‖) of each layer in its working dtype against "
            "weight-centric POET in float64 on the same state and fresh random inputs; forward output and "
            "gradients with respect to the input and both skew parameter sets.")
    eq = [p for p in rows if p.config.get("check") == "layer-equivalence" and p.ok]  # skips: status summary
    records = []
    for p in eq:
        c = p.config
        rec = {"method": c.get("method"), "backend": c.get("backend"), "dtype": c.get("dtype"),
               "device": c.get("device"),
               "shape": f"{c.get('in_features')}→{c.get('out_features')}, b={c.get('block_size')}"}
        rec.update({k.replace("rel_err_", ""): p.metrics.get(k) for k in ERR_KEYS})
        records.append(rec)
    if records:
        raw = pd.DataFrame.from_records(records)
        rel = "tables/correctness.csv"
        write_csv(raw, out_dir / rel)
        shown = raw.copy()
        for k in ERR_KEYS:
            col = k.replace("rel_err_", "")
            shown[col] = [fmt_num(v, 2) if v is None else f"{v:.1e}" for v in raw[col]]
        sec.add(Table(shown.astype(str), csv=rel))
    curves = [p for p in rows if p.config.get("check") == "neumann-orthogonality" and p.ok]
    if curves:
        data = []
        with style.styled():
            fig = style.new_figure(5.0, 3.4)
            ax = fig.subplots()
            for p in curves:
                pts = p.metrics.get("curve") or []
                xs = [r["q_norm"] for r in pts]
                ys = [max(r["orthogonality_error"], 1e-18) for r in pts]
                ax.loglog(xs, ys, marker="o", label=f"b={p.config.get('block_size')}")
                data += [{"block_size": p.config.get("block_size"), **r} for r in pts]
            ax.set_xlabel("‖Q‖₂")
            ax.set_ylabel("‖GᵀG − I‖_F")
            ax.set_title("Cayley–Neumann (3 terms): orthogonality error")
            ax.legend()
            sec.add(style.save(fig, pd.DataFrame(data), out_dir, "neumann_orthogonality",
                               "Orthogonality error of the truncated Cayley–Neumann series against the "
                               "spectral norm of Q (float64). The error grows as ‖Q‖⁴."))
    return sec


def host_device_section(points: list[Point], out_dir: Path) -> Section:
    title = "Host versus device time"
    recs = []
    for p in points:
        hv = (p.row.get("artifacts") or {}).get("host_vs_device")
        if not isinstance(hv, dict):
            continue
        bound = hv.get("host_bound")
        recs.append({"point": p.label(), "device": p.cfg("device"),
                     "host ms/step": hv.get("host_total_ms_per_step"),
                     "device kernel ms/step": hv.get("device_kernel_ms_per_step"),
                     "device busy": hv.get("device_busy_fraction"),
                     "host-bound": MISSING if bound is None else ("yes" if bound else "no")})
    if not recs:
        return no_data(title, "no profiled points (run with `--profile`).")
    raw = pd.DataFrame.from_records(recs)
    rel = "tables/host_vs_device.csv"
    write_csv(raw, out_dir / rel)
    shown = raw.copy()
    for col in ("host ms/step", "device kernel ms/step", "device busy"):
        shown[col] = [fmt_num(v, 2) for v in raw[col]]
    sec = Section(title, ["From the separate profiled pass (never the timed one): wall time of the "
                          "forward, backward and optimizer ranges on the CPU thread per step against the "
                          "summed kernel time per step (kernels only). A step whose kernels keep the device "
                          "busy less than half of that host time is host-bound: the GPU waits for launches. "
                          "CPU points have no device time."])
    sec.add(Table(shown.astype(str), csv=rel))
    return sec
