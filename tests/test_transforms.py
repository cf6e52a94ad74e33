"""torch.func, autocast, torch.compile and devices, across the ops."""

import pytest
import torch

import handgrad as hg
from handgrad.functional import get_ops

HAND, NATIVE = get_ops("hand"), get_ops("native")


def _mlp_loss(ops, params, x, y, activation="relu", loss="ce"):
    w1, b1, w2, b2 = params
    h = getattr(ops, activation)(ops.affine(x, w1, b1))
    out = ops.affine(h, w2, b2)
    if loss == "ce":
        data = ops.cross_entropy(out, y)
    else:
        onehot = (y[:, None] == torch.arange(out.shape[-1], device=y.device)).to(out.dtype)
        data = ops.mse_loss(ops.sigmoid(out), onehot)
    return ops.add(data, ops.l2_penalty([w1, w2], 1e-2))


def _params(dtype=torch.float64, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = [(6, 5), (6,), (3, 6), (3,)]
    return [torch.randn(s, generator=g, dtype=torch.float64).to(dtype=dtype, device=device) for s in shapes]


@pytest.mark.parametrize("activation, loss", [("relu", "ce"), ("sigmoid", "mse")])
def test_per_sample_gradients_with_vmap_and_grad(activation, loss):
    params = _params()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(7, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (7,), generator=g)

    def one(ops):
        def f(p, xi, yi):
            return _mlp_loss(ops, p, xi[None], yi[None], activation, loss)
        return f

    hand = torch.func.vmap(torch.func.grad(one(HAND)), in_dims=(None, 0, 0))(params, x, y)
    native = torch.func.vmap(torch.func.grad(one(NATIVE)), in_dims=(None, 0, 0))(params, x, y)
    # a loop over samples with ordinary autograd is the reference
    for k in range(7):
        ps = [p.clone().requires_grad_() for p in params]
        _mlp_loss(HAND, ps, x[k:k + 1], y[k:k + 1], activation, loss).backward()
        for p, h, n in zip(ps, hand, native):
            torch.testing.assert_close(h[k], p.grad, rtol=1e-12, atol=1e-13)
            torch.testing.assert_close(n[k], p.grad, rtol=1e-10, atol=1e-12)


def test_jacrev_and_jacfwd_agree():
    params = _params()
    x = torch.randn(4, 5, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 1])
    f = lambda w1: _mlp_loss(HAND, [w1, *params[1:]], x, y)  # noqa: E731
    jr = torch.func.jacrev(f)(params[0])
    jf = torch.func.jacfwd(f)(params[0])
    jn = torch.func.jacrev(lambda w1: _mlp_loss(NATIVE, [w1, *params[1:]], x, y))(params[0])
    torch.testing.assert_close(jr, jf, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(jr, jn, rtol=1e-10, atol=1e-12)


def test_hessian_vector_product_double_backward():
    params = [p.requires_grad_() for p in _params()]
    x = torch.randn(4, 5, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 1])
    vs = [torch.randn_like(p) for p in params]
    results = []
    for ops in (HAND, NATIVE):
        grads = torch.autograd.grad(_mlp_loss(ops, params, x, y, "sigmoid"), params, create_graph=True)
        dot = sum((g * v).sum() for g, v in zip(grads, vs))
        results.append(torch.autograd.grad(dot, params))
    for h, n in zip(*results):
        torch.testing.assert_close(h, n, rtol=1e-10, atol=1e-12)


def _autocast_case(device, dtype):
    params = [p.requires_grad_() for p in _params(torch.float32, device)]
    x = torch.randn(8, 5, device=device)
    y = torch.randint(0, 3, (8,), device=device)
    outs = {}
    for name, ops in (("hand", HAND), ("native", NATIVE)):
        ps = [p.detach().clone().requires_grad_() for p in params]
        with torch.autocast(device, dtype=dtype):
            h = ops.relu(ops.affine(x, ps[0], ps[1]))
            logits = ops.affine(h, ps[2], ps[3])
            loss = ops.cross_entropy(logits, y)
        loss.backward()
        outs[name] = (h, logits, loss, [p.grad for p in ps])
    (hh, hl, hloss, hg_), (nh, nl, nloss, ng) = outs["hand"], outs["native"]
    assert hh.dtype == nh.dtype == dtype
    assert hl.dtype == nl.dtype == dtype
    assert hloss.dtype == nloss.dtype == torch.float32
    tol = 2e-2
    torch.testing.assert_close(hl.float(), nl.float(), rtol=tol, atol=tol)
    torch.testing.assert_close(hloss, nloss, rtol=tol, atol=tol)
    for a, b in zip(hg_, ng):
        assert a.dtype == b.dtype == torch.float32
        torch.testing.assert_close(a, b, rtol=5e-2, atol=5e-2)


def test_autocast_cpu_bfloat16():
    _autocast_case("cpu", torch.bfloat16)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_autocast_cuda_float16():
    _autocast_case("cuda", torch.float16)


