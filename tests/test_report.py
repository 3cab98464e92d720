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
from poetx_bench.results.point import load_points

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
    assert "killed.jsonl:22: skipping a line that is not a result row" in capsys.readouterr().err


def test_invalid_middle_line_is_skipped_naming_file_and_line(tmp_path, capsys):
    lines = FIXTURE.read_text().splitlines()
    lines[2] = "{not json"
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    points = load_points([path])
    assert len(points) == len(lines) - 1 and 3 not in {p.line for p in points}
    err = capsys.readouterr().err
    assert "bad.jsonl:3: skipping a line that is not a result row (invalid JSON" in err


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
    from poetx_bench.results.point import dedupe

    row = _rows()[0]
    failed = dict(copy_row(row), status="oom")
    skipped = dict(copy_row(row), status="skipped")
    path = _write(tmp_path / "dups.jsonl", [failed, row, skipped])
    points, superseded = dedupe(load_points([path]))
    assert len(points) == 1 and points[0].status == "ok" and superseded == 2


def test_duplicate_rows_the_later_measurement_wins_whatever_the_file_order(tmp_path):
    """A re-run written to a file that sorts before the older run's file still supersedes it (env.time);
    rows without a time fall back to the order read."""
    from poetx_bench.results.point import dedupe

    row = _rows()[0]
    old = copy_row(row)
    old["env"]["time"] = "2026-11-27T10:00:00+00:00"
    old["metrics"]["tokens_per_s"] = 1.0
    new = copy_row(row)
    new["env"]["time"] = "2026-11-27T20:00:00+00:00"
    new["metrics"]["tokens_per_s"] = 2.0
    _write(tmp_path / "a-rerun.jsonl", [new])
    _write(tmp_path / "b-first-run.jsonl", [old])
    points, superseded = dedupe(load_points([tmp_path]))
    assert superseded == 1 and [p.metric("tokens_per_s") for p in points] == [2.0]
    # a later skipped row replaces nothing, and a measured row replaces a skipped one whatever its time
    skipped = dict(copy_row(new), status="skipped")
    skipped["env"]["time"] = "2026-11-28T00:00:00+00:00"
    points, _ = dedupe(load_points([_write(tmp_path / "d.jsonl", [skipped, old])]))
    assert [p.status for p in points] == ["ok"] and points[0].metric("tokens_per_s") == 1.0
    # and a skipped row measured after both does not make the newer of two measured rows lose to the older
    points, _ = dedupe(load_points([_write(tmp_path / "f.jsonl", [skipped, old, new])]))
    assert [p.metric("tokens_per_s") for p in points] == [2.0]
    # an untimed row between two timed ones does not let the oldest win
    untimed = copy_row(row)
    untimed["env"].pop("time", None)
    untimed["metrics"]["tokens_per_s"] = 3.0
    points, _ = dedupe(load_points([_write(tmp_path / "e.jsonl", [new, untimed, old])]))
    assert [p.metric("tokens_per_s") for p in points] == [3.0]
    for r in (old, new):
        del r["env"]["time"]
    points, _ = dedupe(load_points([_write(tmp_path / "c.jsonl", [new, old])]))
    assert [p.metric("tokens_per_s") for p in points] == [1.0]


def copy_row(row: dict) -> dict:
    return json.loads(json.dumps(row))


def _capture_figure(monkeypatch) -> dict:
    from poetx_bench.report import style

    captured = {}
    real_save = style.save

    def save(fig, *args, **kwargs):
        captured["fig"] = fig
        return real_save(fig, *args, **kwargs)

    monkeypatch.setattr(style, "save", save)
    return captured


