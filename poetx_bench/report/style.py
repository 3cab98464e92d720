"""Pinned figure style and saving: every figure goes out as PNG + PDF with its data as CSV beside it.

Figures are built with matplotlib.figure.Figure (no pyplot, no global backend state); the Agg
canvas renders PNG and the PDF backend renders PDF.
"""

from __future__ import annotations

import contextlib
import hashlib
from importlib import resources
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # noqa: E402  (headless everywhere; harmless if already Agg)

import matplotlib.style  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure as MplFigure  # noqa: E402

from ..flops import LINEAR  # noqa: E402
from ..methods import METHODS  # noqa: E402
from .document import Figure, write_csv  # noqa: E402

FIGURES_DIR = "figures"

# each method's colour is declared by the method (poetx_bench/methods); nn.Linear of layer suites is grey
METHOD_COLORS = {LINEAR: "#7f7f7f", **{name: spec.color for name, spec in METHODS.items()}}
_FALLBACK = ["#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#393b79", "#637939", "#843c39", "#7b4173"]

COMPONENT_COLORS = {
    "frozen_params": "#9ecae1",
    "trainable_params": "#3182bd",
    "gradients": "#fd8d3c",
    "optimizer_state": "#e6550d",
    "activations_other": "#74c476",
}
OP_COLORS = {"cayley": "#6baed6", "permutation": "#fd8d3c", "matmul": "#31a354", "other": "#bdbdbd"}
STATUS_COLOR = "#d9d9d9"
STATUS_HATCH = "xx"
STATUS_BOX = {"facecolor": "white", "edgecolor": "none", "pad": 1.0, "alpha": 0.85}
PAPER_ALPHA = 0.45
HEADROOM = 1.15  # y-limit of bar panels over their tallest bar: room for the value labels
PAPER_HATCH = "//"


def style_path() -> Path:
    return Path(str(resources.files("poetx_bench.report").joinpath("poetx.mplstyle")))


@contextlib.contextmanager
def styled():
    """Apply the pinned style (reset to matplotlib defaults first) for building and saving a figure."""
    with matplotlib.style.context(["default", str(style_path())]):
        yield


MAX_WIDTH_IN = 16.0  # 1600 px at the style's 100 dpi: readable in a browser and on paper


def new_figure(width: float = 6.4, height: float = 3.6) -> MplFigure:
    return MplFigure(figsize=(min(width, MAX_WIDTH_IN), height), layout="constrained")


def figure_legend(fig: MplFigure, axes) -> None:
    """One legend above all panels, entries de-duplicated by label."""
    handles, labels = [], []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    if labels:
        fig.legend(handles, labels, loc="outside upper center", ncol=min(6, len(labels)))


def method_color(method: str) -> str:
    if method in METHOD_COLORS:
        return METHOD_COLORS[method]
    digest = int(hashlib.sha1(str(method).encode()).hexdigest(), 16)
    return _FALLBACK[digest % len(_FALLBACK)]


def save(fig: MplFigure, data: pd.DataFrame, out_dir: Path, name: str, caption: str) -> Figure:
    """Write figures/<name>.png, .pdf and .csv under out_dir; returns the document Figure."""
    fig_dir = Path(out_dir) / FIGURES_DIR
    fig_dir.mkdir(parents=True, exist_ok=True)
    rel = f"{FIGURES_DIR}/{name}"
    fig.savefig(fig_dir / f"{name}.png", format="png", metadata={"Software": None})
    fig.savefig(fig_dir / f"{name}.pdf", format="pdf", metadata={"CreationDate": None, "Creator": None,
                                                                  "Producer": None})
    write_csv(data, fig_dir / f"{name}.csv")
    return Figure(name=name, caption=caption, png=f"{rel}.png", pdf=f"{rel}.pdf", csv=f"{rel}.csv",
                  out_dir=Path(out_dir))


def status_bar(ax, x: float, height: float | None, status: str, ymax: float, width: float = 0.8) -> None:
    """A hatched grey bar marking a point that did not finish, with its status written on it.

    height: the value reached before failing (e.g. an OOM's peak memory); None draws a placeholder
    bar at 40% of the panel's ymax labelled 'no value'."""
    known = height is not None and height > 0
    h = height if known else 0.4 * (ymax if ymax > 0 else 1.0)
    ax.bar(x, h, width=width, color=STATUS_COLOR, hatch=STATUS_HATCH, edgecolor="#555555", linewidth=0.6,
           label="did not finish")
    status_label(ax, x, h, str(status).upper() + ("" if known else "\n(no value)"), ymax, color="#333333")


def status_label(ax, x: float, top: float, text: str, ymax: float, color: str = "#b00000") -> None:
    """A failed point's status on its bar, inside the axes whatever the scale: placed in axes
    coordinates (the panel's y-limit is HEADROOM x ymax), within a tall bar or above a short one."""
    frac = top / (HEADROOM * ymax) if ymax > 0 else 0.0
    inside = frac > 0.5
    ax.text(x, frac - 0.07 if inside else frac + 0.07, text, rotation=90, ha="center",
            va="top" if inside else "bottom", transform=ax.get_xaxis_transform(), fontsize=7, color=color,
            bbox=STATUS_BOX)
