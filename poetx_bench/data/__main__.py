"""`python -m poetx_bench.data prepare|info`: the data CLI on its own, until/besides the main CLI wiring."""

from __future__ import annotations

import argparse
import sys

from ..errors import UserError
from .cli import add_arguments, main


def _run(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m poetx_bench.data")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return main(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(_run())
