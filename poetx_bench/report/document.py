"""The report as data (sections of paragraphs, tables and figures) plus value formatting.

Figure families and tables build `Section`s; writer.py renders them to Markdown and HTML.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

MISSING = "—"


@dataclass
class Table:
    df: pd.DataFrame  # already formatted for display (strings)
    caption: str = ""
    csv: str | None = None  # path of the raw data, relative to the output directory


@dataclass
class Figure:
    name: str
    caption: str
    png: str  # relative to the output directory
    pdf: str
    csv: str
    out_dir: Path | None = None

    @property
    def png_path(self) -> Path:
        return (self.out_dir or Path(".")) / self.png


@dataclass
class Section:
    title: str
    items: list = field(default_factory=list)  # str (paragraph, light markdown) | Table | Figure
    anchor: str = ""

    def add(self, item) -> Section:
        self.items.append(item)
        return self

    @property
    def has_data(self) -> bool:
        return any(isinstance(i, Table | Figure) for i in self.items)


def no_data(title: str, what: str) -> Section:
    return Section(title, [f"No data: {what}"])


def fmt_num(value, digits: int = 2) -> str:
    if value is None:
        return MISSING
    try:
        v = float(value)
    except (TypeError, ValueError):
        return MISSING
    if math.isnan(v):
        return MISSING
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:,.{digits}f}"


def fmt_ratio(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    return f"×{float(value):.2f}"


def fmt_int(value) -> str:
    if value is None:
        return MISSING
    try:
        return str(int(value))
    except (TypeError, ValueError):
        return MISSING


def status_text(status: str) -> str:
    """Display text for a non-ok status: OOM, ERROR, TIMEOUT, DIVERGED, SKIPPED."""
    return str(status).upper()


def write_csv(df: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False, na_rep="")
