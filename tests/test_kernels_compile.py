"""Offline sm_90 compile of the kernels with their default GPU tile configs (no GPU needed).

Why: the CPU interpreter accepts code the GPU compiler rejects (a `j: tl.constexpr` re-bound inside a
static loop passed every interpreter test and failed on the H100), and register spills only show up in
the compiled cubin. The wrappers are run with a recorder instead of the kernels, so the compiled
signature is exactly what a launch would use; `triton.compile(ASTSource(...), target=sm_90)` then goes
through the frontend, TTGIR, PTX and ptxas. Skipped where triton's NVIDIA backend or its ptxas is absent
or the (internal) ASTSource API differs.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path

import pytest
import torch

triton = pytest.importorskip("triton")

CUDA = torch.device("cuda")
_DT = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32", torch.int64: "i64",
       torch.int32: "i32"}


class _Recorder:
    """Stands in for the kernels module: `rec.some_kernel[grid](*args, **kw)` records instead of launching."""

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        rec = self

        class _K:
            def __getitem__(self, grid):
                def launch(*args, **kw):
                    rec.calls.append((name, args, kw))
                return launch
        return _K()


def _record(monkeypatch, fn):
    import poetx_bench.kernels.block_perm as bp
    import poetx_bench.kernels.cayley as cy
    import poetx_bench.kernels.rows as rw

    rec = _Recorder()
    monkeypatch.setattr(bp, "kernels_for", lambda device: rec)
    monkeypatch.setattr(cy, "kernels_for", lambda device: rec)
    monkeypatch.setattr(rw, "kernels_for", lambda device: rec)
    monkeypatch.setattr(bp, "is_interpreted", lambda device: False)  # launch flags as on a GPU
    monkeypatch.setattr(rw, "is_interpreted", lambda device: False)
    monkeypatch.setattr(rw, "use_kernels", lambda t: True)  # CPU stand-in tensors take the kernel path
    fn()
    return rec.calls


def _compile(name, args, kw):
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from poetx_bench.kernels._loader import kernels_for

    jit = getattr(kernels_for(CUDA), name)
    names = list(jit.arg_names)
    values = dict(zip(names, args))
    values.update({k: v for k, v in kw.items() if k in names})
    opts = {k: v for k, v in kw.items() if k not in names}
    const_names = {p.name for p in jit.params if p.is_constexpr}
    sig, consts = {}, {}
    for n in names:
        v = values[n]
        if n in const_names:
            sig[n], consts[n] = "constexpr", v
        elif isinstance(v, torch.Tensor):
            sig[n] = "*" + _DT[v.dtype]
        elif isinstance(v, bool):
            sig[n] = "i1"
        else:
            sig[n] = "i64" if abs(int(v)) >= 2 ** 31 else "i32"
    try:
        src = ASTSource(jit, sig, consts)
    except TypeError as e:  # pragma: no cover - other triton versions
        pytest.skip(f"ASTSource API differs: {e}")
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options=opts)


def _spill_bytes(kernel) -> int | None:
    cuobj = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    if not cuobj.exists() or "cubin" not in kernel.asm:
        return None
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(kernel.asm["cubin"])
        f.flush()
        out = subprocess.run([str(cuobj), "-res-usage", f.name], capture_output=True, text=True).stdout
    m = re.search(r"STACK:(\d+)", out)
    return int(m.group(1)) if m else None


def _have_backend() -> bool:
    try:
        from triton.backends.nvidia.compiler import CUDABackend  # noqa: F401
    except Exception:
        return False
    return (Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas").exists()


pytestmark = pytest.mark.skipif(not _have_backend(), reason="triton NVIDIA backend / ptxas not available")


def _calls_for(monkeypatch, b, dtype, terms=3, rows=256, n=2):
    """Record the launches of every kernel entry point (both designs) at GPU default configs."""
    from poetx_bench.kernels import block_perm as bp
    from poetx_bench.kernels import cayley as cy
    from poetx_bench.kernels import rows as rw

    dim = n * b
    packed = torch.zeros(n, b * (b - 1) // 2, dtype=dtype)
    x = torch.zeros(rows, dim, dtype=dtype)
    g = torch.zeros(n, b, b, dtype=dtype)
    perm = torch.arange(dim)

    def go():
        cy.cayley_neumann_forward(packed, b, terms, config=cy.cayley_config(b, CUDA))
        cy.cayley_neumann_backward(packed, torch.zeros(n, b, b), b, terms,
                                   config=cy.cayley_config(b, CUDA, which="bwd"))
        out = torch.empty_like(x)
        bp.block_perm_apply_full_(x, g, perm, b, True, out, bp.apply_config(b, CUDA, dtype=dtype))
        cfg = bp.grad_config(b, 2048, 4096 // b, CUDA, dtype=dtype)  # the benchmark's split (atomics)
        bp.block_perm_grad(x, x, perm, b, n, config=cfg)
        # the row-domain design: permutation transposes, skew pack/unpack, the fused Cayley products
        rw.to_rows(x, perm, perm)
        rw.from_rows(x.t().contiguous(), perm)
        rw.skew_unpack(packed, b)
        rw.skew_pack_grad(g)
        rw.bgemm([(1, g, g)])
        rw.bgemm([(2, g, g), (-1, g, g), (1, g, g)], c=g, beta=2, d=g, delta=2, gamma=1)
        rw.bgemm([(2, g, g), (-1, g, g)], c=g, beta=2, sym_a1=True)  # the Cayley backward's last launch

    return _record(monkeypatch, go)


def _check(monkeypatch, b, dtype, terms=3, require_no_spill=True):
    failures, spills = [], []
    for name, args, kw in _calls_for(monkeypatch, b, dtype, terms):
        try:
            k = _compile(name, args, kw)
        except Exception as e:
            failures.append(f"{name}: {type(e).__name__}: {str(e)[:600]}")
            continue
        s = _spill_bytes(k)
        if s:
            spills.append(f"{name} spills {s} B/thread")
    assert not failures, "\n".join(failures)
    if require_no_spill:
        assert not spills, "; ".join(spills)


@pytest.mark.parametrize("b,dtype", [(256, torch.bfloat16), (48, torch.bfloat16), (64, torch.float32)])
def test_compile_sm90_defaults(monkeypatch, b, dtype):
    _check(monkeypatch, b, dtype, require_no_spill=(dtype == torch.bfloat16 and b == 256))


@pytest.mark.slow
@pytest.mark.parametrize("b", [16, 64, 128, 512])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_compile_sm90_all(monkeypatch, b, dtype):
    _check(monkeypatch, b, dtype, require_no_spill=False)


@pytest.mark.slow
@pytest.mark.parametrize("terms", [0, 1, 2, 4])
def test_compile_sm90_terms(monkeypatch, terms):
    _check(monkeypatch, 128, torch.bfloat16, terms, require_no_spill=False)
