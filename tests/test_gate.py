"""Regression gate: memory / throughput / loss / params / status rules, matching, rules files, exit codes."""

from __future__ import annotations

import argparse
import copy
import json
import random
from pathlib import Path

import pytest

from poetx_bench import gate
from poetx_bench.errors import UserError

FIXTURE = Path(__file__).parent / "fixtures" / "results_mixed.jsonl"


def _rows() -> list[dict]:
    return [json.loads(line) for line in FIXTURE.read_text().splitlines() if line.strip()]


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _find(rows, method, model, seq_len=1024, block=256):
    return next(r for r in rows if r["kind"] == "train" and r["config"]["method"] == method
                and r["config"]["model"] == model and r["config"]["seq_len"] == seq_len
                and r["config"]["block_size"] == block)


def _run(tmp_path, base_rows, cur_rows, rules: str | None = None, summary: bool = False):
    base = _write(tmp_path / "base.jsonl", base_rows)
    cur = _write(tmp_path / "cur.jsonl", cur_rows)
    parser = argparse.ArgumentParser()
    gate.add_arguments(parser)
    argv = ["--baseline", str(base), "--current", str(cur)]
    if rules is not None:
        (tmp_path / "rules.toml").write_text(rules)
        argv += ["--rules", str(tmp_path / "rules.toml")]
    if summary:
        argv += ["--summary", str(tmp_path / "out" / "summary.md")]
    return gate.main(parser.parse_args(argv))


def _result(tmp_path, base_rows, cur_rows, rules=None) -> gate.GateResult:
    base = _write(tmp_path / "b.jsonl", base_rows)
    cur = _write(tmp_path / "c.jsonl", cur_rows)
    return gate.run_gate(base, cur, gate.load_rules(rules))


def _verdict(result: gate.GateResult, label_start: str) -> gate.Comparison:
    return next(c for c in result.comparisons if c.label.startswith(label_start))


def test_identical_file_passes(tmp_path, capsys):
    rows = _rows()
    assert _run(tmp_path, rows, rows) == 0
    out = capsys.readouterr().out
    assert "gate: PASS" in out
    assert " worse " not in out


def test_memory_regression_caught(tmp_path, capsys):
    base = _rows()
    cur = copy.deepcopy(base)
    point = _find(cur, "poetx-mem", "3b")
    point["metrics"]["peak_memory_bytes"] = int(point["metrics"]["peak_memory_bytes"] * 1.2)
    assert _run(tmp_path, base, cur, summary=True) == 1
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("worse"))
    assert "poetx-mem b256 3b L1024" in line and "peak_memory_bytes" in line and "+20.0%" in line
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "| worse | poetx-mem b256 3b L1024 bs1 | peak_memory_bytes |" in summary
    # the same regression is ignored when the rules file disables the memory metric
    assert _run(tmp_path, base, cur, rules="[metrics.peak_memory_bytes]\nenabled = false\n") == 0


def test_small_memory_change_is_noise(tmp_path):
    base = _rows()
    cur = copy.deepcopy(base)
    point = _find(cur, "poetx-mem", "3b")
    point["metrics"]["peak_memory_bytes"] += 100 * 2**20  # +100 MiB on 13.5 GiB: < 3%
    res = _result(tmp_path, base, cur)
    assert _verdict(res, "poetx-mem b256 3b L1024").verdict == gate.NOISE
    assert res.exit_code == 0


def test_ok_to_oom_is_newly_failing(tmp_path, capsys):
    base = _rows()
    cur = copy.deepcopy(base)
    point = _find(cur, "poetx-fast", "8b")
    point["status"] = "oom"
    point["metrics"] = {"peak_memory_bytes": 80 * 2**30}
    point["error"] = {"type": "OutOfMemoryError", "message": "CUDA out of memory\nmore", "traceback_tail": ""}
    assert _run(tmp_path, base, cur) == 1
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("newly failing"))
    assert "poetx-fast b256 8b L1024" in line and "ok -> oom: CUDA out of memory" in line
    # and the reverse (fixed) is not a failure
    assert _run(tmp_path, cur, base) == 0


