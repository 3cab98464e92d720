"""Report rendering from fixture rows (ok / oom / error, train + layer rows, a block-size sweep)."""

from __future__ import annotations

import argparse
import csv
import json
import re
import shutil
from pathlib import Path

import pytest

from poetx_bench.errors import UserError
from poetx_bench.report import names, paper
from poetx_bench.report.build import build_report
from poetx_bench.report.cli import add_figures_arguments, add_report_arguments, figures_main, report_main
from poetx_bench.report.rows import load_points

FIXTURE = Path(__file__).parent / "fixtures" / "results_mixed.jsonl"
FIGURES = ["memory_breakdown", "layer_latency", "loss_curves", "block_size_sweep", "neumann_orthogonality"]
TABLES = ["peak_memory", "throughput", "layer_latency", "status_counts", "failed_points", "environment",
          "memory_breakdown_totals", "host_vs_device", "correctness"]


def _rows(path: Path = FIXTURE) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _csv(path: Path) -> list[dict]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _section(md: str, title: str) -> str:
    start = md.index(f"## {title}")
    end = md.find("\n## ", start + 1)
    return md[start:end if end != -1 else None]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    result = build_report([FIXTURE], out)
    return result, out


def test_all_outputs_written(report):
    result, out = report
    assert (out / "report.md").stat().st_size > 0
    assert (out / "report.html").stat().st_size > 0
    assert [f.name for f in result.figures] == FIGURES
    for name in FIGURES:
        png = out / "figures" / f"{name}.png"
        pdf = out / "figures" / f"{name}.pdf"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert pdf.read_bytes()[:5] == b"%PDF-", name
        assert len(_csv(out / "figures" / f"{name}.csv")) > 0, name
    for name in TABLES:
        assert (out / "tables" / f"{name}.csv").is_file(), name
    md = (out / "report.md").read_text()
    assert "Failed to render" not in md
    assert "No data" not in md  # the fixture has data for every section


def test_html_is_self_contained(report):
    _, out = report
    html = (out / "report.html").read_text()
    assert html.count('src="data:image/png;base64,') == len(FIGURES)
    assert not re.search(r'<img[^>]+src="(?!data:)', html)


def test_oom_and_error_shown_not_dropped(report):
    _, out = report
    md = (out / "report.md").read_text()
    peak = _section(md, "Peak memory (GB)")
    adamw_row = next(line for line in peak.splitlines() if line.startswith("| adamw device=cuda"))
    header = next(line for line in peak.splitlines() if line.startswith("| method"))
    cells = dict(zip([c.strip() for c in header.strip("|").split("|")],
                     [c.strip() for c in adamw_row.strip("|").split("|")]))
    assert cells["8b L1024"].startswith("OOM"), cells
    assert "paper 76.34" in cells["8b L1024"]
    poet_row = next(line for line in peak.splitlines() if line.startswith("| poet b256"))
    assert "ERROR" in poet_row
    rows = _csv(out / "tables" / "peak_memory.csv")
    oom = [r for r in rows if r["method"] == "adamw" and r["model"] == "8b"]
    assert oom and oom[0]["status"] == "oom" and oom[0]["ratio"] == ""
    # failed points listed with their error message's first line only
    status = _section(md, "Status summary")
    assert "RuntimeError: shape mismatch in poet layer" in status
    assert "second line" not in status
    assert "| oom | 2 |" in status and "| error | 2 |" in status
    # the failed block-size point stays in the sweep data
    sweep = _csv(out / "figures" / "block_size_sweep.csv")
    assert any(r["block_size"] == "1024" and r["status"] == "oom" for r in sweep)


def test_measured_vs_paper_ratio(report):
    _, out = report
    rows = _csv(out / "tables" / "peak_memory.csv")
    cell = next(r for r in rows if r["method"] == "adamw" and r["model"] == "3b" and r["seq_len"] == "1024")
    assert float(cell["measured_gb"]) == pytest.approx(30.0)
    assert float(cell["paper_gb"]) == pytest.approx(28.78)
    assert float(cell["ratio"]) == pytest.approx(30.0 / 28.78)
    md = (out / "report.md").read_text()
    assert "30.00 · paper 28.78 · ×1.04" in md
    # a cell the paper does not have carries no ratio
    b128 = next(r for r in rows if r["method"] == "poetx-fast" and r["block_size"] == "128")
    assert b128["paper_gb"] == "" and b128["ratio"] == ""


