#!/usr/bin/env python3
"""GPU benchmark of the POET-X Triton kernels (poetx_bench.kernels) against torch and nn.Linear.

    python bench/kernel_bench.py --out DIR            # on an H100: correctness, layers, kernels
    python bench/kernel_bench.py --out DIR --sweep    # also time a few tile configs per kernel
    python bench/kernel_bench.py --out DIR --cpu-smoke  # CPU only: tiny shapes, Triton interpreter

Writes one JSON object per measurement to DIR/kernels.jsonl and prints a table. Every case runs inside
its own try/except: a failure is written as a record with "error" and the run goes on.

A thin driver over the harness's point kinds, all measurements in one process and one file: the
`correctness` section runs the correctness kind's check (points/correctness.layer_equivalence) per block
implementation, `layer` runs layer points (points/layer_timing.run_layer_point), `rows` and `kernel` the
kernel kind's ops and costs (points/kernel_ops.py), floors from poetx_bench.measure.floor_ms. What only this
script does: the tile-config sweeps (`sweep`, `bgemm`) that chose the kernels' defaults. For result rows in
the harness's schema (one process per point, report, gate) run `python -m poetx_bench sweep --suite kernels`
(suites/kernels.toml), `--suite correctness` or `--suite layer-latency` instead.

What is measured (bf16 by default, tokens=2048):
  correctness  our triton layer (rows and fused block work), fp32 and bf16, vs float64 weight-centric POET
  layer        forward+backward of nn.Linear and POET-X fast/mem x torch/triton (rows, fused): do_bench
               median and IQR (as a CUDA graph with --graph), peak memory of one step
  rows         the row design's passes (to_rows, from_rows, block multiply, block gradient, Cayley fwd/bwd)
  kernel       the first design's cayley fwd/bwd, block-perm apply, grad-G (triton and the torch equivalent)
               rows and kernel: FLOPs, bytes, TFLOP/s, TB/s, the floor max(bytes/BW, FLOP/peak) and its fraction
Only long-stable APIs are used (triton.testing.do_bench with quantiles) so it runs on triton 3.0 .. 3.9.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import sys
import time
import traceback
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# floors come from poetx_bench.measure.floor_ms (one definition, shared/perf/floors.md); devices it does not
# know are judged as an H100 SXM, and the env record says so
FLOOR_FALLBACK_DEVICE = "H100 SXM"


def _bootstrap():
    """Make `poetx_bench.kernels` / `poetx_bench.reference` importable from a bare checkout too."""
    try:
        import poetx_bench.kernels  # noqa: F401
        import poetx_bench.reference.poetx  # noqa: F401
        return
    except ImportError:
        pass
    sys.path.insert(0, str(ROOT))
    import poetx_bench

    for sub in ("reference", "kernels"):
        name = f"poetx_bench.{sub}"
        if name in sys.modules:
            continue
        spec = importlib.util.spec_from_file_location(name, ROOT / sub / "__init__.py",
                                                      submodule_search_locations=[str(ROOT / sub)])
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
        setattr(poetx_bench, sub, mod)


# ------------------------------------------------------------------------------------------ helpers


class Recorder:
    """Appends JSON lines and keeps rows for the final table."""

    def __init__(self, out_dir: Path, common: dict):
        out_dir.mkdir(parents=True, exist_ok=True)
        self.path = out_dir / "kernels.jsonl"
        self.common = common
        self.rows: list[dict] = []

    def add(self, rec: dict) -> dict:
        rec = {**self.common, **rec}
        self.rows.append(rec)
        with open(self.path, "a") as f:
            f.write(json.dumps(rec, default=str) + "\n")
        return rec


def _guard(rec: Recorder, base: dict, fn):
    """Run fn() -> dict of results; record base+results, or base+error. Never raises."""
    try:
        res = fn()
        return rec.add({**base, **(res or {})})
    except Exception as e:  # noqa: BLE001 - one bad case must not stop the run
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
        return rec.add({**base, "error": f"{type(e).__name__}: {e}",
                        "traceback": traceback.format_exc(limit=6)})


def make_timer(device, reps_ms: int, warmup_ms: int, graph: bool = False):
    """(fn, grad_to_none) -> (q25, median, q75) in ms: do_bench on CUDA, a wall clock on CPU.

    graph=True: triton.testing.do_bench_cudagraph, which replays fn captured in a CUDA graph, so a chain of
    small kernels is timed at its device time instead of its launch (host) time."""
    import torch

    if device.type == "cuda" and graph:
        from triton.testing import do_bench_cudagraph

        def graph_timer(fn, grad_to_none=None):
            q = do_bench_cudagraph(fn, rep=reps_ms, grad_to_none=grad_to_none, quantiles=[0.25, 0.5, 0.75])
            return float(q[0]), float(q[1]), float(q[2])
        return graph_timer
    if device.type == "cuda":
        from triton.testing import do_bench

        def timer(fn, grad_to_none=None):
            q = do_bench(fn, warmup=warmup_ms, rep=reps_ms, grad_to_none=grad_to_none,
                         quantiles=[0.25, 0.5, 0.75])
            return float(q[0]), float(q[1]), float(q[2])
        return timer

    def cpu_timer(fn, grad_to_none=None):
        fn()
        ts = []
        for _ in range(3):
            if grad_to_none:
                for t in grad_to_none:
                    t.grad = None
            t0 = time.perf_counter()
            fn()
            ts.append((time.perf_counter() - t0) * 1e3)
        ts.sort()
        return ts[0], ts[len(ts) // 2], ts[-1]
    del torch
    return cpu_timer


def _timing(q):
    q25, med, q75 = q
    return {"median_ms": med, "q25_ms": q25, "q75_ms": q75, "iqr_ms": q75 - q25}


def _rel(a, b) -> float:
    a = a.detach().double().cpu()
    b = b.detach().double().cpu()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def _floor_device(device_name: str) -> str:
    """The device whose peaks the floors use (measure.FLOOR_PEAKS): this one, or H100 SXM if unknown."""
    from poetx_bench.measure import FLOOR_PEAKS

    return next((k for k in FLOOR_PEAKS if k in device_name), FLOOR_FALLBACK_DEVICE)


def _rates(flop, nbytes, med_ms, dtype, floor_device) -> dict:
    from poetx_bench.measure import kernel_rates

    return kernel_rates(flop, nbytes, med_ms, floor_device, str(dtype).replace("torch.", ""))


def _pow2(n: int) -> int:
    return 1 << max(0, int(max(n, 16)) - 1).bit_length()


# --------------------------------------------------------------------------------------- sections


CHECK_TOL = {"float32": 1e-4, "bfloat16": 3e-2}  # relative Frobenius error against float64 POET


def correctness(rec, device, blocks, smoke):
    """Our triton layer, each block_impl, fp32 and bf16, against float64 weight-centric POET: the correctness
    kind's check (poetx_bench.points.correctness.layer_equivalence), here once per block implementation."""
    from poetx_bench.points.correctness import layer_equivalence

    shapes = [(64, 96), (100, 70)] if smoke else [(1024, 1536), (1000, 1500), (4096, 4096)]
    tokens = 33 if smoke else 257
    for b in blocks:
        for (i, o) in shapes:
            for mode, impl, dtype in [(m, im, dt) for m in ("fast", "mem") for im in ("rows", "fused")
                                      for dt in ("float32", "bfloat16")]:
                if dtype == "float32" and i * o > 2_000_000 and not smoke:
                    continue
                base = {"section": "correctness", "in": i, "out": o, "b": b, "mode": mode, "block_impl": impl,
                        "dtype": dtype, "tokens": tokens}

                def run(i=i, o=o, b=b, mode=mode, dtype=dtype, impl=impl):
                    errs = layer_equivalence(i, o, b, f"poetx-{mode}", dtype, device.type, "triton",
                                             seed=b + i, tokens=tokens, block_impl=impl)
                    errs["tol"] = CHECK_TOL[dtype]
                    errs["ok"] = all(v <= errs["tol"] for k, v in errs.items() if k.startswith("rel_err_"))
                    return errs

                _guard(rec, base, run)


