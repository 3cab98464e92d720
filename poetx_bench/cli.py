"""`python -m poetx_bench COMMAND`: sweep, run, list, env, report, figures, gate, data.

Exit codes: 0 done (whatever the points' statuses), 1 harness failure, 2 bad input, 130 interrupted.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import sys
from pathlib import Path

from .backends import BACKENDS
from .errors import HarnessError, UserError
from .measure import INJECTED_DELAY_ENV
from .points.train import TrainConfig
from .points.validate import DTYPES
from .results import claim_folder
from .runner import EXIT_BAD_INPUT, EXIT_HARNESS, Runner, RunOptions, describe_point, estimate_seconds

DEFAULT_BLOCK_SIZE = 256


def best_device() -> str:
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except Exception:  # noqa: BLE001
        return "cpu"


def _default_out(tag: str) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{stamp}-{tag}"


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available, else cpu")
    p.add_argument("--out", type=Path, help="output folder (default runs/<timestamp>-<suite>)")
    p.add_argument("--resume", action="store_true",
                   help="skip points that already have a final row (without it, a folder with rows is refused)")
    p.add_argument("--max-memory-gb", type=float, help="memory cap that makes OOM reproducible")
    p.add_argument("--timeout", type=float, help="seconds per point (default: the suite's)")
    p.add_argument("--profile", action="store_true",
                   help="after each timed point, a separate profiled pass (trace + memory snapshot)")
    p.add_argument("--quiet", action="store_true", help="no per-point progress lines")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m poetx_bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")

    sw = sub.add_parser("sweep", help="run a suite, one isolated process per point")
    sw.add_argument("--suite", default="smoke", help="suite name (suites/NAME.toml) or path (default smoke)")
    sw.add_argument("--dry-run", action="store_true", help="list the points, their count and an ETA")
    sw.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                    help="keep points whose config KEY equals VALUE (repeatable; a,b = any of)")
    sw.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="sets",
                    help="replace a suite key, e.g. --set steps=300 --set backend=triton (repeatable)")
    _add_run_options(sw)
    from .launch import add_arguments as add_launch_arguments

    add_launch_arguments(sw)

    run = sub.add_parser("run", help="one training point, same row format")
    run.add_argument("--method", required=True)
    run.add_argument("--model", required=True)
    run.add_argument("--block-size", type=int,
                     help=f"default {DEFAULT_BLOCK_SIZE}, or a quarter of the width for narrower models (tiny: 32)")
    run.add_argument("--seq-len", type=int, default=256, help="at most the model's max sequence length")
    run.add_argument("--batch-size", type=int, default=1)
    train = TrainConfig.defaults()  # the train kind's defaults, shared with train suites
    run.add_argument("--steps", type=int, default=train["steps"])
    run.add_argument("--warmup-steps", type=int, default=train["warmup_steps"])
    run.add_argument("--dtype", default=train["dtype"], choices=list(DTYPES))
    run.add_argument("--seed", type=int, default=train["seed"])
    run.add_argument("--data", default=train["data"], help="'default' corpus, 'synthetic', or a file path")
    run.add_argument("--backend", default=train["backend"], choices=sorted(BACKENDS))
    _add_run_options(run)

    sub.add_parser("list", help="suites, point kinds, models and methods")
    sub.add_parser("env", help="the environment record every row carries")

    _add_plugin(sub, "report", "render a report from results JSONL files", "poetx_bench.report.cli",
                "add_report_arguments")
    _add_plugin(sub, "figures", "regenerate the POET-X paper's figures and tables", "poetx_bench.report.cli",
                "add_figures_arguments")
    _add_plugin(sub, "gate", "compare a run against a baseline; exit 1 on regression", "poetx_bench.gate",
                "add_arguments")
    _add_plugin(sub, "data", "prepare or inspect training data", "poetx_bench.data.cli", "add_arguments")
    _add_plugin(sub, "correctness", "record POET/POET-X equivalence errors and Neumann orthogonality",
                "poetx_bench.correctness", "add_arguments")
    return parser


def _add_plugin(sub, name: str, help_: str, module: str, adder: str) -> None:
    """Subcommands that live in their own modules register their own arguments."""
    import importlib

    p = sub.add_parser(name, help=help_)
    try:
        getattr(importlib.import_module(module), adder)(p)
    except (ImportError, AttributeError) as exc:  # keep the other commands usable
        p.set_defaults(plugin_error=f"{name} is unavailable: {exc}")


def _check_run_options(args) -> None:
    """Options shared by sweep and run that argparse cannot range-check."""
    for name in ("max_memory_gb", "timeout"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise UserError(f"--{name.replace('_', '-')} {value}: must be positive")
    if args.device == "cuda" and not getattr(args, "dry_run", False) and best_device() != "cuda":
        raise UserError("--device cuda: no CUDA device is available")


def cmd_sweep(args) -> int:
    from .launch import launch_settings
    from .suite import apply_filters, load_suite, parse_sets

    _check_run_options(args)
    delay = _injected_delay()
    device = args.device or best_device()
    suite = load_suite(args.suite, device=device, sets=parse_sets(args.sets))
    launch = launch_settings(args, device, suite.slurm, suite.path)
    points = apply_filters(suite.points, args.filter)
    if suite.gpu and device == "cpu":
        print(f"warning: suite {suite.name} is meant for a GPU; on cpu its points will mostly time out "
              "or run out of memory (run it with --device cuda on a GPU machine)", file=sys.stderr)
    if args.dry_run:
        _print_plan(suite.name, points, device, args.timeout, slots=len(launch.get("gpus") or [])
                    or launch.get("jobs") or 1)
        return 0
    if not points:
        raise UserError(f"suite {suite.name}: no points left after filters {args.filter}")
    out = args.out or _default_out(suite.name)
    with claim_folder(out, args.resume) as results:
        _prepare_data(points, quiet=args.quiet)
        opts = RunOptions(out_dir=out, resume=args.resume, max_memory_gb=args.max_memory_gb,
                          timeout=args.timeout, quiet=args.quiet, profile=args.profile, suite_name=suite.name,
                          **launch)
        print(f"sweep {suite.name}: {len(points)} points on {device} -> {results}", file=sys.stderr)
        if delay:
            print(f"warning: {INJECTED_DELAY_ENV}={delay:g}: every timed step and layer call is slowed on "
                  "purpose (the gate's self-test); rows record injected_delay_ms", file=sys.stderr)
        rc = Runner(opts).run(points)
        _print_summary(results, points)
    return rc


def _injected_delay() -> float:
    """The gate self-test's delay, checked before any point starts (a bad value is exit 2, not N errors)."""
    from .measure import injected_delay_ms

    try:
        return injected_delay_ms()
    except ValueError as exc:
        raise UserError(f"environment: {exc}") from None


