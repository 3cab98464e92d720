"""Point kinds behind one registry (poetx_bench.points): a kind registered from outside is planned by the
suite reader, run by the runner and the child, labelled and gated, without touching those modules; the
shipped kinds' typed configs are the schema of their points; the correctness and kernels suites run on CPU.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from pathlib import Path

import pytest

from poetx_bench import gate, points
from poetx_bench.cli import main
from poetx_bench.results import read_rows

ROOT = Path(__file__).resolve().parent.parent

FAKE_KIND = '''
"""A kind that lives outside poetx_bench: found through POETX_BENCH_KINDS."""
from __future__ import annotations

import os
from dataclasses import dataclass

from poetx_bench.points import KindConfig, PointKind, TimedMetric
from poetx_bench.points.base import knob
from poetx_bench.points.validate import positive_ints


@dataclass(kw_only=True)
class FakeConfig(KindConfig):
    kind: str = "fake"
    size: int
    device: str
    timeout: float = knob(60)


def expand(inp):
    sizes = positive_ints(inp.src, "sizes", inp.raw["sizes"])
    return [FakeConfig(size=s, device=inp.device, timeout=inp.raw.get("timeout", 60)).to_dict() for s in sizes]


def run(cfg, ctx):
    return {"fake_ms": float(cfg["size"]), "fake_samples": [float(cfg["size"])] * 12, "total_params": 7,
            "tokens_per_s": 1.0, "pid": os.getpid()}


KIND = PointKind(
    name="fake", description="a test's kind", config=FakeConfig, suite_keys={"sizes": (list, True)},
    expand=expand, run=run, describe=lambda cfg: f"fake size={cfg['size']}",
    estimate_seconds=lambda cfg, device: 42.0, label=lambda p, with_model=True: f"fake {p.cfg('size')}",
    gated_metrics=("fake_ms", "total_params"), timed_metrics={"fake_ms": TimedMetric(("fake_samples",))},
    skip_reason=lambda cfg: "too big for this test" if cfg["size"] > 100 else None,
)
'''


@pytest.fixture
def fake_kind(tmp_path, monkeypatch):
    """The fake kind as a module on PYTHONPATH named in POETX_BENCH_KINDS (point processes inherit both);
    the registry forgets it afterwards."""
    (tmp_path / "fake_kind_mod.py").write_text(FAKE_KIND)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv(points.PLUGINS_ENV, "fake_kind_mod")
    yield points.get_kind("fake")
    points.KINDS.pop("fake", None)
    points._loaded_plugins.discard("fake_kind_mod")


def _one_line_error(capsys, *needles) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    for needle in needles:
        assert needle in err, err
    return err


# --- registry dispatch -------------------------------------------------------------------------------

def test_a_kind_from_outside_is_planned_run_and_skipped_through_the_registry(tmp_path, fake_kind, capsys):
    suite = tmp_path / "fake.toml"
    suite.write_text('kind = "fake"\nsizes = [3, 500]\n')
    assert main(["sweep", "--suite", str(suite), "--device", "cpu", "--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert "fake size=3  ~42s" in plan and "2 points in suite fake" in plan
    out = tmp_path / "out"
    assert main(["sweep", "--suite", str(suite), "--device", "cpu", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "fake size=3: ok" in err and "fake size=500: skipped" in err
    rows = {r["config"]["size"]: r for r in read_rows(out / "results.jsonl")}
    assert rows[3]["status"] == "ok" and rows[3]["kind"] == "fake"
    assert rows[3]["metrics"]["fake_ms"] == 3.0 and rows[3]["metrics"]["pid"] != os.getpid()  # its own process
    assert rows[500]["status"] == "skipped" and rows[500]["error"]["message"] == "too big for this test"
    # a key the kind does not declare is refused like any suite key
    suite.write_text('kind = "fake"\nsizes = [3]\nmodels = ["tiny"]\n')
    assert main(["sweep", "--suite", str(suite), "--device", "cpu", "--dry-run"]) == 2
    _one_line_error(capsys, "unknown key 'models'", "allowed for kind=fake")


def test_child_runs_a_registered_kind_in_process(fake_kind, monkeypatch):
    from poetx_bench.child import run

    res = run({"config": {"kind": "fake", "size": 5, "device": "cpu", "timeout": 60}, "point_id": "x"})
    assert res["status"] == "ok" and res["metrics"]["fake_ms"] == 5.0 and res["metrics"]["pid"] == os.getpid()
    res = run({"config": {"kind": "fake", "size": 101, "device": "cpu", "timeout": 60}, "point_id": "y"})
    assert res["status"] == "skipped"
    # a kind's run that raises is an error row, like any point
    monkeypatch.setitem(points.KINDS, "fake", dataclasses.replace(fake_kind, run=lambda cfg, ctx: 1 / 0))
    res = run({"config": {"kind": "fake", "size": 5, "device": "cpu", "timeout": 60}, "point_id": "z"})
    assert res["status"] == "error" and res["error"]["type"] == "ZeroDivisionError"


def test_unknown_kind_is_one_line_error(tmp_path, capsys):
    suite = tmp_path / "k.toml"
    suite.write_text('kind = "nope"\n')
    assert main(["sweep", "--suite", str(suite), "--device", "cpu", "--dry-run"]) == 2
    _one_line_error(capsys, "key 'kind': value 'nope' must be one of 'train', 'layer', 'correctness', 'kernel'")


# --- the gate reads each kind's gated metrics from the registry ----------------------------------------

def _fake_row(pid: str, fake_ms: float = 3.0, total_params: int = 7, tokens_per_s: float = 100.0) -> dict:
    samples = [fake_ms * (1 + 0.001 * i) for i in range(12)]
    return {"schema_version": 2, "point_id": pid, "status": "ok", "kind": "fake",
            "config": {"kind": "fake", "size": 3, "device": "cpu", "timeout": 60},
            "metrics": {"fake_ms": fake_ms, "fake_samples": samples, "total_params": total_params,
                        "tokens_per_s": tokens_per_s},
            "env": {"device_name": "cpu-model"}}


def _gate(tmp_path, base: list[dict], cur: list[dict], rules: str | None = None) -> gate.GateResult:
    b, c = tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    b.write_text("".join(json.dumps(r) + "\n" for r in base))
    c.write_text("".join(json.dumps(r) + "\n" for r in cur))
    path = None
    if rules is not None:
        path = tmp_path / "rules.toml"
        path.write_text(rules)
    return gate.run_gate(b, c, gate.load_rules(path))


def test_gate_judges_a_kind_on_its_declared_metrics(tmp_path, fake_kind, monkeypatch):
    base = [_fake_row("a")]
    # tokens_per_s is a train metric: a tenfold drop is not judged for this kind
    assert _gate(tmp_path, base, [_fake_row("a", tokens_per_s=10.0)]).exit_code == 0
    res = _gate(tmp_path, base, [_fake_row("a", total_params=8)])
    assert res.exit_code == 1 and [c.metric for c in res.comparisons[0].flagged()] == ["total_params"]
    # its own timed metric: judged on its samples, and a rules file may set its thresholds
    res = _gate(tmp_path, base, [_fake_row("a", fake_ms=6.0)])
    assert res.exit_code == 1 and res.comparisons[0].flagged()[0].metric == "fake_ms"
    assert res.comparisons[0].flagged()[0].basis == gate.STATS
    assert res.comparisons[0].label == "fake 3"
    loose = "[metrics.fake_ms]\nrel = 1.5\neffect_rel = 2.0\n"
    assert _gate(tmp_path, base, [_fake_row("a", fake_ms=6.0)], loose).exit_code == 0
    # a declared metric the gate has no rule for is counted as not judged, never silently dropped
    monkeypatch.setitem(points.KINDS, "fake", dataclasses.replace(fake_kind, gated_metrics=("mystery",)))
    res = _gate(tmp_path, base, base)
    assert res.exit_code == 0 and res.basis_counts()[gate.UNJUDGED] == 1


def test_gate_follows_a_changed_registry_entry(tmp_path, monkeypatch):
    """The layer kind's gated metrics are read from the registry at gate time, not from gate.py."""
    rows = [json.loads(line) for line in (ROOT / "tests" / "fixtures" / "results_mixed.jsonl").read_text().splitlines()
            if line.strip()]
    layer = [r for r in rows if r["kind"] == "layer" and r["status"] == "ok"][:1]
    layer[0]["metrics"]["total_params"] = 1024
    slow = copy.deepcopy(layer)
    slow[0]["metrics"]["fwd_bwd_ms"] *= 3
    for key in ("fwd_bwd_ms_samples", "samples_ms"):
        if isinstance(slow[0]["metrics"].get(key), list):
            slow[0]["metrics"][key] = [v * 3 for v in slow[0]["metrics"][key]]
    res = _gate(tmp_path, layer, slow)
    assert res.exit_code == 1 and res.comparisons[0].flagged()[0].metric == "fwd_bwd_ms"
    monkeypatch.setitem(points.KINDS, "layer",
                        dataclasses.replace(points.KINDS["layer"], gated_metrics=("total_params",)))
    res = _gate(tmp_path, layer, slow)
    assert res.exit_code == 0 and {c.metric for c in res.comparisons[0].checks} == {"status", "total_params"}


