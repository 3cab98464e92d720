"""`python -m poetx_bench correctness`: the correctness checks (poetx_bench.points.correctness) as a sweep
of `kind = "correctness"` points with the kind's defaults (what suites/correctness.toml lists), through the
same runner into the same rows, report and gate. The checks are quick, so this command runs them inside its
own process (`sweep --suite correctness` gives each its own process, timeout and point_wall_s).

Only the backends that can run here are planned (triton on CUDA, or on CPU under TRITON_INTERPRET=1); a
sweep of the suite plans both and skips the one that cannot run, with the reason.
"""

from __future__ import annotations

import argparse
import datetime as _dt
from pathlib import Path

from .points.correctness import EQUIVALENCE, SUITE_DEFAULTS, layer_equivalence  # noqa: F401 - old import path

ERR_KEYS = ("rel_err_output", "rel_err_grad_input", "rel_err_grad_skew_in", "rel_err_grad_skew_out")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    p.add_argument("--out", type=Path, help="folder for results.jsonl (default runs/<time>-correctness)")
    p.add_argument("--quick", action="store_true", help="two shapes, float32 only")
    p.add_argument("--resume", action="store_true", help="run only the checks without a row in --out")


def planned_sets(device: str, quick: bool) -> dict:
    """The suite keys this command sets: the runnable backends, and the --quick subset."""
    from .kernels import triton_available
    from .kernels._loader import interpret_requested

    backends = ["torch"]
    if triton_available() and (device == "cuda" or interpret_requested()):
        backends.append("triton")
    sets: dict = {"backend": backends}
    if quick:
        sets.update(shapes=SUITE_DEFAULTS["shapes"][:2], dtypes=["float32"])
    return sets


def main(args) -> int:
    from .cli import best_device
    from .results import claim_folder, read_rows
    from .runner import Runner, RunOptions
    from .suite import build_suite

    device = args.device or best_device()
    suite = build_suite({"name": "correctness", "kind": "correctness"}, Path("correctness"), device,
                        planned_sets(device, args.quick))
    out = args.out or Path("runs") / (_dt.datetime.now().strftime("%Y%m%d-%H%M%S") + "-correctness")
    with claim_folder(out, getattr(args, "resume", False)) as results:
        rc = Runner(RunOptions(out_dir=Path(out), resume=getattr(args, "resume", False),
                               suite_name="correctness", in_process=True)).run(suite.points)
        print_table(read_rows(results))
        print(f"\n{results}")
    return rc


def print_table(rows: list[dict]) -> None:
    print(f"{'check':22} {'method':11} {'shape':16} {'dtype':9} {'backend':7} {'out':>9} {'dx':>9} "
          f"{'dskew_in':>9} {'dskew_out':>9}")
    for r in rows:
        c, m = r["config"], r.get("metrics") or {}
        if r.get("status") != "ok":
            print(f"{c['check']:22} {r.get('status')}: {(r.get('error') or {}).get('message', '')[:100]}")
            continue
        if c["check"] != EQUIVALENCE:
            last = m["curve"][-1]
            print(f"{c['check']:22} b={c['block_size']}: error {last['orthogonality_error']:.2e} at "
                  f"||Q||={last['q_norm']}")
            continue
        shape = f"{c['in_features']}x{c['out_features']}/b{c['block_size']}"
        print(f"{c['check']:22} {c['method']:11} {shape:16} {c['dtype']:9} {c['backend']:7} "
              + " ".join(f"{m[k]:9.2e}" for k in ERR_KEYS))
