"""Regression gate: memory / throughput / loss / params / status rules, statistics and effect size, machines,
matching, rules files, exit codes."""

from __future__ import annotations

import argparse
import copy
import json
import random
import statistics
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
    # without samples only the effect-size rule applies: -10% is within it, so "insufficient samples"
    for row in (noisy_base, noisy_cur):
        del row["metrics"]["step_times_s"]
    res = _result(tmp_path, [noisy_base], [noisy_cur])
    check = res.comparisons[0].flagged()[0]
    assert res.comparisons[0].verdict == gate.INSUFFICIENT and check.basis == gate.EFFECT
    assert res.exit_code == 0


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
    ("[metrics.tokens_per_s]\nabs = 10\n", "metrics.tokens_per_s.abs"),
    ("[metrics.fwd_bwd_ms]\nrel = 0.3\n", "metrics.fwd_bwd_ms.effect_rel"),
    ("[metrics.fwd_bwd_ms]\neffect_rel = 0\n", "metrics.fwd_bwd_ms.effect_rel"),
    ("[metrics.tokens_per_s]\nalpha = 1\n", "metrics.tokens_per_s.alpha"),
    ("[metrics.tokens_per_s]\nmin_samples = 1\n", "metrics.tokens_per_s.min_samples"),
    ("description = 3\n", "description"),
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


# --- synthetic rows: statistics, effect size, machines -------------------------------------------

H100, H200 = "NVIDIA H100 80GB HBM3", "NVIDIA H200"


def _row(method: str = "poetx-fast", times=(0.13, 0.131, 0.124), *, kind: str = "train",
         device_name: str | None = H100, point_id: str | None = None, **metrics) -> dict:
    """One ok result row. Train rows: step times in s, tokens_per_s = median of tokens/time as the harness
    records it. Layer rows: per-repeat times in ms as samples_ms, fwd_bwd_ms their median."""
    times = [float(t) for t in times]
    if kind == "train":
        config = {"kind": "train", "method": method, "model": "3b", "block_size": 256, "seq_len": 1024,
                  "batch_size": 1, "device": "cuda", "dtype": "bfloat16", "steps": len(times), "seed": 0}
        tokens = config["seq_len"] * config["batch_size"]
        base = {"tokens_per_s": statistics.median(tokens / t for t in times), "step_times_s": times,
                "peak_memory_bytes": 20 * 2**30, "final_loss": 10.8, "trainable_params": 1000,
                "total_params": 5000}
    else:
        config = {"kind": "layer", "method": method, "in_features": 4096, "out_features": 14336, "tokens": 2048,
                  "block_size": 256, "device": "cuda", "dtype": "bfloat16", "seed": 0}
        base = {"fwd_bwd_ms": statistics.median(times), "samples_ms": times, "trainable_params": 1000,
                "total_params": 5000}
    base.update(metrics)
    env = {"device_name": device_name} if device_name is not None else None
    return {"schema_version": 1, "point_id": point_id or f"{kind}-{method}", "status": "ok", "kind": kind,
            "config": config, "metrics": base, "env": env}


def _draw(seed: int, n: int, median: float, iqr_rel: float) -> list[float]:
    """n normal samples (fixed seed) rescaled about their median to exactly this median and IQR/median."""
    rng = random.Random(seed)
    raw = [rng.gauss(0.0, 1.0) for _ in range(n)]
    mid = statistics.median(raw)
    q = statistics.quantiles(raw, n=4, method="inclusive")
    return [median * (1 + (x - mid) * iqr_rel / (q[2] - q[0])) for x in raw]


def _only(result: gate.GateResult) -> gate.Comparison:
    assert len(result.comparisons) == 1
    return result.comparisons[0]


def _timed(result: gate.GateResult) -> gate.Check:
    """The timed-metric check of a one-pair result."""
    return next(c for c in _only(result).checks if c.metric in ("tokens_per_s", "fwd_bwd_ms"))


def test_five_x_slowdown_with_three_samples_fails(tmp_path, capsys):
    base = _row(times=[0.1294, 0.1309, 0.1240])
    slow = _row(times=[t * 5 for t in base["metrics"]["step_times_s"]])
    assert gate.smallest_p(3, 3) == pytest.approx(0.1)  # 3 against 3 can never reach alpha 0.05
    assert _run(tmp_path, [base], [slow]) == 1
    out = capsys.readouterr().out
    assert "gate: FAIL" in out and "effect-size threshold" in out
    check = _only(_result(tmp_path, [base], [slow])).flagged()[0]
    assert check.verdict == gate.WORSE and check.basis == gate.EFFECT and "x5.000" in check.detail
    # the same with the layer metric (per-repeat samples_ms), lower is better
    lb = _row("linear", [1.0, 1.01, 0.99], kind="layer")
    lc = _row("linear", [5.0, 5.05, 4.95], kind="layer")
    assert _run(tmp_path, [lb], [lc]) == 1