def layers(rec, device, dtype, tokens, shapes, blocks, graph: bool):
    """forward+backward of one layer: nn.Linear vs POET-X {fast, mem} x {torch, triton rows, triton fused},
    each a layer point of the layer kind (poetx_bench.points.layer_timing.run_layer_point: do_bench medians,
    as a CUDA graph with --graph) run in this process."""
    from poetx_bench.points.layer_timing import run_layer_point

    dt = str(dtype).replace("torch.", "")
    for (i, o) in shapes:
        methods = [("linear", "linear", None, "torch", "auto")]
        for b in blocks:
            for mode in ("fast", "mem"):
                methods.append((f"poetx-{mode}-torch", f"poetx-{mode}", b, "torch", "auto"))
                for impl in ("rows", "fused"):
                    methods.append((f"poetx-{mode}-triton-{impl}", f"poetx-{mode}", b, "triton", impl))
        for name, method, b, backend, impl in methods:
            base = {"section": "layer", "name": name, "in": i, "out": o, "b": b, "mode": method.split("-")[-1],
                    "backend": backend, "block_impl": impl, "tokens": tokens, "dtype": dt}
            cfg = {"kind": "layer", "method": method, "in_features": i, "out_features": o, "tokens": tokens,
                   "block_size": b, "device": device.type, "dtype": dt, "seed": 0, "backend": backend,
                   "block_impl": impl, "compile": "cudagraph" if graph and device.type == "cuda" else "none",
                   "repeats": 20 if device.type == "cuda" else 3, "warmup_steps": 3 if device.type == "cuda" else 1}
            gemm_flop = (3 if method in ("linear", "poetx-mem") else 2) * 2 * tokens * i * o

            def run(cfg=cfg, gemm_flop=gemm_flop):
                m = run_layer_point(cfg)
                peak = m.get("peak_memory_bytes")
                return {"median_ms": m["fwd_bwd_ms"], "iqr_ms": m["fwd_bwd_ms_iqr"],
                        "peak_step_mem_mb": peak / 2**20 if peak is not None else None,
                        "gemm_tflops": gemm_flop / (m["fwd_bwd_ms"] * 1e-3) / 1e12, "compile": cfg["compile"]}

            _guard(rec, base, run)


