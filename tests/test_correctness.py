"""The `correctness` command records equivalence errors that are small, and the report renders them."""

from poetx_bench.cli import main
from poetx_bench.results import read_rows


def test_correctness_rows_and_report(tmp_path, capsys):
    out = tmp_path / "corr"
    assert main(["correctness", "--device", "cpu", "--quick", "--out", str(out)]) == 0
    rows = read_rows(out / "results.jsonl")
    eq = [r for r in rows if r["config"]["check"] == "layer-equivalence"]
    assert {r["config"]["method"] for r in eq} == {"poet", "poetx-fast", "poetx-mem"}
    for r in eq:
        for key, value in r["metrics"].items():
            assert 0 < value < 1e-5, (r["config"], key, value)  # float32 vs float64: never exactly 0
    curves = [r for r in rows if r["config"]["check"] == "neumann-orthogonality"]
    assert len(curves) == 3
    errs = [c["orthogonality_error"] for c in curves[0]["metrics"]["curve"]]
    assert errs == sorted(errs)
    rep = tmp_path / "rep"
    assert main(["report", str(out / "results.jsonl"), "--out", str(rep)]) == 0
    md = (rep / "report.md").read_text()
    assert "## Correctness" in md and "poetx-mem" in md
    assert (rep / "figures" / "neumann_orthogonality.png").exists()
