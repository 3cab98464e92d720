"""bench/device_round.sh: a queue of sweeps under a deadline, resumable across calls, stopping (exit 3)
before a sweep it has no time for."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from poetx_bench.results import read_rows

ROOT = Path(__file__).resolve().parents[1]
SUITE = ('methods = ["adamw"]\nmodels = ["tiny"]\nseq_lens = [16]\nbatch_sizes = [2]\nsteps = 2\n'
         'warmup_steps = 1\ndtype = "float32"\ndata = "synthetic"\nvocab_size = 256\n')


def _round(tmp_path, queue: Path, deadline: str, *previous) -> subprocess.CompletedProcess:
    env = {**os.environ, "W": str(tmp_path / "w"), "PYTHON": sys.executable}
    env.pop("OUT", None)
    return subprocess.run(["bash", str(ROOT / "bench" / "device_round.sh"), str(queue), deadline, *previous],
                          env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)


def test_queue_runs_resumes_and_stops_at_the_deadline(tmp_path):
    suite = tmp_path / "s.toml"
    suite.write_text(SUITE)
    queue = tmp_path / "queue.txt"
    queue.write_text(f"# a comment\none --suite {suite} --device cpu\n")
    proc = _round(tmp_path, queue, "600")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    rows = read_rows(tmp_path / "w" / "one" / "results.jsonl")
    assert [r["status"] for r in rows] == ["ok"]
    # a second call resumes: the point already has its row, nothing runs twice
    assert _round(tmp_path, queue, "600").returncode == 0
    assert len(read_rows(tmp_path / "w" / "one" / "results.jsonl")) == 1
    # no time for a sweep: stop before it, exit 3
    queue.write_text(f"two --suite {suite} --device cpu\n")
    proc = _round(tmp_path, queue, "30")
    assert proc.returncode == 3 and "not starting two" in proc.stdout
    assert not (tmp_path / "w" / "two").exists()
    assert _round(tmp_path, queue, "soon").returncode == 2


def test_a_point_killed_by_the_deadline_leaves_its_progress(tmp_path, monkeypatch):
    """The deadline kills a sweep mid-point (no row for it): the round's log keeps that point's last
    progress lines (step and loss), so a long point's partial run is not silent."""
    suite = tmp_path / "long.toml"
    suite.write_text(SUITE.replace("steps = 2\n", "steps = 100000\neval_every = 1\neval_batches = 1\n"))
    queue = tmp_path / "queue.txt"
    queue.write_text(f"long --suite {suite} --device cpu\n")
    monkeypatch.setenv("MIN_LEFT_S", "1")  # start the sweep with 25 s left
    proc = _round(tmp_path, queue, "25")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    log = (tmp_path / "w" / "rounds.log").read_text()
    assert "long rc=124" in log and "killed point" in log, log
    assert "progress: step " in log and "eval loss" in log, log


@pytest.mark.parametrize("queue", sorted((ROOT / "bench").glob("*.queue")), ids=lambda p: p.name)
def test_committed_queues_plan(queue, capsys):
    """Every sweep line of a committed queue plans (a dry run exits 0): a mistyped suite, key or filter value
    is found here, not on a loaned GPU whose minutes it would waste."""
    import re
    import shlex

    from poetx_bench.cli import main

    lines = [ln.split(None, 1) for ln in queue.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    assert lines, queue
    for name, args in lines:
        assert main(["sweep", *shlex.split(args), "--dry-run"]) == 0, (queue.name, name)
        planned = re.search(r"(\d+) points? in suite", capsys.readouterr().out)
        assert planned and int(planned.group(1)) > 0, (queue.name, name)  # a filter value no point has: 0