def rows_kernels(rec, device, dtype, tokens, dims, blocks, timer, floor_device, terms=3):
    """The row-domain design's passes (kernels/rows.py) at D in dims: the kernel kind's ops and costs
    (poetx_bench.points.kernel_ops), each against its floor (shared/perf/floors.md); kernels under 20 us are
    flagged launch-latency-bound ("latency_bound") since a launch costs a few us whatever the floor."""
    from poetx_bench.points.kernel_ops import ROWS_OPS, KernelInputs, case

    for dim in dims:
        for i, b in enumerate(blocks):
            inp = KernelInputs(device, dtype, tokens, dim, b, terms)
            costs = inp.costs()
            runs = [(op, "triton") for op in ROWS_OPS if i == 0 or op not in ("to_rows", "from_rows")]
            if i == 0:
                runs.append(("to_rows", "torch"))  # index_select: what the kernel replaces
            for op, impl in runs:
                fn, _ = case(inp, op, impl)
                flop, nbytes = costs[op]
                name = op if op in ("to_rows", "from_rows") else f"{op}_b{b}"
                base = {"section": "rows", "name": name if impl == "triton" else f"torch_{name}", "dim": dim,
                        "tokens": tokens, "dtype": str(dtype).replace("torch.", "")}

                def run(fn=fn, flop=flop, nbytes=nbytes):
                    fn()
                    q = timer(fn)
                    return {**_timing(q), **_rates(flop, nbytes, q[1], dtype, floor_device)}

                _guard(rec, base, run)


