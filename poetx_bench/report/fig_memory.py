"""Figure 2: peak-memory breakdown, stacked bars per method, one panel per model.

From metrics.memory_breakdown_bytes; the paper's Llama-8B bars (batch 1, L=1024, b=256) stand beside
ours in the 8b panel. Points that did not finish are hatched bars with their status, never dropped.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..results.point import Point
from . import names, paper, style
from .document import Section, Table, fmt_num, fmt_ratio, no_data, status_text
from .tables import _save_table, _sort_points, frame, method_label, paper_comparable


def _panel_points(points: list[Point]) -> dict[str, list[Point]]:
    panels: dict[str, list[Point]] = {}
    for p in _sort_points([p for p in points if p.kind == "train"]):
        if p.breakdown() or not p.ok:
            panels.setdefault(p.model or "?", []).append(p)
    return panels


def _varying(points: list[Point]) -> set[str]:
    """Config fields that differ within a panel: labels must name them, or bars look alike."""
    return {f for f in ("seq_len", "batch_size", "dtype", "device") if len({str(p.cfg(f)) for p in points}) > 1}


def _bar_label(p: Point, varying: set[str]) -> str:
    label = method_label(p)
    if "seq_len" in varying and p.seq_len is not None:
        label += f"\nL{p.seq_len}"
    if p.batch_size not in (None, 1) or "batch_size" in varying:
        label += f" bs{p.batch_size}"
    for f in ("dtype", "device"):
        if f in varying:
            label += f" {p.cfg(f, '?')}"
    return label


def _paper_matches(p: Point) -> bool:
    """The paper's 8B breakdown: one GPU, batch 1, bf16 (paper_comparable), at its L and block size."""
    cfg = paper.BREAKDOWN_CONFIG
    return (paper_comparable(p) and p.model == cfg["model"] and p.seq_len == cfg["seq_len"]
            and p.batch_size in (None, 1) and (p.block_size in (None, cfg["block_size"])))