# --- typed configs ------------------------------------------------------------------------------------

@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_every_shipped_point_is_its_kinds_typed_config(device):
    """Each point of each shipped suite round-trips through its kind's config dataclass, key order
    included: the dataclass is the schema (and the defaults) of the point."""
    from poetx_bench.suite import load_suite

    seen = set()
    for path in sorted((ROOT / "suites").glob("*.toml")):
        suite = load_suite(str(path), device)
        kind = points.get_kind(suite.kind)
        seen.add(suite.kind)
        for p in suite.points:
            cfg = p["config"]
            assert list(kind.config.from_dict(cfg).to_dict().items()) == list(cfg.items()), (path.name, cfg)
    assert seen == set(points.KINDS) - {"fake"}


def test_run_command_defaults_are_the_train_kinds():
    from poetx_bench.cli import build_parser
    from poetx_bench.points.train import TrainConfig

    args = build_parser().parse_args(["run", "--method", "adamw", "--model", "tiny"])
    defaults = TrainConfig.defaults()
    assert {k: getattr(args, k) for k in ("steps", "warmup_steps", "dtype", "seed", "data", "backend")} == \
        {k: defaults[k] for k in ("steps", "warmup_steps", "dtype", "seed", "data", "backend")}


def test_added_keys_at_their_default_keep_ids_per_kind():
    """A kind's added key at its default stays out of the id (correctness rows written before `timeout`
    keep theirs); another kind's added key does not: layer points time out at 900 s like correctness
    points, and their ids have always hashed it."""
    from poetx_bench.points.ids import point_id

    corr = {"kind": "correctness", "check": "neumann-orthogonality", "block_size": 16, "terms": 3,
            "device": "cpu", "dtype": "float64", "seed": 0}
    assert point_id({**corr, "timeout": 900}) == point_id(corr)
    assert point_id({**corr, "timeout": 300}) != point_id(corr)
    layer = {"kind": "layer", "method": "linear", "in_features": 8, "out_features": 8, "tokens": 4,
             "block_size": None, "device": "cpu", "dtype": "float32", "compile": "none"}
    assert point_id({**layer, "timeout": 900}) != point_id(layer)
    assert point_id(layer) == point_id({k: v for k, v in layer.items() if k != "compile"})


