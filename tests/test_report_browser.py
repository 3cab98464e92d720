"""The rendered report in a real headless browser (skipped where no Chromium is installed): every figure in
report.html decodes as an image, for a fresh report and for the committed H100 report, and a broken figure
is caught."""

from __future__ import annotations

from pathlib import Path

import pytest

from poetx_bench.report.browser import find_browser, image_check, screenshot

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).parent / "fixtures" / "results_mixed.jsonl"
BROWSER = find_browser()
pytestmark = pytest.mark.skipif(BROWSER is None, reason="no Chromium-family browser installed")


@pytest.fixture(scope="module")
def fresh_report(tmp_path_factory) -> Path:
    from poetx_bench.cli import main

    out = tmp_path_factory.mktemp("report")
    assert main(["report", str(FIXTURE), "--out", str(out)]) == 0
    return out


def test_every_figure_of_a_fresh_report_decodes(fresh_report):
    images = image_check(fresh_report / "report.html", BROWSER)
    assert len(images) >= 3
    assert all(i["ok"] and i["width"] > 100 for i in images), images


def test_a_broken_figure_is_caught(fresh_report, tmp_path):
    """Figures are embedded as data URIs: corrupt the first one and exactly that image fails to decode."""
    html = (fresh_report / "report.html").read_text()
    marker = "data:image/png;base64,iVBOR"
    assert marker in html
    broken = tmp_path / "report.html"
    broken.write_text(html.replace(marker, "data:image/png;base64,AAAAAAAA", 1))
    images = image_check(broken, BROWSER)
    assert [i["ok"] for i in images].count(False) == 1, images


def test_screenshot_of_the_first_screen(fresh_report, tmp_path):
    png = screenshot(fresh_report / "report.html", tmp_path / "shot.png", BROWSER, size=(800, 600))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("report", ["reports/h100/report", "reports/multi-gpu/report",
                                    "reports/h100/baselines/report"])
def test_committed_reports_figures_decode(report, tmp_path):
    html = ROOT / report / "report.html"
    if not html.is_file():
        pytest.skip(f"{report} not committed")
    copy = tmp_path / "report.html"  # figures are data URIs: a copy is self-contained, reports/ stays untouched
    copy.write_text(html.read_text())
    images = image_check(copy, BROWSER)
    assert images and all(i["ok"] for i in images), [i for i in images if not i["ok"]]
