"""Do two loss curves agree within bf16 noise? Compares every run of a method in a results file with that
method's reference run (our triton backend, compile = none), as issue 10 asks for ours vs the official
backend and for each compile setting vs eager (suite loss-parity).

    python bench/loss_parity.py RESULTS.jsonl [--window 20] [--skip 10] [--out parity.md]

Criterion: split the steps after `skip` into windows of `window` steps; in each window compare the two
mean losses. The noise of one curve is the standard deviation of its residual around its own centred
moving mean (step-to-step bf16 and data noise); a window mean then has standard error sigma / sqrt(window),
and a difference of two window means sqrt(sigma_a^2 + sigma_b^2) / sqrt(window). The pair agrees when
every window differs by at most 4 such standard errors (a false alarm rate of ~1e-4 per window). Exit 0
when every pair agrees, 1 when one does not, 2 on bad input.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from poetx_bench.errors import UserError  # noqa: E402
from poetx_bench.results import OK, read_rows  # noqa: E402

Z = 4.0


def _mean(xs):
    return sum(xs) / len(xs)


def noise_sigma(losses: list[float], window: int) -> float:
    """Standard deviation of the residual of a curve around its centred moving mean."""
    half = window // 2
    res = []
    for i in range(len(losses)):
        lo, hi = max(0, i - half), min(len(losses), i + half + 1)
        res.append(losses[i] - _mean(losses[lo:hi]))
    m = _mean(res)
    return math.sqrt(sum((r - m) ** 2 for r in res) / max(1, len(res) - 1))


def compare(ref: list[float], other: list[float], window: int, skip: int) -> dict:
    n = min(len(ref), len(other))
    if n - skip < window:
        raise UserError(f"curves of {n} steps are too short for skip {skip} + one window of {window}")
    se = math.sqrt(noise_sigma(ref[:n], window) ** 2 + noise_sigma(other[:n], window) ** 2) / math.sqrt(window)
    diffs = [(_mean(other[s:s + window]) - _mean(ref[s:s + window]), s)
             for s in range(skip, n - window + 1, window)]
    worst, at = max(diffs, key=lambda d: abs(d[0]))
    tol = Z * se
    return {"steps": n, "windows": len(diffs), "max_abs_diff": abs(worst), "worst_window_start": at + 1,
            "mean_diff": _mean([d for d, _ in diffs]), "tolerance": tol, "agree": abs(worst) <= tol,
            "final_ref": _mean(ref[n - window:n]), "final_other": _mean(other[n - window:n])}


def _label(cfg: dict) -> str:
    return f"{cfg['method']} backend={cfg.get('backend', 'torch')} compile={cfg.get('compile', 'none')}"


def pairs(rows: list[dict]):
    """(reference row, other row) per method: the reference is our triton backend (else the first backend
    listed) with compile = none."""
    by_method: dict[str, list[dict]] = {}
    for r in rows:
        if r.get("status") == OK and (r.get("metrics") or {}).get("losses"):
            by_method.setdefault(r["config"]["method"], []).append(r)
    for method, group in sorted(by_method.items()):
        eager = [r for r in group if r["config"].get("compile", "none") == "none"]
        if not eager:
            continue
        ref = next((r for r in eager if r["config"].get("backend") == "triton"), eager[0])
        for other in group:
            if other is not ref:
                yield ref, other


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results")
    ap.add_argument("--window", type=int, default=20)
    ap.add_argument("--skip", type=int, default=10, help="first steps left out (identical starts)")
    ap.add_argument("--out", help="also write the table to this markdown file")
    args = ap.parse_args(argv)
    try:
        if args.window < 2 or args.skip < 0:
            raise UserError(f"--window {args.window} / --skip {args.skip}: need window >= 2 and skip >= 0")
        rows = read_rows(args.results)
        lines = ["| reference | compared | steps | max abs diff of window means (at step) | tolerance (4 SE) "
                 "| mean diff | last-window loss ref / other | agree |", "|---|---|---|---|---|---|---|---|"]
        verdicts = []
        for ref, other in pairs(rows):
            c = compare(ref["metrics"]["losses"], other["metrics"]["losses"], args.window, args.skip)
            verdicts.append(c["agree"])
            lines.append(f"| {_label(ref['config'])} | {_label(other['config'])} | {c['steps']} | "
                         f"{c['max_abs_diff']:.4f} ({c['worst_window_start']}) | {c['tolerance']:.4f} | "
                         f"{c['mean_diff']:+.4f} | {c['final_ref']:.4f} / {c['final_other']:.4f} | "
                         f"{'yes' if c['agree'] else 'NO'} |")
        if not verdicts:
            raise UserError(f"{args.results}: no method has an eager reference run and another run to compare")
    except UserError as e:
        print(f"loss_parity: {e}", file=sys.stderr)
        return 2
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0 if all(verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