def test_memory_status_labels_stay_inside_sub_gb_axes_and_dtypes_are_named(tmp_path, monkeypatch):
    """Issue 17, defect 7: DIVERGED/OOM labels were drawn 0.5 GB above sub-GB bars, over the legend;
    points that differ only in dtype got the same label."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from poetx_bench.report import fig_memory

    base = next(r for r in _rows() if r["config"].get("model") == "tiny" and r["config"]["method"] == "adamw")
    fp32 = copy_row(base)
    fp32["config"]["dtype"], fp32["point_id"] = "float32", "fp32"
    diverged = copy_row(base)
    diverged["config"]["method"], diverged["status"], diverged["point_id"] = "poetx-mem", "diverged", "div"
    diverged["config"]["block_size"] = 32
    oom = copy_row(diverged)
    oom["status"], oom["point_id"], oom["config"]["method"] = "oom", "oom", "poet"
    oom["metrics"] = {"peak_memory_bytes": 2**20}
    points = load_points([_write(tmp_path / "cpu.jsonl", [base, fp32, diverged, oom])])
    captured = _capture_figure(monkeypatch)
    fig_memory.memory_breakdown_section(points, tmp_path)
    fig = captured["fig"]
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    (ax,) = fig.axes
    box = ax.get_window_extent(renderer)
    statuses = [t for t in ax.texts if t.get_text().split("\n")[0] in ("DIVERGED", "OOM")]
    assert len(statuses) == 2
    for text in statuses:
        ext = text.get_window_extent(renderer)
        assert box.y0 <= ext.y0 and ext.y1 <= box.y1, (text.get_text(), ext, box)
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert len(labels) == len(set(labels)) == 4, labels
    assert any("float32" in lab for lab in labels) and any("bfloat16" in lab for lab in labels)


def test_cpu_layer_latency_is_not_set_beside_the_paper(tmp_path):
    """Issue 17, defect 8: CPU latencies against the paper's H100 numbers gave ratios like x1037."""
    rows = [copy_row(r) for r in _rows() if r.get("kind") == "layer" and r["status"] == "ok"]
    for r in rows:
        r["config"].update(device="cpu", dtype="float32")
        r["point_id"] += "-cpu"
    res = build_report([_write(tmp_path / "cpu-layers.jsonl", rows)], tmp_path / "out")
    lat = _csv(tmp_path / "out" / "tables" / "layer_latency.csv")
    assert lat and all(r["paper_fwd_bwd_ms"] == "" and r["ratio"] == "" for r in lat)
    bars = _csv(tmp_path / "out" / "figures" / "layer_latency.csv")
    assert not any(r["source"] == "paper" for r in bars)
    assert "Failed to render" not in res.markdown.read_text()


def test_ratios_never_pair_rows_from_different_machines(tmp_path):
    """'vs adamw' and 'linear/method' refuse an H200 row against an H100 reference, unless allowed."""
    from poetx_bench.report.fig_latency import latency_section
    from poetx_bench.report.tables import throughput_records
    from poetx_bench.results.point import Point

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


def test_paper_cells_not_run_are_listed(tmp_path):
    """A GPU campaign's report lists every paper peak-memory cell it did not measure, with its published
    value and why (method not in the suite, not reproducible, or no row); a measured cell is not listed; CPU-only results
    list nothing."""
    cuda = [r for r in _rows() if (r.get("config") or {}).get("device") == "cuda"
            and (r.get("config") or {}).get("kind", "train") == "train"
            and (r.get("config") or {}).get("method") == "adamw" and r.get("status") == "ok"]
    assert cuda, "fixture has a CUDA AdamW row"
    row = json.loads(json.dumps(cuda[0]))
    row["config"].update({"model": "3b", "seq_len": 1024, "batch_size": 1, "dtype": "bfloat16"})
    out = tmp_path / "gpu"
    build_report([_write(tmp_path / "gpu.jsonl", [row])], out)
    sec = _section((out / "report.md").read_text(), "Paper cells not run")
    recs = _csv(out / "tables" / "paper_not_run.csv")
    cells = {(r["method"], r["model"], r["seq_len"]) for r in recs}
    assert ("adamw", "3b", "512") in cells and ("adamw", "3b", "1024") not in cells
    assert ("poetx-fast", "13b", "2048") in cells
    galore = next(r for r in recs if r["method"] == "galore")  # registered now (methods/galore.py)
    assert galore["why"] == "not run: no row for this cell in these results"
    for method in ("q-galore-8bit", "q-apollo-8bit"):  # no working package: why, from one table
        why = {r["why"] for r in recs if r["method"] == method}
        assert len(why) == 1 and why.pop().startswith("not reproducible: no working package ("), method
    assert "| adamw | not run: no row" in sec
    cpu = [r for r in _rows() if (r.get("config") or {}).get("device") == "cpu"]
    out_cpu = tmp_path / "cpu"
    build_report([_write(tmp_path / "cpu.jsonl", cpu)], out_cpu)
    assert "## Paper cells not run" not in (out_cpu / "report.md").read_text()


