"""Config keys added after results were first recorded, with the value that old rows implicitly ran with.

A key at this default is left out of a point's id (suite.point_id), so adding a key changes no existing id,
`--resume` still finds old rows and the gate still pairs them; readers fill a missing key with it.
"""

ADDED_KEY_DEFAULTS = {
    "compile": "none",      # whole-step capture: none | compile | cudagraph
    "block_impl": "auto",   # how our POET-X backends run the block/permutation work (backend's choice)
    "cayley_scope": "layer",  # triton rows design: Cayley per layer, or batched over the model per step
    "nproc": 1,             # processes (GPUs) per train point; > 1 runs under torchrun
    "parallel": "ddp",      # data parallelism of a multi-process point: ddp | fsdp (FSDP2 fully_shard)
    "checkpointing": False,  # gradient checkpointing of every decoder block (methods/checkpointing.py)
}
TRAIN_ONLY_KEYS = ("nproc", "parallel")


def with_defaults(config: dict) -> dict:
    """`config` with every added key present (old rows lack them)."""
    return {**ADDED_KEY_DEFAULTS, **config}


def hashed_view(config: dict) -> dict:
    """The part of `config` that identifies a point: added keys at their defaults are dropped."""
    return {k: v for k, v in config.items() if not (k in ADDED_KEY_DEFAULTS and ADDED_KEY_DEFAULTS[k] == v)}