def test_throughput_relative_to_adamw(report):
    _, out = report
    rows = _csv(out / "tables" / "throughput.csv")
    fast = next(r for r in rows if r["method"] == "poetx-fast" and r["model"] == "3b" and r["seq_len"] == "1024"
                and r["block_size"] == "256")
    assert float(fast["relative_to_adamw"]) == pytest.approx(0.75)
    eight = next(r for r in rows if r["method"] == "poetx-fast" and r["model"] == "8b")
    assert eight["relative_to_adamw"] == "" and eight["group_note"] == "adamw OOM"
    assert float(eight["paper_tokens_per_s"]) == pytest.approx(7110.0)
    assert float(eight["ratio"]) == pytest.approx(7000.0 / 7110.0)


def test_breakdown_and_latency_beside_paper(report):
    _, out = report
    bars = _csv(out / "figures" / "memory_breakdown.csv")
    paper_fast = [r for r in bars if r["source"] == "paper" and r["method"] == "poetx-fast"]
    assert {r["component"] for r in paper_fast} == set(names.COMPONENTS)
    assert any(r["source"] == "measured" and r["status"] == "oom" and r["method"] == "adamw" for r in bars)
    lat = _csv(out / "tables" / "layer_latency.csv")
    poet = next(r for r in lat if r["method"] == "poet")
    assert float(poet["paper_fwd_bwd_ms"]) == pytest.approx(10.59)
    assert float(poet["ratio"]) == pytest.approx(float(poet["fwd_bwd_ms"]) / 10.59)
    assert any(r["status"] == "error" for r in lat)


def test_missing_sections_say_no_data(tmp_path):
    layer_only = [r for r in _rows() if r["kind"] == "layer"]
    res = build_report([_write(tmp_path / "layer.jsonl", layer_only)], tmp_path / "out")
    md = res.markdown.read_text()
    for title in ("Peak memory (GB)", "Memory breakdown", "Loss curves", "Block-size sweep",
                  "Throughput (relative to AdamW)"):
        assert "No data" in _section(md, title), title
    assert [f.name for f in res.figures] == ["layer_latency"]


def test_tolerant_of_missing_optional_metrics(tmp_path):
    row = _rows()[0]
    row["metrics"] = {"tokens_per_s": 123.0}  # no memory, losses, breakdown, env...
    row.pop("env")
    res = build_report([_write(tmp_path / "sparse.jsonl", [row])], tmp_path / "out")
    md = res.markdown.read_text()
    assert "Failed to render" not in md
    assert "—" in _section(md, "Peak memory (GB)")


def test_truncated_last_line_is_skipped_with_warning(tmp_path, capsys):
    text = FIXTURE.read_text()
    path = tmp_path / "killed.jsonl"
    path.write_text(text + '{"schema_version": 1, "point_id": "ab", "sta')
    points = load_points([path])
    assert len(points) == len(_rows())
    assert "truncated last line" in capsys.readouterr().err


def test_invalid_line_names_file_and_line(tmp_path):
    lines = FIXTURE.read_text().splitlines()
    lines[2] = "{not json"
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=r"bad\.jsonl:3: invalid JSON"):
        load_points([path])


def test_missing_file_is_user_error(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_points([tmp_path / "nope.jsonl"])
    with pytest.raises(UserError, match="no \\*.jsonl"):
        load_points([tmp_path])


def test_cli_functions(tmp_path):
    nested = tmp_path / "runs" / "a" / "b"
    nested.mkdir(parents=True)
    # small inputs keep this test fast: one figure (loss curves) via figures, none via report
    tiny = copy_row(next(r for r in _rows() if r["config"].get("model") == "tiny"))
    tiny["metrics"].pop("memory_breakdown_bytes")
    shutil.copy(_write(tmp_path / "tiny.jsonl", [tiny]), nested / "tiny.jsonl")
    failed = next(r for r in _rows() if r["status"] == "error")

    parser = argparse.ArgumentParser()
    add_figures_arguments(parser)
    args = parser.parse_args(["--results", str(tmp_path / "runs"), "--out", str(tmp_path / "figs")])
    assert figures_main(args) == 0
    assert (tmp_path / "figs" / "figures" / "loss_curves.pdf").is_file()

    parser = argparse.ArgumentParser()
    add_report_arguments(parser)
    args = parser.parse_args([str(_write(tmp_path / "failed.jsonl", [failed])), "--out", str(tmp_path / "rep")])
    assert report_main(args) == 0
    assert "ERROR" in (tmp_path / "rep" / "report.md").read_text()
    assert (tmp_path / "rep" / "report.html").is_file()
    args = parser.parse_args([str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "rep2")])
    with pytest.raises(UserError, match="missing.jsonl"):
        report_main(args)