# --- the correctness suite ----------------------------------------------------------------------------

def test_correctness_suite_runs_on_cpu_and_keeps_the_commands_ids(tmp_path, monkeypatch, capsys):
    from poetx_bench.correctness import planned_sets
    from poetx_bench.points.ids import point_id
    from poetx_bench.suite import build_suite, load_suite

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    shipped = load_suite(str(ROOT / "suites" / "correctness.toml"), "cuda")
    command = build_suite({"kind": "correctness"}, Path("correctness"), "cuda", planned_sets("cuda", False))
    assert [p["point_id"] for p in shipped.points] == [p["point_id"] for p in command.points]
    out = tmp_path / "corr"
    assert main(["sweep", "--suite", str(ROOT / "suites" / "correctness.toml"), "--device", "cpu", "--out", str(out),
                 "--quiet", "--set", "shapes=[[64, 96, 32]]", "--set", 'dtypes=["float32"]',
                 "--set", 'methods=["poetx-mem"]', "--set", "neumann_block_sizes=[16]"]) == 0
    rows = read_rows(out / "results.jsonl")
    by = {(r["config"]["check"], r["config"].get("backend")): r for r in rows}
    assert set(by) == {("layer-equivalence", "torch"), ("layer-equivalence", "triton"),
                       ("neumann-orthogonality", None)}
    eq = by[("layer-equivalence", "torch")]
    assert eq["status"] == "ok" and eq["suite"] == "correctness" and eq["metrics"]["point_wall_s"] > 0
    assert all(0 < eq["metrics"][k] < 1e-5 for k in ("rel_err_output", "rel_err_grad_input",
                                                      "rel_err_grad_skew_in", "rel_err_grad_skew_out"))
    skipped = by[("layer-equivalence", "triton")]
    assert skipped["status"] == "skipped" and "TRITON_INTERPRET" in skipped["error"]["message"]
    curve = by[("neumann-orthogonality", None)]["metrics"]["curve"]
    assert [c["block_size"] for c in curve] == [16] * len(curve)
    # the id is the one the old in-process command gave this check (its configs had no timeout)
    assert eq["point_id"] == point_id({k: v for k, v in eq["config"].items() if k != "timeout"})
    rep = tmp_path / "rep"
    assert main(["report", str(out / "results.jsonl"), "--out", str(rep)]) == 0
    md = (rep / "report.md").read_text()
    assert "## Correctness" in md and "poetx-mem" in md and "skipped" in md.lower()


