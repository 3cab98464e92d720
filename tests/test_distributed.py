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
    """`sweep --suite multi-cpu --device cpu` end to end (its 2-process POET-X points, DDP and FSDP2, to
    keep CI short): torchrun ranks per point, rank 0's row."""
    import subprocess

    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "poetx_bench", "sweep", "--suite", "multi-cpu", "--device",
                           "cpu", "--out", str(out), "--quiet", "--filter", "nproc=2", "--filter",
                           "method=poetx-fast"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    multi = [r for r in rows if r["config"]["nproc"] == 2]
    assert len(multi) == len(rows) == 2
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
        assert m["merges"] == 1 and r["config"]["method"] == "poetx-fast"
        assert ("comm_bytes_per_merge_computed" in m) == (r["config"]["parallel"] == "fsdp")


def test_suite_keys_nproc_and_parallel(tmp_path):
    """nproc / parallel: lists expand side by side, a single process keeps parallel at its default (and its
    old id), bad values are one-line errors naming the key; layer suites refuse them."""
    from poetx_bench.errors import UserError
    from poetx_bench.suite import load_suite, point_id

    path = tmp_path / "s.toml"
    base = 'kind = "train"\nmethods = ["adamw"]\nmodels = ["tiny"]\nseq_lens = [32]\nbatch_sizes = [1]\n'
    path.write_text(base + 'nproc = [1, 2]\nparallel = ["ddp", "fsdp"]\n')
    got = sorted((p["config"]["nproc"], p["config"]["parallel"]) for p in load_suite(str(path), "cpu").points)
    assert got == [(1, "ddp"), (2, "ddp"), (2, "fsdp")]
    single = next(p for p in load_suite(str(path), "cpu").points if p["config"]["nproc"] == 1)
    old = {k: v for k, v in single["config"].items() if k not in ("nproc", "parallel")}
    assert single["point_id"] == point_id(old)
    for bad, match in (("nproc = 0", r"key 'nproc': value 0"), ('parallel = "zero"', r"key 'parallel'.*zero"),
                       ("nproc = true", r"key 'nproc'")):
        path.write_text(base + bad + "\n")
        with pytest.raises(UserError, match=match):
            load_suite(str(path), "cpu")
    path.write_text('kind = "layer"\nmethods = ["linear"]\nshapes = [[64, 64]]\ntokens = [8]\nnproc = 2\n')
    with pytest.raises(UserError, match="unknown key 'nproc'"):
        load_suite(str(path), "cpu")


