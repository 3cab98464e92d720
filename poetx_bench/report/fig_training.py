"""Figures 5 and 6: loss curves per method, and the block-size sweep (memory and tokens/s vs b)."""

from __future__ import annotations

import math
from pathlib import Path

from matplotlib.lines import Line2D

from ..results.point import Point
from . import names, paper, style
from .document import Section, no_data, status_text
from .tables import GROUP, _sort_points, frame, method_label, paper_comparable, same_machine

# --- 5. loss curves ------------------------------------------------------------------------------

LINESTYLES = ["-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1))]  # same method, different block sizes
DATA_NAMES = {"default": "corpus", "synthetic": "synthetic"}


def loss_section(points: list[Point], out_dir: Path) -> Section:
    title = "Loss curves"
    train = _sort_points([p for p in points if p.kind == "train"])
    groups: dict[tuple, list[Point]] = {}
    for p in train:
        groups.setdefault((p.model, p.seq_len, p.batch_size, p.cfg("device"), p.cfg("data", "default")), []).append(p)
    if not any(p.series("losses") or p.metrics.get("eval") for p in train):
        return no_data(title, "no training point has `metrics.losses`.")
    data: list[dict] = []
    with style.styled():
        n = len(groups)
        ncols = min(3, n)
        nrows = math.ceil(n / ncols)
        fig = style.new_figure(4.2 * ncols, 3.0 * nrows + 0.4)
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
        for ax in axes[n:]:
            ax.set_visible(False)
        for ax, ((model, seq_len, bs, device, source), pts) in zip(axes, groups.items()):
            failed = []
            per_method: dict[str, int] = {}
            for p in pts:
                label = method_label(p)
                losses = p.series("losses")
                color = style.method_color(p.method)
                nth = per_method.get(p.method, 0)
                per_method[p.method] = nth + 1
                dash = LINESTYLES[nth % len(LINESTYLES)]
                for step, loss in enumerate(losses):
                    data.append({"model": model, "seq_len": seq_len, "batch_size": bs, "device": device,
                                 "method": p.method, "block_size": p.block_size, "status": p.status,
                                 "series": "train", "step": step, "loss": loss})
                if losses:
                    finite = [v if math.isfinite(v) else math.nan for v in losses]
                    ax.plot(range(len(finite)), finite, color=color, linestyle=dash,
                            alpha=1.0 if p.ok else 0.6, label=label if p.ok else f"{label} ({status_text(p.status)})")
                evals = p.metrics.get("eval") if isinstance(p.metrics.get("eval"), list) else []
                ev = [(e.get("step"), e.get("loss")) for e in evals if isinstance(e, dict)
                      and isinstance(e.get("step"), int | float) and isinstance(e.get("loss"), int | float)]
                if ev:
                    ax.plot([s for s, _ in ev], [v for _, v in ev], linestyle="none", marker="o", color=color,
                            markerfacecolor="white", label=f"{label} eval" if not losses else None)
                    for s, v in ev:
                        data.append({"model": model, "seq_len": seq_len, "batch_size": bs, "device": device,
                                     "method": p.method, "block_size": p.block_size, "status": p.status,
                                     "series": "eval", "step": s, "loss": v})
                if not p.ok and not losses:
                    failed.append(f"{label}: {status_text(p.status)}")
                    data.append({"model": model, "seq_len": seq_len, "batch_size": bs, "device": device,
                                 "method": p.method, "block_size": p.block_size, "status": p.status,
                                 "series": "none", "step": None, "loss": None})
            if failed:
                ax.text(0.98, 0.98, "\n".join(failed), transform=ax.transAxes, ha="right", va="top", fontsize=7,
                        color="#b00000", bbox={"facecolor": "white", "edgecolor": "#b00000", "linewidth": 0.6})
            ax.set_title(f"{model} L{seq_len} bs{bs} ({device}, data: {DATA_NAMES.get(source, source)})", fontsize=9)
            ax.set_xlabel("step (incl. warm-up)")
            ax.set_ylabel("loss")
            if ax.get_legend_handles_labels()[0]:
                ax.legend(loc="lower left")
        caption = ("Training loss per step (same method at other block sizes: other line styles; faded: point "
                   "did not finish, status in its legend entry; circles: eval loss; boxed: points without losses). "
                   "Each panel names its data: 'synthetic' is random tokens for throughput points, whose loss "
                   "says nothing about learning.")
        figure = style.save(fig, frame(data), out_dir, "loss_curves", caption)
    return Section(title, [figure])


# --- 6. block-size sweep -------------------------------------------------------------------------


SWEEP_SUITE = "block-size"


def _sweep_points(points: list[Point]) -> list[Point]:
    """The rows of the block-size suite when there are any: other suites also vary b (paper-memory at 256 and
    512 for 3B-13B), and drawn together they bury the sweep under two-point lines and OOM marks."""
    own = [p for p in points if p.suite == SWEEP_SUITE]
    return own or points


def _adamw_best(p: Point, points: list[Point]) -> float | None:
    """Tokens/s of the fastest finished AdamW row of p's group (model, L, batch, device, ...) on p's machine:
    AdamW at its best `compile`, as the throughput table divides by."""
    key = tuple(p.cfg(c) for c in GROUP)
    refs = [q for q in points if q.kind == "train" and q.method == names.BASELINE
            and tuple(q.cfg(c) for c in GROUP) == key]
    refs, _ = same_machine(p, refs)
    tps = [q.metric("tokens_per_s") for q in refs if q.ok and q.metric("tokens_per_s")]
    return max(tps) if tps else None


def _sweep_groups(points: list[Point]) -> dict[tuple, list[Point]]:
    groups: dict[tuple, list[Point]] = {}
    for p in points:
        if p.kind == "train" and p.block_size is not None:
            groups.setdefault((p.model, p.method, p.seq_len, p.batch_size, p.cfg("device"), p.cfg("dtype")),
                              []).append(p)
    return {k: sorted(v, key=lambda p: p.block_size) for k, v in groups.items()
            if len({p.block_size for p in v}) >= 2}


def block_sweep_section(points: list[Point], out_dir: Path) -> Section:
    title = "Block-size sweep"
    points = _sweep_points(points)
    groups = _sweep_groups(points)
    if not groups:
        return no_data(title, "no model/method measured at two or more block sizes.")
    keys = sorted(groups, key=lambda k: (names.model_key(k[0]), names.method_key(k[1]), k[2] or 0, k[3] or 0))
    # throughput as a fraction of AdamW's (one axis for models 100x apart in tokens/s) when every line has one
    base = {id(p): _adamw_best(p, points) for pts in groups.values() for p in pts}
    relative = all(v is not None for v in base.values())
    data: list[dict] = []
    with style.styled():
        fig = style.new_figure(10.5, 3.6)
        ax_mem, ax_tps = fig.subplots(1, 2)
        markers = "osD^v<>p*h"
        for i, key in enumerate(keys):
            model, method, seq_len, bs, device, dtype = key
            pts = groups[key]
            color = style.method_color(method)
            marker = markers[i % len(markers)]
            label = f"{model} {method} L{seq_len}" + (f" bs{bs}" if bs not in (None, 1) else "")
            for ax, metric in ((ax_mem, "peak_memory_bytes"), (ax_tps, "tokens_per_s")):
                xs, ys = [], []
                for p in pts:
                    value = p.metric(metric)
                    if metric == "peak_memory_bytes":
                        value = names.to_gb(value)
                    elif relative and value is not None:
                        value = value / base[id(p)]
                    cell = None
                    if paper_comparable(p) and not (relative and metric == "tokens_per_s"):
                        cell = (paper.peak_cell if metric == "peak_memory_bytes" else paper.throughput_cell)(
                            method, model, seq_len, p.block_size)
                    data.append({"model": model, "method": method, "seq_len": seq_len, "batch_size": bs,
                                 "device": device, "dtype": dtype, "block_size": p.block_size, "status": p.status,
                                 "metric": "peak_memory_gb" if metric == "peak_memory_bytes" else
                                 ("tokens_per_s_vs_adamw" if relative else metric),
                                 "measured": value if (p.ok or metric == "peak_memory_bytes") else None,
                                 "paper": cell.value if cell else None,
                                 "paper_status": cell.status if cell else None,
                                 "ratio": paper.ratio(value, cell.value) if (cell and p.ok) else None})
                    if p.ok and value is not None:
                        xs.append(p.block_size)
                        ys.append(value)
                    else:
                        # failed point: an x at the value reached (OOM peak) or on the axis floor
                        y = value if value is not None and metric == "peak_memory_bytes" else 0.0
                        ax.plot([p.block_size], [y], marker="x", color=color, markersize=7, linestyle="none")
                        ax.annotate(status_text(p.status), (p.block_size, y), textcoords="offset points",
                                    xytext=(0, 5), ha="center", fontsize=6.5, color="#b00000")
                    if cell and cell.value is not None:
                        ax.plot([p.block_size], [cell.value], marker=marker, markerfacecolor="none", color=color,
                                markersize=7, linestyle="none")
                ax.plot(xs, ys, marker=marker, color=color, label=label)
        tps_label = "tokens/s ÷ AdamW's (best compile)" if relative else "tokens/s"
        if relative:
            ax_tps.axhline(1.0, color="#555555", linewidth=0.8, linestyle="--")
        for ax, ylabel in ((ax_mem, "peak memory (GB = GiB)"), (ax_tps, tps_label)):
            ax.set_xscale("log", base=2)
            blocks = sorted({p.block_size for pts in groups.values() for p in pts})
            ax.set_xticks(blocks, [str(b) for b in blocks])
            ax.minorticks_off()
            ax.set_xlabel("block size b")
            ax.set_ylabel(ylabel)
            ax.set_ylim(bottom=0)
        ax_mem.set_title("Peak memory")
        ax_tps.set_title("Throughput")
        proxies = [Line2D([], [], marker="o", markerfacecolor="none", color="#555555", linestyle="none",
                          label=f"paper ({names.PAPER_CITATION.split(' (')[0]})"),
                   Line2D([], [], marker="x", color="#555555", linestyle="none", label="did not finish")]
        handles, labels = ax_tps.get_legend_handles_labels()
        fig.legend(handles + proxies, labels + [h.get_label() for h in proxies], loc="outside right center")
        caption = ("Peak memory and tokens/s against block size, one line per model/method "
                   f"(hollow markers: {names.PAPER_CITATION}; x: point did not finish)"
                   + ("; tokens/s divided by the fastest AdamW row of the same model, sequence length and batch "
                      "on the same machine (dashed: AdamW)." if relative else
                      "; absolute tokens/s: some line has no finished AdamW row on its machine to divide by.")
                   + (f" Rows of the `{SWEEP_SUITE}` suite only." if any(p.suite == SWEEP_SUITE for p in points)
                      else ""))
        figure = style.save(fig, frame(data), out_dir, "block_size_sweep", caption)
    return Section(title, [figure])
