"""Suite value checks shared by the kinds: every failure is one line naming the file (or --set), the key
and the value (poetx_bench.errors.UserError, exit 2)."""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import UserError

DTYPES = ("auto", "float32", "bfloat16", "float16", "float64")
BLOCK_IMPL_CHOICES = ("auto", "rows", "fused", "torch")  # kernels.BLOCK_IMPLS (no triton import here)
COMPILE_CHOICES = ("none", "compile", "cudagraph")
CAYLEY_SCOPES = ("layer", "block", "model")  # kernels.model_cayley.SCOPES (no triton import here)
CAYLEY_KEEPS = ("params", "qs")  # kernels.rows.CAYLEY_KEEPS
OFFICIAL_INITS = ("own", "ours")  # backends.official.INITS
PARALLEL_CHOICES = ("ddp", "fsdp")  # distributed.PARALLEL_CHOICES (no torch.distributed import here)


class Origin:
    """The suite file, except for keys given with --set: an error blames where its value came from."""

    def __init__(self, path: Path, cli_keys) -> None:
        self.path, self.cli_keys = path, set(cli_keys)

    def of(self, key: str) -> str:
        return "--set" if re.split(r"[.\[]", key, maxsplit=1)[0] in self.cli_keys else str(self.path)


def err(src: Origin, key: str, value, why: str) -> UserError:
    return UserError(f"{src.of(key)}: key '{key}': value {value!r} {why}")


def check_type(src: Origin, key, value, types):
    if isinstance(value, bool) and types in (int, (int, float)):
        raise err(src, key, value, "must be a number, not a boolean")
    if not isinstance(value, types):
        tname = types.__name__ if isinstance(types, type) else " or ".join(t.__name__ for t in types)
        raise err(src, key, value, f"must be of type {tname}")


def positive_ints(src: Origin, key, values):
    if not values:
        raise err(src, key, values, "must be a non-empty list")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise err(src, key, v, "must be a positive integer")
    return values


def one_of(src: Origin, key: str, values, choices, what: str = "") -> list:
    """A value or a non-empty list of values, each among `choices`; returns the list."""
    values = values if isinstance(values, list) else [values]
    for v in values or [None]:
        if v not in choices:
            raise err(src, key, v, f"must be one of {', '.join(map(str, choices))}{what}")
    return values


def validate_fixed(src: Origin, fixed: dict, prefix: str = "") -> None:
    """Checks of the scalar settings (steps, dtype, backend, ...) wherever they are given."""
    for key, value in fixed.items():
        if key in ("steps", "repeats", "eval_batches", "timeout", "vocab_size") and value is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise err(src, prefix + key, value, "must be positive")
        if key in ("warmup_steps", "eval_every", "merge_every", "seed"):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise err(src, prefix + key, value, "must be a non-negative integer")
        if key == "max_memory_gb" and (not isinstance(value, (int, float)) or value <= 0):
            raise err(src, prefix + key, value, "must be positive")
        if key == "dtype" and value not in DTYPES:
            raise err(src, prefix + key, value, f"must be one of {', '.join(DTYPES)}")
        if key == "backend":
            from ..backends import BACKENDS

            one_of(src, prefix + key, value, tuple(BACKENDS), " (or a list of them)")
        if key == "cayley_scope" and value not in CAYLEY_SCOPES:
            raise err(src, prefix + key, value, f"must be one of {', '.join(CAYLEY_SCOPES)}")
        if key == "cayley_scope" and value != "layer" and fixed.get("block_impl", "auto") not in ("auto", "rows"):
            raise err(src, prefix + key, value, f"needs block_impl 'rows' (the batched evaluation per block or model is "
                      f"the row design's Cayley), not {fixed.get('block_impl')!r}")
        if key == "official_init" and value not in OFFICIAL_INITS:
            raise err(src, prefix + key, value, f"must be one of {', '.join(OFFICIAL_INITS)}")
        if key == "cayley_keep" and value not in CAYLEY_KEEPS:
            raise err(src, prefix + key, value, f"must be one of {', '.join(CAYLEY_KEEPS)}")
        if key == "block_impl" and value not in BLOCK_IMPL_CHOICES:
            raise err(src, prefix + key, value, f"must be one of {', '.join(BLOCK_IMPL_CHOICES)}")
        if key == "compile":
            one_of(src, prefix + key, value, COMPILE_CHOICES, " (or a list of them)")
        if key == "nproc":
            for v in (value if isinstance(value, list) else [value]) or [None]:
                if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                    raise err(src, prefix + key, v, "must be a positive integer (or a list of them)")
        if key == "parallel":
            one_of(src, prefix + key, value, PARALLEL_CHOICES, " (or a list of them)")
        if key == "tokenizer" and value not in ("bpe", "byte"):
            raise err(src, prefix + key, value, "must be 'bpe' or 'byte'")


def resolve_dtype(dtype: str, device: str) -> str:
    if dtype == "auto":
        return "bfloat16" if device == "cuda" else "float32"
    return dtype