def test_figures_read_at_1600_px_or_less(report):
    """Every figure is at most 1600 px wide (16 in at the style's 100 dpi)."""
    import struct

    _, out = report
    for name in FIGURES:
        with open(out / "figures" / f"{name}.png", "rb") as fh:
            head = fh.read(24)
        width = struct.unpack(">I", head[16:20])[0]
        assert width <= 1600, (name, width)


def test_paper_latency_only_beside_the_papers_shape(tmp_path):
    """The paper's layer times stand beside 4096->14336 only: the same point at 4096->4096 gets no paper
    cell and no measured/paper ratio."""
    layer = [r for r in _rows() if r.get("kind") == "layer" and r["status"] == "ok"]
    other = json.loads(json.dumps(layer))
    for r in other:
        r["config"]["out_features"] = 4096
        r["point_id"] = r["point_id"] + "-square"
    out = tmp_path / "rep"
    build_report([_write(tmp_path / "layers.jsonl", layer + other)], out)
    recs = _csv(out / "tables" / "layer_latency.csv")
    wide = [r for r in recs if r["group"].startswith("4096→14336")]
    square = [r for r in recs if r["group"].startswith("4096→4096")]
    assert wide and square
    assert all(r["paper_fwd_bwd_ms"] for r in wide if r["method"] in ("linear", "poetx-fast"))
    assert not any(r["paper_fwd_bwd_ms"] or r["ratio"] for r in square)


def test_failed_points_table_shortens_oom_messages_but_the_csv_keeps_them():
    from poetx_bench.report.tables import short_error

    oom = ("OutOfMemoryError: CUDA out of memory. Tried to allocate 1024.00 MiB. GPU 0 has a total capacity of "
           "79.18 GiB of which 4.19 MiB is free. Including non-PyTorch memory, this process has 79.17 GiB")
    assert short_error(oom) == "OutOfMemoryError: CUDA out of memory. Tried to allocate 1024.00 MiB."
    assert short_error("Timeout: no result after 120s") == "Timeout: no result after 120s"
    long = "E" * 300
    assert len(short_error(long)) == 160 and short_error(long).endswith("…")


def test_block_sweep_keeps_its_suite_and_divides_by_adamw(tmp_path):
    """With rows of the block-size suite present, the sweep draws only those (other suites' b256/b512 rows
    stay out) and plots tokens/s as a fraction of the group's fastest AdamW row."""
    rows = _rows()
    sweep_ids = set()
    for r in rows:
        c = r["config"]
        if r["kind"] == "train" and c.get("model") == "3b" and c.get("seq_len") == 1024 and \
                c.get("method") in ("adamw", "poetx-fast"):
            r["suite"] = "block-size"
            sweep_ids.add(r["point_id"])
    res = build_report([_write(tmp_path / "sweep.jsonl", rows)], tmp_path / "out")
    data = _csv(res.out_dir / "figures" / "block_size_sweep.csv")
    assert data and {(r["model"], r["method"]) for r in data} == {("3b", "poetx-fast")}
    tps = {r["block_size"]: r for r in data if r["metric"] == "tokens_per_s_vs_adamw"}
    assert float(tps["256"]["measured"]) == pytest.approx(7500.0 / 10000.0)
    assert float(tps["128"]["measured"]) == pytest.approx(8000.0 / 10000.0)
    assert tps["1024"]["measured"] == "" and tps["1024"]["status"] == "oom"
    assert not any(r["metric"] == "tokens_per_s" for r in data)
