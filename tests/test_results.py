"""The results format (issue 17): one reader with one rule, strict-JSON rows, files without rows refused."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from strict_json import strict_rows

from poetx_bench import store
from poetx_bench.cli import main
from poetx_bench.errors import UserError
from poetx_bench.results import (
    SCHEMA_VERSION,
    append_row,
    encode_row,
    finished_point_ids,
    read_numbered,
    read_rows,
)
from poetx_bench.results.point import read_jsonl

REPO = Path(__file__).resolve().parent.parent
BASELINE = REPO / "reports" / "baselines" / "cpu-smoke.jsonl"


def _refuse(constant):
    raise ValueError(constant)


def _baseline_rows() -> list[dict]:
    return [json.loads(line) for line in BASELINE.read_text().splitlines() if line.strip()]


def test_fragment_in_the_middle_is_read_by_report_and_gate(tmp_path, capsys):
    """Defect 1: a sweep killed mid-row, then resumed, leaves the fragment in the middle of the file."""
    rows = _baseline_rows()
    text = BASELINE.read_text().splitlines()
    results = tmp_path / "results.jsonl"
    results.write_text("\n".join(text[:-1]) + "\n" + text[-1][: len(text[-1]) // 2])
    append_row(results, rows[-1])  # what `sweep --resume` does
    assert results.read_text().splitlines()[-2] == text[-1][: len(text[-1]) // 2]
    points = read_jsonl(results)
    assert [p.point_id for p in points] == [r["point_id"] for r in rows]
    assert f"results.jsonl:{len(rows)}: skipping" in capsys.readouterr().err
    assert main(["gate", "--baseline", str(BASELINE), "--current", str(results)]) == 0
    assert main(["report", str(results), "--out", str(tmp_path / "report")]) == 0


def test_one_reader_for_store_report_and_resume(tmp_path):
    assert store.read_rows is read_rows and store.append_row is append_row
    path = tmp_path / "r.jsonl"
    path.write_text('{"point_id": "a", "status": "ok", "config": {}}\n[1, 2]\n{"point_id": "b"}\n'
                    '\xff\n{"point_id": "c", "status": "error", "config": {}}\n', encoding="latin-1")
    assert [n for n, _ in read_numbered(path, warn=False)] == [1, 5]
    assert [p.line for p in read_jsonl(path)] == [1, 5]
    assert finished_point_ids(path) == {"a", "c"}


def test_nonfinite_numbers_are_null_with_a_record(tmp_path):
    """Defect 3: a diverged row is strict JSON; the reader gives the floats back."""
    row = {"schema_version": SCHEMA_VERSION, "point_id": "d", "status": "diverged", "config": {"kind": "train"},
           "metrics": {"final_loss": math.nan, "losses": [2.0, math.inf, -math.inf], "eval": [{"loss": math.nan}]}}
    path = tmp_path / "results.jsonl"
    append_row(path, row)
    line = path.read_text().strip()
    strict = json.loads(line, parse_constant=_refuse)
    metrics = strict["metrics"]
    assert metrics["final_loss"] is None and metrics["losses"] == [2.0, None, None]
    assert metrics["nonfinite"] == {"final_loss": "nan", "losses[1]": "inf", "losses[2]": "-inf"}
    assert metrics["eval"][0] == {"loss": None, "nonfinite": {"loss": "nan"}}
    (back,) = read_rows(path)
    assert math.isnan(back["metrics"]["final_loss"]) and back["metrics"]["losses"][1:] == [math.inf, -math.inf]
    assert math.isnan(back["metrics"]["eval"][0]["loss"]) and "nonfinite" not in back["metrics"]
    assert encode_row(back) == line


def test_old_rows_with_bare_nan_still_load(tmp_path):
    path = tmp_path / "old.jsonl"
    path.write_text('{"schema_version": 1, "point_id": "x", "status": "diverged", "config": {}, '
                    '"metrics": {"final_loss": NaN, "losses": [1.0, Infinity]}}\n')
    (row,) = read_rows(path)
    assert math.isnan(row["metrics"]["final_loss"]) and row["metrics"]["losses"][1] == math.inf


def test_a_field_named_nonfinite_that_is_no_record_is_left_alone(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"config": {}, "metrics": {"nonfinite": {"a": [1]}, "x": null}}\n')
    assert read_rows(path)[0]["metrics"] == {"nonfinite": {"a": [1]}, "x": None}


def test_committed_results_still_load():
    """Rows written before schema 2 (reports/kernels/ holds kernel-bench lines, not result rows)."""
    files = sorted((REPO / "reports" / "baselines").glob("*.jsonl")) + sorted((REPO / "reports").rglob("raw/*.jsonl"))
    assert len(files) >= 4
    for path in files:
        assert read_rows(path, warn=False), path


@pytest.mark.parametrize("content", ["", "\n\n", "garbage\n", "not json\n{\"half\": \n", "[1]\n"])
def test_file_without_rows_is_an_error_naming_it(tmp_path, capsys, content):
    """Defect 4: an empty or all-garbage file is exit 2 naming the file, not an empty report."""
    path = tmp_path / "results.jsonl"
    path.write_text(content)
    with pytest.raises(UserError, match="results.jsonl: (results file is empty|no valid result row)"):
        read_rows(path)
    capsys.readouterr()
    assert main(["report", str(path), "--out", str(tmp_path / "rep")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: {path}: ") and not (tmp_path / "rep" / "report.md").exists()
    assert main(["gate", "--baseline", str(BASELINE), "--current", str(path)]) == 2


def test_strict_json_check_catches_bare_nan(tmp_path):
    """The session-wide check (conftest) is not vacuous."""
    (tmp_path / "a.jsonl").write_text(json.dumps({"schema_version": SCHEMA_VERSION, "x": math.nan}) + "\n"
                                      + encode_row({"schema_version": SCHEMA_VERSION, "x": 1.0}) + "\n")
    checked, failures = strict_rows(tmp_path)
    assert checked == 2 and len(failures) == 1 and "a.jsonl:1" in failures[0]
    (tmp_path / "a.jsonl").unlink()
