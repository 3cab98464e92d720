"""A/B: the Cayley chain (t = 3) as cuBLAS products (G = V U, U = I + 2Q + QQ, V = U - 2Q) vs our fused bgemm."""
import json, os, sys
import torch
from poetx_bench.kernels import rows as R


def fwd_cublas(q):
    u = torch.baddbmm(q, q, q, beta=2)          # T = 2Q + QQ
    u.diagonal(dim1=-2, dim2=-1).add_(1)        # U = I + T
    v = torch.add(u, q, alpha=-2)               # V = U - 2Q = I + S
    return torch.bmm(v, u)                      # G = (I + S)(I + T)


def bwd_cublas(q, gb, uv=None):
    if uv is None:
        u = torch.baddbmm(q, q, q, beta=2)
        u.diagonal(dim1=-2, dim2=-1).add_(1)
        v = torch.add(u, q, alpha=-2)
    else:
        u, v = uv
    dv = torch.bmm(gb, u.mT)                    # dL/dV
    r = torch.bmm(v.mT, gb)                     # dL/dU through G = V U
    du = r + dv                                 # ... and through V = U - 2Q
    dq = torch.baddbmm(r, du, q.mT, beta=2)     # 2R + dU Q^T
    return torch.baddbmm(dq, q.mT, du)          # + Q^T dU


def check():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(3, 32, 32, generator=g, dtype=torch.float64) * 0.1
    q = (a - a.mT).requires_grad_()
    eye = torch.eye(32, dtype=torch.float64)
    ref = (eye + q) @ (eye + q + q @ q + q @ q @ q)
    gb = torch.randn(3, 32, 32, generator=g, dtype=torch.float64)
    (ref * gb).sum().backward()
    got = fwd_cublas(q.detach())
    dq = bwd_cublas(q.detach(), gb)
    e1 = (got - ref).norm() / ref.norm(); e2 = (dq - q.grad).norm() / q.grad.norm()
    print("float64 check", float(e1), float(e2)); assert e1 < 1e-12 and e2 < 1e-12


if __name__ == "__main__":
    check()
    if not torch.cuda.is_available():
        sys.exit(0)
    import triton.testing as tt
    out = open(sys.argv[1], "w") if len(sys.argv) > 1 else sys.stdout
    b = 256
    for n in (16, 24, 44, 56, 72):
        g = torch.Generator(device="cpu").manual_seed(n)
        a = torch.randn(n, b, b, generator=g) * 0.02
        q = (a - a.mT).cuda().bfloat16().contiguous()
        gb = torch.randn(n, b, b, generator=g).cuda().bfloat16()
        u = torch.baddbmm(q, q, q, beta=2); u.diagonal(dim1=-2, dim2=-1).add_(1); v = u - 2 * q
        s = R.bgemm([(1, q, q)])
        cases = {"ours_fwd": lambda: R.cayley_forward(q, 3), "cublas_fwd": lambda: fwd_cublas(q),
                 "ours_bwd": lambda: R.cayley_backward_dq(q, gb, 3), "cublas_bwd": lambda: bwd_cublas(q, gb),
                 "ours_bwd_keep": lambda: R.cayley_backward_dq(q, gb, 3, s),
                 "cublas_bwd_keep": lambda: bwd_cublas(q, gb, (u, v))}
        ref64 = R.cayley_forward(q.double().cpu(), 3)
        for name, fn in cases.items():
            fn()
            torch.cuda.synchronize()
            ms = tt.do_bench_cudagraph(fn, rep=100, return_mode="median")
            row = {"n": n, "case": name, "us": ms * 1e3}
            if name.endswith("fwd"):
                row["rel_err_vs_f64"] = float((fn().double().cpu() - ref64).norm() / ref64.norm())
            print(json.dumps(row), file=out, flush=True)
            print(n, name, round(ms * 1e3, 1), "us", row.get("rel_err_vs_f64", ""))
