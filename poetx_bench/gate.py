"""Regression gate: compare a current results file against a baseline, point by point.

    python -m poetx_bench gate --baseline B.jsonl --current C.jsonl [--rules FILE.toml] [--summary OUT.md]
                               [--allow-different-devices]

Points are matched by point_id; where ids differ, by the config tuple (kind, method, model, block_size,
seq_len, batch_size, dtype, device, steps, seed, in_features, out_features, tokens, ..., then the kind's own
identity fields, e.g. a kernel point's op) when that tuple is unique in both files. Points found in only
one file are "not comparable" (listed, not a failure).

Machines: a matched pair is compared only when both rows ran on the same device model (env.device_name,
e.g. "NVIDIA H100 80GB HBM3" -- not just config.device "cuda"; the CPU model on CPU runs) under the same
memory cap (metrics.memory_cap_bytes / config.max_memory_gb); see poetx_bench.machines. Otherwise the pair
is refused ("different machines") and the gate exits 2, unless --allow-different-devices is given.

Each compared pair gets one verdict: newly failing (status was ok, now is not), worse (a metric
regressed beyond its rule), better, insufficient samples (a timed metric within the effect-size threshold
whose samples cannot show significance), noise (changes within the rules or not significant), or not
comparable (nothing to compare, e.g. both failed before reaching metrics, or refused machines).

Which metrics a pair is judged on is its kind's (`gated_metrics` in poetx_bench/points/<kind>.py): train
peak_memory_bytes, tokens_per_s, final_loss, trainable_params, total_params; layer peak_memory_bytes
(where measured), fwd_bwd_ms, trainable_params, total_params; kernel kernel_ms; correctness status only.

Timed metrics, declared by their kinds (tokens_per_s: higher is better, samples metrics.step_times_s in s;
fwd_bwd_ms: lower is better, samples metrics.fwd_bwd_ms_samples / samples_ms in ms; kernel_ms: lower is
better, samples metrics.samples_ms in ms) are judged on the time ratio of medians,
r = current/baseline time (for tokens_per_s r = baseline/current tokens/s; r > 1 is slower):

    1. effect size (always, whatever the sample count): r > 1 + effect_rel is worse, r < 1/(1 + effect_rel)
       is better. The recorded medians (the metric's own value) give r, so rows without samples are judged.
    2. statistics, when both sides have >= min_samples samples and the smallest two-sided Mann-Whitney U
       p-value reachable with those counts (2 / C(n1+n2, n1)) is below alpha: r_s = median(current
       samples) / median(baseline samples), its (1 - alpha) percentile bootstrap confidence interval
       (scipy.stats.bootstrap, 2000 resamples, fixed seed) and a two-sided Mann-Whitney U test.
       Worse when p < alpha and the whole interval lies above 1 + rel; better when p < alpha and it lies
       below 1/(1 + rel); otherwise noise (within rel, or not significant).
    3. otherwise "insufficient samples": judged on effect size alone, reported as such, never as noise.

Other metrics (fixed thresholds; a change is beyond the threshold when |current - baseline| exceeds
max(abs, rel * |baseline|)):

    status             ok -> anything else = newly failing (non-ok -> ok is "better")
    peak_memory_bytes  lower is better; rel 0.03, abs 67108864 (64 MiB)
    final_loss         tolerance abs 0.05 or rel 0.02, whichever is larger; two_sided = true means a
                       drop beyond it is also a failure (the run changed), false makes a drop "better";
                       a NaN/inf loss where the baseline was finite is worse
    trainable_params   must be equal
    total_params       must be equal

A metric present on one side only is "not judged" (listed, counted, not a failure). The gate warns (stderr
and summary) when baseline points have fewer than min_samples samples of a gated timed metric.

Rules file (TOML). Only these keys exist; any other key is an error naming the file and key:

    description = "H100 gate"                    # optional, free text

    [metrics.tokens_per_s]                       # and [metrics.fwd_bwd_ms], [metrics.kernel_ms]
    rel = 0.05                                   # tighter threshold, judged on statistics (default 0.07)
    effect_rel = 0.25                            # effect-size threshold, always applied (default 0.25)
    alpha = 0.05                                 # Mann-Whitney p and 1 - bootstrap confidence level
    min_samples = 10                             # fewer samples on a side -> effect size alone

    [metrics.peak_memory_bytes]
    rel = 0.05                                   # fraction of the baseline value
    abs = 134217728                              # in the metric's own unit (bytes here)

    [metrics.final_loss]
    abs = 0.1
    rel = 0.0
    two_sided = false

    [metrics.status]                             # and [metrics.trainable_params], [metrics.total_params]
    enabled = true                               # every metric has it; false skips the metric

Keys per metric: enabled (all); rel, effect_rel, alpha, min_samples (the timed metrics; effect_rel
must be >= rel); rel, abs (peak_memory_bytes, final_loss); two_sided (final_loss).

Output: a table (verdict, point, metric, detail), the verdict line ("gate: PASS ...") and a line counting
how many metrics were judged on statistics, on effect size alone, on fixed thresholds, and not judged.

Exit status: 0 pass, 1 regression (worse or newly failing), 2 nothing comparable, pairs refused as
different machines, or bad input (missing/invalid results file, invalid rules file).
"""