def kernel_costs(b, n, tokens, dim, terms, elt):
    """FLOPs and bytes (minimum traffic) per kernel: the kernel kind's (poetx_bench.points.kernel_ops)."""
    from poetx_bench.points.kernel_ops import kernel_costs as costs

    return costs(b, n, tokens, dim, terms, elt)


def _kernel_fns(device, dtype, tokens, dim, b, terms):
    """The timed callables of one (dim, b): the kernel kind's ops (poetx_bench.points.kernel_ops), every
    triton kernel and the torch ops it replaces, on one set of inputs."""
    from poetx_bench.points.kernel_ops import KernelInputs, all_cases

    inp = KernelInputs(device, dtype, tokens, dim, b, terms)
    return inp.n, all_cases(inp)


def _timed(fn, gtn, timer, cost, kd, floor_device):
    fn()
    res = _timing(timer(fn, grad_to_none=gtn))
    if cost is not None:
        res.update(_rates(*cost, res["median_ms"], kd, floor_device))
    return res


def kernels(rec, device, dtype, tokens, dims, blocks, timer, floor_device, terms=3):
    """Per-kernel times, triton vs the torch ops the reference path uses for the same result."""
    import torch

    elt = torch.empty((), dtype=dtype).element_size()
    for dim in dims:
        for b in blocks:
            base0 = {"section": "kernel", "dim": dim, "b": b, "tokens": tokens,
                     "dtype": str(dtype).replace("torch.", ""), "terms": terms}
            try:
                n, cases = _kernel_fns(device, dtype, tokens, dim, b, terms)
            except Exception as e:  # noqa: BLE001
                rec.add({**base0, "name": "setup", "error": f"{type(e).__name__}: {e}"})
                continue
            costs = kernel_costs(b, n, tokens, n * b, terms, elt)
            for kname, impl, fn, gtn in cases:
                base = {**base0, "name": kname, "impl": impl, "n_blocks": n}
                kd = torch.float32 if kname.startswith("cayley") else dtype
                _guard(rec, base, partial(_timed, fn, gtn, timer, costs.get(kname), kd, floor_device))
            del cases
            if device.type == "cuda":
                torch.cuda.empty_cache()


APPLY_SWEEP = [  # BM, BN, BK, warps, stages
    (32, 32, 32, 4, 2),
    (128, 256, 32, 8, 2), (128, 256, 64, 8, 2), (64, 256, 32, 8, 3), (128, 128, 32, 8, 2),
    (64, 128, 32, 4, 3), (64, 256, 64, 8, 2),
]
GRAD_SWEEP = [  # BD, BC, BR, warps, stages, split (None = heuristic)
    (32, 32, 32, 4, 2, None),
    (128, 256, 32, 8, 3, None), (128, 256, 64, 8, 2, None), (128, 128, 32, 8, 3, None),
    (128, 256, 32, 8, 3, 4), (128, 256, 32, 8, 3, 16), (64, 256, 32, 8, 3, None),
]
CAYLEY_SWEEP = [  # BM, BN, BK, warps, stages
    (32, 128, 64, 8, 2), (16, 128, 64, 4, 2), (32, 256, 64, 8, 2), (16, 256, 32, 8, 2), (64, 128, 64, 8, 2),
    (32, 128, 32, 4, 3),
]