def _print_plan(suite: str, points: list[dict], device: str, timeout: float | None, slots: int = 1) -> None:
    """--dry-run: each point with its estimate, which a point's timeout caps."""
    total = 0.0
    capped = 0
    for p in points:
        limit = timeout or p["config"].get("timeout")
        est = estimate_seconds(p["config"])
        at_limit = bool(limit) and est > limit
        if at_limit:
            est, capped = limit, capped + 1
        total += est
        note = " (its timeout)" if at_limit else ""
        print(f"{p['point_id']}  {describe_point(p['config'])}  ~{est:.0f}s{note}")
    hint = f" ({capped} points capped at their timeout)" if capped else ""
    if slots > 1:  # a rough share: slots run points concurrently, the longest point is a floor
        longest = max((min(estimate_seconds(p["config"]), timeout or p["config"].get("timeout") or math.inf)
                       for p in points), default=0.0)
        hint += f", about {max(total / slots, longest) / 60:.1f} min on {slots} slots"
    print(f"{len(points)} points in suite {suite} on {device}; estimated {total / 60:.1f} min{hint}")


def _prepare_data(points: list[dict], quiet: bool) -> None:
    """Each kind's parent-side set-up before any point runs (train: open each dataset once, failing fast
    on bad data and filling the caches so points don't race to build them)."""
    from .points import get_kind

    by_kind: dict[str, list[dict]] = {}
    for p in points:
        by_kind.setdefault(p["config"]["kind"], []).append(p["config"])
    for name, configs in by_kind.items():
        prepare = get_kind(name).prepare
        if prepare is not None:
            prepare(configs, quiet)


def _print_summary(results: Path, points: list[dict]) -> None:
    from .results import read_rows

    if not results.exists():
        return
    wanted = {p["point_id"] for p in points}
    rows = [r for r in read_rows(results, warn=False, allow_empty=True) if r.get("point_id") in wanted]
    print(f"\n{'point':52} {'status':9} {'tok/s':>10} {'ms':>9} {'peak GiB':>9} {'loss':>8}")
    for r in rows:
        m = r.get("metrics") or {}
        tps = f"{m['tokens_per_s']:.0f}" if m.get("tokens_per_s") else "-"
        ms = f"{m.get('fwd_bwd_ms') or m['kernel_ms']:.3f}" if m.get("fwd_bwd_ms") or m.get("kernel_ms") else "-"
        peak = f"{m['peak_memory_bytes'] / 2**30:.3f}" if m.get("peak_memory_bytes") else "-"
        loss = f"{m['final_loss']:.3f}" if m.get("final_loss") is not None else "-"
        print(f"{describe_point(r['config']):52} {r['status']:9} {tps:>10} {ms:>9} {peak:>9} {loss:>8}")
    counts = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    print(f"\n{len(rows)} rows ({', '.join(f'{k}: {v}' for k, v in sorted(counts.items()))}) in {results}")


