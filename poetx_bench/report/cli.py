"""CLI entry points for `python -m poetx_bench report` and `python -m poetx_bench figures`.

    report RESULTS.jsonl [more ...] --out DIR    report.md, report.html, figures/*.{png,pdf,csv}, tables/*.csv
    figures --results PATH --out DIR             the same full set; PATH is a file or a directory searched
                                                 recursively for *.jsonl (repeatable)

Bad input (missing file, a file without result rows, --out that is a file) raises poetx_bench.errors.UserError (exit 2 at the top level).
"""

from __future__ import annotations

import argparse

from ..results import check_out_folder
from .build import DEFAULT_TITLE, build_report


def _common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory (created if needed)")
    parser.add_argument("--title", default=DEFAULT_TITLE, help="report title")
    parser.add_argument("--allow-different-devices", action="store_true",
                        help="let ratios pair rows from different device models or memory caps")


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", nargs="+", metavar="RESULTS",
                        help="result files (JSON lines) or directories searched recursively for *.jsonl")
    _common_arguments(parser)


def add_figures_arguments(parser: argparse.ArgumentParser) -> None:
    """`figures` is `report` with its inputs spelled --results (repeatable): same options, same code."""
    parser.add_argument("--results", required=True, action="append", metavar="PATH",
                        help="results file or directory searched recursively for *.jsonl (repeatable)")
    _common_arguments(parser)


def _run(paths, out, title, allow_different_devices=False) -> int:
    check_out_folder(out)
    result = build_report(paths, out, title=title, allow_different_devices=allow_different_devices)
    print(f"wrote {result.markdown} and {result.html} ({len(result.figures)} figures, "
          f"{len(result.points)} points)")
    for fig in result.figures:
        print(f"  {result.out_dir / fig.png}  (+ .pdf, .csv)")
    return 0


def report_main(args: argparse.Namespace) -> int:
    return _run(args.results, args.out, getattr(args, "title", DEFAULT_TITLE),
                getattr(args, "allow_different_devices", False))


figures_main = report_main  # one code path: `figures` only spells its inputs as --results