from __future__ import annotations

import argparse
import copy
import inspect
import math
import statistics
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from . import machines
from .errors import UserError
from .points import find_kind, kinds
from .results.point import Point, dedupe, number, read_jsonl, warn

WORSE, BETTER, NOISE, NA, FAILING = "worse", "better", "noise", "not comparable", "newly failing"
INSUFFICIENT = "insufficient samples"
VERDICT_ORDER = [FAILING, WORSE, BETTER, INSUFFICIENT, NOISE, NA]

# how a metric was judged
STATS, EFFECT, THRESHOLD, UNJUDGED = "statistics", "effect size alone", "fixed threshold", "not judged"
BASIS_ORDER = [STATS, EFFECT, THRESHOLD, UNJUDGED]

TIMED_RULE = {"enabled": True, "rel": 0.07, "effect_rel": 0.25, "alpha": 0.05, "min_samples": 10}
FIXED_RULES: dict[str, dict] = {
    "status": {"enabled": True},
    "peak_memory_bytes": {"enabled": True, "rel": 0.03, "abs": 64 * 2**20},
    "final_loss": {"enabled": True, "abs": 0.05, "rel": 0.02, "two_sided": True},
    "trainable_params": {"enabled": True},
    "total_params": {"enabled": True},
}
TOP_LEVEL_KEYS = {"metrics", "description"}


def timed_metrics() -> dict:
    """Timed metrics of every registered kind -> TimedMetric (where the samples live, which way is better);
    the first kind to declare a metric wins."""
    out: dict = {}
    for kind in kinds().values():
        for name, spec in kind.timed_metrics.items():
            out.setdefault(name, spec)
    return out


def default_rules() -> dict[str, dict]:
    """Every metric the gate can judge with its default rule: the fixed-threshold metrics and each kind's
    timed metrics (tokens_per_s, fwd_bwd_ms, kernel_ms, ...)."""
    fixed = copy.deepcopy(FIXED_RULES)
    rules = {"status": fixed.pop("status"), "peak_memory_bytes": fixed.pop("peak_memory_bytes")}
    rules.update({name: dict(TIMED_RULE) for name in timed_metrics()})
    rules.update(fixed)
    return rules


def gated_metrics(p: Point) -> tuple[str, ...]:
    """The metrics the gate judges besides status for a row of p's kind (none for an unknown kind)."""
    kind = find_kind(p.kind)
    return kind.gated_metrics if kind is not None else ()


BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0


# --- rules ---------------------------------------------------------------------------------------

def _check_value(path, dotted: str, key: str, value):
    if key in ("enabled", "two_sided"):
        if not isinstance(value, bool):
            raise UserError(f"{path}: {dotted} must be true or false, got {value!r}")
    elif key == "min_samples":
        if isinstance(value, bool) or not isinstance(value, int) or value < 2:
            raise UserError(f"{path}: {dotted} must be an integer >= 2, got {value!r}")
    else:  # rel, abs, alpha, effect_rel
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 or math.isnan(value):
            raise UserError(f"{path}: {dotted} must be a number >= 0, got {value!r}")
        if key == "alpha" and not 0 < value < 1:
            raise UserError(f"{path}: {dotted} must be in (0, 1), got {value!r}")
        if key == "effect_rel" and not 0 < value < math.inf:
            raise UserError(f"{path}: {dotted} must be a finite number > 0, got {value!r}")
    return value


