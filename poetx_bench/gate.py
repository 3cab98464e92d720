"""Regression gate: compare a current results file against a baseline, point by point.

    python -m poetx_bench gate --baseline B.jsonl --current C.jsonl [--rules FILE.toml] [--summary OUT.md]

Points are matched by point_id; where ids differ, by the config tuple (kind, method, model, block_size,
seq_len, batch_size, dtype, device, steps, seed, in_features, out_features, tokens) when that tuple is
unique in both files. Points found in only one file are "not comparable" (listed, not a failure).

Each matched point gets one verdict: newly failing (status was ok, now is not), worse (a metric
regressed beyond its threshold), better, noise (changes within thresholds or not significant), or not
comparable (nothing to compare, e.g. both failed before reaching metrics).

Metrics and default rules (a change is beyond the threshold when |current - baseline| exceeds
max(abs, rel * |baseline|), i.e. it must exceed both the relative and the absolute part):

    status             ok -> anything else = newly failing (non-ok -> ok is "better")
    peak_memory_bytes  lower is better; rel 0.03, abs 67108864 (64 MiB)
    tokens_per_s       higher is better; rel 0.07, and when both points have >= min_samples (3)
                       per-step samples (metrics.step_times_s), a two-sided Mann-Whitney U test on them
                       must give p < alpha (0.05); without samples the threshold alone decides
    fwd_bwd_ms         layer rows, lower is better; rel 0.07, alpha 0.05, samples from
                       metrics.fwd_bwd_ms_samples / samples_ms when present
    final_loss         tolerance abs 0.05 or rel 0.02, whichever is larger; two_sided = true means a
                       drop beyond it is also a failure (the run changed), false makes a drop "better";
                       a NaN/inf loss where the baseline was finite is worse
    trainable_params   must be equal
    total_params       must be equal

Rules file (TOML). Only these keys exist; any other key is an error naming the file and key:

    description = "CPU CI: correctness only"     # optional, free text

    [metrics.tokens_per_s]
    enabled = false                              # skip this metric entirely

    [metrics.peak_memory_bytes]
    rel = 0.05                                   # fraction of the baseline value
    abs = 134217728                              # in the metric's own unit (bytes here)

    [metrics.fwd_bwd_ms]
    rel = 0.10
    alpha = 0.01                                 # p-value threshold of the Mann-Whitney U test
    min_samples = 5                              # fewer samples than this -> threshold alone

    [metrics.final_loss]
    abs = 0.1
    rel = 0.0
    two_sided = false

    [metrics.status]                             # and [metrics.trainable_params], [metrics.total_params]
    enabled = true

Keys per metric: enabled (all); rel, abs (peak_memory_bytes, tokens_per_s, fwd_bwd_ms, final_loss);
alpha, min_samples (tokens_per_s, fwd_bwd_ms); two_sided (final_loss).

Exit status: 0 pass, 1 regression (worse or newly failing), 2 nothing comparable or bad input
(missing/invalid results file, invalid rules file).
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UserError
from .report.rows import Point, dedupe, number, read_jsonl, warn

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

WORSE, BETTER, NOISE, NA, FAILING = "worse", "better", "noise", "not comparable", "newly failing"
VERDICT_ORDER = [FAILING, WORSE, BETTER, NOISE, NA]

DEFAULT_RULES: dict[str, dict] = {
    "status": {"enabled": True},
    "peak_memory_bytes": {"enabled": True, "rel": 0.03, "abs": 64 * 2**20},
    "tokens_per_s": {"enabled": True, "rel": 0.07, "abs": 0.0, "alpha": 0.05, "min_samples": 3},
    "fwd_bwd_ms": {"enabled": True, "rel": 0.07, "abs": 0.0, "alpha": 0.05, "min_samples": 3},
    "final_loss": {"enabled": True, "abs": 0.05, "rel": 0.02, "two_sided": True},
    "trainable_params": {"enabled": True},
    "total_params": {"enabled": True},
}
TOP_LEVEL_KEYS = {"metrics", "description"}
SAMPLE_KEYS = {"tokens_per_s": ("step_times_s",), "fwd_bwd_ms": ("fwd_bwd_ms_samples", "samples_ms")}


# --- rules ---------------------------------------------------------------------------------------

def _check_value(path, dotted: str, key: str, value):
    if key in ("enabled", "two_sided"):
        if not isinstance(value, bool):
            raise UserError(f"{path}: {dotted} must be true or false, got {value!r}")
    elif key == "min_samples":
        if isinstance(value, bool) or not isinstance(value, int) or value < 2:
            raise UserError(f"{path}: {dotted} must be an integer >= 2, got {value!r}")
    else:  # rel, abs, alpha
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 or math.isnan(value):
            raise UserError(f"{path}: {dotted} must be a number >= 0, got {value!r}")
        if key == "alpha" and not 0 < value <= 1:
            raise UserError(f"{path}: {dotted} must be in (0, 1], got {value!r}")
    return value


def load_rules(path: str | Path | None) -> dict[str, dict]:
    """Default rules, overridden by the TOML file when given. Unknown keys -> UserError."""
    rules = copy.deepcopy(DEFAULT_RULES)
    if path is None:
        return rules
    path = Path(path)
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise UserError(f"{path}: rules file not found") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read rules file: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: invalid TOML: {exc}") from None
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            raise UserError(f"{path}: unknown key '{key}' (allowed: {', '.join(sorted(TOP_LEVEL_KEYS))})")
    metrics = data.get("metrics", {})
    if not isinstance(metrics, dict):
        raise UserError(f"{path}: 'metrics' must be a table ([metrics.<name>])")
    for name, overrides in metrics.items():
        if name not in rules:
            raise UserError(f"{path}: unknown metric 'metrics.{name}' (known: {', '.join(DEFAULT_RULES)})")
        if not isinstance(overrides, dict):
            raise UserError(f"{path}: 'metrics.{name}' must be a table")
        for key, value in overrides.items():
            dotted = f"metrics.{name}.{key}"
            if key not in rules[name]:
                raise UserError(f"{path}: unknown key '{dotted}' (allowed: {', '.join(rules[name])})")
            rules[name][key] = _check_value(path, dotted, key, value)
    return rules


# --- comparison ----------------------------------------------------------------------------------

@dataclass
class Check:
    metric: str
    verdict: str
    detail: str
    moved: bool = True  # False when the value did not change at all


@dataclass
class Comparison:
    label: str
    baseline: Point | None
    current: Point | None
    checks: list[Check] = field(default_factory=list)
    note: str = ""

    @property
    def verdict(self) -> str:
        if self.baseline is None or self.current is None:
            return NA
        found = {c.verdict for c in self.checks}
        for v in (FAILING, WORSE, BETTER, NOISE):
            if v in found:
                return v
        return NA

    def flagged(self) -> list[Check]:
        """The checks behind the verdict (e.g. the metrics that got worse)."""
        return [c for c in self.checks if c.verdict == self.verdict]


def _pct(base: float, cur: float) -> str:
    if base == 0:
        return "n/a"
    return f"{(cur - base) / abs(base) * 100:+.1f}%"


def _fmt(value: float, metric: str) -> str:
    if metric == "peak_memory_bytes":
        return f"{value / 2**30:.3f} GiB"
    if metric in ("trainable_params", "total_params"):
        return f"{int(value):,}"
    if metric == "tokens_per_s":
        return f"{value:,.1f}"
    return f"{value:.4g}"


def _samples(p: Point, metric: str) -> list[float]:
    for key in SAMPLE_KEYS.get(metric, ()):
        values = [v for v in p.series(key) if math.isfinite(v)]
        if values:
            return values
    return []


def _mann_whitney(a: list[float], b: list[float]) -> float:
    from scipy.stats import mannwhitneyu

    if len(set(a) | set(b)) == 1:  # all identical: no difference
        return 1.0
    return float(mannwhitneyu(a, b, alternative="two-sided").pvalue)


def _threshold(rule: dict, base: float) -> float:
    return max(float(rule.get("abs", 0.0)), float(rule.get("rel", 0.0)) * abs(base))


def check_metric(metric: str, rule: dict, base: Point, cur: Point) -> Check | None:
    """One metric of one matched pair, or None when it does not apply / is missing."""
    if metric in ("trainable_params", "total_params"):
        b, c = number(base.metrics.get(metric)), number(cur.metrics.get(metric))
        if b is None or c is None:
            return None
        if b != c:
            return Check(metric, WORSE, f"{metric} {_fmt(b, metric)} -> {_fmt(c, metric)} (must be equal)")
        return Check(metric, NOISE, f"{metric} equal", moved=False)

    if metric == "final_loss":
        b_raw, c_raw = base.metrics.get(metric), cur.metrics.get(metric)
        b = _float_or_none(b_raw)
        c = _float_or_none(c_raw)
        if b is None or c is None:
            return None
        if not math.isfinite(b):
            return None
        if not math.isfinite(c):
            return Check(metric, WORSE, f"final_loss {b:.4g} -> {c} (not finite)")
        tol = _threshold(rule, b)
        delta = c - b
        text = f"final_loss {b:.4g} -> {c:.4g} ({delta:+.4g}, tolerance ±{tol:.3g})"
        if abs(delta) <= tol:
            return Check(metric, NOISE, text, moved=delta != 0)
        if delta > 0 or rule.get("two_sided", True):
            return Check(metric, WORSE, text)
        return Check(metric, BETTER, text)

    higher_is_better = metric == "tokens_per_s"
    b, c = base.metric(metric), cur.metric(metric)
    if b is None or c is None:
        return None
    delta = c - b
    tol = _threshold(rule, b)
    text = f"{metric} {_fmt(b, metric)} -> {_fmt(c, metric)} ({_pct(b, c)})"
    if abs(delta) <= tol:
        return Check(metric, NOISE, text, moved=delta != 0)
    worse = (delta < 0) if higher_is_better else (delta > 0)
    if metric in SAMPLE_KEYS:
        sb, sc = _samples(base, metric), _samples(cur, metric)
        min_n = int(rule.get("min_samples", 3))
        if len(sb) >= min_n and len(sc) >= min_n:
            p = _mann_whitney(sb, sc)
            text += f", Mann-Whitney p={p:.3g} (n={len(sb)}/{len(sc)})"
            if p >= float(rule.get("alpha", 0.05)):
                return Check(metric, NOISE, text + " not significant")
        else:
            text += ", no step samples: threshold only"
    return Check(metric, WORSE if worse else BETTER, text)


def _float_or_none(value) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def compare_pair(base: Point, cur: Point, rules: dict[str, dict]) -> Comparison:
    comp = Comparison(cur.label(), base, cur)
    if rules["status"]["enabled"]:
        if base.ok and not cur.ok:
            first = f": {cur.error_line}" if cur.error_line else ""
            comp.checks.append(Check("status", FAILING, f"status ok -> {cur.status}{first}"))
        elif not base.ok and cur.ok:
            comp.checks.append(Check("status", BETTER, f"status {base.status} -> ok"))
        elif base.status != cur.status:
            comp.checks.append(Check("status", NOISE, f"status {base.status} -> {cur.status} (still failing)"))
        else:
            comp.checks.append(Check("status", NOISE, f"status {cur.status}", moved=False))
    if base.ok and cur.ok:
        metrics = ["fwd_bwd_ms"] if cur.kind == "layer" else ["peak_memory_bytes", "tokens_per_s", "final_loss"]
        metrics += ["trainable_params", "total_params"]
        if cur.kind == "layer" and "peak_memory_bytes" in cur.metrics:
            metrics.insert(0, "peak_memory_bytes")
        for metric in metrics:
            if rules[metric]["enabled"]:
                check = check_metric(metric, rules[metric], base, cur)
                if check is not None:
                    comp.checks.append(check)
    elif not base.ok and not cur.ok:
        comp.note = "failed in both"
    # a pair whose only check is an unchanged failure carries no information
    if comp.checks and all(c.metric == "status" and c.verdict == NOISE for c in comp.checks) and not cur.ok:
        comp.checks = []
        comp.note = f"{base.status} in baseline and {cur.status} in current"
    return comp


def match_points(baseline: list[Point], current: list[Point]):
    """-> (pairs, only_baseline, only_current). point_id first, then a config tuple unique on both sides."""
    by_id = {p.point_id: p for p in baseline if p.point_id}
    key_count: dict[tuple, int] = {}
    for p in baseline:
        key_count[p.key()] = key_count.get(p.key(), 0) + 1
    cur_key_count: dict[tuple, int] = {}
    for p in current:
        cur_key_count[p.key()] = cur_key_count.get(p.key(), 0) + 1
    by_key = {p.key(): p for p in baseline if key_count[p.key()] == 1}
    used: set[int] = set()
    pairs, only_current = [], []
    for c in current:
        b = by_id.get(c.point_id) if c.point_id else None
        if b is None or id(b) in used:
            b = by_key.get(c.key()) if cur_key_count[c.key()] == 1 else None
        if b is None or id(b) in used:
            only_current.append(c)
            continue
        used.add(id(b))
        pairs.append((b, c))
    only_baseline = [p for p in baseline if id(p) not in used]
    return pairs, only_baseline, only_current


@dataclass
class GateResult:
    comparisons: list[Comparison]

    @property
    def comparable(self) -> list[Comparison]:
        return [c for c in self.comparisons if c.verdict != NA]

    @property
    def regressions(self) -> list[Comparison]:
        return [c for c in self.comparisons if c.verdict in (WORSE, FAILING)]

    def counts(self) -> dict[str, int]:
        out = {v: 0 for v in VERDICT_ORDER}
        for c in self.comparisons:
            out[c.verdict] += 1
        return out

    @property
    def exit_code(self) -> int:
        if not self.comparable:
            return 2
        return 1 if self.regressions else 0


def run_gate(baseline_path, current_path, rules: dict[str, dict]) -> GateResult:
    baseline, _ = dedupe(_load(baseline_path, "baseline"))
    current, _ = dedupe(_load(current_path, "current"))
    pairs, only_base, only_cur = match_points(baseline, current)
    comps = [compare_pair(b, c, rules) for b, c in pairs]
    comps += [Comparison(p.label(), p, None, note="only in baseline") for p in only_base]
    comps += [Comparison(p.label(), None, p, note="only in current") for p in only_cur]
    comps.sort(key=lambda c: (VERDICT_ORDER.index(c.verdict), c.label))
    return GateResult(comps)


def _load(path, role: str) -> list[Point]:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: {role} results file not found")
    return read_jsonl(p)


# --- output --------------------------------------------------------------------------------------

def _detail(comp: Comparison) -> str:
    if comp.note and not comp.checks:
        return comp.note
    flagged = comp.flagged()
    if comp.verdict == NOISE:
        return "; ".join(c.detail for c in comp.checks if c.moved) or "unchanged"
    return "; ".join(c.detail for c in flagged)


def _metrics(comp: Comparison) -> str:
    if comp.verdict in (NOISE, NA):
        return ""
    return ", ".join(dict.fromkeys(c.metric for c in comp.flagged()))


def format_table(result: GateResult) -> str:
    rows = [("verdict", "point", "metric", "detail")]
    rows += [(c.verdict, c.label, _metrics(c), _detail(c)) for c in result.comparisons]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = []
    for i, r in enumerate(rows):
        lines.append("  ".join(r[j].ljust(widths[j]) for j in range(3)) + "  " + r[3])
        if i == 0:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 6)
    return "\n".join(lines)


def _verdict_line(result: GateResult) -> str:
    counts = result.counts()
    parts = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
    code = result.exit_code
    state = {0: "PASS", 1: "FAIL (regression)", 2: "NOTHING COMPARABLE"}[code]
    return f"gate: {state}: {parts or 'no points'}"


def format_markdown(result: GateResult, baseline, current, rules_path) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ") or " "

    lines = ["# Benchmark gate", "", f"- baseline: `{baseline}`", f"- current: `{current}`",
             f"- rules: `{rules_path}`" if rules_path else "- rules: defaults", "",
             f"**{_verdict_line(result)}**", "", "| verdict | point | metric | detail |", "|---|---|---|---|"]
    for c in result.comparisons:
        lines.append(f"| {cell(c.verdict)} | {cell(c.label)} | {cell(_metrics(c))} | {cell(_detail(c))} |")
    return "\n".join(lines) + "\n"


# --- CLI -----------------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--baseline", required=True, metavar="B.jsonl", help="baseline results file")
    parser.add_argument("--current", required=True, metavar="C.jsonl", help="current results file")
    parser.add_argument("--rules", metavar="FILE.toml", help="rules file overriding the default thresholds")
    parser.add_argument("--summary", metavar="OUT.md", help="also write a markdown summary here")


def main(args: argparse.Namespace) -> int:
    """0 pass, 1 regression, 2 nothing comparable or bad input (message on stderr)."""
    try:
        rules = load_rules(args.rules)
        result = run_gate(args.baseline, args.current, rules)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_table(result))
    print()
    print(_verdict_line(result))
    summary = getattr(args, "summary", None)
    if summary:
        out = Path(summary)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(format_markdown(result, args.baseline, args.current, args.rules), encoding="utf-8")
        except OSError as exc:
            print(f"error: {out}: cannot write summary: {exc.strerror or exc}", file=sys.stderr)
            return 2
    if result.exit_code == 2:
        warn("no point could be compared between baseline and current")
    return result.exit_code
