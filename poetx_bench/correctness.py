"""Correctness figures, recorded like any other measurement: `python -m poetx_bench correctness`.

Rows of kind "correctness":
  check = "layer-equivalence": POET-X (fast, mem; torch and, where it can run, triton) and POET in the
          working dtype against weight-centric POET in float64 on the same state, fresh random inputs and
          skew parameters: relative errors of the output and of the gradients w.r.t. x, skew_in, skew_out.
  check = "neumann-orthogonality": ||G^T G - I||_F of the truncated Cayley-Neumann series against ||Q||_2.
"""

from __future__ import annotations

import argparse
import datetime as _dt
from pathlib import Path

import torch

from .env import environment
from .results import SCHEMA_VERSION, append_row, check_out_folder, read_rows
from .suite import point_id

SHAPES = [(256, 512, 64), (512, 256, 128), (320, 200, 64), (1024, 1024, 256)]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-300))


def layer_equivalence(fin: int, fout: int, b: int, method: str, dtype: str, device: str, backend: str,
                      seed: int = 0, tokens: int = 257) -> dict:
    from .methods import get_method
    from .reference.poet import POETLinear

    gen = torch.Generator().manual_seed(seed)
    ref = POETLinear(fin, fout, b, dtype=torch.float64)
    ref.redraw_permutations(gen)  # non-trivial permutations folded into W0, as after a merge
    with torch.no_grad():
        ref.skew_in.copy_(torch.randn(ref.skew_in.shape, generator=gen, dtype=torch.float64) * 0.02)
        ref.skew_out.copy_(torch.randn(ref.skew_out.shape, generator=gen, dtype=torch.float64) * 0.02)
    x = torch.randn(tokens, fin, generator=gen, dtype=torch.float64)
    gy = torch.randn(tokens, fout, generator=gen, dtype=torch.float64)

    def run(layer, xx, gg):
        xx = xx.clone().requires_grad_(True)
        y = layer(xx)
        y.backward(gg)
        return y.detach(), xx.grad, layer.skew_in.grad, layer.skew_out.grad

    expected = run(ref, x, gy)
    dt = DTYPES[dtype]
    layer = get_method(method).build_layer(fin, fout, b, {"backend": backend}, device, dt)
    layer.load_state_dict({k: v.to(device=device, dtype=dt if v.is_floating_point() else v.dtype)
                           for k, v in ref.state_dict().items()})
    got = run(layer, x.to(device, dt), gy.to(device, dt))
    names = ("output", "grad_input", "grad_skew_in", "grad_skew_out")
    return {f"rel_err_{n}": _rel(g.cpu(), e) for n, g, e in zip(names, got, expected)}


def _row(config: dict, metrics: dict, env: dict) -> dict:
    return {"schema_version": SCHEMA_VERSION, "point_id": point_id(config), "status": "ok",
            "suite": "correctness", "kind": "correctness", "config": config, "metrics": metrics, "env": env}


def run_checks(device: str, out: Path, quick: bool = False) -> Path:
    from .kernels import triton_available
    from .kernels._loader import interpret_requested
    from .methods import METHODS
    from .reference.cayley import neumann_orthogonality_curve

    # layers that hold POET's float state; POET-XQ (int8 W0) is checked against POET-X on its dequantized W0
    # in tests/test_poetxq.py instead
    block_methods = [m for m, spec in METHODS.items()
                     if spec.uses_blocks and spec.build_layer is not None and spec.poet_state]
    env = environment()
    results = out / "results.jsonl"
    backends = ["torch"]
    if triton_available() and (device == "cuda" or interpret_requested()):
        backends.append("triton")
    shapes = SHAPES[:2] if quick else SHAPES
    dtypes = ["float32"] if quick else list(DTYPES)
    for fin, fout, b in shapes:
        for dtype in dtypes:
            for method in block_methods:  # the POET family, from the method registry
                for backend in (backends if METHODS[method].uses_backend else ["torch"]):
                    cfg = {"kind": "correctness", "check": "layer-equivalence", "method": method,
                           "in_features": fin, "out_features": fout, "block_size": b, "dtype": dtype,
                           "device": device, "backend": backend, "seed": 0}
                    metrics = layer_equivalence(fin, fout, b, method, dtype, device, backend)
                    append_row(results, _row(cfg, metrics, env))
    for b in (16, 64, 256):
        cfg = {"kind": "correctness", "check": "neumann-orthogonality", "block_size": b, "terms": 3,
               "device": "cpu", "dtype": "float64", "seed": 0}
        append_row(results, _row(cfg, {"curve": neumann_orthogonality_curve(b=b, terms=3)}, env))
    return results


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    p.add_argument("--out", type=Path, help="folder for results.jsonl (default runs/<time>-correctness)")
    p.add_argument("--quick", action="store_true", help="two shapes, float32 only")


def main(args) -> int:
    from .cli import best_device

    device = args.device or best_device()
    out = check_out_folder(args.out or Path("runs") / (_dt.datetime.now().strftime("%Y%m%d-%H%M%S") + "-correctness"))
    results = run_checks(device, out, quick=args.quick)

    print(f"{'check':22} {'method':11} {'shape':16} {'dtype':9} {'backend':7} {'out':>9} {'dx':>9} "
          f"{'dskew_in':>9} {'dskew_out':>9}")
    for r in read_rows(results):
        c, m = r["config"], r["metrics"]
        if c["check"] != "layer-equivalence":
            last = m["curve"][-1]
            print(f"{c['check']:22} b={c['block_size']}: error {last['orthogonality_error']:.2e} at "
                  f"||Q||={last['q_norm']}")
            continue
        shape = f"{c['in_features']}x{c['out_features']}/b{c['block_size']}"
        print(f"{c['check']:22} {c['method']:11} {shape:16} {c['dtype']:9} {c['backend']:7} "
              + " ".join(f"{m[k]:9.2e}" for k in ("rel_err_output", "rel_err_grad_input",
                                                     "rel_err_grad_skew_in", "rel_err_grad_skew_out")))
    print(f"\n{results}")
    return 0