def load_rules(path: str | Path | None) -> dict[str, dict]:
    """Default rules, overridden by the TOML file when given. Unknown keys -> UserError."""
    rules = default_rules()
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
    if not isinstance(data.get("description", ""), str):
        raise UserError(f"{path}: description must be a string, got {data['description']!r}")
    metrics = data.get("metrics", {})
    if not isinstance(metrics, dict):
        raise UserError(f"{path}: 'metrics' must be a table ([metrics.<name>])")
    for name, overrides in metrics.items():
        if name not in rules:
            raise UserError(f"{path}: unknown metric 'metrics.{name}' (known: {', '.join(rules)})")
        if not isinstance(overrides, dict):
            raise UserError(f"{path}: 'metrics.{name}' must be a table")
        for key, value in overrides.items():
            dotted = f"metrics.{name}.{key}"
            if key not in rules[name]:
                raise UserError(f"{path}: unknown key '{dotted}' (allowed: {', '.join(rules[name])})")
            rules[name][key] = _check_value(path, dotted, key, value)
        rule = rules[name]
        if "effect_rel" in rule and rule["effect_rel"] < rule["rel"]:
            raise UserError(f"{path}: metrics.{name}.effect_rel ({rule['effect_rel']}) must be >= "
                            f"metrics.{name}.rel ({rule['rel']})")
    return rules


# --- comparison ----------------------------------------------------------------------------------

@dataclass
class Check:
    metric: str
    verdict: str
    detail: str
    moved: bool = True  # False when the value did not change at all
    basis: str = THRESHOLD  # STATS, EFFECT, THRESHOLD or UNJUDGED


@dataclass
class Comparison:
    label: str
    baseline: Point | None
    current: Point | None
    checks: list[Check] = field(default_factory=list)
    note: str = ""
    refused: str = ""  # why the pair was not compared (different machines), "" when it was

    @property
    def verdict(self) -> str:
        if self.baseline is None or self.current is None or self.refused:
            return NA
        found = {c.verdict for c in self.checks}
        for v in (FAILING, WORSE, BETTER, INSUFFICIENT, NOISE):
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


def _fmt(value: float | None, metric: str) -> str:
    if value is None:
        return "missing"
    if metric == "peak_memory_bytes":
        return f"{value / 2**30:.3f} GiB"
    if metric in ("trainable_params", "total_params"):
        return f"{int(value):,}"
    if metric == "tokens_per_s":
        return f"{value:,.1f}"
    return f"{value:.4g}"


def samples(p: Point, metric: str) -> list[float]:
    """The positive finite time samples behind a timed metric ([] when none were recorded)."""
    spec = timed_metrics().get(metric)
    for key in (spec.samples if spec else ()):
        values = [v for v in p.series(key) if math.isfinite(v) and v > 0]
        if values:
            return values
    return []


def smallest_p(n1: int, n2: int) -> float:
    """The smallest two-sided p-value an exact Mann-Whitney U test can reach with n1 and n2 samples."""
    if n1 < 1 or n2 < 1:
        return 1.0
    return min(1.0, 2.0 / math.comb(n1 + n2, n1))


def _mann_whitney(a: list[float], b: list[float]) -> float:
    from scipy.stats import mannwhitneyu

    if len(set(a) | set(b)) == 1:  # all identical: no difference
        return 1.0
    return float(mannwhitneyu(a, b, alternative="two-sided").pvalue)


