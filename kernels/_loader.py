"""Lazy, per-device loading of the Triton kernels, and the dispatch rule.

Why a loader: `triton.jit` decides between a compiled kernel and the CPU interpreter when the decorator
runs (it reads TRITON_INTERPRET then). Importing `_triton_kernels` eagerly would make that choice for the
whole process at import time, and a test that sets TRITON_INTERPRET=1 would silently change every other
test that imports this package. Instead the kernel file is executed on first use, once per flavour
(compiled for CUDA tensors, interpreted for CPU tensors), each as its own module object.

Dispatch (`use_kernels`): CUDA tensors -> compiled kernels when triton imports; CPU tensors -> the
interpreter only when TRITON_INTERPRET=1 is set at call time; anything else -> the caller falls back to
the torch reference path.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
from pathlib import Path

import torch

_SRC = Path(__file__).with_name("_triton_kernels.py")
_LOCK = threading.Lock()
_MODULES: dict[bool, object] = {}
_AVAILABLE: bool | None = None


def triton_available() -> bool:
    """True when `import triton` works (cached)."""
    global _AVAILABLE
    if _AVAILABLE is None:
        try:
            import triton  # noqa: F401
            import triton.language  # noqa: F401

            _AVAILABLE = True
        except Exception:  # pragma: no cover - depends on the environment
            _AVAILABLE = False
    return _AVAILABLE


def interpret_requested() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on")


def use_kernels(t: torch.Tensor) -> bool:
    """Whether the Triton path should run for tensors on t's device (see module docstring)."""
    if not triton_available():
        return False
    if t.device.type == "cuda":
        return True
    if t.device.type == "cpu":
        return interpret_requested()
    return False


def kernels_for(device: torch.device):
    """The module of jitted kernels for this device: compiled for CUDA, interpreted otherwise."""
    interpret = torch.device(device).type != "cuda"
    mod = _MODULES.get(interpret)
    if mod is not None:
        return mod
    with _LOCK:
        mod = _MODULES.get(interpret)
        if mod is None:
            mod = _load(interpret)
            _MODULES[interpret] = mod
    return mod


def _load(interpret: bool):
    # import triton itself under the ambient environment first: its standard library (and gluon, which
    # asserts on it) must be decorated consistently with what the rest of the process expects.
    if not triton_available():
        raise RuntimeError("triton is not importable")
    name = "poetx_bench.kernels._triton_kernels_" + ("interp" if interpret else "gpu")
    spec = importlib.util.spec_from_file_location(name, _SRC)
    mod = importlib.util.module_from_spec(spec)
    old = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1" if interpret else "0"
    try:
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    finally:
        if old is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = old
    return mod


def is_interpreted(device: torch.device) -> bool:
    return torch.device(device).type != "cuda"


def dot_precision(dtype: torch.dtype) -> str:
    """tl.dot input precision for fp32 operands.

    bf16/fp16 operands ignore it. For fp32 operands follow torch's own matmul switch, so an fp32 layer is
    as exact as torch would be ("ieee") unless the user allowed TF32.
    """
    if dtype in (torch.bfloat16, torch.float16):
        return "tf32"
    return "tf32" if torch.backends.cuda.matmul.allow_tf32 else "ieee"
