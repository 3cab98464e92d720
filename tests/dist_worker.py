"""Rank body of the 2-process gloo tests (tests/test_distributed.py), started by torch.multiprocessing.

Each case trains the tiny model a few steps past a merge on its rank's half of the global batch, through
the harness's own Trainer (DDP or FSDP2), and rank 0 saves, per case: the losses (means over ranks), the
fixed-input outputs of every rank, and (DDP) every rank's permutation buffers.
"""

from __future__ import annotations

import os

import torch

CFG = {"kind": "train", "model": "tiny", "block_size": 32, "seq_len": 16, "batch_size": 2, "steps": 3,
       "warmup_steps": 0, "dtype": "float32", "seed": 0, "data": "synthetic", "vocab_size": 256,
       "merge_every": 2, "backend": "torch", "tokenizer": "bpe", "compile": "none", "block_impl": "auto",
       "device": "cpu"}
FIXED_INPUT = torch.arange(2 * 16).reshape(2, 16) % 256


def case_config(method: str, parallel: str, nproc: int) -> dict:
    return {**CFG, "method": method, "parallel": parallel, "nproc": nproc,
            "block_size": CFG["block_size"] if method.startswith("poet") else None}


def train(cfg: dict, world=None):
    """(losses, trainer) after cfg['steps'] steps (a merge after step 2)."""
    from poetx_bench.distributed import mean_over_ranks
    from poetx_bench.points.training import Trainer

    trainer = Trainer(cfg, torch.device("cpu"), world)
    losses = torch.stack([trainer.step() for _ in range(cfg["steps"])])
    losses = mean_over_ranks(losses, trainer.world) if world else losses
    return [float(x) for x in losses], trainer


def worker(rank: int, world_size: int, port: int, cases: list, out: str) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(rank)})
    torch.set_num_threads(1)
    from poetx_bench.distributed import World, gather, init, shutdown
    from poetx_bench.methods import poet_layers

    init("cpu")
    torch.manual_seed(1000 + rank)  # rank-local RNG state differs on purpose: merges must not use it
    results = {}
    for method, parallel in cases:
        world = World(rank, world_size, rank, parallel)
        losses, trainer = train(case_config(method, parallel, world_size), world)
        with torch.no_grad():
            outputs = trainer.step_model(FIXED_INPUT)
        perms = [torch.cat([la.perm_in, la.inv_perm_in, la.perm_out, la.inv_perm_out])
                 for la in poet_layers(trainer.model)]
        results[(method, parallel)] = {
            "losses": losses, "merges": trainer.hook.merges,
            "outputs": gather(outputs, world), "perms": gather(perms, world)}
    if rank == 0:
        torch.save(results, out)
    shutdown()