def bootstrap_ratio_ci(base: list[float], cur: list[float], level: float) -> tuple[float, float]:
    """Percentile bootstrap interval of median(cur) / median(base) (scipy.stats.bootstrap, fixed seed)."""
    import numpy as np
    from scipy.stats import bootstrap

    if len(set(base)) == 1 and len(set(cur)) == 1:  # no spread: the interval is the point
        r = cur[0] / base[0]
        return r, r

    def ratio(x, y, axis=-1):
        return np.median(y, axis=axis) / np.median(x, axis=axis)

    seed = np.random.default_rng(BOOTSTRAP_SEED)
    params = inspect.signature(bootstrap).parameters
    kwargs = {"rng": seed} if "rng" in params else {"random_state": seed}
    res = bootstrap((np.asarray(base, dtype=float), np.asarray(cur, dtype=float)), ratio, paired=False,
                    vectorized=True, confidence_level=level, n_resamples=BOOTSTRAP_RESAMPLES,
                    method="percentile", **kwargs)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def _iqr_rel(values: list[float]) -> float:
    med = statistics.median(values)
    if len(values) >= 4:
        q = statistics.quantiles(values, n=4, method="inclusive")
        spread = q[2] - q[0]
    else:
        spread = max(values) - min(values)
    return spread / med if med else 0.0


def _threshold(rule: dict, base: float) -> float:
    return max(float(rule.get("abs", 0.0)), float(rule.get("rel", 0.0)) * abs(base))


def _missing(metric: str, b, c) -> Check:
    return Check(metric, NA, f"{metric} {_fmt(b, metric)} -> {_fmt(c, metric)}: not judged (missing on one side)",
                 basis=UNJUDGED)


def check_timed(metric: str, rule: dict, base: Point, cur: Point) -> Check | None:
    """A timed metric: effect size always, statistics where the samples allow (module docstring)."""
    b, c = base.metric(metric), cur.metric(metric)
    if b is None and c is None:
        return None
    if b is None or c is None or not (0 < b < math.inf) or not (0 < c < math.inf):
        return _missing(metric, b, c)
    ratio = b / c if timed_metrics()[metric].higher_is_better else c / b  # time ratio: > 1 is slower
    effect, rel, alpha = float(rule["effect_rel"]), float(rule["rel"]), float(rule["alpha"])
    min_n = int(rule["min_samples"])
    text = f"{metric} {_fmt(b, metric)} -> {_fmt(c, metric)} ({_pct(b, c)}, time x{ratio:.3f})"

    sb, sc = samples(base, metric), samples(cur, metric)
    nb, nc = len(sb), len(sc)
    reasons = []
    if min(nb, nc) < min_n:
        reasons.append(f"fewer than min_samples {min_n}")
    if smallest_p(nb, nc) >= alpha:
        reasons.append(f"smallest reachable Mann-Whitney p {smallest_p(nb, nc):.3g} >= alpha {alpha:g}")
    why = f"{nb}/{nc} samples: " + "; ".join(reasons) if reasons else ""
    basis = EFFECT if why else STATS

    if ratio > 1 + effect or ratio < 1 / (1 + effect):
        worse = ratio > 1
        limit = f"x{1 + effect:.3g}" if worse else f"x{1 / (1 + effect):.3g}"
        text += f": beyond the effect-size threshold {limit}"
        if why:
            text += f" ({why})"
        return Check(metric, WORSE if worse else BETTER, text, basis=basis)
    if why:
        return Check(metric, INSUFFICIENT, f"{text}: within the effect-size threshold +-{effect:.0%}; "
                     f"not judged on statistics ({why})", moved=ratio != 1, basis=EFFECT)

    ratio_s = statistics.median(sc) / statistics.median(sb)
    lo, hi = bootstrap_ratio_ci(sb, sc, 1 - alpha)
    p = _mann_whitney(sb, sc)
    stats = (f"; samples {nb}/{nc}: median time ratio {ratio_s:.3f}, {1 - alpha:.0%} CI [{lo:.3f}, {hi:.3f}], "
             f"Mann-Whitney p={p:.3g}")
    spread = max(_iqr_rel(sb), _iqr_rel(sc))
    if spread > 0.10:
        stats += f", noisy (IQR/median up to {spread:.0%})"
    if p < alpha and lo > 1 + rel:
        return Check(metric, WORSE, text + stats + f": CI above +{rel:.0%}", basis=STATS)
    if p < alpha and hi < 1 / (1 + rel):
        return Check(metric, BETTER, text + stats + f": CI below -{1 - 1 / (1 + rel):.1%}", basis=STATS)
    why_noise = "not significant" if p >= alpha else f"CI not beyond +-{rel:.0%}"
    return Check(metric, NOISE, text + stats + f": {why_noise}", moved=ratio != 1 or ratio_s != 1, basis=STATS)