def test_five_percent_slowdown_with_three_samples_is_not_judged_on_statistics(tmp_path, capsys):
    base = _row(times=[0.1294, 0.1309, 0.1240])
    slow = _row(times=[t * 1.05 for t in base["metrics"]["step_times_s"]])
    assert _run(tmp_path, [base], [slow], summary=True) == 0
    out = capsys.readouterr().out
    assert "gate: PASS, but 1 metrics not judged on statistics: 1 insufficient samples" in out
    assert "gate: PASS:" not in out
    assert "judged: 0 metrics on statistics, 1 on effect size alone (insufficient samples)" in out
    line = next(ln for ln in out.splitlines() if ln.startswith("insufficient samples"))
    assert "tokens_per_s" in line and "smallest reachable Mann-Whitney p 0.1 >= alpha 0.05" in line
    comp = _only(_result(tmp_path, [base], [slow]))
    assert comp.verdict == gate.INSUFFICIENT and comp.flagged()[0].basis == gate.EFFECT
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "| insufficient samples | poetx-fast b256 3b L1024 bs1 | tokens_per_s |" in summary
    assert "1 on effect size alone" in summary and "fewer than 10 samples of tokens_per_s" in summary


def test_identical_data_passes(tmp_path, capsys):
    rows = [_row(times=_draw(1, 20, 0.1, 0.02)), _row("linear", _draw(2, 20, 1.0, 0.02), kind="layer")]
    assert _run(tmp_path, rows, rows) == 0
    out = capsys.readouterr().out
    assert "gate: PASS: 2 noise" in out
    assert "judged: 2 metrics on statistics, 0 on effect size alone" in out
    res = _result(tmp_path, rows, rows)
    assert all(c.verdict == gate.NOISE for c in res.comparisons)
    # identical with 3 samples: passes, said to be judged on effect size alone
    few = [_row()]
    assert _run(tmp_path, few, few) == 0
    assert "gate: PASS, but 1 metrics not judged on statistics" in capsys.readouterr().out


def test_ten_percent_slowdown_with_twenty_low_noise_samples_fails(tmp_path):
    base = _row(times=_draw(3, 20, 0.100, 0.02))
    slow = _row(times=[t * 1.10 for t in _draw(4, 20, 0.100, 0.02)])
    res = _result(tmp_path, [base], [slow])
    check = _only(res).flagged()[0]
    assert res.exit_code == 1 and check.verdict == gate.WORSE and check.basis == gate.STATS
    assert "CI above +7%" in check.detail and "Mann-Whitney" in check.detail
    # and a 10% speed-up is "better"
    fast = _row(times=[t / 1.10 for t in _draw(4, 20, 0.100, 0.02)])
    res = _result(tmp_path, [base], [fast])
    assert _only(res).verdict == gate.BETTER and res.exit_code == 0
    # layer latency (samples_ms): same rule
    lb = _row("poetx-mem", _draw(5, 20, 1.0, 0.02), kind="layer")
    lc = _row("poetx-mem", [t * 1.10 for t in _draw(6, 20, 1.0, 0.02)], kind="layer")
    assert _only(_result(tmp_path, [lb], [lc])).verdict == gate.WORSE


def test_ten_percent_slowdown_with_high_noise_is_noise(tmp_path):
    base_times = _draw(7, 20, 0.100, 0.30)
    cur_times = [t * 1.10 for t in _draw(8, 20, 0.100, 0.30)]
    for times in (base_times, cur_times):  # the fixture really is that noisy
        assert gate._iqr_rel(times) == pytest.approx(0.30)
    res = _result(tmp_path, [_row(times=base_times)], [_row(times=cur_times)])
    check = _timed(res)
    assert _only(res).verdict == gate.NOISE
    assert check.verdict == gate.NOISE and check.basis == gate.STATS, check.detail
    assert "noisy" in check.detail and res.exit_code == 0


