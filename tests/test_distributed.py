"""Multi-process points on CPU (gloo, 2 processes): DDP and FSDP2 train like one process on the same global
batch, merges keep every rank's model identical, and a sweep of the multi-cpu suite under torchrun writes
ok rows with the multi-process metrics."""

from __future__ import annotations

import json
import socket
import sys

import pytest
import torch
import torch.multiprocessing as mp

from dist_worker import FIXED_INPUT, case_config, train, worker

METHODS = ("adamw", "poet", "poetx-fast", "poetx-mem")
CASES = [(m, p) for m in METHODS for p in ("ddp", "fsdp")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist") / "ranks.pt"
    mp.spawn(worker, args=(2, free_port(), CASES, str(out)), nprocs=2, join=True)
    return torch.load(out, weights_only=False)


@pytest.fixture(scope="module")
def single_process():
    """Each method trained by one process on the global batch (2 ranks x batch 2)."""
    out = {}
    for method in METHODS:
        cfg = {**case_config(method, "ddp", 1), "batch_size": 4}
        losses, trainer = train(cfg)
        with torch.no_grad():
            out[method] = (losses, trainer.model(FIXED_INPUT))
    return out


@pytest.mark.parametrize("method,parallel", CASES)
def test_two_ranks_match_one_process_on_the_global_batch(two_ranks, single_process, method, parallel):
    got = two_ranks[(method, parallel)]
    want, want_out = single_process[method]
    assert len(got["losses"]) == len(want) == 3
    assert got["losses"] == pytest.approx(want, abs=1e-5, rel=0), (method, parallel)
    # the model after the steps computes what the single process's does
    torch.testing.assert_close(got["outputs"][0], want_out, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("method,parallel", CASES)
def test_ranks_hold_the_same_model_after_a_merge(two_ranks, method, parallel):
    """Past a merge (step 2 of 3), the model function on a fixed input is identical on both ranks (rank-local
    RNG states differ on purpose), and so are the permutation buffers."""
    got = two_ranks[(method, parallel)]
    if method != "adamw":
        assert got["merges"] == 1
        assert all(torch.equal(a, b) for a, b in zip(*got["perms"]))
        assert any(not torch.equal(p[: len(p) // 4], torch.arange(len(p) // 4)) for p in got["perms"][0])
    assert torch.equal(got["outputs"][0], got["outputs"][1])


def test_multi_cpu_sweep_writes_ok_rows_with_multiprocess_metrics(tmp_path):
    """`sweep --suite multi-cpu --device cpu` end to end: torchrun ranks per point, rank 0's row."""
    import subprocess

    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "poetx_bench", "sweep", "--suite", "multi-cpu", "--device",
                           "cpu", "--out", str(out), "--quiet"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    multi = [r for r in rows if r["config"]["nproc"] == 2]
    assert {r["config"]["parallel"] for r in multi} == {"ddp", "fsdp"}
    for r in rows:
        assert r["status"] == "ok", (r["config"], r.get("error"))
    for r in multi:
        m = r["metrics"]
        assert m["nproc"] == 2 and len(m["peak_memory_bytes_per_rank"]) == 2
        assert m["peak_memory_bytes"] == max(m["peak_memory_bytes_per_rank"])
        assert m["tokens_per_s"] == pytest.approx(2 * m["tokens_per_s_per_rank"])
        comm = m["comm_bytes_per_step_computed"]
        assert "computed" in comm["note"]
        keys = {"all_reduce"} if r["config"]["parallel"] == "ddp" else {"all_gather", "reduce_scatter"}
        assert keys <= set(comm) and all(comm[k]["payload_bytes"] > 0 for k in keys)