def check_metric(metric: str, rule: dict, base: Point, cur: Point) -> Check | None:
    """One metric of one matched pair, or None when neither side has it."""
    if metric in timed_metrics():
        return check_timed(metric, rule, base, cur)

    if metric in ("trainable_params", "total_params"):
        b, c = number(base.metrics.get(metric)), number(cur.metrics.get(metric))
        if b is None and c is None:
            return None
        if b is None or c is None:
            return _missing(metric, b, c)
        if b != c:
            return Check(metric, WORSE, f"{metric} {_fmt(b, metric)} -> {_fmt(c, metric)} (must be equal)")
        return Check(metric, NOISE, f"{metric} equal", moved=False)

    if metric == "final_loss":
        b = _float_or_none(base.metrics.get(metric))
        c = _float_or_none(cur.metrics.get(metric))
        if b is None and c is None:
            return None
        if b is None or c is None or not math.isfinite(b):
            return _missing(metric, b, c)
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

    # peak_memory_bytes: lower is better, fixed threshold
    b, c = base.metric(metric), cur.metric(metric)
    if b is None and c is None:
        return None
    if b is None or c is None:
        return _missing(metric, b, c)
    delta = c - b
    tol = _threshold(rule, b)
    text = f"{metric} {_fmt(b, metric)} -> {_fmt(c, metric)} ({_pct(b, c)})"
    if abs(delta) <= tol:
        return Check(metric, NOISE, text, moved=delta != 0)
    return Check(metric, WORSE if delta > 0 else BETTER, text)


def _float_or_none(value) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def compare_pair(base: Point, cur: Point, rules: dict[str, dict],
                 allow_different_devices: bool = False) -> Comparison:
    comp = Comparison(cur.label(), base, cur)
    if not allow_different_devices:
        why = machines.mismatch(base, cur)
        if why:
            comp.refused = why
            comp.note = (f"refused, different machines (baseline vs current): {why} "
                         "(--allow-different-devices compares them)")
            return comp
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
        for metric in gated_metrics(cur):  # the kind's, from the registry (poetx_bench.points)
            if metric not in rules:
                comp.checks.append(Check(metric, NA, f"{metric}: not judged (the gate has no rule for it)",
                                         basis=UNJUDGED))
            elif rules[metric]["enabled"]:
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
    warnings: list[str] = field(default_factory=list)

    @property
    def comparable(self) -> list[Comparison]:
        return [c for c in self.comparisons if c.verdict != NA]

    @property
    def regressions(self) -> list[Comparison]:
        return [c for c in self.comparisons if c.verdict in (WORSE, FAILING)]

    @property
    def refused(self) -> list[Comparison]:
        return [c for c in self.comparisons if c.refused]

    def counts(self) -> dict[str, int]:
        out = {v: 0 for v in VERDICT_ORDER}
        for c in self.comparisons:
            out[c.verdict] += 1
        return out

    def basis_counts(self) -> dict[str, int]:
        """How many metric checks were judged on statistics, on effect size alone, on fixed thresholds,
        and how many could not be judged."""
        out = {b: 0 for b in BASIS_ORDER}
        for comp in self.comparisons:
            for check in comp.checks:
                out[check.basis] += 1
        return out

    @property
    def exit_code(self) -> int:
        if self.regressions:
            return 1
        if not self.comparable or self.refused:
            return 2
        return 0


def sample_warnings(baseline: list[Point], rules: dict[str, dict], name: str = "baseline") -> list[str]:
    """One line per timed metric whose baseline points have fewer samples than min_samples."""
    out = []
    for metric in timed_metrics():
        rule = rules[metric]
        if not rule["enabled"]:
            continue
        timed_by = {k.name for k in kinds().values() if metric in k.timed_metrics}
        counts = [len(samples(p, metric)) for p in baseline
                  if p.ok and p.kind in timed_by and p.metric(metric) is not None]
        few = [n for n in counts if n < rule["min_samples"]]
        if few:
            out.append(f"{name}: {len(few)} of {len(counts)} points have fewer than {rule['min_samples']} "
                       f"samples of {metric} (fewest {min(few)}): judged on effect size alone "
                       f"(±{rule['effect_rel']:.0%}); time more steps or repeats")
    return out


