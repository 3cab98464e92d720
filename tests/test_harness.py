"""The sweep harness end to end on CPU: isolation, statuses, OOM, timeouts, bad suites (crashes and\nresume: test_faults.py)."""

import json
import time
from pathlib import Path

import pytest

from poetx_bench.cli import main
from poetx_bench.results import SCHEMA_VERSION, append_row, finished_point_ids, read_rows
from poetx_bench.suite import load_suite

FAST_SUITE = """
name = "unit"
methods = {methods}
models = {models}
block_sizes = [32]
seq_lens = [16]
batch_sizes = [2]
steps = 2
warmup_steps = 1
dtype = "float32"
data = "synthetic"
vocab_size = 512
merge_every = 2
timeout = 300
"""
ALL_METHODS = '["adamw", "adamw-mixed", "poet", "poetx-fast", "poetx-mem"]'


def write_suite(tmp_path, name="unit.toml", **fmt):
    fmt.setdefault("methods", ALL_METHODS)
    fmt.setdefault("models", '["tiny"]')
    p = tmp_path / name
    p.write_text(FAST_SUITE.format(**fmt))
    return p


def test_sweep_every_method_ok_with_all_fields(tmp_path, capsys):
    suite = write_suite(tmp_path)
    out = tmp_path / "run"
    assert main(["sweep", "--suite", str(suite), "--out", str(out), "--device", "cpu", "--quiet"]) == 0
    rows = read_rows(out / "results.jsonl")
    assert sorted(r["config"]["method"] for r in rows) == sorted(json.loads(ALL_METHODS))
    for r in rows:
        assert r["status"] == "ok", r.get("error")
        m = r["metrics"]
        for key in ("peak_memory_bytes", "tokens_per_s", "tokens_per_s_iqr", "step_times_s", "losses",
                    "final_loss", "trainable_params", "total_params", "memory_breakdown_bytes"):
            assert m[key] is not None, key
        assert len(m["losses"]) == 3 and len(m["step_times_s"]) == 2
        assert set(m["memory_breakdown_bytes"]) == {"frozen_params", "trainable_params", "gradients",
                                                    "optimizer_state", "activations_other"}
        for key in ("device_name", "torch", "python", "cpu", "git_commit", "hostname", "time"):
            assert key in r["env"], key
        assert r["schema_version"] == SCHEMA_VERSION and len(r["point_id"]) == 16
    poet = [r for r in rows if r["config"]["method"].startswith("poet")]
    assert all(r["metrics"]["memory_breakdown_bytes"]["frozen_params"] > 0 for r in poet)
    assert all(r["metrics"]["merges"] == 1 for r in poet)
    assert "5 rows (ok: 5)" in capsys.readouterr().out


def test_forced_oom_is_recorded_and_sweep_continues(tmp_path):
    suite = write_suite(tmp_path, methods='["adamw"]', models='["tiny", "350m"]')
    out = tmp_path / "oom"
    rc = main(["sweep", "--suite", str(suite), "--out", str(out), "--device", "cpu", "--quiet",
               "--max-memory-gb", "1.0"])
    assert rc == 0
    by_model = {r["config"]["model"]: r for r in read_rows(out / "results.jsonl")}
    assert by_model["tiny"]["status"] == "ok"
    assert by_model["350m"]["status"] == "oom", by_model["350m"].get("error")
    assert by_model["350m"]["metrics"]["peak_memory_bytes"] > 0


def test_timeout_status(tmp_path):
    suite = write_suite(tmp_path, methods='["adamw"]')
    out = tmp_path / "to"
    assert main(["sweep", "--suite", str(suite), "--out", str(out), "--device", "cpu", "--quiet",
                 "--timeout", "0.5"]) == 0
    (row,) = read_rows(out / "results.jsonl")
    assert row["status"] == "timeout"
    assert row["metrics"]["timeout_applied_s"] == 0.5  # the row says which timeout killed it