def test_rows_from_two_gpu_models_are_refused(tmp_path, capsys):
    base = _row(times=_draw(1, 20, 0.1, 0.02))
    cur = _row(times=_draw(1, 20, 0.1, 0.02), device_name=H200)
    assert _run(tmp_path, [base], [cur]) == 2
    captured = capsys.readouterr()
    assert "gate: REFUSED" in captured.out and f"(baseline vs current): device {H100} vs {H200}" in captured.out
    assert "1 pairs not compared (different machines)" in captured.out
    assert "--allow-different-devices" in captured.err
    comp = _only(_result(tmp_path, [base], [cur]))
    assert comp.verdict == gate.NA and comp.refused
    # the flag allows it
    parser = argparse.ArgumentParser()
    gate.add_arguments(parser)
    args = parser.parse_args(["--baseline", str(tmp_path / "base.jsonl"), "--current", str(tmp_path / "cur.jsonl"),
                              "--allow-different-devices"])
    assert gate.main(args) == 0
    # a regression among the compared pairs still fails (1) even when other pairs are refused
    slow = _row("adamw", [t * 5 for t in _draw(1, 20, 0.1, 0.02)], point_id="other")
    assert _run(tmp_path, [base, _row("adamw", _draw(1, 20, 0.1, 0.02), point_id="other")], [cur, slow]) == 1
    # a different memory cap is a different machine too; a missing env is not the H100
    capped = copy.deepcopy(base)
    capped["metrics"]["memory_cap_bytes"] = 40 * 2**30
    assert _run(tmp_path, [base], [capped]) == 2
    assert "memory no cap vs cap 40 GiB" in capsys.readouterr().out
    assert _run(tmp_path, [base], [_row(times=_draw(1, 20, 0.1, 0.02), device_name=None)]) == 2


def test_machines_helper():
    from poetx_bench.machines import memory_cap_bytes, mismatch
    from poetx_bench.results.point import Point

    a, b = Point(_row()), Point(_row())
    assert mismatch(a, b) is None
    assert mismatch(a, Point(_row(device_name=H200))) == f"device {H100} vs {H200}"
    capped = _row()
    capped["config"]["max_memory_gb"] = 8
    assert memory_cap_bytes(Point(capped)) == 8 * 2**30
    assert "cap 8 GiB" in mismatch(a, Point(capped))


def test_stale_h100_baseline_with_throughput_cut_to_one_fifth_fails(tmp_path, capsys):
    """The issue's case: the 3-steps-a-point H100 memory baseline, every tokens/s cut to one fifth."""
    path = Path(__file__).parent.parent / "reports" / "baselines" / "h100-paper-memory-3b.jsonl"
    base = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    cur = copy.deepcopy(base)
    for r in cur:
        r["metrics"]["tokens_per_s"] /= 5
        r["metrics"]["step_times_s"] = [t * 5 for t in r["metrics"]["step_times_s"]]
    assert _run(tmp_path, base, cur) == 1
    captured = capsys.readouterr()
    assert captured.out.count("\nworse ") + captured.out.startswith("worse ") == len(base)
    assert "7 of 7 points have fewer than 10 samples of tokens_per_s (fewest 3)" in captured.err
    assert "0 metrics on statistics, 7 on effect size alone" in captured.out
    # a +10% memory change still fails on its fixed threshold; the unchanged file passes with a comment
    cur = copy.deepcopy(base)
    cur[0]["metrics"]["peak_memory_bytes"] = int(cur[0]["metrics"]["peak_memory_bytes"] * 1.1)
    assert _run(tmp_path, base, cur) == 1
    assert _run(tmp_path, base, base) == 0
    assert "gate: PASS, but 7 metrics not judged on statistics" in capsys.readouterr().out


def test_metric_missing_on_one_side_is_counted_not_judged(tmp_path, capsys):
    base = _row(times=_draw(1, 20, 0.1, 0.02))
    cur = copy.deepcopy(base)
    cur["metrics"]["tokens_per_s"] = None
    cur["metrics"]["step_times_s"] = []
    assert _run(tmp_path, [base], [cur]) == 0
    out = capsys.readouterr().out
    assert "1 could not be judged" in out and "not judged (missing on one side)" in out
    assert "gate: PASS, but 1 metrics not judged on statistics" in out