def test_paper_names_and_units():
    assert names.paper_method("nn.Linear") == "linear"
    assert names.paper_method("POET-X-fast") == "poetx-fast"
    assert names.paper_model("13B") == "13b"
    assert names.to_gb(3 * 2**30) == pytest.approx(3.0)
    assert paper.peak_cell("poetx-mem", "8b", 1024, 256).value == pytest.approx(27.87)
    assert paper.peak_cell("poetx-mem", "8b", 1024, 512).value == pytest.approx(35.94)
    assert paper.peak_cell("poetx-mem", "8b", 1024, None) is None
    assert paper.peak_cell("adamw", "13b", 512, None).status == "oom"
    assert paper.peak_cell("adamw", "3b", 1024, None).value == pytest.approx(28.78)
    assert paper.throughput_cell("adamw", "8b", 2048, None).status == "oom"
    assert paper.latency_totals()["linear"] == pytest.approx(1.11)
    bd = paper.memory_breakdown()
    assert set(bd["component"]) == set(names.COMPONENTS)


def test_duplicate_rows_later_wins_but_skipped_never_replaces(tmp_path):
    from poetx_bench.report.rows import dedupe

    row = _rows()[0]
    failed = dict(copy_row(row), status="oom")
    skipped = dict(copy_row(row), status="skipped")
    path = _write(tmp_path / "dups.jsonl", [failed, row, skipped])
    points, superseded = dedupe(load_points([path]))
    assert len(points) == 1 and points[0].status == "ok" and superseded == 2


def copy_row(row: dict) -> dict:
    return json.loads(json.dumps(row))


def test_ratios_never_pair_rows_from_different_machines(tmp_path):
    """'vs adamw' and 'linear/method' refuse an H200 row against an H100 reference, unless allowed."""
    from poetx_bench.report.fig_latency import latency_section
    from poetx_bench.report.rows import Point
    from poetx_bench.report.tables import throughput_records

    rows = _rows()
    h200 = []
    for r in rows:
        if r["env"] and r["status"] == "ok" and r["config"]["method"] == "poetx-fast" and (
                r["kind"] == "layer" or (r["config"].get("model") == "3b" and r["config"]["seq_len"] == 1024
                                         and r["config"]["block_size"] == 256)):
            r["env"]["device_name"] = "NVIDIA H200"
            h200.append(r)
    assert len(h200) == 2
    points = [Point(r) for r in rows]
    fast = next(r for r in throughput_records(points) if r["method"] == "poetx-fast" and r["model"] == "3b"
                and r["seq_len"] == 1024 and r["block_size"] == 256)
    assert fast["relative_to_adamw"] is None
    assert fast["group_note"].startswith("adamw only on another machine (device NVIDIA H200 vs NVIDIA H100")
    fast = next(r for r in throughput_records(points, allow_different_devices=True)
                if r["method"] == "poetx-fast" and r["model"] == "3b" and r["seq_len"] == 1024
                and r["block_size"] == 256)
    assert fast["relative_to_adamw"] == pytest.approx(0.75)
    # a different memory cap is another machine too
    capped = _rows()
    for r in capped:
        if r["config"].get("method") == "adamw":
            r["config"]["max_memory_gb"] = 40
    rec = next(r for r in throughput_records([Point(r) for r in capped]) if r["method"] == "poetx-mem"
               and r["model"] == "3b")
    assert rec["relative_to_adamw"] is None and "cap 40 GiB" in rec["group_note"]
    # layer latency: linear/method only against the linear layer on the same GPU model
    latency_section(points, tmp_path)
    lat = {r["method"]: r for r in _csv(tmp_path / "tables" / "layer_latency.csv") if r["status"] == "ok"}
    assert lat["poetx-fast"]["linear_over_method"] == "" and lat["poet"]["linear_over_method"] != ""
    latency_section(points, tmp_path, allow_different_devices=True)
    lat = {r["method"]: r for r in _csv(tmp_path / "tables" / "layer_latency.csv") if r["status"] == "ok"}
    assert lat["poetx-fast"]["linear_over_method"] != ""
