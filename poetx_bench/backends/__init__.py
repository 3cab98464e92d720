"""Registry of POET-X implementations ("backends"): one place that says which exist, whether one can run
here, and how it builds a layer or converts a model.

    torch     our readable PyTorch path (reference/poetx.py); runs anywhere
    triton    our Triton kernels (poetx_bench.kernels); CUDA, or CPU under TRITON_INTERPRET=1
    official  the POET-X authors' `poet_torch` (github.com/Sphere-AI-Lab/poet), a peer we measure, never
              vendored: importable from PYTHONPATH or not run (skipped with a reason)

A backend applies to the methods whose MethodSpec says `uses_backend` (poetx-fast, poetx-mem); other
methods ignore the key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..methods import METHODS

# the methods a backend applies to, read from the method registry (poetx_bench/methods)
POETX_METHODS = tuple(name for name, spec in METHODS.items() if spec.uses_backend)


@dataclass(frozen=True)
class Backend:
    name: str
    description: str
    unavailable: Callable[[str], str | None]  # device type -> reason it cannot run there, or None


def _torch_unavailable(device: str) -> str | None:
    return None


def _triton_unavailable(device: str) -> str | None:
    from poetx_bench.kernels import triton_available
    from poetx_bench.kernels._loader import interpret_requested

    if not triton_available():
        return "backend=triton but triton is not importable"
    if device != "cuda" and not interpret_requested():
        return "backend=triton on CPU needs TRITON_INTERPRET=1 (otherwise it would run the torch path)"
    return None


def _official_unavailable(device: str) -> str | None:
    from .official import import_error

    err = import_error()
    if err:
        return f"backend=official: poet_torch is not importable ({err}); put a clone of github.com/Sphere-AI-Lab/poet on PYTHONPATH"
    if device != "cuda":
        return "backend=official needs CUDA (poet_torch's fused ops and torch.compile target the GPU)"
    return None


BACKENDS: dict[str, Backend] = {b.name: b for b in (
    Backend("torch", "our PyTorch POET-X (reference/poetx.py)", _torch_unavailable),
    Backend("triton", "our Triton-kernel POET-X (poetx_bench.kernels)", _triton_unavailable),
    Backend("official", "the authors' poet_torch (Sphere-AI-Lab/poet), measured as a peer", _official_unavailable),
)}


def check_backend(name: str) -> Backend:
    if name not in BACKENDS:
        raise KeyError(f"unknown backend {name!r}; known: {', '.join(BACKENDS)}")
    return BACKENDS[name]


def poetx_layer_class(backend: str, block_impl: str = "auto", cayley_keep: str = "params"):
    """The POET-X layer class (or a partial of it) of one of our backends; None for the official one,
    which converts models its own way (backends/official.py)."""
    check_backend(backend)
    if backend == "torch":
        if block_impl != "auto" or cayley_keep != "params":
            raise ValueError(f"block_impl={block_impl!r}, cayley_keep={cayley_keep!r}: these apply to "
                             "backend=triton only")
        from ..reference.poetx import POETXLinear

        return POETXLinear
    if backend == "triton":
        import functools

        from ..kernels import POETXTritonLinear, resolve_block_impl

        return functools.partial(POETXTritonLinear, block_impl=resolve_block_impl(block_impl),
                                 cayley_keep=cayley_keep)
    return None


def make_poetx_layer(backend: str, in_features: int, out_features: int, block_size: int, mode: str,
                     block_impl: str = "auto", cayley_keep: str = "params", **kwargs):
    """One POET-X layer of any backend (the official one through its adapter)."""
    if backend == "official":
        from .official import build_layer

        return build_layer(in_features, out_features, block_size, mode, kwargs.get("device"), kwargs.get("dtype"))
    return poetx_layer_class(backend, block_impl, cayley_keep)(in_features, out_features, block_size, mode=mode,
                                                             **kwargs)


def skip_reason(method: str, backend: str | None, device: str) -> str | None:
    """Why a point of `method` on `backend` cannot measure what it names on `device` (None: it can)."""
    if method not in POETX_METHODS or not backend:
        return None
    return check_backend(backend).unavailable(device)


def run_facts(cfg: dict) -> dict:
    """What a row records about the implementation that ran: the official code's version, or the block
    implementation that `block_impl = "auto"` resolved to (its meaning can change between commits)."""
    method, backend = cfg.get("method"), cfg.get("backend")
    if method not in POETX_METHODS:
        return {}
    if backend == "official":
        from .official import version

        return {"backend_version": version()}
    if backend == "triton":
        from ..kernels import resolve_block_impl

        return {"block_impl_resolved": resolve_block_impl(cfg.get("block_impl", "auto"))}
    return {}
