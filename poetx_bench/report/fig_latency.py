"""Figure 3: single-layer latency breakdown (cayley / permutation / matmul / other), forward and backward.

From layer rows' metrics.breakdown_ms; one panel per layer shape. The paper's bars stand beside ours
only where the point matches the paper's setting (bf16 on CUDA, 2048 tokens, block size 256, and the shape
4096 -> 14336, which the paper does not state but which fits its nn.Linear time best).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..results.point import Point
from . import names, paper, style
from .document import MISSING, Section, Table, fmt_num, fmt_ratio, no_data, status_text
from .tables import _save_table, frame, method_label, same_machine

PHASE_SHORT = {"forward": "fwd", "backward": "bwd"}


def _group_key(p: Point) -> tuple:
    return (p.cfg("in_features"), p.cfg("out_features"), p.cfg("tokens"), p.cfg("dtype"), p.cfg("device"))


def _group_title(key: tuple) -> str:
    fin, fout, tokens, dtype, device = key
    return f"{fin}→{fout}, {tokens} tokens, {dtype or MISSING}, {device or MISSING}"


def _paper_matches(p: Point) -> bool:
    """The paper timed bf16 on an H100: CPU or fp32 latencies beside it would be meaningless ratios."""
    cfg = paper.LATENCY_CONFIG
    return (p.cfg("tokens") == cfg["tokens"] and (p.method == "linear" or p.block_size == cfg["block_size"])
            and p.cfg("dtype") == cfg["dtype"] and p.cfg("device") == cfg["device"]
            and p.cfg("in_features") == cfg["in_features"] and p.cfg("out_features") == cfg["out_features"])


def _sorted(points: list[Point]) -> list[Point]:
    return sorted(points, key=lambda p: (names.method_key(p.method), p.block_size or 0))


def latency_section(points: list[Point], out_dir: Path, allow_different_devices: bool = False) -> Section:
    title = "Single-layer latency breakdown"
    layer = [p for p in points if p.kind == "layer"]
    if not layer:
        return no_data(title, "no layer-latency rows (`kind: layer`).")
    groups: dict[tuple, list[Point]] = {}
    for p in layer:
        groups.setdefault(_group_key(p), []).append(p)
    paper_df = paper.latency_breakdown()
    paper_totals = paper.latency_totals()

    data: list[dict] = []
    table: list[dict] = []
    with style.styled():
        widths = [max(2.5, 0.42 * 4 * len(ps)) for ps in groups.values()]
        fig = style.new_figure(sum(widths) + 1.5, 4.0)
        axes = fig.subplots(1, len(groups), squeeze=False, width_ratios=widths)[0]
        seen: set[str] = set()
        for ax, (key, pts) in zip(axes, groups.items()):
            pts = _sorted(pts)
            linear_all = [q for q in pts if q.method == "linear" and q.ok and q.metric("fwd_bwd_ms")]
            x, ticks, ticklabels, ymax = 0.0, [], [], 0.0
            pending: list[tuple[float, str]] = []  # failed points, drawn once ymax is known
            for p in pts:
                label = method_label(p)
                brk = p.latency_breakdown()
                with_paper = _paper_matches(p) and p.method in set(paper_df["method"])
                if p.ok and brk:
                    for phase in names.PHASES:
                        ops = brk.get(phase, {})
                        bottom = 0.0
                        for op in names.LATENCY_OPS + sorted(set(ops) - set(names.LATENCY_OPS)):
                            ms = ops.get(op, 0.0)
                            ax.bar(x, ms, bottom=bottom, width=0.8, color=style.OP_COLORS.get(op, "#cccccc"),
                                   edgecolor="white", linewidth=0.4, label=op if op not in seen else None)
                            seen.add(op)
                            data.append({"source": "measured", "group": _group_title(key), "method": p.method,
                                         "block_size": p.block_size, "status": p.status, "phase": phase,
                                         "op": op, "ms": ms})
                            bottom += ms
                        ymax = max(ymax, bottom)
                        ticks.append(x)
                        ticklabels.append(f"{label} {PHASE_SHORT[phase]}")
                        x += 1.0
                else:
                    # not finished (or no breakdown): one hatched bar with the status / total
                    total = p.metric("fwd_bwd_ms") if p.ok else None
                    if total is not None:
                        ax.bar(x, total, width=0.8, color=style.OP_COLORS["other"], edgecolor="#555555",
                               linewidth=0.4)
                        ax.text(x, total, "no breakdown", rotation=90, ha="center", va="bottom", fontsize=6)
                        ymax = max(ymax, total)
                    else:
                        pending.append((x, p.status))
                    data.append({"source": "measured", "group": _group_title(key), "method": p.method,
                                 "block_size": p.block_size, "status": p.status, "phase": "total", "op": "",
                                 "ms": total})
                    ticks.append(x)
                    ticklabels.append(label)
                    x += 1.0
                paper_total = None
                if with_paper:
                    sel = paper_df[paper_df["method"] == p.method]
                    for phase in names.PHASES:
                        bottom = 0.0
                        for op in names.LATENCY_OPS:
                            ms = float(sel.loc[(sel["phase"] == phase) & (sel["op"] == op), "ms"].sum())
                            ax.bar(x, ms, bottom=bottom, width=0.8, color=style.OP_COLORS[op],
                                   alpha=style.PAPER_ALPHA, hatch=style.PAPER_HATCH, edgecolor="white",
                                   linewidth=0.4)
                            if ms:
                                data.append({"source": "paper", "group": _group_title(key), "method": p.method,
                                             "block_size": None if p.method == "linear"
                                             else paper.LATENCY_CONFIG["block_size"], "status": "ok",
                                             "phase": phase, "op": op, "ms": ms})
                            bottom += ms
                        ymax = max(ymax, bottom)
                        ticks.append(x)
                        ticklabels.append(f"paper {p.method} {PHASE_SHORT[phase]}")
                        x += 1.0
                    paper_total = paper_totals.get(p.method)
                x += 0.4
                measured = p.metric("fwd_bwd_ms") if p.ok else None
                linear = same_machine(p, linear_all, allow_different_devices)[0]  # never across GPU models
                linear_ms = linear[-1].metric("fwd_bwd_ms") if linear else None
                table.append({
                    "group": _group_title(key), "method": p.method, "variant": method_label(p),
                    "block_size": p.block_size, "status": p.status,
                    "fwd_bwd_ms": measured, "fwd_bwd_ms_iqr": p.metric("fwd_bwd_ms_iqr") if p.ok else None,
                    "breakdown_sum_ms": sum(sum(v.values()) for v in brk.values()) if (p.ok and brk) else None,
                    "linear_over_method": paper.ratio(linear_ms, measured),
                    "paper_fwd_bwd_ms": paper_total, "ratio": paper.ratio(measured, paper_total),
                })
            for bx, status in pending:
                style.status_bar(ax, bx, None, status, ymax)
            if len(ticks) <= 2:  # keep a lone bar from filling a wide panel
                ax.set_xlim(-1.5, max(ticks, default=0) + 1.5)
            ax.set_xticks(ticks, ticklabels, rotation=60, ha="right", fontsize=7)
            ax.set_title(_group_title(key), fontsize=8.5)
            ax.set_ylim(0, ymax * style.HEADROOM if ymax > 0 else 1)
            ax.grid(axis="x", visible=False)
        axes[0].set_ylabel("time (ms)")
        style.figure_legend(fig, axes)
        caption = ("Single linear layer, forward and backward time per op (measured; hatched translucent bars: "
                   f"{names.PAPER_CITATION}, H100, bf16, 2048 tokens, b=256, read off its bar chart ±0.02 ms; "
                   "set only beside bf16 CUDA points).")
        figure = style.save(fig, frame(data), out_dir, "layer_latency", caption)
    shown = pd.DataFrame([{
        "layer": t["group"], "method": t["variant"],
        "fwd+bwd ms": fmt_num(t["fwd_bwd_ms"], 3) if t["status"] == "ok" else status_text(t["status"]),
        "IQR": fmt_num(t["fwd_bwd_ms_iqr"], 3),
        "sum of breakdown": fmt_num(t["breakdown_sum_ms"], 3),
        "linear/method": fmt_num(t["linear_over_method"]),
        "paper ms": fmt_num(t["paper_fwd_bwd_ms"]),
        "measured/paper": fmt_ratio(t["ratio"]),
    } for t in table])
    sec = Section(title)
    sec.add(figure)
    sec.add(Table(shown, caption="Median forward+backward time per layer call.",
                  csv=_save_table(frame(table), out_dir, "layer_latency")))
    return sec