def _sweep_inputs(device, dtype, tokens, dim, b):
    import torch

    n = dim // b
    g = torch.Generator(device="cpu").manual_seed(b)
    x = torch.randn(tokens, dim, generator=g).to(device=device, dtype=dtype)
    perm = torch.randperm(dim, generator=g).to(device)
    gblk = (torch.randn(n, b, b, generator=g) / b ** 0.5).to(device=device, dtype=dtype)
    packed = (torch.randn(n, b * (b - 1) // 2, generator=g) * 0.05).to(device=device, dtype=dtype)
    gg = torch.randn(n, b, b, generator=g).to(device)
    return n, x, perm, gblk, packed, gg, torch.empty_like(x)


# every tile with the pairs as separate K loops (ONE_LOOP False, the first design) and as one loop
BGEMM_CONFIGS = [
    {**tile, "ONE_LOOP": one} for one in (False, True) for tile in (
        {"BM": 128, "BN": 128, "BK": 64, "num_warps": 8, "num_stages": 3},
        {"BM": 128, "BN": 64, "BK": 64, "num_warps": 4, "num_stages": 3},
        {"BM": 64, "BN": 128, "BK": 64, "num_warps": 4, "num_stages": 3},
        {"BM": 64, "BN": 64, "BK": 64, "num_warps": 4, "num_stages": 3},
        {"BM": 64, "BN": 64, "BK": 32, "num_warps": 4, "num_stages": 4},
        {"BM": 64, "BN": 128, "BK": 64, "num_warps": 4, "num_stages": 4},
    )
]


def bgemm_sweep(rec, device, dtype, timer, floor_device, b=256, counts=(12, 16, 24, 56, 72, 144)):
    """Tile configs of the fused Cayley product (two pairs + C + D + I, the forward's second launch) at
    several block counts n: small n leaves SMs idle with big tiles. Restores the default afterwards."""
    import torch

    from poetx_bench.kernels import rows as R

    default = dict(R.BGEMM_TILE)
    elt = torch.empty((), dtype=dtype).element_size()
    try:
        for n in counts:
            g = torch.Generator(device="cpu").manual_seed(n)
            q, s_, c = (torch.randn(n, b, b, generator=g).to(device, dtype) * 0.05 for _ in range(3))
            for i, cfg in enumerate(BGEMM_CONFIGS):
                R.BGEMM_TILE.clear()
                R.BGEMM_TILE.update(cfg)
                base = {"section": "bgemm", "name": f"bgemm2_n{n}_cfg{i}", "dim": n * b, "config": cfg}

                def run(q=q, s_=s_, c=c, n=n):
                    fn = partial(R.bgemm, [(2, q, s_), (1, s_, s_)], c=c, beta=2, d=s_, delta=2, gamma=1)
                    fn()
                    qq = timer(fn)
                    return {**_timing(qq), **_rates(2 * 2 * n * b ** 3, 5 * n * b * b * elt, qq[1], dtype, floor_device)}

                _guard(rec, base, run)

            def run_cublas(q=q, s_=s_, n=n):  # one cuBLAS strided-batched product: the rate to aim at
                fn = partial(torch.bmm, q, s_)
                fn()
                qq = timer(fn)
                return {**_timing(qq), **_rates(2 * n * b ** 3, 3 * n * b * b * elt, qq[1], dtype, floor_device)}

            _guard(rec, {"section": "bgemm", "name": f"cublas_bmm_n{n}", "dim": n * b, "config": None}, run_cublas)

            # the Cayley backward's last launch, dQ (up to a symmetric part) = 2 Gb + 2 S Gb - Sbar Q - Q Sbar:
            # three pairs as before session 6, or two with the left tile Sbar + Sbar^T (sym_a1, the default now)
            # (the sym form runs at 8 warps where 4 spill: the three-pair form at 8 too separates the two changes;
            # compare times, not TFLOP/s: the rows count 3 and 2 units)
            three = lambda q=q, s_=s_, c=c: R.bgemm([(2, s_, c), (-1, c, q), (-1, q, c)], c=c, beta=2)  # noqa: E731
            sym = lambda q=q, c=c, s_=s_: R.bgemm([(2, s_, c), (-1, c, q)], c=c, beta=2, sym_a1=True)  # noqa: E731
            forms = {"dq_three_pairs": (three, {}), "dq_three_pairs_w8": (three, {"num_warps": 8}),
                     "dq_sym_two_pairs": (sym, {}), "dq_sym_two_pairs_w4": (sym, {"SYM_WARPS": 4})}
            for name, (fn, tile) in forms.items():
                R.BGEMM_TILE.clear()
                R.BGEMM_TILE.update({**default, **tile})

                def run_form(fn=fn, n=n, units=2 if name.startswith("dq_sym") else 3):
                    fn()
                    qq = timer(fn)
                    return {**_timing(qq), **_rates(units * 2 * n * b ** 3, 4 * n * b * b * elt, qq[1], dtype,
                                                    floor_device)}

                _guard(rec, {"section": "bgemm", "name": f"{name}_n{n}", "dim": n * b, "config": None}, run_form)
    finally:
        R.BGEMM_TILE.clear()
        R.BGEMM_TILE.update(default)


def sweep(rec, device, dtype, tokens, dim, blocks, timer, floor_device, terms=3):
    """Time a few tile configs per kernel (for choosing the defaults in block_perm.py / cayley.py)."""
    import torch

    from poetx_bench.kernels.block_perm import block_perm_apply_full_, block_perm_grad
    from poetx_bench.kernels.cayley import cayley_neumann_backward, cayley_neumann_forward

    elt = torch.empty((), dtype=dtype).element_size()
    dt = str(dtype).replace("torch.", "")
    for b in blocks:
        n, x, perm, gblk, packed, gg, out = _sweep_inputs(device, dtype, tokens, dim, b)
        costs = kernel_costs(b, n, tokens, n * b, terms, elt)
        for bm, bn, bk, w, s in APPLY_SWEEP:
            if bn > _pow2(b) or bk > _pow2(b) or (bn < 64 and b >= 128):
                continue
            cfg = {"BM": bm, "BN": bn, "BK": bk, "num_warps": w, "num_stages": s}
            for transpose in (True, False):
                base = {"section": "sweep", "name": "apply", "transpose": transpose, "cfg": cfg, "b": b,
                        "dim": dim, "tokens": tokens, "dtype": dt}
                fn = partial(block_perm_apply_full_, x, gblk, perm, b, transpose, out, cfg)
                _guard(rec, base, partial(_timed, fn, None, timer, costs["apply"], dtype, floor_device))
        for bd, bc, br, w, s, split in GRAD_SWEEP:
            if bd > _pow2(b) or bc > _pow2(b) or (bd < 64 and b >= 128):
                continue
            cfg = {"BD": bd, "BC": bc, "BR": br, "num_warps": w, "num_stages": s, "split": split}
            base = {"section": "sweep", "name": "grad", "cfg": cfg, "b": b, "dim": dim, "tokens": tokens,
                    "dtype": dt}
            fn = partial(block_perm_grad, x, x, perm, b, n, config=cfg)
            _guard(rec, base, partial(_timed, fn, None, timer, costs["grad"], dtype, floor_device))
        for bm, bn, bk, w, s in CAYLEY_SWEEP:
            if bm > _pow2(b) or bn > _pow2(b) or bk > _pow2(b):
                continue
            cfg = {"BM": bm, "BN": bn, "BK": bk, "num_warps": w, "num_stages": s}
            for kname in ("cayley_fwd", "cayley_bwd"):
                base = {"section": "sweep", "name": kname, "cfg": cfg, "b": b, "n_blocks": n, "dtype": dt}
                if kname == "cayley_fwd":
                    fn = partial(cayley_neumann_forward, packed, b, terms, config=cfg)
                else:
                    fn = partial(cayley_neumann_backward, packed, gg, b, terms, config=cfg)
                _guard(rec, base, partial(_timed, fn, None, timer, costs[kname], torch.float32, floor_device))
        # same default configs with each block's slice of perm sorted: how much does line locality of the
        # gathered columns matter? (timing only; a sorted layout would need G permuted accordingly)
        perm_sorted = perm.clone()
        perm_sorted[: n * b] = perm[: n * b].view(n, b).sort(dim=1).values.reshape(-1)
        for kname in ("apply", "grad"):
            base = {"section": "sweep", "name": kname + "-sortedperm", "b": b, "dim": dim, "tokens": tokens,
                    "dtype": dt, "cfg": "default"}
            if kname == "apply":
                fn = partial(block_perm_apply_full_, x, gblk, perm_sorted, b, True, out)
            else:
                fn = partial(block_perm_grad, x, x, perm_sorted, b, n)
            _guard(rec, base, partial(_timed, fn, None, timer, costs[kname], dtype, floor_device))
        base = {"section": "sweep", "name": "torch-index_select", "b": b, "dim": dim, "tokens": tokens, "dtype": dt}
        _guard(rec, base, partial(_timed, partial(torch.index_select, x, 1, perm), None, timer,
                                  (0, 2 * x.numel() * elt), dtype, floor_device))
        del x, gblk, packed, gg, out
        if device.type == "cuda":
            torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------------ table


def _fmt(v, nd=3):
    if v is None:
        return "-"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return f"{v:.{nd}g}" if abs(v) < 1e4 else f"{v:.0f}"
    return str(v)


def print_table(rows: list[dict]) -> None:
    secs = {}
    for r in rows:
        secs.setdefault(r.get("section", "?"), []).append(r)
    cols = {
        "correctness": ["in", "out", "b", "mode", "block_impl", "dtype", "rel_err_output", "rel_err_grad_input",
                        "rel_err_grad_skew_in", "rel_err_grad_skew_out", "ok"],
        "rows": ["name", "dim", "median_ms", "iqr_ms", "tflops", "tbps", "floor_ms", "floor_frac", "latency_bound"],
        "layer": ["name", "in", "out", "b", "median_ms", "iqr_ms", "peak_step_mem_mb", "gemm_tflops"],
        "kernel": ["name", "impl", "dim", "b", "n_blocks", "median_ms", "iqr_ms", "tflops", "tbps", "floor_ms",
                   "floor_frac"],
        "sweep": ["name", "b", "transpose", "cfg", "median_ms", "tbps", "floor_frac"],
        "bgemm": ["name", "config", "median_ms", "iqr_ms", "tflops", "floor_frac"],
    }
    for sec, rs in secs.items():
        if sec == "env":
            continue
        keys = cols.get(sec, sorted({k for r in rs for k in r}))
        print(f"\n== {sec} ==")
        table = [keys] + [[(_fmt(r.get(k)) if "error" not in r or k in ("name", "in", "out", "b", "impl")
                            else ("ERROR" if k == keys[-1] else _fmt(r.get(k)))) for k in keys] for r in rs]
        widths = [max(len(str(row[j])) for row in table) for j in range(len(keys))]
        for row in table:
            print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)))
        for r in rs:
            if "error" in r:
                print(f"  ! {r.get('name', '')} b={r.get('b')} {r.get('in', r.get('dim', ''))}: {r['error']}")