def test_nothing_comparable_returns_2(tmp_path):
    base = _rows()
    cur = copy.deepcopy(base)
    for r in cur:
        r["point_id"] = "x" + r["point_id"]
        r["config"]["seed"] = 123
    assert _run(tmp_path, base, cur) == 2
    res = _result(tmp_path, base, cur)
    assert all(c.verdict == gate.NA for c in res.comparisons)
    assert {c.note for c in res.comparisons} == {"only in baseline", "only in current"}


def test_match_by_config_when_point_id_differs(tmp_path):
    base = _rows()
    cur = copy.deepcopy(base)
    for r in cur:
        r["point_id"] = "changed-" + r["point_id"]  # e.g. a hash over a new config field
    res = _result(tmp_path, base, cur)
    assert res.exit_code == 0
    assert not [c for c in res.comparisons if c.note.startswith("only in")]


def test_unmatched_points_are_listed_not_failures(tmp_path):
    base = _rows()
    cur = [r for r in copy.deepcopy(base) if r["config"].get("model") != "tiny"]
    res = _result(tmp_path, base, cur)
    only = [c for c in res.comparisons if c.note == "only in baseline"]
    assert len(only) == 2 and res.exit_code == 0


def _with_steps(row: dict, times: list[float]) -> dict:
    row = copy.deepcopy(row)
    tokens = row["config"]["seq_len"] * row["config"]["batch_size"]
    times_sorted = sorted(times)
    row["metrics"]["step_times_s"] = times
    row["metrics"]["tokens_per_s"] = tokens / times_sorted[len(times) // 2]
    return row


def test_throughput_regression_needs_significant_samples(tmp_path):
    rng = random.Random(1)
    template = _find(_rows(), "poetx-fast", "3b")
    # clearly separated: every current step is ~20% slower
    base = _with_steps(template, [0.10 + rng.gauss(0, 0.001) for _ in range(15)])
    slow = _with_steps(template, [0.12 + rng.gauss(0, 0.001) for _ in range(15)])
    res = _result(tmp_path, [base], [slow])
    comp = res.comparisons[0]
    assert comp.verdict == gate.WORSE and [c.metric for c in comp.flagged()] == ["tokens_per_s"]
    assert "Mann-Whitney" in comp.flagged()[0].detail
    assert res.exit_code == 1
    # overlapping noisy samples: tokens/s 10% lower, but the step times are drawn from one distribution
    noisy_base = _with_steps(template, [rng.uniform(0.05, 0.15) for _ in range(12)])
    noisy_cur = _with_steps(template, [rng.uniform(0.05, 0.15) for _ in range(12)])
    noisy_cur["metrics"]["tokens_per_s"] = noisy_base["metrics"]["tokens_per_s"] * 0.9
    res = _result(tmp_path, [noisy_base], [noisy_cur])
    comp = res.comparisons[0]
    assert comp.verdict == gate.NOISE, [c.detail for c in comp.checks]
    assert res.exit_code == 0
    # without samples the threshold alone decides
    for row in (noisy_base, noisy_cur):
        del row["metrics"]["step_times_s"]
    assert _result(tmp_path, [noisy_base], [noisy_cur]).comparisons[0].verdict == gate.WORSE


def test_layer_latency_lower_is_better(tmp_path):
    base = [r for r in _rows() if r["kind"] == "layer" and r["status"] == "ok"]
    cur = copy.deepcopy(base)
    cur[0]["metrics"]["fwd_bwd_ms"] *= 1.5
    cur[1]["metrics"]["fwd_bwd_ms"] *= 0.5
    res = _result(tmp_path, base, cur)
    verdicts = {c.current.method: c.verdict for c in res.comparisons}
    assert verdicts[cur[0]["config"]["method"]] == gate.WORSE
    assert verdicts[cur[1]["config"]["method"]] == gate.BETTER
    assert res.exit_code == 1


def test_final_loss_tolerance_and_params(tmp_path):
    base = _rows()
    row = _find(base, "adamw", "3b", block=None)
    loss = row["metrics"]["final_loss"]
    cur = copy.deepcopy(base)
    _find(cur, "adamw", "3b", block=None)["metrics"]["final_loss"] = loss + 0.04  # within abs 0.05 (> rel 2%)
    assert _result(tmp_path, base, cur).exit_code == 0
    _find(cur, "adamw", "3b", block=None)["metrics"]["final_loss"] = loss + 0.2
    comp = _verdict(_result(tmp_path, base, cur), "adamw 3b L1024")
    assert comp.verdict == gate.WORSE and comp.flagged()[0].metric == "final_loss"
    _find(cur, "adamw", "3b", block=None)["metrics"]["final_loss"] = float("nan")
    assert _verdict(_result(tmp_path, base, cur), "adamw 3b L1024").verdict == gate.WORSE
    # a drop beyond tolerance is a failure by default (two-sided), "better" when one-sided
    _find(cur, "adamw", "3b", block=None)["metrics"]["final_loss"] = loss - 0.2
    assert _verdict(_result(tmp_path, base, cur), "adamw 3b L1024").verdict == gate.WORSE
    rules = tmp_path / "one_sided.toml"
    rules.write_text("[metrics.final_loss]\ntwo_sided = false\n")
    assert _verdict(_result(tmp_path, base, cur, rules), "adamw 3b L1024").verdict == gate.BETTER
    # parameter counts must be equal
    cur = copy.deepcopy(base)
    _find(cur, "poetx-fast", "8b")["metrics"]["trainable_params"] += 1
    comp = _verdict(_result(tmp_path, base, cur), "poetx-fast b256 8b")
    assert comp.verdict == gate.WORSE and comp.flagged()[0].metric == "trainable_params"


def test_cpu_ci_style_rules(tmp_path):
    base = _rows()
    cur = copy.deepcopy(base)
    for r in cur:
        if r["status"] == "ok" and r["kind"] == "train":
            r["metrics"]["tokens_per_s"] *= 0.5
            r["metrics"]["step_times_s"] = [t * 2 for t in r["metrics"]["step_times_s"]]
            r["metrics"]["peak_memory_bytes"] *= 2
    rules = ('description = "CPU CI"\n[metrics.tokens_per_s]\nenabled = false\n'
             '[metrics.peak_memory_bytes]\nenabled = false\n')
    assert _run(tmp_path, base, cur) == 1
    assert _run(tmp_path, base, cur, rules=rules) == 0


@pytest.mark.parametrize("text, fragment", [
    ("[metrics.tokens_per_s]\nthreshold = 0.1\n", "metrics.tokens_per_s.threshold"),
    ("[metrics.throughput]\nenabled = false\n", "metrics.throughput"),
    ("[gate]\nx = 1\n", "'gate'"),
    ("[metrics.peak_memory_bytes]\nrel = -1\n", "metrics.peak_memory_bytes.rel"),
    ("[metrics.status]\nenabled = 'no'\n", "metrics.status.enabled"),
    ("[metrics.tokens_per_s\n", "invalid TOML"),
])
def test_bad_rules_file_exits_2(tmp_path, capsys, text, fragment):
    rows = _rows()
    assert _run(tmp_path, rows, rows, rules=text) == 2
    err = capsys.readouterr().err
    assert "rules.toml" in err and fragment in err


def test_bad_results_input_exits_2(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    gate.add_arguments(parser)
    good = _write(tmp_path / "good.jsonl", _rows())
    args = parser.parse_args(["--baseline", str(tmp_path / "missing.jsonl"), "--current", str(good)])
    assert gate.main(args) == 2
    assert "missing.jsonl" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"config": {}}\nnot json\n{"config": {}}\n')
    args = parser.parse_args(["--baseline", str(good), "--current", str(bad)])
    assert gate.main(args) == 2
    assert "bad.jsonl:2" in capsys.readouterr().err


def test_load_rules_defaults_and_overrides(tmp_path):
    rules = gate.load_rules(None)
    assert rules["peak_memory_bytes"]["abs"] == 64 * 2**20
    path = tmp_path / "r.toml"
    path.write_text("[metrics.fwd_bwd_ms]\nrel = 0.2\nmin_samples = 5\n")
    rules = gate.load_rules(path)
    assert rules["fwd_bwd_ms"]["rel"] == 0.2 and rules["fwd_bwd_ms"]["min_samples"] == 5
    assert rules["tokens_per_s"]["rel"] == 0.07
    with pytest.raises(UserError, match="not found"):
        gate.load_rules(tmp_path / "nope.toml")
