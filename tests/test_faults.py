"""Fault injection (issue 17): kill -9 of the sweep, kill -9 of a point, SIGTERM, a truncated last line
and a fragment in the middle; then `--resume`, `report` and `gate`. Every finished point appears exactly
once, and both commands read the repaired file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from poetx_bench.cli import main
from poetx_bench.results import read_rows

RULES = Path(__file__).resolve().parent.parent / "reports" / "baselines" / "cpu-smoke.rules.toml"
SUITE = """
methods = ["adamw", "poetx-fast"]
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
N_POINTS = 2


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> tuple[Path, Path]:
    """(suite, results of an uninterrupted sweep): the gate's baseline and the source of cut files."""
    root = tmp_path_factory.mktemp("faults")
    suite = root / "faults.toml"
    suite.write_text(SUITE)
    assert main(["sweep", "--suite", str(suite), "--out", str(root / "clean"), "--device", "cpu", "--quiet"]) == 0
    return suite, root / "clean" / "results.jsonl"


def _start(suite: Path, out: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "poetx_bench", "sweep", "--suite", str(suite), "--out", str(out),
           "--device", "cpu", "--quiet"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_for(condition, what: str, timeout: float = 240.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _rows_in(out: Path) -> int:
    path = out / "results.jsonl"
    return len(read_rows(path, warn=False, allow_empty=True)) if path.exists() else 0


def _point_process(out: Path) -> int | None:
    """PID of a running point process of this sweep (its command line names its spec file)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "poetx_bench.child" in cmdline and str(out / "points") in cmdline:
            return int(proc.name)
    return None


def _cut(line: str) -> str:
    return line[: len(line) // 2]


def kill_9_sweep(suite, out, clean):
    proc = _start(suite, out)
    _wait_for(lambda: _rows_in(out) >= 1, "the first row")
    os.kill(proc.pid, signal.SIGKILL)  # its point process dies with it (PR_SET_PDEATHSIG)
    proc.wait()


def kill_9_point(suite, out, clean):
    proc = _start(suite, out)
    os.kill(_wait_for(lambda: _point_process(out), "a point process"), signal.SIGKILL)
    assert proc.wait(timeout=240) == 0  # the sweep records the killed point and goes on
    return "killed by signal 9"


def sigterm(suite, out, clean):
    proc = _start(suite, out)
    _wait_for(lambda: _rows_in(out) >= 1, "the first row")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 130


def truncated_last_line(suite, out, clean):
    lines = clean.read_text().splitlines()
    out.mkdir()
    (out / "results.jsonl").write_text("\n".join(lines[:-1]) + "\n" + _cut(lines[-1]))


def fragment_in_the_middle(suite, out, clean):
    lines = clean.read_text().splitlines()
    out.mkdir()
    (out / "results.jsonl").write_text(_cut(lines[0]) + "\n" + "\n".join(lines[1:]) + "\n")


@pytest.mark.parametrize("fault", [kill_9_sweep, kill_9_point, sigterm, truncated_last_line,
                                   fragment_in_the_middle], ids=lambda f: f.__name__)
def test_fault_then_resume_report_and_gate(fault, clean, tmp_path, capsys):
    suite, baseline = clean
    out = tmp_path / "run"
    killed = fault(suite, out, clean=baseline)
    assert main(["sweep", "--suite", str(suite), "--out", str(out), "--device", "cpu", "--quiet",
                 "--resume"]) == 0
    results = out / "results.jsonl"
    rows = read_rows(results)
    ids = [r["point_id"] for r in rows]
    assert len(ids) == len(set(ids)) == N_POINTS, ids
    assert main(["sweep", "--suite", str(suite), "--out", str(out), "--device", "cpu", "--quiet",
                 "--resume"]) == 0
    assert read_rows(results) == rows  # nothing left to run, nothing appended
    assert main(["report", str(results), "--out", str(tmp_path / "report")]) == 0
    capsys.readouterr()
    gate = main(["gate", "--baseline", str(baseline), "--current", str(results), "--rules", str(RULES)])
    out_text = capsys.readouterr().out
    if killed:  # the killed point is a recorded failure: the gate reads the file and flags it
        (failed,) = [r for r in rows if r["status"] != "ok"]
        assert failed["status"] == "error" and killed in failed["error"]["message"]
        assert gate == 1 and "newly failing" in out_text
    else:
        assert all(r["status"] == "ok" for r in rows)
        assert gate == 0, out_text


def test_an_allocation_failure_behind_another_error_is_oom():
    """Under a CPU memory cap an import can fail as SystemError whose context is the MemoryError: that is
    the point running out of memory (status oom), not a harness error."""
    from poetx_bench.measure import is_oom

    try:
        try:
            raise MemoryError()
        except MemoryError:
            raise SystemError("<built-in function> returned a result with an exception set")  # noqa: B904
    except SystemError as exc:
        assert is_oom(exc)
    assert not is_oom(SystemError("unrelated"))
    assert not is_oom(ValueError("bad value"))