def run_gate(baseline_path, current_path, rules: dict[str, dict],
             allow_different_devices: bool = False) -> GateResult:
    baseline, _ = dedupe(_load(baseline_path, "baseline"))
    current, _ = dedupe(_load(current_path, "current"))
    pairs, only_base, only_cur = match_points(baseline, current)
    comps = [compare_pair(b, c, rules, allow_different_devices) for b, c in pairs]
    comps += [Comparison(p.label(), p, None, note="only in baseline") for p in only_base]
    comps += [Comparison(p.label(), None, p, note="only in current") for p in only_cur]
    comps.sort(key=lambda c: (VERDICT_ORDER.index(c.verdict), c.label))
    return GateResult(comps, sample_warnings(baseline, rules, f"baseline {baseline_path}"))


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
    if code == 1:
        state = "FAIL (regression)"
    elif code == 2:
        state = (f"REFUSED ({len(result.refused)} pairs from different machines)" if result.refused
                 else "NOTHING COMPARABLE")
    else:
        basis = result.basis_counts()
        unsure = basis[EFFECT] + basis[UNJUDGED]
        state = "PASS" if not unsure else f"PASS, but {unsure} metrics not judged on statistics"
    return f"gate: {state}: {parts or 'no points'}"


def _basis_line(result: GateResult) -> str:
    b = result.basis_counts()
    line = (f"judged: {b[STATS]} metrics on statistics, {b[EFFECT]} on effect size alone (insufficient "
            f"samples), {b[THRESHOLD]} on fixed thresholds, {b[UNJUDGED]} could not be judged")
    if result.refused:
        line += f"; {len(result.refused)} pairs not compared (different machines)"
    return line


def format_markdown(result: GateResult, baseline, current, rules_path) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ") or " "

    lines = ["# Benchmark gate", "", f"- baseline: `{baseline}`", f"- current: `{current}`",
             f"- rules: `{rules_path}`" if rules_path else "- rules: defaults", "",
             f"**{_verdict_line(result)}**", "", _basis_line(result), ""]
    lines += [f"- warning: {w}" for w in result.warnings]
    if result.warnings:
        lines.append("")
    lines += ["| verdict | point | metric | detail |", "|---|---|---|---|"]
    for c in result.comparisons:
        lines.append(f"| {cell(c.verdict)} | {cell(c.label)} | {cell(_metrics(c))} | {cell(_detail(c))} |")
    return "\n".join(lines) + "\n"


# --- CLI -----------------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--baseline", required=True, metavar="B.jsonl", help="baseline results file")
    parser.add_argument("--current", required=True, metavar="C.jsonl", help="current results file")
    parser.add_argument("--rules", metavar="FILE.toml", help="rules file overriding the default thresholds")
    parser.add_argument("--summary", metavar="OUT.md", help="also write a markdown summary here")
    parser.add_argument("--allow-different-devices", action="store_true",
                        help="compare rows from different device models or memory caps (refused by default)")


def main(args: argparse.Namespace) -> int:
    """0 pass, 1 regression, 2 nothing comparable, refused machines or bad input (message on stderr)."""
    try:
        rules = load_rules(args.rules)
        result = run_gate(args.baseline, args.current, rules,
                          allow_different_devices=getattr(args, "allow_different_devices", False))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for w in result.warnings:
        warn(w)
    print(format_table(result))
    print()
    print(_verdict_line(result))
    print(_basis_line(result))
    summary = getattr(args, "summary", None)
    if summary:
        out = Path(summary)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(format_markdown(result, args.baseline, args.current, args.rules), encoding="utf-8")
        except OSError as exc:
            print(f"error: {out}: cannot write summary: {exc.strerror or exc}", file=sys.stderr)
            return 2
    if result.refused:
        warn(f"{len(result.refused)} pairs ran on different machines and were not compared "
             "(--allow-different-devices compares them)")
    elif result.exit_code == 2:
        warn("no point could be compared between baseline and current")
    return result.exit_code