# ------------------------------------------------------------------------------------------- main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path, help="output directory (kernels.jsonl)")
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--blocks", default="64,128,256,512", help="block sizes for the 4096x4096 layer and kernels")
    ap.add_argument("--main-block", type=int, default=256, help="block size used for every shape")
    ap.add_argument("--shapes", default="4096x4096,4096x14336,14336x4096")
    ap.add_argument("--rep-ms", type=int, default=100)
    ap.add_argument("--warmup-ms", type=int, default=25)
    ap.add_argument("--sections", default="correctness,layer,rows,kernel",
                    help="comma list of correctness,layer,rows,kernel,sweep,bgemm")
    ap.add_argument("--sweep", action="store_true", help="add the tile-config sweep section")
    ap.add_argument("--bgemm-counts", default="12,16,24,56,72,144",
                    help="block counts n of the bgemm section (blocks of 256)")
    ap.add_argument("--graph", action="store_true",
                    help="time each case replayed as a CUDA graph (device time of kernel chains; rows say timer)")
    ap.add_argument("--cpu-smoke", action="store_true",
                    help="no GPU: tiny shapes on CPU under the Triton interpreter (checks the script runs)")
    args = ap.parse_args(argv)

    if args.cpu_smoke:
        os.environ["TRITON_INTERPRET"] = "1"
    _bootstrap()
    import torch

    import poetx_bench.kernels as K

    if args.cpu_smoke:
        device = torch.device("cpu")
        args.tokens, args.shapes, args.blocks, args.main_block = 33, "64x96,96x64", "32", 32
        args.dtype = "float32"
    else:
        if not torch.cuda.is_available():
            print("no CUDA device; use --cpu-smoke to check the script on CPU", file=sys.stderr)
            return 2
        device = torch.device("cuda")
    dtype = getattr(torch, args.dtype)
    blocks = [int(v) for v in args.blocks.split(",") if v]
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",") if s]
    sections = set(args.sections.split(","))
    if args.sweep:
        sections.add("sweep")
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    from poetx_bench.measure import FLOOR_PEAKS

    floor_device = _floor_device(dev_name)
    try:
        import triton

        triton_version = triton.__version__
    except Exception:  # noqa: BLE001
        triton_version = None
    common = {"run_id": time.strftime("%Y%m%dT%H%M%S"), "device": dev_name,
              "timer": "do_bench_cudagraph" if args.graph and device.type == "cuda" else
              ("do_bench" if device.type == "cuda" else "wall")}
    rec = Recorder(args.out, common)
    from poetx_bench.kernels.block_perm import apply_config, grad_config
    from poetx_bench.kernels.cayley import cayley_config

    cuda = torch.device("cuda")
    configs = {str(b): {"apply": apply_config(b, cuda, dtype=dtype),
                        "grad": grad_config(b, args.tokens, 4096 // b, cuda, dtype=dtype),
                        "cayley_fwd": cayley_config(b, cuda), "cayley_bwd": cayley_config(b, cuda, which="bwd")}
               for b in sorted(set(blocks) | {args.main_block})}
    from poetx_bench.env import environment

    rec.add({"section": "env", "env": environment(use_torch_cuda=device.type == "cuda"),
             "torch": torch.__version__, "triton": triton_version,
             "triton_available": K.triton_available(), "python": platform.python_version(),
             "floor_device": floor_device, "floor_peaks_bf16_fp32_flops_hbm_bytes_per_s": FLOOR_PEAKS[floor_device],
             "argv": sys.argv[1:],
             "default_gpu_configs": configs, "default_block_impl": K.resolve_block_impl("auto")})
    timer = make_timer(device, args.rep_ms, args.warmup_ms, graph=args.graph and device.type == "cuda")
    t0 = time.time()
    if "correctness" in sections:
        correctness(rec, device, blocks if not args.cpu_smoke else [32], args.cpu_smoke)
    if "layer" in sections:
        first, rest = shapes[:1], shapes[1:]
        layers(rec, device, dtype, args.tokens, first, blocks, args.graph)
        if rest:
            layers(rec, device, dtype, args.tokens, rest, [args.main_block], args.graph)
    if "rows" in sections:
        dims = sorted({d for s in shapes for d in s})
        rows_kernels(rec, device, dtype, args.tokens, dims, [args.main_block], timer, floor_device)
    if "kernel" in sections:
        dims = sorted({d for s in shapes for d in s})
        kernels(rec, device, dtype, args.tokens, dims[:1], blocks, timer, floor_device)
        if len(dims) > 1:
            kernels(rec, device, dtype, args.tokens, dims[1:], [args.main_block], timer, floor_device)
    if "sweep" in sections:
        sweep(rec, device, dtype, args.tokens, shapes[0][0], blocks, timer, floor_device)
    if "bgemm" in sections:  # on CPU (--cpu-smoke) tiny: the code path, not a timing
        counts = tuple(int(v) for v in args.bgemm_counts.split(",") if v) if device.type == "cuda" else (2,)
        bgemm_sweep(rec, device, dtype, timer, floor_device, counts=counts,
                    **({} if device.type == "cuda" else {"b": 32}))
    print_table(rec.rows)
    n_err = sum(1 for r in rec.rows if "error" in r)
    print(f"\n{len(rec.rows)} records, {n_err} errors, {time.time() - t0:.0f}s -> {rec.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
