"""The POET-X paper's published numbers (``paper/*.csv``), with names mapped to ours.

Every frame uses our method/model names (see names.py), GB = GiB and tokens/s (not thousands).
Lookups return None where the paper has no cell.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from importlib import resources

import pandas as pd

from . import names

# Conditions of the paper's breakdown figures: a measured point is set beside them only when it matches.
BREAKDOWN_CONFIG = {"model": "8b", "seq_len": 1024, "batch_size": 1, "block_size": 256}
# the paper does not state its layer shape; 4096 -> 14336 fits its nn.Linear time best (paper/README.md), so only
# that shape is set beside the paper's bars
LATENCY_CONFIG = {"tokens": 2048, "block_size": 256, "dtype": "bfloat16", "device": "cuda",
                  "in_features": 4096, "out_features": 14336}
PEAK_CONFIG = {"batch_size": 1, "dtype": "bfloat16", "device": "cuda"}


@dataclass(frozen=True)
class PaperCell:
    value: float | None  # None when the paper reports OOM
    status: str  # "ok" or "oom"

    def text(self, fmt: str = "{:.2f}") -> str:
        return "OOM" if self.status == "oom" else fmt.format(self.value)


def _read(name: str) -> pd.DataFrame:
    path = resources.files("poetx_bench.report").joinpath("paper").joinpath(name)
    with path.open("r", encoding="utf-8") as fh:
        return pd.read_csv(fh, dtype=str, keep_default_na=False)


def _block(text: str) -> int | None:
    text = str(text).strip()
    return int(float(text)) if text else None


def _value(text: str) -> tuple[float | None, str]:
    text = str(text).strip()
    if text.upper() == "OOM":
        return None, "oom"
    return float(text), "ok"


def _common(df: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame(
        {
            "method": [names.paper_method(m) for m in df["method"]],
            "block_size": pd.array([_block(b) for b in df["block_size"]], dtype="Int64"),
            "model": [names.paper_model(m) for m in df["model"]],
            "seq_len": [int(s) for s in df["seq_len"]],
        }
    )
    return out


@functools.cache
def peak_memory() -> pd.DataFrame:
    """method, block_size, model, seq_len, gb (NaN when OOM), status."""
    raw = _read("peak_memory.csv")
    out = _common(raw)
    parsed = [_value(v) for v in raw["peak_memory_gb"]]
    out["gb"] = [v if v is not None else math.nan for v, _ in parsed]
    out["status"] = [s for _, s in parsed]
    return out


@functools.cache
def throughput() -> pd.DataFrame:
    """method, block_size, model, seq_len, gpus, tokens_per_s (NaN when OOM), status."""
    raw = _read("throughput.csv")
    out = _common(raw)
    out["gpus"] = [int(g) for g in raw["gpus"]]
    parsed = [_value(v) for v in raw["k_tokens_per_s"]]
    out["tokens_per_s"] = [v * 1000.0 if v is not None else math.nan for v, _ in parsed]
    out["status"] = [s for _, s in parsed]
    return out


@functools.cache
def memory_breakdown() -> pd.DataFrame:
    """Llama-8B breakdown: method, component (our names), gb."""
    raw = _read("memory_breakdown_8b.csv")
    return pd.DataFrame(
        {
            "method": [names.paper_method(m) for m in raw["method"]],
            "component": [names.PAPER_COMPONENTS.get(c, c) for c in raw["component"]],
            "gb": [float(v) for v in raw["gb"]],
        }
    )


@functools.cache
def latency_breakdown() -> pd.DataFrame:
    """Single-layer latency: method, phase, op, ms."""
    raw = _read("latency_breakdown.csv")
    return pd.DataFrame(
        {
            "method": [names.paper_method(m) for m in raw["variant"]],
            "phase": list(raw["phase"]),
            "op": list(raw["op"]),
            "ms": [float(v) for v in raw["ms"]],
        }
    )


@functools.cache
def latency_totals() -> dict[str, float]:
    raw = _read("latency_totals.csv")
    return {names.paper_method(m): float(v) for m, v in zip(raw["variant"], raw["fwd_bwd_ms"])}


def _match(df: pd.DataFrame, method, model, seq_len, block_size) -> pd.DataFrame:
    sel = df[(df["method"] == method) & (df["model"] == model) & (df["seq_len"] == seq_len)]
    if sel.empty:
        return sel
    if sel["block_size"].isna().all():  # block size does not apply (AdamW, baselines)
        return sel
    if block_size is None:
        return sel.iloc[0:0]
    return sel[sel["block_size"] == int(block_size)]


def peak_cell(method, model, seq_len, block_size) -> PaperCell | None:
    sel = _match(peak_memory(), method, model, seq_len, block_size)
    if sel.empty:
        return None
    row = sel.iloc[0]
    return PaperCell(None if row["status"] == "oom" else float(row["gb"]), row["status"])


def throughput_cell(method, model, seq_len, block_size, gpus: int = 1) -> PaperCell | None:
    df = throughput()
    sel = _match(df[df["gpus"] == gpus], method, model, seq_len, block_size)
    if sel.empty:
        return None
    row = sel.iloc[0]
    return PaperCell(None if row["status"] == "oom" else float(row["tokens_per_s"]), row["status"])


def ratio(measured, published) -> float | None:
    """measured / published, None when either is missing or published is zero."""
    if measured is None or published is None:
        return None
    try:
        m, p = float(measured), float(published)
    except (TypeError, ValueError):
        return None
    if math.isnan(m) or math.isnan(p) or p == 0:
        return None
    return m / p