def test_timed_rules_from_file(tmp_path):
    base = _row(times=_draw(3, 20, 0.100, 0.02))
    slow = _row(times=[t * 1.10 for t in _draw(4, 20, 0.100, 0.02)])
    # a looser statistical threshold lets +10% pass; a tighter effect-size threshold fails it on 3 samples
    assert _only(_result(tmp_path, [base], [slow], _rules(tmp_path, "rel = 0.15\n"))).verdict == gate.NOISE
    few_b, few_c = _row(), _row(times=[t * 1.10 for t in (0.13, 0.131, 0.124)])
    assert _result(tmp_path, [few_b], [few_c]).exit_code == 0
    assert _result(tmp_path, [few_b], [few_c], _rules(tmp_path, "rel = 0.05\neffect_rel = 0.08\n")).exit_code == 1
    # min_samples above the count: judged on effect size alone
    res = _result(tmp_path, [base], [slow], _rules(tmp_path, "min_samples = 30\n"))
    assert _only(res).verdict == gate.INSUFFICIENT and "fewer than min_samples 30" in _only(res).flagged()[0].detail
    # a stricter alpha that 20 against 20 can still reach
    assert _only(_result(tmp_path, [base], [slow], _rules(tmp_path, "alpha = 0.001\n"))).verdict == gate.WORSE


def _rules(tmp_path: Path, body: str, metric: str = "tokens_per_s") -> Path:
    path = tmp_path / "timed.toml"
    path.write_text(f"[metrics.{metric}]\n{body}")
    return path


# --- the GPU gate: suites, rules, script ---------------------------------------------------------

ROOT = Path(__file__).parent.parent


def test_gpu_gate_suites_time_enough_samples():
    from poetx_bench.suite import load_suite

    layer = load_suite("gpu-gate-layer", device="cuda")
    train = load_suite("gpu-gate-train", device="cuda")
    assert {(p["config"]["method"], p["config"]["block_size"], p["config"]["backend"]) for p in layer.points} == {
        ("linear", None, "triton"), ("poetx-fast", 256, "triton"), ("poetx-mem", 256, "triton")}
    assert all((p["config"]["in_features"], p["config"]["out_features"]) == (4096, 14336) for p in layer.points)
    shapes = {(p["config"]["method"], p["config"]["model"], p["config"]["seq_len"], p["config"]["batch_size"])
              for p in train.points}
    assert shapes == {(m, model, L, bs) for m in ("adamw", "poetx-fast", "poetx-mem")
                      for model, L, bs in (("3b", 1024, 1), ("60m", 256, 32))}
    rules = gate.load_rules(ROOT / "reports" / "baselines" / "h100-rules.toml")
    assert all(p["config"]["steps"] >= rules["tokens_per_s"]["min_samples"] for p in train.points)
    assert all(p["config"]["seed"] == 0 and p["config"]["backend"] == "triton" for p in train.points)
    # do_bench samples for max(100, 2 * repeats) ms: >= 10 repeats up to 20 ms a call
    assert all(max(100, 2 * p["config"]["repeats"]) / 20 >= rules["fwd_bwd_ms"]["min_samples"]
               for p in layer.points)
    assert rules["tokens_per_s"]["effect_rel"] == 0.25 and rules["fwd_bwd_ms"]["rel"] < 0.25


def _script(tmp_path, baseline: Path, *args, out: str = "out", timeout: float = 120, **extra_env):
    import os
    import subprocess
    import sys

    env = {**os.environ, "POETX_GATE_BASELINE": str(baseline), "PYTHON": sys.executable, **extra_env}
    return subprocess.run(["bash", str(ROOT / "bench" / "gpu-gate.sh"), "--out", str(tmp_path / out), *args],
                          env=env, capture_output=True, text=True, timeout=timeout)


def test_gpu_gate_script_without_baseline_exits_2_with_one_line(tmp_path):
    proc = _script(tmp_path, tmp_path / "missing.jsonl")
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "no baseline" in proc.stderr and "--new-baseline" in proc.stderr
    assert not (tmp_path / "out").exists()  # nothing ran
    # a baseline from another GPU model is refused before the sweeps run
    other = _write(tmp_path / "h200.jsonl", [_row(device_name=H200)])
    proc = _script(tmp_path, other)
    assert proc.returncode == 2 and "measured on NVIDIA H200" in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1 and not (tmp_path / "out").exists()
    assert _script(tmp_path, other, "--bogus").returncode == 2


# --- the gate's self-test: an injected delay keeps the points' keys and fails the gate ----------------
LAYER_SUITE = ('kind = "layer"\nmethods = ["linear", "poetx-mem"]\nshapes = [[64, 96]]\ntokens = [16]\n'
               'block_sizes = [32]\nrepeats = 12\nwarmup_steps = 2\n')


def test_step_timer_adds_the_injected_delay(monkeypatch):
    import time as _time

    import torch

    from poetx_bench.measure import INJECTED_DELAY_ENV, StepTimer

    monkeypatch.setenv(INJECTED_DELAY_ENV, "30")
    timer = StepTimer(torch.device("cpu"))
    timer.start()
    _time.sleep(0.005)
    timer.stop()
    (d,) = timer.durations()
    assert 0.033 < d < 0.2, d