BAD_SUITES = [
    ("bogus_key = 1\n", "unknown key 'bogus_key'"),
    ('methods = ["sgd"]\n', "'methods': value 'sgd'"),
    ('models = ["7b"]\n', "'models': value '7b'"),
    ("seq_lens = [0]\n", "'seq_lens': value 0"),
    ("batch_sizes = [-2]\n", "'batch_sizes': value -2"),
    ("block_sizes = [256]\n", "'block_sizes': value 256 is larger than the width 128"),
    ('dtype = "int8"\n', "'dtype': value 'int8'"),
    ("steps = 0\n", "'steps': value 0"),
    ('methods = [["adamw"]]\n', "'methods': value ['adamw']"),
    ("vocab_size = 0\n", "'vocab_size': value 0"),
]


@pytest.mark.parametrize("override,expected", BAD_SUITES)
def test_bad_suite_one_line_error_exit_2(tmp_path, capsys, override, expected):
    base = FAST_SUITE.format(methods=ALL_METHODS, models='["tiny"]')
    key = override.split("=")[0].strip()
    lines = [ln for ln in base.splitlines() if not ln.startswith(key + " ")]
    path = tmp_path / "bad.toml"
    path.write_text("\n".join(lines) + "\n" + override)
    rc = main(["sweep", "--suite", str(path), "--device", "cpu", "--dry-run"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1, err
    assert str(path) in err and expected in err, err


def test_invalid_toml_and_missing_suite(tmp_path, capsys):
    path = tmp_path / "broken.toml"
    path.write_text("methods = [\n")
    assert main(["sweep", "--suite", str(path), "--dry-run"]) == 2
    assert str(path) in capsys.readouterr().err
    assert main(["sweep", "--suite", "no-such-suite", "--dry-run"]) == 2
    assert "unknown suite 'no-such-suite'" in capsys.readouterr().err
    assert main(["sweep", "--suite", str(tmp_path), "--dry-run"]) == 2
    assert "not a file" in capsys.readouterr().err
    assert main(["run", "--method", "adamw", "--model", "tiny", "--warmup-steps", "-2"]) == 2
    assert main(["sweep", "--max-memory-gb", "-1", "--dry-run"]) == 2


def test_dry_run_lists_points_and_filter(capsys):
    assert main(["sweep", "--suite", "paper-memory", "--device", "cuda", "--dry-run",
                 "--filter", "model=3b"]) == 0
    out = capsys.readouterr().out
    # 3 seq lens x (adamw, muon + 4 POET methods x 2 block sizes + galore, apollo, lora-r160, lora-r320)
    assert "42 points in suite paper-memory" in out


def test_shipped_suites_load():
    for name in ("smoke", "layer-latency", "paper-memory", "paper-throughput", "block-size",
                 "convergence", "convergence-cpu"):
        suite = load_suite(name, device="cpu")
        assert suite.points, name
        ids = [p["point_id"] for p in suite.points]
        assert len(ids) == len(set(ids))
    smoke = load_suite("smoke", device="cpu")
    assert {p["config"]["method"] for p in smoke.points} == set(json.loads(ALL_METHODS))


def test_store_skips_fragments_wherever_they_are(tmp_path, capsys):
    path = tmp_path / "r.jsonl"
    append_row(path, {"point_id": "a", "status": "ok", "config": {}})
    with open(path, "a") as fh:
        fh.write('{"point_id": "b", "sta')
    assert [r["point_id"] for r in read_rows(path)] == ["a"]
    assert "r.jsonl:2: skipping" in capsys.readouterr().err
    append_row(path, {"point_id": "c", "status": "oom", "config": {}})  # the fragment is now in the middle
    assert finished_point_ids(path) == {"a", "c"}
    assert path.read_text().splitlines()[1] == '{"point_id": "b", "sta'


def test_list_and_env(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "smoke" in out and "poetx-mem" in out and "13b" in out
    assert main(["env"]) == 0
    env = json.loads(capsys.readouterr().out)
    assert env["torch"] and "git_commit" in env


def test_layer_point_breakdown(tmp_path):
    suite = tmp_path / "layer.toml"
    suite.write_text('kind = "layer"\nmethods = ["linear", "poet", "poetx-mem"]\nshapes = [[96, 160]]\n'
                     'tokens = [33]\nblock_sizes = [32]\nrepeats = 3\nwarmup_steps = 1\n')
    out = tmp_path / "layer"
    assert main(["sweep", "--suite", str(suite), "--out", str(out), "--device", "cpu", "--quiet"]) == 0
    rows = {r["config"]["method"]: r for r in read_rows(out / "results.jsonl")}
    assert set(rows) == {"linear", "poet", "poetx-mem"}
    for r in rows.values():
        assert r["status"] == "ok", r.get("error")
        bd = r["metrics"]["breakdown_ms"]
        assert set(bd) == {"forward", "backward"}
        assert bd["forward"]["matmul"] > 0
    assert rows["poetx-mem"]["metrics"]["breakdown_ms"]["forward"]["cayley"] > 0
    assert rows["poetx-mem"]["metrics"]["breakdown_ms"]["forward"]["permutation"] > 0
    assert rows["linear"]["metrics"]["breakdown_ms"]["forward"]["cayley"] == 0


def test_layer_breakdown_of_the_triton_row_design_names_its_permutations(tmp_path, monkeypatch):
    """Our Triton POET-X layer (row design, kernels under the interpreter): the permutation passes, launched
    inside the layer's autograd Function, land in 'permutation' in both passes (they were counted as
    'other', 17.5% of a layer on the H100), and 'other' stays small."""
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    suite = tmp_path / "layer.toml"
    suite.write_text('kind = "layer"\nmethods = ["poetx-fast"]\nshapes = [[128, 256]]\ntokens = [64]\n'
                     'block_sizes = [32]\nbackend = "triton"\ndtype = "float32"\nrepeats = 2\nwarmup_steps = 1\n')
    out = tmp_path / "layer"
    assert main(["sweep", "--suite", str(suite), "--out", str(out), "--device", "cpu", "--quiet"]) == 0
    (row,) = read_rows(out / "results.jsonl")
    assert row["status"] == "ok", row.get("error")
    bd = row["metrics"]["breakdown_ms"]
    total = sum(sum(p.values()) for p in bd.values())
    assert bd["forward"]["permutation"] > 0 and bd["backward"]["permutation"] > 0
    assert sum(p["other"] for p in bd.values()) <= 0.15 * total


@pytest.mark.gpu
def test_layer_breakdown_of_a_cuda_graph_point_covers_its_time(tmp_path):
    """A layer point timed as a CUDA graph: its breakdown (kernel time of the same calls run eagerly) adds
    up to 85-115% of the measured fwd+bwd time, both passes are attributed, and 'other' stays under 15%
    (a graph replay has no launching ops: profiling the replay gave an empty backward)."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    suite = tmp_path / "layer.toml"
    suite.write_text('kind = "layer"\nmethods = ["linear", "poetx-fast"]\nshapes = [[2048, 4096]]\n'
                     'tokens = [2048]\nblock_sizes = [256]\nbackend = "triton"\ncompile = "cudagraph"\n'
                     'repeats = 20\nwarmup_steps = 3\n')
    out = tmp_path / "layer"
    assert main(["sweep", "--suite", str(suite), "--out", str(out), "--device", "cuda", "--quiet"]) == 0
    for r in read_rows(out / "results.jsonl"):
        assert r["status"] == "ok", r.get("error")
        m = r["metrics"]
        total = sum(sum(p.values()) for p in m["breakdown_ms"].values())
        assert 0.85 <= total / m["fwd_bwd_ms"] <= 1.15, (r["config"]["method"], total, m["fwd_bwd_ms"])
        assert sum(m["breakdown_ms"]["backward"].values()) > 0
        assert sum(p["other"] for p in m["breakdown_ms"].values()) <= 0.15 * total


def test_run_command_single_point(tmp_path):
    out = tmp_path / "one"
    rc = main(["run", "--method", "poetx-fast", "--model", "tiny", "--block-size", "32", "--seq-len", "16",
               "--batch-size", "2", "--steps", "2", "--data", "synthetic", "--device", "cpu",
               "--out", str(out), "--quiet"])
    assert rc == 0
    (row,) = read_rows(out / "results.jsonl")
    assert row["status"] == "ok" and row["config"]["block_size"] == 32
    assert main(["run", "--method", "nope", "--model", "tiny"]) == 2


def test_profile_pass_writes_trace(tmp_path):
    out = tmp_path / "prof"
    rc = main(["run", "--method", "poetx-mem", "--model", "tiny", "--block-size", "32", "--seq-len", "16",
               "--batch-size", "2", "--steps", "2", "--data", "synthetic", "--device", "cpu",
               "--out", str(out), "--quiet", "--profile"])
    assert rc == 0
    (row,) = read_rows(out / "results.jsonl")
    assert row["status"] == "ok", row.get("error")
    trace = Path(row["artifacts"]["trace"])
    assert trace.exists() and trace.stat().st_size > 0
    assert row["artifacts"]["host_vs_device"]["host_total_ms_per_step"] > 0


def test_classify_op_categories():
    from poetx_bench.points.layer_timing import classify_op

    dims, b, n = (4096, 14336), 256, 2048
    assert classify_op("aten::bmm", [[16, 256, 256], [16, 256, 256]], dims, b, n) == "cayley"
    assert classify_op("aten::index_copy_", [[16, 65536], [], [32640]], dims, b, n) == "cayley"
    assert classify_op("aten::index_select", [[2048, 4096], [], [4096]], dims, b, n) == "permutation"
    assert classify_op("aten::mm", [[4096, 4096], [4096, 4096]], dims, b, n) == "permutation"
    assert classify_op("aten::mm", [[2048, 4096], [4096, 14336]], dims, b, n) == "matmul"
    assert classify_op("aten::bmm", [[16, 2048, 256], [16, 256, 256]], dims, b, n) == "matmul"
    assert classify_op("aten::mul", [[2048, 4096], [2048, 4096]], dims, b, n) == "other"
    assert classify_op("_cayley_neumann_fwd_kernel", [], dims, b, n) == "cayley"


def test_triton_backend_on_cpu_is_skipped_not_mislabelled(tmp_path, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    suite = write_suite(tmp_path, methods='["poetx-fast"]')
    out = tmp_path / "skip"
    assert main(["sweep", "--suite", str(suite), "--out", str(out), "--device", "cpu", "--quiet",
                 "--set", "backend=triton"]) == 0
    (row,) = read_rows(out / "results.jsonl")
    assert row["status"] == "skipped"
    assert "TRITON_INTERPRET" in row["error"]["message"] or "triton" in row["error"]["message"]


def test_step_timer_excludes_work_between_steps():
    import torch

    from poetx_bench.measure import StepTimer

    timer = StepTimer(torch.device("cpu"))
    for _ in range(2):
        timer.start()
        time.sleep(0.01)
        timer.stop()
        time.sleep(0.1)  # an eval between steps
    durations = timer.durations()
    assert len(durations) == 2 and all(0.005 < d < 0.08 for d in durations), durations


def test_git_info_from_environment_does_not_guess_dirty(monkeypatch):
    from poetx_bench import env

    env.git_info.cache_clear()
    monkeypatch.setenv("POETX_BENCH_GIT_COMMIT", "abc123")
    monkeypatch.delenv("POETX_BENCH_GIT_DIRTY", raising=False)
    assert env.git_info() == {"git_commit": "abc123", "git_dirty": None}
    env.git_info.cache_clear()
    monkeypatch.setenv("POETX_BENCH_GIT_DIRTY", "0")
    assert env.git_info()["git_dirty"] is False
    env.git_info.cache_clear()