def test_failed_rank_decides_the_status(tmp_path):
    """An OOM on any rank makes the point oom, ahead of the other ranks' collective failures; a real error
    beats a collective failing because its peer died."""
    from poetx_bench.child import rank_result_path
    from poetx_bench.runner import failed_rank_result, point_command

    out = tmp_path / "p.result.json"
    write = lambda r, status, typ, msg: rank_result_path(out, r).write_text(json.dumps(  # noqa: E731
        {"status": status, "metrics": {}, "error": {"type": typ, "message": msg}}))
    assert failed_rank_result(out, 2) is None
    write(0, "error", "DistBackendError", "Connection closed by peer")
    write(1, "oom", "OutOfMemoryError", "CUDA out of memory")
    assert failed_rank_result(out, 2)[1] == 1 and failed_rank_result(out, 2)[0]["status"] == "oom"
    write(1, "error", "ValueError", "bad")
    assert failed_rank_result(out, 2)[0]["error"]["type"] == "ValueError"
    cmd = point_command(2, tmp_path / "s.json", out)
    assert cmd[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    assert point_command(1, tmp_path / "s.json", out)[1:3] == ["-m", "poetx_bench.child"]


def test_report_scaling_efficiency(tmp_path):
    """The report pairs an nproc 2 row with the same point at nproc 1: efficiency = tps2 / (2 tps1)."""
    from poetx_bench.report.scaling import scaling_records
    from poetx_bench.results.point import Point

    cfg = {"kind": "train", "method": "adamw", "model": "tiny", "seq_len": 32, "batch_size": 2,
           "dtype": "float32", "device": "cpu", "steps": 4, "seed": 0}
    env = {"device_name": "cpu-x"}
    one = Point({"status": "ok", "config": cfg, "metrics": {"tokens_per_s": 100.0, "peak_memory_bytes": 10},
                 "env": env, "point_id": "a"})
    two = Point({"status": "ok", "config": {**cfg, "nproc": 2, "parallel": "fsdp"}, "env": env, "point_id": "b",
                 "metrics": {"tokens_per_s": 150.0, "peak_memory_bytes": 8, "peak_memory_bytes_per_rank": [8, 7],
                             "comm_bytes_per_step_computed": {
                                 "note": "computed", "all_gather": {"ring_send_bytes_per_rank": 30},
                                 "reduce_scatter": {"ring_send_bytes_per_rank": 12}}}})
    (rec,) = scaling_records([one, two])
    assert rec["peak_bytes_per_rank"] == [8, 7] and rec["comm_ring_send_bytes_per_rank"] == 42
    assert rec["scaling_efficiency"] == pytest.approx(0.75) and rec["single_point_id"] == "a"
    assert rec["peak_per_rank_vs_single"] == pytest.approx(0.8)
    assert "fsdpx2" in two.label()
    from poetx_bench.report.scaling import scaling_section

    assert scaling_section([one, two], tmp_path).has_data and (tmp_path / "tables" / "scaling.csv").is_file()
    assert scaling_section([one], tmp_path) is None  # no multi-process rows: no section


def test_oom_on_a_rank_makes_the_point_oom(tmp_path):
    """A multi-process point whose ranks run out of memory (a tiny --max-memory-gb cap) is recorded `oom`,
    with the failing rank named, not as a crash of the launcher."""
    import subprocess

    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "poetx_bench", "sweep", "--suite", "multi-cpu", "--device",
                           "cpu", "--out", str(out), "--quiet", "--filter", "nproc=2", "--filter",
                           "method=adamw", "--filter", "parallel=ddp", "--max-memory-gb", "0.02",
                           # a 100k vocabulary: embedding and head (2 x 51 MB) cannot fit the 20 MB cap
                           "--set", "vocab_size=100000"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (row,) = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert row["status"] == "oom", row.get("error")
    assert row["metrics"]["failed_rank"] in (0, 1) and row["metrics"]["nproc"] == 2


def test_paper_cells_only_beside_single_process_rows():
    """The paper measured one GPU: a DDP/FSDP row (per-rank peak) is never put beside a paper cell."""
    from poetx_bench.report.tables import paper_comparable
    from poetx_bench.results.point import Point

    cfg = {"kind": "train", "method": "adamw", "model": "3b", "seq_len": 1024, "batch_size": 1,
           "dtype": "bfloat16", "device": "cuda", "steps": 4, "seed": 0}
    one = Point({"status": "ok", "config": cfg, "metrics": {}, "env": {}, "point_id": "a"})
    two = Point({"status": "ok", "config": {**cfg, "nproc": 2, "parallel": "ddp"}, "metrics": {}, "env": {},
                 "point_id": "b"})
    assert paper_comparable(one) and not paper_comparable(two)


def test_scaling_curve_and_paper_64_gpu_per_gpu(tmp_path):
    """Several N of one point: the section draws the curve and puts our tokens/s per GPU at the largest N
    beside the paper's 64-GPU cell divided by 64."""
    from poetx_bench.report.scaling import scaling_section
    from poetx_bench.results.point import Point

    cfg = {"kind": "train", "method": "adamw", "model": "8b", "seq_len": 1024, "batch_size": 1,
           "dtype": "bfloat16", "device": "cuda", "steps": 10, "seed": 0}
    env = {"device_name": "NVIDIA H100 80GB HBM3"}
    pts = [Point({"status": "ok", "config": cfg, "env": env, "point_id": "n1",
                  "metrics": {"tokens_per_s": 6000.0, "peak_memory_bytes": 60}})]
    for n, tps in ((2, 11000.0), (4, 20000.0), (8, 36000.0)):
        pts.append(Point({"status": "ok", "config": {**cfg, "nproc": n, "parallel": "ddp"}, "env": env,
                          "point_id": f"n{n}", "metrics": {"tokens_per_s": tps, "peak_memory_bytes": 70}}))
    # an N = 2 row from another device model joins neither the H100 line nor its per-GPU figure
    pts.append(Point({"status": "ok", "config": {**cfg, "nproc": 2, "parallel": "ddp"}, "point_id": "h200",
                      "env": {"device_name": "NVIDIA H200"}, "metrics": {"tokens_per_s": 1.0}}))
    sec = scaling_section(pts, tmp_path)
    assert (tmp_path / "figures" / "scaling.png").is_file()
    curve = (tmp_path / "figures" / "scaling.csv").read_text().splitlines()
    assert len(curve) == 1 + 4  # header + N = 1, 2, 4, 8
    table = (tmp_path / "tables" / "scaling_vs_paper_64gpu.csv").read_text()
    assert "4500" in table.replace(",", "")  # 36000 / 8
    assert "4336" in table.replace(",", "")  # paper: 277.53 k tokens/s on 64 GPUs
    assert sec.has_data