def test_injected_delay_pairs_with_baseline_and_fails_naming_metric(tmp_path, monkeypatch, capsys):
    from poetx_bench.cli import main
    from poetx_bench.measure import INJECTED_DELAY_ENV
    from poetx_bench.results import read_rows

    suite = tmp_path / "layer.toml"
    suite.write_text(LAYER_SUITE)
    args = ["sweep", "--suite", str(suite), "--device", "cpu", "--quiet"]
    assert main(args + ["--out", str(tmp_path / "base")]) == 0
    monkeypatch.setenv(INJECTED_DELAY_ENV, "20")
    assert main(args + ["--out", str(tmp_path / "slow")]) == 0
    base, slow = (read_rows(tmp_path / d / "results.jsonl") for d in ("base", "slow"))
    assert sorted(r["point_id"] for r in base) == sorted(r["point_id"] for r in slow)
    assert all(r["metrics"]["injected_delay_ms"] == 20 for r in slow)
    assert all("injected_delay_ms" not in r["metrics"] for r in base)
    capsys.readouterr()
    rules = Path(__file__).parents[1] / "reports" / "baselines" / "h100-rules.toml"
    rc = main(["gate", "--baseline", str(tmp_path / "base" / "results.jsonl"),
               "--current", str(tmp_path / "slow" / "results.jsonl"), "--rules", str(rules),
               "--allow-different-devices"])
    out = capsys.readouterr().out
    assert rc == 1, out
    assert "fwd_bwd_ms" in out and "FAIL" in out


def test_bad_injected_delay_exits_2_before_any_point(tmp_path, monkeypatch, capsys):
    from poetx_bench.cli import main
    from poetx_bench.measure import INJECTED_DELAY_ENV

    suite = tmp_path / "layer.toml"
    suite.write_text(LAYER_SUITE)
    monkeypatch.setenv(INJECTED_DELAY_ENV, "fast")
    rc = main(["sweep", "--suite", str(suite), "--device", "cpu", "--quiet", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and INJECTED_DELAY_ENV in err and "'fast'" in err, err
    assert not (tmp_path / "o" / "results.jsonl").exists()


def test_gpu_gate_script_end_to_end_on_cpu_suites(tmp_path):
    """The script's whole path on two tiny CPU suites: a refresh writes both suites' rows to the baseline,
    and a run slowed by the injected delay gates against it with exit 1."""
    from poetx_bench.measure import INJECTED_DELAY_ENV

    (tmp_path / "layer.toml").write_text(LAYER_SUITE)
    (tmp_path / "train.toml").write_text(
        'methods = ["adamw"]\nmodels = ["tiny"]\nseq_lens = [16]\nbatch_sizes = [2]\nsteps = 10\n'
        'warmup_steps = 1\ndtype = "float32"\ndata = "synthetic"\nvocab_size = 256\n')
    suites = f"{tmp_path / 'layer.toml'} {tmp_path / 'train.toml'}"
    baseline = tmp_path / "base.jsonl"
    env = {"POETX_GATE_SUITES": suites, "POETX_GATE_DEVICE": "cpu"}
    proc = _script(tmp_path, baseline, "--new-baseline", timeout=300, **env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in baseline.read_text().splitlines()]
    assert sorted(r["kind"] for r in rows) == ["layer", "layer", "train"]
    proc = _script(tmp_path, baseline, out="slow", timeout=300, **env, **{INJECTED_DELAY_ENV: "40"})
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "fwd_bwd_ms" in proc.stdout and "tokens_per_s" in proc.stdout
    assert (tmp_path / "slow" / "gate.md").exists()


def test_gpu_gate_script_refuses_a_slowed_refresh_and_a_foreign_out_folder(tmp_path):
    from poetx_bench.measure import INJECTED_DELAY_ENV

    proc = _script(tmp_path, tmp_path / "base.jsonl", "--new-baseline", **{INJECTED_DELAY_ENV: "5"})
    assert proc.returncode == 2 and INJECTED_DELAY_ENV in proc.stderr, proc.stderr
    foreign = tmp_path / "out"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("not the gate's")
    proc = _script(tmp_path, tmp_path / "base.jsonl", "--new-baseline")
    assert proc.returncode == 2 and "not emptying" in proc.stderr, proc.stderr
    assert (foreign / "keep.txt").exists()
    assert _script(tmp_path, tmp_path / "base.jsonl", "--out", "--new-baseline").returncode == 2
