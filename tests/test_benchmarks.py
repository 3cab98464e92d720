"""pytest-benchmark microbenchmarks: one layer forward+backward per method.

CPU in CI (`tox -e bench`); the same benchmarks on CUDA with `-m "benchmark and gpu"`. Each benchmark
also checks its output against nn.Linear on the effective weight, so a fast wrong kernel cannot pass.
"""

import pytest
import torch

from poetx_bench.reference.poet import POETLinear
from poetx_bench.reference.poetx import POETXLinear

SHAPE = (256, 512, 64)  # in, out, block size: small enough for CPU
TOKENS = 128


def make(method, device, dtype):
    fin, fout, b = SHAPE
    if method == "linear":
        return torch.nn.Linear(fin, fout, bias=False, device=device, dtype=dtype)
    if method == "poet":
        layer = POETLinear(fin, fout, b, device=device, dtype=dtype)
    else:
        layer = POETXLinear(fin, fout, b, mode=method.split("-")[1], device=device, dtype=dtype)
    layer.redraw_permutations()
    with torch.no_grad():
        layer.skew_in.normal_(0, 1e-2)
        layer.skew_out.normal_(0, 1e-2)
    return layer


def _bench(benchmark, method, device, dtype):
    torch.manual_seed(0)
    layer = make(method, device, dtype)
    x = torch.randn(TOKENS, SHAPE[0], device=device, dtype=dtype, requires_grad=True)
    gy = torch.randn(TOKENS, SHAPE[1], device=device, dtype=dtype)

    def step():
        y = layer(x)
        y.backward(gy)
        if device == "cuda":
            torch.cuda.synchronize()
        return y

    y = benchmark(step)
    w = layer.weight if method == "linear" else layer.effective_weight()
    torch.testing.assert_close(y, x.detach() @ w.detach().T, rtol=1e-3, atol=1e-3)


@pytest.mark.benchmark
@pytest.mark.parametrize("method", ["linear", "poet", "poetx-fast", "poetx-mem"])
def test_layer_fwd_bwd_cpu(benchmark, method):
    benchmark.group = "layer-fwd-bwd-cpu"
    _bench(benchmark, method, "cpu", torch.float32)


@pytest.mark.benchmark
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("method", ["linear", "poet", "poetx-fast", "poetx-mem"])
def test_layer_fwd_bwd_gpu(benchmark, method):
    benchmark.group = "layer-fwd-bwd-gpu"
    _bench(benchmark, method, "cuda", torch.float32)
