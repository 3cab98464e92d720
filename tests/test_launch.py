"""Several points at once (poetx_bench.launch): `sweep --jobs N` / `--gpus` slots and `--launcher slurm`
through submitit's LocalExecutor (`--slurm-local`) give the same rows as a plain sweep, resume across each
other, and an interrupted concurrent sweep keeps its finished rows and leaves no point running."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from strict_json import strict_rows
from test_faults import _point_process, _rows_in, _wait_for

from poetx_bench.cli import main
from poetx_bench.results import read_rows
from poetx_bench.runner import Runner, RunOptions
from poetx_bench.suite import load_suite

SUITE = """
methods = ["adamw", "poetx-fast", "poetx-mem"]
models = ["tiny"]
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


@pytest.fixture(scope="module", autouse=True)
def one_thread_per_point():
    """Two CPU cores: point processes with one OpenMP thread each start and finish faster, whether they
    run one or two at a time (a test-speed setting; the harness only sets it for slots, where unset)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        yield


@pytest.fixture(scope="module")
def plain(tmp_path_factory, one_thread_per_point) -> tuple[Path, dict]:
    """(suite, {point_id: status} of a plain sequential sweep)."""
    root = tmp_path_factory.mktemp("launch")
    suite = root / "launch.toml"
    suite.write_text(SUITE)
    assert _sweep(suite, root / "plain") == 0
    rows = read_rows(root / "plain" / "results.jsonl")
    assert all("launch" not in r for r in rows)  # a plain sweep records no launch
    return suite, _statuses(rows)


def _sweep(suite: Path, out: Path, *extra: str) -> int:
    return main(["sweep", "--suite", str(suite), "--out", str(out), "--device", "cpu", "--quiet", *extra])


def _statuses(rows: list[dict]) -> dict:
    ids = [r["point_id"] for r in rows]
    assert len(ids) == len(set(ids)), ids  # every point exactly once
    return {r["point_id"]: r["status"] for r in rows}


def test_two_cpu_slots_same_rows_as_plain_sweep(plain, tmp_path):
    suite, expected = plain
    out = tmp_path / "jobs"
    assert _sweep(suite, out, "--jobs", "2") == 0
    rows = read_rows(out / "results.jsonl")
    assert _statuses(rows) == expected and set(expected.values()) == {"ok"}
    checked, failures = strict_rows(out)
    assert checked == 3 and not failures, failures
    assert {r["launch"]["slot"] for r in rows} == {0, 1}  # both slots ran points, a slot took a second one
    assert all(r["launch"]["launcher"] == "local" and r["launch"]["gpu"] is None for r in rows)


def test_gpu_slots_pin_each_point(tmp_path, monkeypatch):
    """--gpus sets CUDA_VISIBLE_DEVICES per slot; the point's own env record says which it saw. (CPU points,
    skipped at once: the triton backend without TRITON_INTERPRET, so this costs two process starts.)"""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    suite = tmp_path / "skip.toml"
    suite.write_text(SUITE.replace('methods = ["adamw", "poetx-fast", "poetx-mem"]',
                                   'methods = ["poetx-fast", "poetx-mem"]\nbackend = "triton"'))
    points = load_suite(str(suite), device="cpu").points
    out = tmp_path / "gpus"
    rc = Runner(RunOptions(out_dir=out, quiet=True, gpus=["3", "7"])).run(points)
    assert rc == 0
    rows = read_rows(out / "results.jsonl")
    assert {r["status"] for r in rows} == {"skipped"}
    assert {r["launch"]["gpu"] for r in rows} == {"3", "7"}
    for r in rows:
        assert r["env"]["cuda_visible_devices"] == r["launch"]["gpu"]


def test_submitit_local_and_plain_resume_each_other(plain, tmp_path):
    """plain (adamw) -> Slurm path through submitit's LocalExecutor, --resume (skips adamw, runs poetx-fast)
    -> plain --resume (skips both, runs poetx-mem): the rows of one plain sweep."""
    pytest.importorskip("submitit")
    suite, expected = plain
    out = tmp_path / "mixed"
    assert _sweep(suite, out, "--filter", "method=adamw") == 0
    slurm = ["--launcher", "slurm", "--slurm-local", "--slurm-max-jobs", "2"]
    assert _sweep(suite, out, "--resume", *slurm, "--filter", "method=adamw,poetx-fast") == 0
    assert _sweep(suite, out, "--resume") == 0
    rows = read_rows(out / "results.jsonl")
    assert _statuses(rows) == expected
    assert [r["config"]["method"] for r in rows] == ["adamw", "poetx-fast", "poetx-mem"]
    assert "launch" not in rows[0] and "launch" not in rows[2]
    launch = rows[1]["launch"]
    assert launch["launcher"] == "slurm" and launch["executor"] == "local" and launch["job_id"]
    assert (out / "slurm" / f"{launch['job_id']}_0_log.out").exists()
    assert _sweep(suite, out, "--resume", *slurm) == 0  # nothing left for either path
    assert read_rows(out / "results.jsonl") == rows


def test_sigterm_stops_every_slot_and_keeps_finished_rows(plain, tmp_path):
    suite, expected = plain
    out = tmp_path / "term"
    proc = subprocess.Popen([sys.executable, "-m", "poetx_bench", "sweep", "--suite", str(suite), "--out",
                             str(out), "--device", "cpu", "--jobs", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: _rows_in(out) >= 1 and _point_process(out), "a row and a running point")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted:" in err
    deadline = time.time() + 5  # killed process groups are gone, not orphaned
    while _point_process(out) and time.time() < deadline:
        time.sleep(0.05)
    assert _point_process(out) is None
    rows = read_rows(out / "results.jsonl")
    assert 1 <= len(rows) < 3
    assert all(expected[r["point_id"]] == r["status"] for r in rows)  # no row for a killed point
    for line in (out / "results.jsonl").read_text().splitlines():
        json.loads(line)  # whole lines only


BAD_FLAGS = [
    (["--gpus", "0,x"], "--gpus '0,x': expected a comma-separated list"),
    (["--gpus", ""], "--gpus '': expected"),
    (["--device", "cuda", "--gpus", "1,2,1"], "GPU 1 listed twice"),
    (["--device", "cpu", "--gpus", "0,1"], "for concurrent CPU points use --jobs N"),
    (["--device", "cpu", "--jobs", "0"], "--jobs 0: must be a positive integer"),
    (["--device", "cuda", "--jobs", "2"], "--jobs 2: only for --device cpu"),
    (["--device", "cpu", "--slurm-partition", "gpu"], "--slurm-partition: only with --launcher slurm"),
    (["--device", "cpu", "--launcher", "slurm", "--jobs", "2"], "--jobs with --launcher slurm"),
    (["--device", "cpu", "--launcher", "slurm", "--slurm-local", "--slurm-time", "0"], "--slurm-time 0"),
]


@pytest.mark.parametrize("flags,expected", BAD_FLAGS, ids=lambda x: " ".join(x) if isinstance(x, list) else "")
def test_bad_launch_flags_one_line_exit_2(flags, expected, capsys):
    pytest.importorskip("submitit")
    assert main(["sweep", "--dry-run", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err, err


def test_slurm_without_submitit_says_how_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit -> ImportError
    assert main(["sweep", "--dry-run", "--device", "cpu", "--launcher", "slurm", "--slurm-local"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install submitit" in err, err


def test_slurm_table_of_the_suite(tmp_path, capsys):
    pytest.importorskip("submitit")
    suite = tmp_path / "s.toml"
    suite.write_text(SUITE + '\n[slurm]\npartition = "h100"\ntime = 30\naccount = "poet"\n')
    from argparse import Namespace

    from poetx_bench.launch import SLURM_KEYS, launch_settings

    args = Namespace(gpus=None, jobs=None, launcher="slurm", slurm_local=True, dry_run=True,
                     **{f"slurm_{k}": None for k in SLURM_KEYS})
    args.slurm_time = 45  # a flag overrides the table
    loaded = load_suite(str(suite), device="cuda")
    s = launch_settings(args, "cuda", loaded.slurm, loaded.path)["slurm"]
    assert s == {"partition": "h100", "time": 45, "account": "poet", "gpus_per_job": 1, "local": True}
    plain_ids = {p["point_id"] for p in load_suite(_plain_suite(tmp_path), device="cuda").points}
    assert {p["point_id"] for p in loaded.points} == plain_ids  # the table is not part of any point
    suite.write_text(SUITE + "\n[slurm]\nnodes = 2\n")
    assert main(["sweep", "--suite", str(suite), "--dry-run", "--device", "cpu", "--launcher", "slurm",
                 "--slurm-local"]) == 2
    assert "unknown key 'slurm.nodes'" in capsys.readouterr().err


def _plain_suite(tmp_path: Path) -> str:
    path = tmp_path / "plain.toml"
    path.write_text(SUITE)
    return str(path)