def test_correctness_suite_errors_name_key_and_value(tmp_path, capsys):
    path = str(ROOT / "suites" / "correctness.toml")
    assert main(["sweep", "--suite", path, "--dry-run", "--set", "shapes=[[64, 96, 128]]"]) == 2
    _one_line_error(capsys, "--set: key 'shapes': value [64, 96, 128] has a block size larger than the layer")
    assert main(["sweep", "--suite", path, "--dry-run", "--set", 'methods=["adamw"]']) == 2
    _one_line_error(capsys, "--set: key 'methods': value 'adamw' must be one of poet, poetx-fast, poetx-mem")


# --- the kernels suite --------------------------------------------------------------------------------

KERNEL_SETS = ["--set", "dims=[64]", "--set", "block_sizes=[16]", "--set", "tokens=[32]", "--set", "repeats=4",
               "--set", "warmup_steps=1"]


def test_kernels_suite_runs_on_cpu_and_skips_triton_without_the_interpreter(tmp_path, monkeypatch, capsys):
    pytest.importorskip("triton")
    suite = str(ROOT / "suites" / "kernels.toml")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    plain = tmp_path / "plain"
    assert main(["sweep", "--suite", suite, "--device", "cpu", "--out", str(plain), "--quiet", *KERNEL_SETS,
                 "--set", 'ops=["apply", "cayley_fwd"]']) == 0
    rows = {(r["config"]["op"], r["config"]["backend"]): r for r in read_rows(plain / "results.jsonl")}
    assert set(rows) == {(op, b) for op in ("apply", "cayley_fwd") for b in ("torch", "triton")}
    for op in ("apply", "cayley_fwd"):
        ok, skipped = rows[(op, "torch")], rows[(op, "triton")]
        assert ok["status"] == "ok" and ok["kind"] == "kernel", ok.get("error")
        assert len(ok["metrics"]["samples_ms"]) == 4 and ok["metrics"]["kernel_ms"] > 0
        assert ok["metrics"]["timer"] == "perf_counter"
        assert skipped["status"] == "skipped" and "TRITON_INTERPRET=1" in skipped["error"]["message"]
    assert "tokens" not in rows[("cayley_fwd", "torch")]["config"]  # the Cayley ops work on parameters only
    assert rows[("apply", "torch")]["metrics"]["flop"] == 2 * 32 * 4 * 16 * 16

    monkeypatch.setenv("TRITON_INTERPRET", "1")  # inherited by the point processes
    interp = tmp_path / "interp"
    assert main(["sweep", "--suite", suite, "--device", "cpu", "--out", str(interp), "--quiet", *KERNEL_SETS,
                 "--set", 'ops=["apply", "cayley_bwd"]', "--set", 'backend="triton"']) == 0
    base = read_rows(interp / "results.jsonl")
    assert [(r["config"]["op"], r["status"]) for r in base] == [("apply", "ok"), ("cayley_bwd", "ok")]
    assert all(r["metrics"]["floor_frac"] is None for r in base)  # a CPU time is not judged against a GPU floor

    # the row design's passes run as kernel points too (the kernels under the interpreter), with their costs
    rows_ops = ["to_rows", "from_rows", "rows_apply", "rows_grad", "rows_cayley_fwd", "rows_cayley_bwd"]
    rdir = tmp_path / "rows"
    assert main(["sweep", "--suite", suite, "--device", "cpu", "--out", str(rdir), "--quiet", *KERNEL_SETS,
                 "--set", f"ops={json.dumps(rows_ops)}", "--set", 'backend="triton"']) == 0
    rrows = {r["config"]["op"]: r for r in read_rows(rdir / "results.jsonl")}
    assert set(rrows) == set(rows_ops) and all(r["status"] == "ok" for r in rrows.values())
    assert rrows["to_rows"]["metrics"]["bytes"] == 2 * 32 * 64 * 4 and rrows["to_rows"]["metrics"]["flop"] == 0
    assert rrows["rows_apply"]["metrics"]["flop"] == 2 * 32 * 64 * 16

    # the gate judges kernel_ms on its samples; the report lists the rows
    slow = copy.deepcopy(base)
    for r in slow:
        r["metrics"]["kernel_ms"] *= 3
        r["metrics"]["samples_ms"] = [v * 3 for v in r["metrics"]["samples_ms"]]
    (tmp_path / "slow.jsonl").write_text("".join(json.dumps(r) + "\n" for r in slow))
    baseline = str(interp / "results.jsonl")
    assert main(["gate", "--baseline", baseline, "--current", baseline]) == 0
    assert main(["gate", "--baseline", baseline, "--current", str(tmp_path / "slow.jsonl")]) == 1
    out = capsys.readouterr().out
    assert "worse" in out and "kernel_ms" in out and "cayley_bwd triton D64 b16 float32" in out
    rep = tmp_path / "rep"
    assert main(["report", str(plain / "results.jsonl"), baseline, "--out", str(rep)]) == 0
    section = (rep / "report.md").read_text().split("## Kernel micro-benchmarks")[1].split("\n## ")[0]
    assert "| cayley_bwd | triton | 64 | 16 | — |" in section and "| apply | torch | 64 | 16 | 32 |" in section


