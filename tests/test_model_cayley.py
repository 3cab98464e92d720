"""cayley_scope = "model" (kernels/model_cayley.py): the blocks of every POET-X layer of a model computed in
a few batched Cayley evaluations per step give the same outputs and the same gradients as the per-layer
evaluation (same algebra and tiles, so equal to fp32 rounding), in chunks of any size, tails included; the
precomputed blocks are used once per forward. Runs the kernels under TRITON_INTERPRET=1 on CPU."""

from __future__ import annotations

import pytest
import torch
from torch import nn

pytest.importorskip("triton")
pytestmark = pytest.mark.usefixtures("triton_interpret")


def _model(seed):
    from poetx_bench.kernels import POETXTritonLinear

    torch.manual_seed(seed)
    layers = [POETXTritonLinear(64, 96, 32, mode="fast"), nn.GELU(),
              POETXTritonLinear(96, 80, 32, mode="mem"),  # output side 2 full blocks + a tail of 16
              nn.GELU(), POETXTritonLinear(80, 64, 32, mode="fast")]
    model = nn.Sequential(*layers)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, POETXTritonLinear):
                m.skew_in.normal_(0, 0.05)
                m.skew_out.normal_(0, 0.05)
    return model


def _loss_and_grads(model, x):
    loss = model(x).pow(2).mean()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("max_blocks", [2048, 7])
def test_model_scope_matches_layer_scope(max_blocks):
    from poetx_bench.kernels.model_cayley import attach

    x = torch.randn(20, 64, generator=torch.Generator().manual_seed(3))
    ref_loss, ref_grads = _loss_and_grads(_model(0), x)
    model = _model(0)
    hook = attach(model, "model", max_blocks=max_blocks)
    assert len(hook.layers) == 3
    hook._before_forward(model, (x,))  # the hook really hands every layer its blocks
    assert all(m._model_blocks is not None for m in hook.layers)
    for m in hook.layers:
        m._model_blocks = None
    assert (len(hook.chunks) == 1) == (max_blocks == 2048)
    loss, grads = _loss_and_grads(model, x)
    assert torch.allclose(loss, ref_loss, rtol=1e-6, atol=0)
    assert ref_grads.keys() == grads.keys() and any("skew" in k for k in grads)
    for k in ref_grads:
        assert torch.allclose(grads[k], ref_grads[k], rtol=1e-5, atol=1e-7), k
    # the precomputed blocks were consumed by the forward; a second step recomputes them
    assert all(m._model_blocks is None for m in hook.layers)
    model.zero_grad()
    loss2, _ = _loss_and_grads(model, x)
    assert torch.allclose(loss2, ref_loss, rtol=1e-6, atol=0)


def test_layer_scope_attaches_nothing_and_bad_scope_is_refused():
    from poetx_bench.kernels.model_cayley import attach

    assert attach(_model(0), "layer") is None
    with pytest.raises(ValueError, match="cayley_scope"):
        attach(_model(0), "step")


def test_cayley_into_a_given_buffer_matches():
    """CayleyFunction writing G into a caller's buffer (the side-stream path allocates it on the calling
    stream): the buffer itself is returned, with the same blocks and gradients as a fresh allocation."""
    from poetx_bench.kernels.rows import CayleyFunction
    from poetx_bench.reference.cayley import cayley_neumann, num_skew_params, skew_from_packed

    g = torch.Generator().manual_seed(5)
    pa = (torch.randn(2, num_skew_params(32), generator=g) * 0.1).requires_grad_()
    pb = (torch.randn(1, num_skew_params(32), generator=g) * 0.1).requires_grad_()
    gbar = torch.randn(3, 32, 32, generator=g)
    buf = torch.full((3, 32, 32), float("nan"))
    got = CayleyFunction.apply(32, 3, buf, pa, pb)
    assert got.data_ptr() == buf.data_ptr()
    (got * gbar).sum().backward()
    pa64, pb64 = (p.detach().double().requires_grad_() for p in (pa, pb))
    ref = torch.cat([cayley_neumann(skew_from_packed(p, 32), 3) for p in (pa64, pb64)])
    (ref * gbar.double()).sum().backward()
    for a, b_ in ((got, ref), (pa.grad, pa64.grad), (pb.grad, pb64.grad)):
        assert ((a.double() - b_).norm() / b_.norm()).item() < 1e-5


def test_set_cayley_stream_reaches_every_layer_and_rejects_unknown_values():
    from poetx_bench.kernels import set_cayley_stream

    model = _model(0)
    assert set_cayley_stream(model, "side") == 3
    assert {m.cayley_stream for m in model.modules() if hasattr(m, "cayley_stream")} == {"side"}
    with pytest.raises(ValueError, match="cayley_stream"):
        set_cayley_stream(model, "sideways")
    # on CPU the side stream does not exist: the same numbers as the main stream
    x = torch.randn(20, 64, generator=torch.Generator().manual_seed(3))
    ref_loss, _ = _loss_and_grads(_model(0), x)
    loss, _ = _loss_and_grads(model, x)
    assert torch.equal(loss, ref_loss)


@pytest.mark.gpu
@pytest.mark.parametrize("graph", [False, True])
def test_side_stream_matches_main_stream_on_gpu(graph):
    """cayley_stream = side on a GPU: the same kernels on a second stream give bit-identical losses and
    gradients to the main-stream run over three optimizer steps, eagerly and captured as one CUDA graph
    (stream fork/join inside the capture)."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from poetx_bench.capture import graph_callable
    from poetx_bench.kernels import POETXTritonLinear, set_cayley_stream

    def run(stream):
        torch.manual_seed(0)
        model = nn.Sequential(POETXTritonLinear(512, 768, 128, mode="fast"), nn.GELU(),
                              POETXTritonLinear(768, 512, 128, mode="mem")).cuda().bfloat16()
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, POETXTritonLinear):
                    m.skew_in.normal_(0, 0.02)
                    m.skew_out.normal_(0, 0.02)
        set_cayley_stream(model, stream)
        x = torch.randn(256, 512, device="cuda", dtype=torch.bfloat16, generator=torch.Generator("cuda").manual_seed(1))
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, capturable=graph)
        losses = []

        def step():
            opt.zero_grad(set_to_none=False)
            loss = model(x).float().pow(2).mean()
            loss.backward()
            opt.step()
            losses.append(loss.detach())

        call = graph_callable(step) if graph else step
        for _ in range(3):
            call()
        torch.cuda.synchronize()
        return torch.stack(losses[-3:]).cpu(), [p.detach().clone() for p in model.parameters()]

    ref_losses, ref_params = run("main")
    losses, params = run("side")
    assert torch.equal(losses, ref_losses)
    assert all(torch.equal(a, b) for a, b in zip(params, ref_params))