def memory_breakdown_section(points: list[Point], out_dir: Path) -> Section:
    title = "Memory breakdown"
    panels = _panel_points(points)
    if not any(p.breakdown() for ps in panels.values() for p in ps):
        return no_data(title, "no training point has `metrics.memory_breakdown_bytes`.")
    panels = {m: panels[m] for m in sorted(panels, key=names.model_key)}
    paper_df = paper.memory_breakdown()
    paper_methods = list(dict.fromkeys(paper_df["method"]))

    data: list[dict] = []
    totals: list[dict] = []
    with style.styled():
        n = len(panels)
        widths = [max(2.0, 0.55 * (len(ps) + 3)) for ps in panels.values()]
        fig = style.new_figure(sum(widths) + 1.5, 3.8)
        axes = fig.subplots(1, n, squeeze=False, width_ratios=widths)[0]
        seen_components: set[str] = set()
        for ax, (model, pts) in zip(axes, panels.items()):
            varying = _varying(pts)
            x = 0.0
            ticks, ticklabels = [], []
            ymax = 0.0
            pending: list[tuple[float, float | None, str]] = []  # failed points, drawn once ymax is known
            labels: list[tuple[float, float, str]] = []  # statuses of failed points that have a breakdown
            for p in pts:
                label = _bar_label(p, varying)
                comps = p.breakdown()
                measured_total = None
                if comps:
                    bottom = 0.0
                    for comp in names.COMPONENTS + sorted(set(comps) - set(names.COMPONENTS)):
                        gb = names.to_gb(comps.get(comp)) or 0.0
                        gb_drawn = max(gb, 0.0)  # CPU RSS peaks can leave a negative remainder
                        ax.bar(x, gb_drawn, bottom=bottom, width=0.8, color=style.COMPONENT_COLORS.get(comp, "#cccccc"),
                               edgecolor="white", linewidth=0.4,
                               label=comp if comp not in seen_components else None)
                        seen_components.add(comp)
                        data.append({"source": "measured", "model": model, "method": p.method,
                                     "block_size": p.block_size, "seq_len": p.seq_len, "batch_size": p.batch_size,
                                     "dtype": p.cfg("dtype"), "nproc": p.nproc or 1, "parallel": p.cfg("parallel"), "status": p.status, "component": comp, "gb": gb})
                        bottom += gb_drawn
                    # the label (and the ratio to the paper) is the measured peak: a clipped negative
                    # remainder would overstate the stack
                    peak_gb = names.to_gb(p.metric("peak_memory_bytes"))
                    measured_total = peak_gb if peak_gb is not None else bottom
                    ax.text(x, bottom, fmt_num(measured_total, 1), ha="center", va="bottom", fontsize=6.5)
                    ymax = max(ymax, bottom)
                    if not p.ok:
                        labels.append((x, bottom, status_text(p.status)))
                else:
                    peak = names.to_gb(p.metric("peak_memory_bytes"))
                    pending.append((x, peak, p.status))
                    data.append({"source": "measured", "model": model, "method": p.method,
                                 "block_size": p.block_size, "seq_len": p.seq_len, "batch_size": p.batch_size,
                                 "dtype": p.cfg("dtype"), "nproc": p.nproc or 1, "parallel": p.cfg("parallel"), "status": p.status,
                                 "component": "peak_before_failure" if peak else "", "gb": peak})
                    ymax = max(ymax, peak or 0.0)
                ticks.append(x)
                ticklabels.append(label)
                x += 1.0
                # the paper's bar beside ours
                if model == paper.BREAKDOWN_CONFIG["model"] and p.method in paper_methods and _paper_matches(p):
                    sel = paper_df[paper_df["method"] == p.method]
                    bottom = 0.0
                    for comp in names.COMPONENTS:
                        gb = float(sel.loc[sel["component"] == comp, "gb"].sum())
                        ax.bar(x, gb, bottom=bottom, width=0.8, color=style.COMPONENT_COLORS[comp],
                               alpha=style.PAPER_ALPHA, hatch=style.PAPER_HATCH, edgecolor="white", linewidth=0.4)
                        data.append({"source": "paper", "model": model, "method": p.method,
                                     "block_size": paper.BREAKDOWN_CONFIG["block_size"]
                                     if names.uses_blocks(p.method) else None, "seq_len": paper.BREAKDOWN_CONFIG["seq_len"], "batch_size": 1,
                                     "status": "ok", "component": comp, "gb": gb})
                        bottom += gb
                    ax.text(x, bottom, fmt_num(bottom, 1), ha="center", va="bottom", fontsize=6.5)
                    ymax = max(ymax, bottom)
                    ticks.append(x)
                    ticklabels.append(f"paper\n{p.method}")
                    totals.append({"model": model, "method": p.method, "block_size": p.block_size,
                                   "seq_len": p.seq_len, "status": p.status, "measured_gb": measured_total,
                                   "paper_gb": bottom, "ratio": paper.ratio(measured_total, bottom)
                                   if p.ok else None})
                    x += 1.0
                x += 0.3
            for bx, height, status in pending:
                style.status_bar(ax, bx, height, status, ymax)
            for bx, top, text in labels:
                style.status_label(ax, bx, top, text, ymax)
            if len(ticks) <= 2:  # keep a lone bar from filling a wide panel
                ax.set_xlim(-1.5, max(ticks, default=0) + 1.5)
            ax.set_xticks(ticks, ticklabels, rotation=60, ha="right", fontsize=7)
            ax.set_title(f"Llama-{model}")
            ax.set_ylim(0, ymax * style.HEADROOM if ymax > 0 else 1)
            ax.grid(axis="x", visible=False)
        axes[0].set_ylabel("peak memory (GB = GiB)")
        style.figure_legend(fig, axes)
        caption = ("Peak memory by component (measured; hatched translucent bars: "
                   f"{names.PAPER_CITATION}, Llama-8B, batch 1, L=1024, b=256). Hatched grey bars: points that "
                   "did not finish, at the peak reached when recorded.")
        figure = style.save(fig, frame(data), out_dir, "memory_breakdown", caption)
    sec = Section(title)
    sec.add(figure)
    if totals:
        shown = pd.DataFrame([{
            "model": t["model"], "method": t["method"] if t["block_size"] is None
            else f"{t['method']} b{t['block_size']}", "L": t["seq_len"],
            "measured total GB": fmt_num(t["measured_gb"]) if t["status"] == "ok" else status_text(t["status"]),
            "paper total GB": fmt_num(t["paper_gb"]), "measured/paper": fmt_ratio(t["ratio"]),
        } for t in totals])
        sec.add(Table(shown, caption="Breakdown totals beside the paper's.",
                      csv=_save_table(frame(totals), out_dir, "memory_breakdown_totals")))
    else:
        sec.add("The paper's breakdown is for Llama-8B, L=1024, batch 1, b=256: no such point here.")
    return sec
