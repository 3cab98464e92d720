"""Do two loss curves agree within bf16 noise? Compares every run of a method in a results file with that
method's reference run (our triton backend, compile = none), as issue 10 asks for ours vs the official
backend and for each compile setting vs eager (suite loss-parity).

    python bench/loss_parity.py RESULTS.jsonl [MORE.jsonl ...] [--window 20] [--skip 10] [--out parity.md]

Criterion: split the steps after `skip` into windows of `window` steps; in each window compare the two
mean losses. The step-to-step noise of one curve is estimated from its first differences after `skip`
(sigma = std(diff) / sqrt 2, insensitive to the slow downward trend); a window mean then has standard
error sigma / sqrt(window), and a difference of two window means sqrt(sigma_a^2 + sigma_b^2) / sqrt(window).
Where the files hold the reference configuration under another seed, the largest window difference
between the two seeds (how far the method moves from itself when only the seed changes) is the other
yardstick: two implementations with their own draws cannot agree better than that (suite loss-parity
starts the official backend from our W0 and permutations, `official_init = "ours"`, but each redraws its
permutations at a merge with its own generator). A pair agrees when every window differs by at most
max(4 standard errors, that seed spread). Exit 0 when every pair agrees, 1 when one does not, 2 on bad
input.
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


def noise_sigma(losses: list[float]) -> float:
    """Step-to-step noise of a curve: std of its first differences / sqrt(2)."""
    d = [b - a for a, b in zip(losses, losses[1:])]
    if len(d) < 2:
        return 0.0
    m = _mean(d)
    return math.sqrt(sum((x - m) ** 2 for x in d) / (len(d) - 1) / 2)


def _window_diffs(ref, other, window, skip):
    n = min(len(ref), len(other))
    return [(_mean(other[s:s + window]) - _mean(ref[s:s + window]), s) for s in range(skip, n - window + 1, window)]


def compare(ref: list[float], other: list[float], window: int, skip: int, seed_spread: float = 0.0) -> dict:
    n = min(len(ref), len(other))
    if n - skip < window:
        raise UserError(f"curves of {n} steps are too short for skip {skip} + one window of {window}")
    se = math.sqrt(noise_sigma(ref[skip:n]) ** 2 + noise_sigma(other[skip:n]) ** 2) / math.sqrt(window)
    diffs = _window_diffs(ref, other, window, skip)
    worst, at = max(diffs, key=lambda d: abs(d[0]))
    tol = max(Z * se, seed_spread)
    return {"steps": n, "windows": len(diffs), "max_abs_diff": abs(worst), "worst_window_start": at + 1,
            "four_se": Z * se, "seed_spread": seed_spread,
            "mean_diff": _mean([d for d, _ in diffs]), "tolerance": tol, "agree": abs(worst) <= tol,
            "final_ref": _mean(ref[n - window:n]), "final_other": _mean(other[n - window:n])}


def _label(cfg: dict) -> str:
    return (f"{cfg['method']} backend={cfg.get('backend', 'torch')} compile={cfg.get('compile', 'none')}"
            f" seed={cfg.get('seed', 0)}")


# what may differ between two compared runs: the implementation and the capture mode (and, for the seed
# yardstick, the seed); every other config key must match
VARYING = ("backend", "compile", "seed", "block_impl", "cayley_scope")


def _impl(cfg: dict) -> tuple:
    """What ran: the implementation and capture mode (VARYING without the seed)."""
    return tuple(cfg.get(k) for k in VARYING if k != "seed")


def _setup(cfg: dict) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in cfg.items() if k not in VARYING and k != "point_id"))


def pairs(rows: list[dict]):
    """(reference row, other row, the reference's other-seed row or None) per setup (every config key but
    VARYING equal). The reference is our triton backend (else the first backend listed) with compile = none
    at the lowest seed; a run of exactly the reference's implementation and compile setting under another
    seed is the yardstick, not a compared row."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r.get("status") == OK and (r.get("metrics") or {}).get("losses"):
            groups.setdefault(_setup(r["config"]), []).append(r)
    for _, group in sorted(groups.items()):
        group.sort(key=lambda r: r["config"].get("seed", 0))
        eager = [r for r in group if r["config"].get("compile", "none") == "none"]
        if not eager:
            continue
        ref = next((r for r in eager if r["config"].get("backend") == "triton"), eager[0])
        reseeded = next((r for r in group if r["config"].get("seed", 0) != ref["config"].get("seed", 0)
                         and _impl(r["config"]) == _impl(ref["config"])), None)
        for other in group:
            if other is not ref and other is not reseeded \
                    and other["config"].get("seed", 0) == ref["config"].get("seed", 0):
                yield ref, other, reseeded


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", nargs="+", help="results files (e.g. the suite and a --set seed=1 rerun)")
    ap.add_argument("--window", type=int, default=20)
    ap.add_argument("--skip", type=int, default=10, help="first steps left out (identical starts)")
    ap.add_argument("--out", help="also write the table to this markdown file")
    args = ap.parse_args(argv)
    try:
        if args.window < 2 or args.skip < 0:
            raise UserError(f"--window {args.window} / --skip {args.skip}: need window >= 2 and skip >= 0")
        rows = [r for path in args.results for r in read_rows(path)]
        lines = ["| reference | compared | steps | max abs diff of window means (at step) | 4 SE | seed spread "
                 "| mean diff | last-window loss ref / other | agree |", "|---|---|---|---|---|---|---|---|---|"]
        verdicts = []
        for ref, other, reseeded in pairs(rows):
            spread = 0.0
            if reseeded is not None:
                diffs = _window_diffs(ref["metrics"]["losses"], reseeded["metrics"]["losses"], args.window, args.skip)
                if not diffs:
                    raise UserError(f"the seed-{reseeded['config'].get('seed')} run is too short for skip "
                                    f"{args.skip} + one window of {args.window}")
                spread = max(abs(d) for d, _ in diffs)
            c = compare(ref["metrics"]["losses"], other["metrics"]["losses"], args.window, args.skip, spread)
            verdicts.append(c["agree"])
            lines.append(f"| {_label(ref['config'])} | {_label(other['config'])} | {c['steps']} | "
                         f"{c['max_abs_diff']:.4f} ({c['worst_window_start']}) | {c['four_se']:.4f} | "
                         f"{c['seed_spread']:.4f} | "
                         f"{c['mean_diff']:+.4f} | {c['final_ref']:.4f} / {c['final_other']:.4f} | "
                         f"{'yes' if c['agree'] else 'NO'} |")
        if not verdicts:
            raise UserError(f"{', '.join(args.results)}: no method has an eager reference run and another run to compare")
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