def _expression(ops, x, w, b, y):
    h = ops.sigmoid(ops.affine(x, w, b))
    z = ops.maximum(ops.relu(ops.mul(ops.add(h, 0.5), 2.0)), h)
    return ops.add(ops.add(ops.cross_entropy(z, y), ops.mse_loss(h, z)), ops.l2_penalty([w], 0.1))


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compile_fullgraph_matches_eager(backend):
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(6, 4, generator=g)
    w0 = torch.randn(3, 4, generator=g)
    b0 = torch.randn(3, generator=g)
    y = torch.randint(0, 3, (6,), generator=g)
    results = []
    for compiled in (False, True):
        w, b = w0.clone().requires_grad_(), b0.clone().requires_grad_()
        fn = lambda w, b: _expression(HAND, x, w, b, y)  # noqa: E731
        if compiled:
            fn = torch.compile(fn, fullgraph=True, backend=backend)  # fullgraph: a break is an error
        out = fn(w, b)
        out.backward()
        results.append((out.detach(), w.grad, b.grad))
    for eager, comp in zip(*results):
        torch.testing.assert_close(comp, eager, rtol=1e-5, atol=1e-6)
    native = _expression(NATIVE, x, w0, b0, y)
    torch.testing.assert_close(results[1][0], native, rtol=1e-5, atol=1e-6)


def test_the_twins_share_the_ops_methods_and_only_the_compile_twin_lacks_jvp():
    from handgrad.twins import COMPILED, FAST, FUNCTIONS

    for name, cls in FUNCTIONS.items():
        assert "jvp" in cls.__dict__
        twin = COMPILED[name]
        assert "jvp" not in twin.__dict__
        assert twin.backward is cls.backward and twin.forward is cls.forward
        fast = FAST[name]
        assert fast.backward is cls.backward and fast.jvp is cls.jvp


def test_the_lowercase_api_runs_the_fast_twin_in_eager_code_and_the_op_under_transforms(monkeypatch):
    from handgrad import functions as fn
    from handgrad import twins

    calls = []

    class Spy(fn.ReLU):
        @staticmethod
        def forward(x):
            calls.append(x.shape)
            return fn.ReLU.forward(x)

    monkeypatch.setitem(twins.FUNCTIONS, "ReLU", Spy)
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    assert type(HAND.relu(x).grad_fn).__name__ == "ReLUFastBackward"
    assert calls == []  # eager: the twin, not the op
    out = torch.func.vmap(HAND.relu)(x.detach())
    assert calls, "vmap did not run the op itself"
    torch.testing.assert_close(out, torch.relu(x.detach()), rtol=0, atol=0)


def test_the_fast_twin_takes_every_argument_and_the_op_fills_in_defaults():
    from handgrad.functions import Affine
    from handgrad.twins import FAST

    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 3, generator=g, dtype=torch.float64, requires_grad=True)
    with pytest.raises(TypeError, match="takes all 3 arguments, got 2"):
        FAST["Affine"].apply(x, w)
    out = Affine.apply(x, w)  # the op itself binds bias=None
    torch.testing.assert_close(out, FAST["Affine"].apply(x, w, None), rtol=0, atol=0)
    out.sum().backward()
    torch.testing.assert_close(x.grad, torch.ones(4, 2, dtype=torch.float64) @ w.detach(), rtol=0, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_cuda_mlp_gradients_match_native_and_cpu():
    cpu = _params(torch.float64, "cpu")
    cuda = [p.cuda() for p in cpu]
    x = torch.randn(8, 5, dtype=torch.float64)
    y = torch.randint(0, 3, (8,))
    grads = {}
    for name, ops, ps, xx, yy in (("hand-cuda", HAND, cuda, x.cuda(), y.cuda()),
                                  ("native-cuda", NATIVE, cuda, x.cuda(), y.cuda()),
                                  ("hand-cpu", HAND, cpu, x, y)):
        ps = [p.clone().requires_grad_() for p in ps]
        _mlp_loss(ops, ps, xx, yy).backward()
        grads[name] = [p.grad for p in ps]
    for a, b, c in zip(grads["hand-cuda"], grads["native-cuda"], grads["hand-cpu"]):
        assert a.device.type == "cuda"
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(a.cpu(), c, rtol=1e-10, atol=1e-12)


def test_relu_subgradient_at_zero_matches_torch():
    x = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64, requires_grad=True)
    hg.relu(x).sum().backward()
    assert x.grad.tolist() == [0.0, 0.0, 1.0]


def test_ops_namespaces_have_the_same_names():
    assert set(vars(HAND)) == set(vars(NATIVE))
    for name in hg.OP_NAMES:
        assert callable(getattr(HAND, name)) and callable(getattr(NATIVE, name))


def test_ops_agree_when_the_cheap_autocast_gate_always_says_maybe(monkeypatch):
    # where torch lacks _is_any_autocast_enabled, every call takes the full per-device check
    from handgrad import autocast

    params = _params(torch.float32)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(6, 5, generator=g)
    y = torch.randint(0, 3, (6,), generator=g)

    def run():
        ps = [p.clone().requires_grad_() for p in params]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = _mlp_loss(HAND, ps, x, y)
        low.backward()
        plain = _mlp_loss(HAND, [p.detach() for p in params], x, y)
        return low.detach(), plain, [p.grad for p in ps]

    fast = run()
    monkeypatch.setattr(autocast, "_any_autocast", lambda: True)
    slow = run()
    for a, b in zip(fast[:2], slow[:2]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for a, b in zip(fast[2], slow[2]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert fast[2][0].dtype == torch.float32


def test_functions_holds_the_op_classes_only():
    # NOTE: the twins live in handgrad.twins (derived from the registry); functions.py has no shim back to them
    from handgrad import functions as fn

    for name in ("fast_twin", "compile_twin", "FUNCTIONS", "FAST", "COMPILED", "ALL_FUNCTIONS"):
        assert not hasattr(fn, name)
    assert set(fn.__all__) == {"Add", "Mul", "Maximum", "ReLU", "Sigmoid", "Affine", "L2Penalty", "CrossEntropy",
                               "MSELoss", "sum_to_shape"}