def cmd_run(args) -> int:
    from .methods import METHODS
    from .points.ids import point_id
    from .points.validate import resolve_dtype
    from .reference.models import MODEL_CONFIGS

    if args.method not in METHODS:
        raise UserError(f"--method {args.method!r}: unknown (known: {', '.join(METHODS)})")
    if args.model not in MODEL_CONFIGS:
        raise UserError(f"--model {args.model!r}: unknown (known: {', '.join(MODEL_CONFIGS)})")
    model = MODEL_CONFIGS[args.model]
    uses_blocks = METHODS[args.method].uses_blocks
    if args.block_size is None:
        args.block_size = _default_block_size(model, uses_blocks)
    for name in ("block_size", "seq_len", "batch_size", "steps"):
        if getattr(args, name) <= 0:
            raise UserError(f"--{name.replace('_', '-')} {getattr(args, name)}: must be positive")
    if args.warmup_steps < 0:
        raise UserError(f"--warmup-steps {args.warmup_steps}: must be >= 0")
    _check_run_options(args)
    if uses_blocks and args.block_size > model.hidden:
        raise UserError(f"--block-size {args.block_size}: larger than the width {model.hidden} of model {args.model!r}")
    if args.seq_len > model.max_seq_len:
        raise UserError(f"--seq-len {args.seq_len}: exceeds the max sequence length {model.max_seq_len} "
                        f"of model {args.model!r}")
    if args.data not in ("default", "synthetic") and not Path(args.data).exists():
        raise UserError(f"--data {args.data}: no such file")
    device = args.device or best_device()
    cfg = TrainConfig(method=args.method, model=args.model, block_size=args.block_size if uses_blocks else None,
                      seq_len=args.seq_len, batch_size=args.batch_size, device=device, steps=args.steps,
                      warmup_steps=args.warmup_steps, seed=args.seed, data=args.data, backend=args.backend,
                      dtype=resolve_dtype(args.dtype, device)).to_dict()
    point = {"config": cfg, "point_id": point_id(cfg)}
    out = args.out or _default_out("run")
    with claim_folder(out, args.resume) as results:
        _prepare_data([point], quiet=args.quiet)
        opts = RunOptions(out_dir=out, resume=args.resume, max_memory_gb=args.max_memory_gb,
                          timeout=args.timeout, quiet=args.quiet, profile=args.profile, suite_name="run")
        rc = Runner(opts).run([point])
        _print_summary(results, [point])
    return rc


def _default_block_size(model, uses_blocks: bool) -> int:
    """256 (the paper's) where it fits the model, else a quarter of its width; says so when it differs."""
    if not uses_blocks or DEFAULT_BLOCK_SIZE <= model.hidden:
        return DEFAULT_BLOCK_SIZE
    size = model.hidden // 4
    print(f"run: --block-size {size} (a quarter of model {model.name}'s width {model.hidden}; "
          f"the default {DEFAULT_BLOCK_SIZE} does not fit)", file=sys.stderr)
    return size


def cmd_list(args) -> int:
    from .methods import METHODS
    from .points import kinds
    from .reference.models import MODEL_CONFIGS
    from .suite import list_suites

    print("suites:")
    for name, desc in list_suites():
        print(f"  {name:18} {desc}")
    print("point kinds (a suite's `kind`):")
    for kind in kinds().values():
        print(f"  {kind.name:12} {kind.description}")
    print("models:")
    for c in MODEL_CONFIGS.values():
        print(f"  {c.name:6} hidden {c.hidden}, ffn {c.intermediate}, heads {c.n_heads}, layers {c.n_layers}")
    print("methods:")
    for m in METHODS.values():
        hp = ", ".join(f"{k}={h.default}" for k, h in m.hparams.items())
        print(f"  {m.name:12} {m.display_name}: {m.description}" + (f" [{hp}]" if hp else ""))
    return 0


def cmd_env(args) -> int:
    from .env import environment

    print(json.dumps(environment(), indent=2))
    return 0


def _rules_beside_baseline(args) -> None:
    """Without --rules, `B.rules.toml` next to baseline `B.jsonl` applies (e.g. the CPU baseline's
    rules, which leave CPU wall-clock and memory ungated)."""
    if args.rules is not None:
        return
    base = Path(args.baseline)
    rules = base.with_name(base.name.removesuffix(".jsonl") + ".rules.toml")
    if rules.is_file():
        print(f"gate: rules {rules} (found beside the baseline; --rules overrides)", file=sys.stderr)
        args.rules = str(rules)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return EXIT_BAD_INPUT
    if getattr(args, "plugin_error", None):
        print(f"harness error: {args.plugin_error}", file=sys.stderr)
        return EXIT_HARNESS
    handlers = {"sweep": cmd_sweep, "run": cmd_run, "list": cmd_list, "env": cmd_env}
    try:
        if args.command in handlers:
            return handlers[args.command](args)
        if args.command in ("report", "figures"):  # figures: the same report, results given as --results
            from .report import cli as report_cli

            return report_cli.report_main(args)
        if args.command == "gate":
            from . import gate

            _rules_beside_baseline(args)
            return gate.main(args)
        if args.command == "correctness":
            from . import correctness

            return correctness.main(args)
        if args.command == "data":
            from .data import cli as data_cli

            return data_cli.main(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except HarnessError as exc:
        print(f"harness error: {exc}", file=sys.stderr)
        return EXIT_HARNESS
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    parser.print_help()
    return EXIT_BAD_INPUT
