"""torch.compile traces through the row design (kernels/ops.py registers its kernel entry points as
torch.library custom ops with fake implementations): one graph, no graph break, and the compiled forward and
backward equal eager. AOT autograd with the eager backend ("aot_eager") exercises the fake implementations
and the traced autograd Functions without a C++ compiler; the kernels run under TRITON_INTERPRET=1."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")
pytestmark = pytest.mark.usefixtures("triton_interpret")


@pytest.mark.parametrize("mode", ["fast", "mem"])
def test_compiled_layer_has_no_graph_break_and_matches_eager(mode):
    import torch._dynamo as dynamo

    from poetx_bench.kernels import POETXTritonLinear

    torch.manual_seed(0)
    layer = POETXTritonLinear(64, 80, 32, mode=mode)  # output side: 2 full blocks and a tail of 16
    with torch.no_grad():
        layer.skew_in.normal_(0, 0.05)
        layer.skew_out.normal_(0, 0.05)
    x = torch.randn(12, 64, requires_grad=True)

    def step(x):
        return layer(x).pow(2).mean()

    ref = step(x)
    ref.backward()
    grads = [x.grad.clone()] + [p.grad.clone() for p in layer.parameters() if p.grad is not None]
    layer.zero_grad()
    x.grad = None
    dynamo.reset()
    explained = dynamo.explain(step)(x)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons
    dynamo.reset()
    out = torch.compile(step, backend="aot_eager")(x)
    out.backward()
    got = [x.grad] + [p.grad for p in layer.parameters() if p.grad is not None]
    assert torch.allclose(out, ref, rtol=1e-6, atol=0)
    assert len(got) == len(grads) == 3
    for a, b in zip(got, grads):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)


def test_ops_are_registered_with_fake_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode

    import poetx_bench.kernels.rows  # noqa: F401  (registers the ops)

    with FakeTensorMode():
        x = torch.empty(7, 40)
        idx = torch.empty(40, dtype=torch.long)
        assert torch.ops.poetx.to_rows(x, idx, idx).shape == (40, 7)
        assert torch.ops.poetx.from_rows(torch.empty(40, 7), idx).shape == (7, 40)
        assert torch.ops.poetx.skew_unpack(torch.empty(3, 6), 4).shape == (3, 4, 4)
        assert torch.ops.poetx.skew_pack_grad(torch.empty(3, 4, 4)).shape == (3, 6)
        q = torch.empty(3, 4, 4)
        assert torch.ops.poetx.bgemm(q, q, None, None, None, None, q, None, [1.0], 2.0, 0.0, 1.0).shape == (3, 4, 4)
