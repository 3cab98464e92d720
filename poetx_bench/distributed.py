"""Multi-process (data-parallel) train points: PyTorch's own engine, nothing home-made.

The runner launches a point with `nproc > 1` under torchrun (`python -m torch.distributed.run --standalone
--nproc-per-node N -m poetx_bench.child ...`); each rank runs the point's child, which calls `init()`
(nccl on CUDA, gloo on CPU) and wraps the prepared model with `wrap()`:

    ddp   torch.nn.parallel.DistributedDataParallel (buffers not broadcast: the permutation buffers are
          identical on every rank by construction, see methods.base.MergeHook)
    fsdp  FSDP2 `torch.distributed.fsdp.fully_shard` on every decoder block, then on the root: every
          parameter is sharded, POET's frozen W0 and skew parameters included; merges gather, fold and
          keep their own shard (reference.layer_base.POETLayerBase.merge_and_reinit)

`batch_size` is per rank: rank r trains on rows [r*B, (r+1)*B) of the global batch of B * nproc rows that a
single process with batch size B * nproc would draw, so its losses are comparable step by step.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

PARALLEL_CHOICES = ("ddp", "fsdp")
COMM_NOTE = ("computed from parameter sizes, not measured: payload bytes per collective and step (the tensor "
             "each rank hands to the collective, summed), and a ring algorithm's bytes sent per rank")


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    parallel: str = "ddp"

    @property
    def distributed(self) -> bool:
        return self.size > 1


def launched_world() -> World:
    """This process's place in a torchrun launch (WORLD_SIZE, RANK, LOCAL_RANK), or a world of one."""
    env = os.environ
    return World(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))


def init(device_type: str, parallel: str = "ddp") -> World:
    """Join the launch's process group (nccl on CUDA, gloo on CPU); a no-op in a world of one."""
    w = launched_world()
    w = World(w.rank, w.size, w.local_rank, parallel)
    if not w.distributed or dist.is_initialized():
        return w
    if device_type == "cuda":
        torch.cuda.set_device(w.local_rank)
    dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return w


def device_for(device_type: str, world: World) -> torch.device:
    return torch.device("cuda", world.local_rank) if device_type == "cuda" and world.distributed \
        else torch.device(device_type)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def rank_slice(tokens: torch.Tensor, world: World) -> torch.Tensor:
    """This rank's disjoint rows of the global batch."""
    if not world.distributed:
        return tokens
    per = tokens.shape[0] // world.size
    return tokens[world.rank * per:(world.rank + 1) * per]


def shard_blocks(model: nn.Module) -> list[nn.Module]:
    """The modules FSDP2 shards one by one (the decoder blocks); the root gets the rest."""
    layers = getattr(model, "layers", None)
    return list(layers) if layers is not None else []


def wrap(model: nn.Module, optimizer: torch.optim.Optimizer, world: World, device: torch.device):
    """(module to call for training steps, optimizer over the wrapped parameters)."""
    if world.parallel == "ddp":
        import inspect

        from torch.nn.parallel import DistributedDataParallel as DDP

        # no buffer sync in forward: the permutation buffers are the same on every rank by construction
        # (tests/test_distributed.py checks it), syncing would only hide a broken merge
        no_sync = ("forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DDP).parameters
                   else "broadcast_buffers")
        ddp = DDP(model, device_ids=[device.index] if device.type == "cuda" else None, **{no_sync: False})
        return ddp, optimizer
    if world.parallel != "fsdp":
        raise ValueError(f"parallel must be one of {PARALLEL_CHOICES}, got {world.parallel!r}")
    from torch.distributed.fsdp import fully_shard

    if optimizer.state:
        raise RuntimeError("wrap() needs an optimizer that has not stepped yet")
    names = {id(p): n for n, p in model.named_parameters()}
    group_names = [[names[id(p)] for p in g["params"]] for g in optimizer.param_groups]
    for block in shard_blocks(model):
        fully_shard(block)
    fully_shard(model)
    # fully_shard replaced the parameters by DTensor ones: the same optimizer (no state yet), its groups
    # pointed at the new objects
    params = dict(model.named_parameters())
    for g, group in zip(optimizer.param_groups, group_names):
        g["params"] = [params[n] for n in group]
    return model, optimizer


def _nbytes(p: torch.Tensor) -> int:
    return p.numel() * p.element_size()  # a DTensor's numel is the global one


def comm_bytes_per_step(model: nn.Module, world: World) -> dict:
    """The collectives' bytes per training step, computed from the (global) parameter sizes."""
    n = world.size
    ring = (n - 1) / n
    trainable = [p for p in model.parameters() if p.requires_grad]
    grads = sum(_nbytes(p) for p in trainable)
    out: dict = {"note": COMM_NOTE, "parallel": world.parallel, "nproc": n}
    if world.parallel == "ddp":
        out["all_reduce"] = {"payload_bytes": grads, "ring_send_bytes_per_rank": int(2 * ring * grads),
                             "what": "gradients of the trainable parameters"}
    else:
        in_blocks = {id(p) for b in shard_blocks(model) for p in b.parameters()}
        blocks = sum(_nbytes(p) for p in model.parameters() if id(p) in in_blocks)
        root = sum(_nbytes(p) for p in model.parameters() if id(p) not in in_blocks)
        gathered = 2 * blocks + root
        out["all_gather"] = {"payload_bytes": gathered, "ring_send_bytes_per_rank": int(ring * gathered),
                             "what": "every parameter (frozen W0 included), blocks twice (forward and the "
                                     "backward's re-gather), the root's once"}
        out["reduce_scatter"] = {"payload_bytes": grads, "ring_send_bytes_per_rank": int(ring * grads),
                                 "what": "gradients of the trainable parameters"}
    return out


def comm_bytes_per_merge(model: nn.Module, world: World) -> dict | None:
    """FSDP merges gather every POET layer's W0 and skew parameters (DDP merges need no collective)."""
    from .methods import poet_layers

    layers = poet_layers(model)
    if world.parallel != "fsdp" or not layers:
        return None
    size = sum(_nbytes(t) for la in layers for t in (la.weight, la.skew_in, la.skew_out))
    return {"all_gather": {"payload_bytes": size, "ring_send_bytes_per_rank": int((1 - 1 / world.size) * size),
                           "what": "W0 and skew parameters of every POET layer, once per merge"}}


def mean_over_ranks(t: torch.Tensor, world: World) -> torch.Tensor:
    """The mean of `t` over ranks (the global batch's loss from each rank's share of it)."""
    if not world.distributed:
        return t
    t = t.detach().clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / world.size


def gather(obj, world: World) -> list:
    """Every rank's `obj`, in rank order (on every rank)."""
    if not world.distributed:
        return [obj]
    out = [None] * world.size
    dist.all_gather_object(out, obj)
    return out
