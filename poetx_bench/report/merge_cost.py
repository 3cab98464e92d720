"""The cost of a merge (`measure_merge` rows): the merge alone, a merging step beside a plain step, and the
merge amortized over merge_every."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..results.point import Point
from .document import Section, Table, fmt_num


def _ms(v) -> str:
    return fmt_num(v * 1e3, 1) if isinstance(v, (int, float)) else "—"


def merge_cost_section(points: list[Point], out_dir: Path) -> Section | None:
    """Rows with `measure_merge`: the merge alone, a merging step beside a plain step (time and peak), and
    the merge amortized over merge_every; None (left out) when no row measured a merge."""
    from .names import to_gb
    from .tables import _save_table, frame, method_label

    records = []
    for p in points:
        mc = p.metrics.get("merge_cost") if p.kind == "train" and p.ok else None
        if not isinstance(mc, dict):
            continue
        records.append({"point": f"{method_label(p)} {p.model} L{p.seq_len} bs{p.batch_size}", **mc,
                        "plain_step_peak_bytes": p.metric("peak_memory_bytes"), "point_id": p.point_id})
    if not records:
        return None
    csv = _save_table(frame(records), out_dir, "merge_cost")
    shown = [{"point": r["point"], "merge ms": _ms(r["merge_time_s"]), "plain step ms": _ms(r["plain_step_time_s"]),
              "step + merge ms": _ms(r["merge_step_time_s"]),
              "plain step peak GB": fmt_num(to_gb(r["plain_step_peak_bytes"])),
              "step + merge peak GB": fmt_num(to_gb(r["merge_step_peak_bytes"])),
              "merge_every": r["merge_every"], "amortized ms/step": _ms(r["amortized_s_per_step"]),
              "amortized / step": fmt_num(r["amortized_fraction_of_step"], 3)} for r in records]
    sec = Section("Merge cost")
    sec.add("Timed steps never include a merge unless `merge_every` divides them, so points with "
            "`measure_merge = true` time one after their timed steps: the merge alone (fold R and P into W0, "
            "redraw the permutations, reset the skew parameters and their Adam state), one step followed by a "
            "merge, and that step's peak memory beside the plain steps' peak; the merge time divided by "
            "`merge_every` is its amortized cost per step.")
    sec.add(Table(pd.DataFrame(shown).astype(str), csv=csv))
    return sec