def test_a_suite_name_that_is_also_a_folder_resolves_to_the_suite(tmp_path, monkeypatch):
    from poetx_bench.suite import SUITES_DIR, resolve_suite_path

    (tmp_path / "kernels").mkdir()
    monkeypatch.chdir(tmp_path)
    assert resolve_suite_path("kernels") == SUITES_DIR / "kernels.toml"


def test_kernels_suite_errors_name_key_and_value(capsys):
    suite = str(ROOT / "suites" / "kernels.toml")
    assert main(["sweep", "--suite", suite, "--dry-run", "--set", 'ops=["nope"]']) == 2
    _one_line_error(capsys, "--set: key 'ops': value 'nope' must be one of cayley_fwd")
    assert main(["sweep", "--suite", suite, "--dry-run", "--set", 'ops=["cayley_bwd"]', "--set", 'backend="torch"']) == 2
    _one_line_error(capsys, "key 'ops': value 'cayley_bwd' has no implementation on backend torch (it has: triton)")
    assert main(["sweep", "--suite", suite, "--dry-run", "--set", "block_sizes=[8192]"]) == 2
    _one_line_error(capsys, "--set: key 'block_sizes': value 8192 is larger than dim 4096")
    assert main(["sweep", "--suite", suite, "--dry-run", "--set", 'dtype="float64"']) == 2
    _one_line_error(capsys, "key 'dtype': value 'float64' must be one of auto, float32, bfloat16, float16")



def test_floor_is_one_definition():
    """The kernel floor (shared/perf/floors.md): max(FLOPs / the dtype's peak, bytes / HBM bandwidth), on the
    device's own peaks; unknown devices get no floor instead of a wrong one."""
    from poetx_bench.measure import floor_ms

    assert floor_ms(989.4e12, 0, "NVIDIA H100 80GB HBM3", "bfloat16") == pytest.approx(1000.0)
    assert floor_ms(989.4e12, 0, "NVIDIA H100 80GB HBM3", "float32") == pytest.approx(2000.0, rel=1e-3)
    assert floor_ms(0, 3.35e12, "NVIDIA H100 80GB HBM3", "bfloat16") == pytest.approx(1000.0)
    assert floor_ms(0, 4.8e12, "NVIDIA H200", "bfloat16") == pytest.approx(1000.0)
    assert floor_ms(1e12, 1e12, "Some CPU", "bfloat16") is None


def test_kernel_report_shows_the_floor_percentage(tmp_path):
    """A GPU kernel row's floor_frac reaches the report's kernel table as a percentage, with its
    latency-bound flag; a row without a floor shows the missing-value mark."""
    from poetx_bench.report.kernels import kernel_section
    from poetx_bench.results.point import Point

    def row(op, frac, lat):
        return {"schema_version": 2, "point_id": op, "status": "ok", "kind": "kernel", "suite": "kernels",
                "config": {"kind": "kernel", "op": op, "backend": "triton", "dim": 14336, "block_size": 256,
                           "tokens": 2048, "dtype": "bfloat16", "device": "cuda"},
                "metrics": {"kernel_ms": 0.048, "kernel_ms_iqr": 0.001, "samples_ms": [0.048] * 5,
                            "tflops": None, "tbps": 2.4, "floor_frac": frac, "latency_bound": lat,
                            "timer": "triton.testing.do_bench"},
                "env": {"device_name": "NVIDIA H100 80GB HBM3"}}

    sec = kernel_section([Point(row("to_rows", 0.7312, False)), Point(row("from_rows", None, None))], tmp_path)
    text = (tmp_path / "tables" / "kernels.csv").read_text()
    assert "73.1" in text and "% of floor" in text and "latency-bound" in text
    assert sec is not None
