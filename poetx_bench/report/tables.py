"""Table sections: peak memory, throughput, status summary and environment.

Each table's raw data goes to tables/<name>.csv (numbers unformatted); the section shows a formatted copy.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from .. import machines
from ..results.point import Point
from . import names, paper
from .document import (
    MISSING,
    Section,
    Table,
    fmt_int,
    fmt_num,
    fmt_ratio,
    no_data,
    status_text,
    write_csv,
)

TABLES_DIR = "tables"


INT_COLUMNS = ("block_size", "seq_len", "batch_size", "in_features", "out_features", "tokens", "step")


def frame(records: list[dict]) -> pd.DataFrame:
    """Records -> DataFrame for CSV, with nullable integer columns (256, not 256.0)."""
    df = pd.DataFrame.from_records(records)
    for col in INT_COLUMNS:
        if col in df.columns:
            df[col] = pd.array([None if v is None or pd.isna(v) else int(v) for v in df[col]], dtype="Int64")
    return df


def _save_table(df: pd.DataFrame, out_dir: Path, name: str) -> str:
    rel = f"{TABLES_DIR}/{name}.csv"
    write_csv(df, Path(out_dir) / rel)
    return rel


def _train(points: list[Point]) -> list[Point]:
    return [p for p in points if p.kind == "train"]


def _sort_points(points: list[Point]) -> list[Point]:
    return sorted(points, key=lambda p: (names.model_key(p.model), p.seq_len or 0, p.batch_size or 0,
                                         names.method_key(p.method), p.block_size or 0))


def paper_comparable(p: Point) -> bool:
    """Paper cells were measured on one GPU (one process), batch 1, bf16."""
    cfg = paper.PEAK_CONFIG
    return (p.batch_size in (None, cfg["batch_size"]) and p.cfg("dtype") in (None, cfg["dtype"])
            and p.cfg("device") in (None, cfg["device"]) and (p.nproc or 1) == 1)


def method_label(p: Point) -> str:
    """'poetx-fast b256 [triton, cudagraph]': the method, its block size and what runs it (Point.tags)."""
    label = p.method if p.block_size is None else f"{p.method} b{p.block_size}"
    return label + (f" [{', '.join(p.tags)}]" if p.tags else "")


# --- 1. peak memory ------------------------------------------------------------------------------

def peak_memory_records(points: list[Point]) -> list[dict]:
    """One record per train point: measured GB, paper GB and their ratio (raw numbers)."""
    records = []
    for p in _sort_points(_train(points)):
        cell = paper.peak_cell(p.method, p.model, p.seq_len, p.block_size) if paper_comparable(p) else None
        measured = names.to_gb(p.metric("peak_memory_bytes"))
        records.append({
            "method": p.method, "variant": method_label(p), "block_size": p.block_size, "model": p.model,
            "seq_len": p.seq_len,
            "batch_size": p.batch_size, "dtype": p.cfg("dtype"), "device": p.cfg("device"),
            "status": p.status,
            "measured_gb": measured,
            "reserved_gb": names.to_gb(p.metric("peak_reserved_bytes")),
            "nvml_gb": names.to_gb(p.metric("nvml_peak_bytes")),
            "paper_gb": cell.value if cell else None,
            "paper_status": cell.status if cell else None,
            "ratio": paper.ratio(measured, cell.value) if (cell and p.ok) else None,
            "point_id": p.point_id,
        })
    return records


def peak_cell_text(rec: dict) -> str:
    if rec["status"] == "ok":
        text = fmt_num(rec["measured_gb"])
    else:
        text = status_text(rec["status"])
        if rec["status"] == "oom" and rec["measured_gb"] is not None:
            text += f" (≥{fmt_num(rec['measured_gb'])})"
    if rec["paper_status"] is not None:
        paper_text = "OOM" if rec["paper_status"] == "oom" else fmt_num(rec["paper_gb"])
        text += f" · paper {paper_text}"
        if rec["ratio"] is not None:
            text += f" · {fmt_ratio(rec['ratio'])}"
    return text


def peak_memory_section(points: list[Point], out_dir: Path) -> Section:
    title = "Peak memory (GB)"
    records = peak_memory_records(points)
    if not records:
        return no_data(title, "no training points.")
    csv = _save_table(frame(records), out_dir, "peak_memory")
    rows: dict[str, dict[str, str]] = {}
    row_keys: dict[str, tuple] = {}
    columns: list[str] = []
    varying = [c for c in ("batch_size", "dtype", "device") if len({str(r[c]) for r in records}) > 1]
    for rec in records:
        label = rec["variant"]
        for c in varying:
            label += f" {c.replace('_size', '')}={rec[c]}"
        col = f"{rec['model']} L{fmt_int(rec['seq_len'])}"
        if col not in columns:
            columns.append(col)
        rows.setdefault(label, {})[col] = peak_cell_text(rec)
        row_keys[label] = (names.method_key(rec["method"]), rec["block_size"] or 0, label)
    order = sorted(rows, key=row_keys.__getitem__)
    table = pd.DataFrame([[lab] + [rows[lab].get(c, "") for c in columns] for lab in order],
                         columns=["method"] + columns)
    sec = Section(title)
    sec.add("Peak allocated GPU memory (`metrics.peak_memory_bytes`) per method × model × sequence length. "
            f"Each cell: measured · paper · measured/paper. {names.GB_NOTE} Paper cells "
            f"({names.PAPER_CITATION}: one H100, batch 1, bf16) are shown only for batch-1 bf16 CUDA points. "
            "OOM cells give the peak reached before the failure when the harness recorded it. "
            "CPU points report the process's peak RSS instead.")
    sec.add(Table(table, csv=csv))
    return sec


def _our_methods() -> set[str]:
    """The methods this harness can run (the train-method registry); read here so the report names a paper
    row it cannot run as such rather than as a cell someone forgot."""
    from ..methods import METHODS

    return set(METHODS)


# paper rows this suite does not register, and why (one place; anything else unregistered is "not in the
# suite yet")
NOT_REPRODUCIBLE = {
    "q-galore-8bit": "not reproducible: no working package (q-galore-torch 1.0 ships only the optimizer; the "
                     "INT8 weight layers it steps live in the authors' training scripts, and its 8-bit state "
                     "needs bitsandbytes CUDA)",
    "q-apollo-8bit": "not reproducible: no working package (apollo-torch 1.0.3's QAPOLLOAdamW steps INT8 weight "
                     "layers that only the authors' training scripts build)",
}


def paper_not_run_records(points: list[Point]) -> list[dict]:
    """Every cell of the paper's peak-memory table (one GPU, batch 1, bf16) without a measured point here, with
    why. Empty unless the results hold at least one point comparable with that table (a CUDA bf16 batch-1
    training point), so CPU and ad-hoc reports do not list the whole paper."""
    comparable = [p for p in _train(points) if paper_comparable(p) and p.cfg("device") == "cuda"
                  and (p.nproc or 1) == 1]
    if not comparable:
        return []
    measured = {(p.method, p.model, p.seq_len, int(p.block_size) if p.block_size else None) for p in comparable}
    ours = _our_methods()
    out = []
    for row in paper.peak_memory().itertuples(index=False):
        b = None if row.block_size is None or row.block_size is pd.NA else int(row.block_size)
        if (row.method, row.model, row.seq_len, b) in measured:
            continue
        why = ("not run: no row for this cell in these results" if row.method in ours else
               NOT_REPRODUCIBLE.get(row.method, "not run: the method is not in the suite yet (the baselines issue)"))
        out.append({"method": row.method, "block_size": b, "model": row.model, "seq_len": row.seq_len,
                    "paper_gb": None if row.status == "oom" else float(row.gb), "paper_status": row.status,
                    "why": why})
    return out


def paper_not_run_section(points: list[Point], out_dir: Path) -> Section | None:
    title = "Paper cells not run"
    records = paper_not_run_records(points)
    if not records:
        return None
    csv = _save_table(frame(records), out_dir, "paper_not_run")
    rows: dict[tuple, dict[str, str]] = {}
    columns: list[str] = []
    for rec in records:
        key = (rec["method"], rec["block_size"] or 0, rec["why"])
        col = f"{rec['model']} L{fmt_int(rec['seq_len'])}"
        if col not in columns:
            columns.append(col)
        rows.setdefault(key, {})[col] = "OOM" if rec["paper_status"] == "oom" else fmt_num(rec["paper_gb"])
    columns.sort(key=lambda c: (names.model_key(c.split(" L")[0]), int(c.split(" L")[1].replace(",", ""))))
    order = sorted(rows, key=lambda k: (names.method_key(k[0]), k[1]))
    table = pd.DataFrame([[m + (f" b{b}" if b else ""), why] + [rows[(m, b, why)].get(c, "") for c in columns]
                          for m, b, why in order], columns=["method", "why"] + columns)
    sec = Section(title)
    sec.add(f"Every cell of the paper's peak-memory table (GB, {names.PAPER_CITATION}) that these results do "
            "not measure, with its published value, so a missing cell reads as not run instead of vanishing. "
            "Empty cells of this table are cells that were measured (see Peak memory).")
    sec.add(Table(table, csv=csv))
    return sec


# --- 4. throughput -------------------------------------------------------------------------------

GROUP = ("model", "seq_len", "batch_size", "device", "dtype", "nproc", "parallel")


def same_machine(p: Point, refs: list[Point], allow_different_devices: bool = False) -> tuple[list[Point], str]:
    """The reference rows (e.g. the group's adamw) that may be paired with p: those on the same device model
    under the same memory cap (poetx_bench.machines), or all of them when allowed; and a note when some
    exist but none is on p's machine."""
    if allow_different_devices:
        return refs, ""
    ok = [r for r in refs if machines.mismatch(r, p) is None]
    if refs and not ok:
        return [], f"only on another machine ({machines.mismatch(p, refs[-1])})"
    return ok, ""


def throughput_records(points: list[Point], allow_different_devices: bool = False) -> list[dict]:
    records = []
    train = _sort_points(_train(points))
    groups: dict[tuple, list[Point]] = {}
    for p in train:
        groups.setdefault(tuple(p.cfg(c) for c in GROUP), []).append(p)
    for key, members in groups.items():
        adamw = [p for p in members if p.method == names.BASELINE]
        model, seq_len = key[0], key[1]
        paper_base = paper.throughput_cell(names.BASELINE, model, seq_len, None)
        for p in members:
            base, other = same_machine(p, adamw, allow_different_devices)
            # AdamW at its best compile setting: the fastest finished AdamW row of the group
            base = sorted(base, key=lambda q: (q.ok, q.metric("tokens_per_s") or 0.0))
            base_tps = base[-1].metric("tokens_per_s") if base and base[-1].ok else None
            if other:
                note = f"adamw {other}"
            elif not base:
                note = "no adamw in group"
            elif base_tps is None:
                note = f"adamw {status_text(base[-1].status)}" if not base[-1].ok else "adamw has no tokens/s"
            else:
                note = ""
            tps = p.metric("tokens_per_s") if p.ok else None
            cell = paper.throughput_cell(p.method, model, seq_len, p.block_size) if paper_comparable(p) else None
            paper_rel = None
            if cell and paper_base and cell.value is not None:
                paper_rel = paper.ratio(cell.value, paper_base.value)
            records.append({
                "model": model, "seq_len": seq_len, "batch_size": key[2], "device": key[3], "dtype": key[4],
                "method": p.method, "variant": method_label(p), "block_size": p.block_size, "status": p.status,
                "tokens_per_s": tps, "tokens_per_s_iqr": p.metric("tokens_per_s_iqr") if p.ok else None,
                "mfu": p.metric("mfu") if p.ok else None,
                "noisy": bool(p.metrics.get("noisy")) if p.ok else None,
                "relative_to_adamw": paper.ratio(tps, base_tps),
                "adamw_reference": method_label(base[-1]) if base_tps is not None else None,
                "group_note": note,
                "paper_tokens_per_s": cell.value if cell else None,
                "paper_status": cell.status if cell else None,
                "paper_relative_to_adamw": paper_rel,
                "ratio": paper.ratio(tps, cell.value) if cell else None,
                "point_id": p.point_id,
            })
    return records


def throughput_section(points: list[Point], out_dir: Path, allow_different_devices: bool = False) -> Section:
    title = "Throughput (relative to AdamW)"
    records = throughput_records(points, allow_different_devices)
    if not records:
        return no_data(title, "no training points.")
    csv = _save_table(frame(records), out_dir, "throughput")
    shown = []
    for rec in records:
        ok = rec["status"] == "ok"
        rel = fmt_num(rec["relative_to_adamw"]) if rec["relative_to_adamw"] is not None else \
            (rec["group_note"] or MISSING)
        paper_text = MISSING
        if rec["paper_status"] == "oom":
            paper_text = "OOM"
        elif rec["paper_tokens_per_s"] is not None:
            paper_text = fmt_num(rec["paper_tokens_per_s"], 0)
        tps = fmt_num(rec["tokens_per_s"], 0) if ok else status_text(rec["status"])
        if ok and rec["noisy"]:
            tps += " (noisy)"
        shown.append({
            "model": rec["model"], "L": fmt_int(rec["seq_len"]), "bs": fmt_int(rec["batch_size"]),
            "device": rec["device"] or MISSING,
            "method": rec["variant"],
            "tokens/s": tps,
            "IQR": fmt_num(rec["tokens_per_s_iqr"], 0),
            "vs adamw": rel,
            "MFU": fmt_num(rec["mfu"], 3),
            "paper tokens/s (1 GPU)": paper_text,
            "paper vs AdamW": fmt_num(rec["paper_relative_to_adamw"]),
            "measured/paper": fmt_ratio(rec["ratio"]),
        })
    sec = Section(title)
    sec.add("Median training throughput (tokens/s over timed steps); 'vs adamw' divides by the fastest `adamw` "
            "point (AdamW at its best `compile` setting) of the same model / sequence length / batch / device / "
            "dtype group that ran on the same "
            "device model under the same memory cap (`report --allow-different-devices` lifts that). Paper values are "
            f"{names.PAPER_CITATION}, one H100 (its 64-GPU numbers are in the CSV data, not compared).")
    sec.add(Table(pd.DataFrame(shown), csv=csv))
    return sec


# --- status summary & environment ----------------------------------------------------------------

def short_error(text: str, limit: int = 160) -> str:
    """An error line as a table cell: CUDA's OOM message up to its allocation request (the rest is the
    allocator's advice), anything else cut at `limit` characters."""
    m = re.search(r"CUDA out of memory\. Tried to allocate [\d.]+ [KMGT]?i?B\.", text)
    if m:
        return text[:m.end()]
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"


def status_section(points: list[Point], out_dir: Path, superseded: int = 0) -> Section:
    title = "Status summary"
    if not points:
        return no_data(title, "no result rows.")
    counts = pd.Series([p.status for p in points]).value_counts()
    order = [s for s in names.STATUS_ORDER if s in counts.index] + \
        sorted(s for s in counts.index if s not in names.STATUS_ORDER)
    count_df = pd.DataFrame({"status": order, "points": [int(counts[s]) for s in order]})
    csv = _save_table(count_df, out_dir, "status_counts")
    sec = Section(title)
    sec.add(f"{len(points)} points." + (f" {superseded} earlier duplicate rows were superseded by later ones."
                                        if superseded else ""))
    sec.add(Table(count_df.astype(str), csv=csv))
    bad = [p for p in points if not p.ok]
    if bad:
        records = [{
            "point": p.label(), "kind": p.kind, "suite": p.suite or MISSING, "status": status_text(p.status),
            "error": (f"{p.error_type}: " if p.error_type else "") + (p.error_line or MISSING),
            "source": f"{Path(p.file).name}:{p.line}", "point_id": p.point_id or MISSING,
        } for p in bad]
        bad_df = pd.DataFrame.from_records(records)
        csv_rel = _save_table(bad_df, out_dir, "failed_points")  # the whole first line of each error
        shown = bad_df.assign(error=bad_df["error"].map(short_error))
        sec.add("Points that did not finish (error message, first line; whole in the CSV):")
        sec.add(Table(shown, csv=csv_rel))
    else:
        sec.add("All points finished ok.")
    return sec


ENV_FIELDS = ("device_name", "driver", "cuda", "torch", "triton", "python", "cpu", "git_commit", "git_dirty",
              "hostname")


def environment_section(points: list[Point], out_dir: Path) -> Section:
    title = "Environment"
    groups: dict[tuple, list[Point]] = {}
    for p in points:
        if p.env:
            groups.setdefault(tuple(str(p.env.get(f)) if p.env.get(f) is not None else MISSING
                                    for f in ENV_FIELDS), []).append(p)
    if not groups:
        return no_data(title, "no `env` recorded in the rows.")
    records = []
    for key, members in groups.items():
        rec = dict(zip(ENV_FIELDS, key))
        times = sorted(str(p.env["time"]) for p in members if p.env.get("time"))
        rec["points"] = str(len(members))
        rec["first"] = times[0] if times else MISSING
        rec["last"] = times[-1] if times else MISSING
        records.append(rec)
    df = pd.DataFrame.from_records(records)
    csv = _save_table(df, out_dir, "environment")
    sec = Section(title)
    commits = {r["git_commit"] for r in records}
    notes = []
    if len(records) > 1:
        notes.append(f"Rows come from {len(records)} different environments.")
    if len(commits) > 1:
        notes.append(f"{len(commits)} different git commits.")
    if any(r["git_dirty"] in ("True", "true", "1") for r in records):
        notes.append("Some rows were produced from a dirty working tree.")
    if notes:
        sec.add(" ".join(notes))
    sec.add(Table(df, csv=csv))
    return sec
