"""Pieces the H100 paper campaign needs: `trials` (the same point in separate processes) and the report's
headline ratios with their spread, and `measure_merge` (the cost of a merge, which timed steps skip)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from poetx_bench.cli import main
from poetx_bench.results import read_rows
from poetx_bench.suite import load_suite

SUITE = """
methods = {methods}
models = ["tiny"]
block_sizes = [32]
seq_lens = [16]
batch_sizes = [2]
steps = 3
warmup_steps = 1
dtype = "float32"
data = "synthetic"
vocab_size = 256
merge_every = 50
{extra}
"""


def _suite(tmp_path: Path, methods='["adamw", "poetx-mem"]', extra="") -> Path:
    path = tmp_path / "s.toml"
    path.write_text(SUITE.format(methods=methods, extra=extra))
    return path


def test_trials_expand_to_separate_points_and_trial_0_keeps_its_id(tmp_path):
    plain = {p["point_id"]: p["config"] for p in load_suite(str(_suite(tmp_path)), device="cpu").points}
    tried = load_suite(str(_suite(tmp_path, extra="trials = 3")), device="cpu").points
    assert len(tried) == 3 * len(plain)
    ids = [p["point_id"] for p in tried]
    assert len(set(ids)) == len(ids)
    firsts = [p for p in tried if p["config"].get("trial", 0) == 0]
    assert {p["point_id"] for p in firsts} == set(plain)  # trial 0 is the point as it always was
    assert sorted(p["config"].get("trial", 0) for p in tried) == sorted([0, 1, 2] * len(plain))


@pytest.mark.parametrize("extra, word", [("trials = 0", "trials"), ("trial = 1", "trial")])
def test_bad_trials_is_one_line_exit_2(tmp_path, capsys, extra, word):
    rc = main(["sweep", "--suite", str(_suite(tmp_path, extra=extra)), "--device", "cpu", "--dry-run"])
    err = capsys.readouterr().err
    assert rc == 2 and word in err and err.count("\n") == 1, err


def _point(method, trial, tps, peak, block=None):
    from poetx_bench.results.point import Point

    cfg = {"kind": "train", "method": method, "model": "8b", "seq_len": 1024, "batch_size": 1,
           "dtype": "bfloat16", "device": "cuda", "steps": 10, "seed": 0, "block_size": block}
    if trial:
        cfg["trial"] = trial
    return Point({"status": "ok", "config": cfg, "env": {"device_name": "NVIDIA H100 80GB HBM3"},
                  "point_id": f"{method}{trial}", "metrics": {"tokens_per_s": tps, "peak_memory_bytes": peak}})


def test_headline_ratios_pair_trials_and_give_min_median_max(tmp_path):
    from poetx_bench.report.headline import headline_records, headline_section

    pts = [_point("adamw", t, 100.0, 50) for t in range(3)]
    pts += [_point("poetx-fast", t, tps, 25, block=256) for t, tps in enumerate((110.0, 120.0, 90.0))]
    (rec,) = headline_records(pts)
    assert rec["trials"] == 3 and rec["method"] == "poetx-fast b256"
    assert (rec["tokens_per_s_ratio_min"], rec["tokens_per_s_ratio_median"], rec["tokens_per_s_ratio_max"]) \
        == pytest.approx((0.9, 1.1, 1.2))
    assert rec["peak_memory_ratio_median"] == pytest.approx(0.5)
    assert headline_section(pts, tmp_path).has_data
    assert headline_section(pts[:1] + pts[3:4], tmp_path) is None  # one trial: the throughput table says it
    # beside a three-trial pair, a one-trial pair stays in the CSV but not in the shown table
    solo = _point("poetx-mem", 0, 80.0, 20, block=256)
    sec = headline_section(pts + [solo], tmp_path)
    shown = "\n".join(item.df.to_string() for item in sec.items if hasattr(item, "df"))
    assert "poetx-fast b256" in shown and "poetx-mem" not in shown
    assert "poetx-mem b256" in (tmp_path / "tables" / "headline_ratios.csv").read_text()


def test_measure_merge_times_a_merge_on_cpu(tmp_path):
    suite = _suite(tmp_path, extra="measure_merge = true")
    out = tmp_path / "out"
    assert main(["sweep", "--suite", str(suite), "--out", str(out), "--device", "cpu", "--quiet"]) == 0
    rows = {r["config"]["method"]: r for r in read_rows(out / "results.jsonl")}
    assert rows["adamw"]["metrics"]["merge_cost"] is None  # no POET layers: nothing to merge
    mc = rows["poetx-mem"]["metrics"]["merge_cost"]
    assert mc["merge_time_s"] > 0 and mc["merge_step_time_s"] > mc["merge_time_s"]
    assert mc["merge_every"] == 50 and mc["amortized_s_per_step"] == pytest.approx(mc["merge_time_s"] / 50)
    assert rows["poetx-mem"]["metrics"]["merges"] == 0  # the timed steps did not merge
    report = tmp_path / "report"
    assert main(["report", str(out / "results.jsonl"), "--out", str(report)]) == 0
    assert "## Merge cost" in (report / "report.md").read_text()
    assert json.loads(json.dumps(mc)) == mc  # strict JSON
