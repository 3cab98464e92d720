"""Does a Cayley evaluation on a side CUDA stream overlap with the layer's GEMM or permutation pass?

Times, each replayed as a CUDA graph: a big GEMM or pass alone, the Cayley alone (forward, backward to the
packed gradient) and both forked onto two streams inside one graph. `hidden` = (alone + alone - together) /
cayley: 1 = the Cayley costs nothing beside the GEMM, 0 = no overlap (e.g. a persistent GEMM holds every SM).
The question behind kernels/NOTES.md "Cayley on a side stream"; GPU only.

    python bench/overlap_probe.py --out DIR
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch
import triton.testing

from poetx_bench.kernels import rows as R


def graphed(fn):
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    return g


def together(main_fn, side_fn, side):
    def fn():
        cur = torch.cuda.current_stream()
        side.wait_stream(cur)
        with torch.cuda.stream(side):
            side_fn()
        main_fn()
        cur.wait_stream(side)
    return fn


def ms(fn):
    g = graphed(fn)
    q = triton.testing.do_bench(g.replay, warmup=50, rep=300, return_mode="all")
    q = torch.tensor(q)
    return float(q.median()), float(q.quantile(0.25)), float(q.quantile(0.75))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--tokens", type=int, default=2048)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    dev, dt, T, b = "cuda", torch.bfloat16, a.tokens, 256
    torch.manual_seed(0)
    side = torch.cuda.Stream()
    rows = []
    for d_in, d_out in ((4096, 14336), (14336, 4096), (4096, 4096)):
        w = torch.randn(d_out, d_in, device=dev, dtype=dt) / d_in ** 0.5
        c = torch.randn(d_in, T, device=dev, dtype=dt)
        ge = torch.randn(d_out, T, device=dev, dtype=dt)
        x = torch.randn(T, d_in, device=dev, dtype=dt)
        perm = torch.randperm(d_in, device=dev)
        inv = torch.argsort(perm)
        mains = {"gemm_fwd": lambda w=w, c=c: w @ c, "gemm_bwd": lambda w=w, ge=ge: w.t() @ ge,
                 "to_rows_in": lambda x=x, inv=inv, perm=perm: R.to_rows(x, inv, perm)}
        for n in sorted({d_in // b, d_out // b}):
            p = (torch.randn(n, b * (b - 1) // 2, device=dev) * 0.05).to(dt)
            q = R.skew_unpack(p, b)
            gb = torch.randn(n, b, b, device=dev, dtype=dt)
            sides = {f"cayley_fwd_n{n}": lambda p=p: R.cayley_forward(R.skew_unpack(p, b), 3),
                     f"cayley_bwd_n{n}": lambda q=q, gb=gb, n=n: R._pack_all(R.cayley_backward_dq(q, gb, 3), [n])}
            for mname, mfn in mains.items():
                t_m = ms(mfn)
                for sname, sfn in sides.items():
                    t_s = ms(sfn)
                    t_both = ms(together(mfn, sfn, side))
                    t_seq = ms(lambda mfn=mfn, sfn=sfn: (sfn(), mfn()))
                    hidden = (t_m[0] + t_s[0] - t_both[0]) / t_s[0]
                    r = {"shape": f"{d_in}->{d_out}", "main": mname, "side": sname, "main_ms": t_m,
                         "side_ms": t_s, "together_ms": t_both, "sequential_ms": t_seq, "hidden": hidden,
                         "gpu": torch.cuda.get_device_name(0), "torch": torch.__version__}
                    rows.append(r)
                    print(f"{r['shape']:12s} {mname:11s} {sname:16s} main {t_m[0]:.4f} side {t_s[0]:.4f} "
                          f"seq {t_seq[0]:.4f} together {t_both[0]:.4f} hidden {hidden:.2f}", flush=True)
    with open(os.path.join(a.out, "overlap.jsonl"), "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
