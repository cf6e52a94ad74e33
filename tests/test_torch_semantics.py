"""Where torch defines a behaviour, handgrad's ops match it: NaN and inf, empty tensors, dtypes.

The matrix (handgrad.check: rows labelled "NaN/inf", the empty rows) compares every op with the
native one on such inputs; the tests here pin the cases people meet first against torch itself.
"""

import math

import pytest
import torch
import torch.nn.functional as F

import handgrad as hg
from handgrad.check import CASES, run_check

nan, inf = math.nan, math.inf
f64 = dict(dtype=torch.float64)


def _value_and_grads(f, *inputs, grad_out=None):
    xs = [torch.tensor(x, **f64).requires_grad_() for x in inputs]
    out = f(*xs)
    grads = torch.autograd.grad(out, xs, torch.ones_like(out) if grad_out is None else grad_out)
    return [out.detach(), *grads]


def _assert_same(hand, native):
    for h, n in zip(hand, native):
        torch.testing.assert_close(h, n, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("a, b", [(nan, 0.0), (0.0, nan), (nan, nan), (nan, inf), (-inf, nan), (inf, inf), (1.0, -inf)])
def test_maximum_propagates_nan_and_routes_its_gradient_like_torch(a, b):
    # torch: NaN on either side gives NaN, and both inputs get the whole gradient there
    _assert_same(_value_and_grads(hg.maximum, [a], [b]), _value_and_grads(torch.maximum, [a], [b]))


def test_maximum_of_nan_and_zero_is_nan_in_both_orders():
    x, zero = torch.tensor([nan]), torch.tensor([0.0])
    assert hg.maximum(x, zero).isnan().all() and hg.maximum(zero, x).isnan().all()


@pytest.mark.parametrize("op", ["relu", "sigmoid"])
def test_activation_values_and_gradients_at_nan_inf_and_huge_equal_torch(op):
    x = [nan, inf, -inf, 1e308, -1e308, 0.0, -0.0, 1.0, -1.0]
    native = {"relu": torch.relu, "sigmoid": torch.sigmoid}[op]
    _assert_same(_value_and_grads(getattr(hg, op), x), _value_and_grads(native, x))


def test_relu_passes_the_gradient_at_a_nan_input_as_torch_does():
    x = torch.tensor([nan, -1.0, 2.0], requires_grad=True)
    hg.relu(x).sum().backward()
    assert x.grad.tolist() == [1.0, 0.0, 1.0]


def test_relu_jvp_at_nan_equals_torch():
    x, t = torch.tensor([nan, -1.0, 2.0, 0.0], **f64), torch.full((4,), 3.0, **f64)
    torch.testing.assert_close(torch.func.jvp(hg.relu, (x,), (t,))[1], torch.func.jvp(torch.relu, (x,), (t,))[1])


def test_relu_with_inf_upstream_gradient_differs_from_torch_only_where_documented():
    # grad · mask, not a select: an inf upstream gradient at a unit whose output is 0 gives NaN there
    # (torch gives 0); everywhere else the two agree exactly. The README lists this difference.
    x = [-1.0, -1.0, 2.0, nan, 0.0]
    up = torch.tensor([inf, 1.0, inf, 2.0, nan], **f64)
    hand = _value_and_grads(hg.relu, x, grad_out=up)[1]
    native = _value_and_grads(torch.relu, x, grad_out=up)[1]
    assert hand[0].isnan() and native[0] == 0 and native[4] == 0 and hand[4].isnan()
    _assert_same(hand[1:4], native[1:4])


def test_mse_jvp_at_huge_inputs_follows_torchs_order():
    # 2 (a - y) overflows in the first element: torch's two terms give inf - inf = NaN there
    pred, target = torch.tensor([1.0, inf], **f64), torch.tensor([1e308, -inf], **f64)
    tangents = (torch.tensor([1.0, 2.0], **f64), torch.tensor([0.5, -1.0], **f64))
    hand = torch.func.jvp(hg.mse_loss, (pred, target), tangents)[1]
    native = torch.func.jvp(torch.nn.functional.mse_loss, (pred, target), tangents)[1]
    torch.testing.assert_close(hand, native, equal_nan=True)


def test_every_op_has_extremal_rows_compared_with_native_only():
    for op in hg.OP_NAMES:
        rows = [c for c in CASES if c.op == op and c.label.startswith("NaN/inf")]
        assert rows, op
        for row in rows:
            assert row.skip_reason("grad") and row.skip_reason("gradgrad")
            assert row.skip_reason("shapes") is None
        assert any(row.extreme_upstream for row in rows), op


@pytest.mark.parametrize("case", [c for c in CASES if c.label.startswith("NaN/inf")], ids=lambda c: c.name)
def test_extremal_rows_skip_the_numerical_checks_with_a_reason(case):
    result = run_check(case, "grad")
    assert result.status == "skip" and "finite differences" in result.message


# ---------------------------------------------------------------------------------------------
# zero-size dimensions
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("x_shape, out, bias", [
    ((4, 0), 3, True), ((4, 0), 3, False), ((0,), 3, True), ((4, 2), 0, True), ((0, 2), 3, True),
    ((2, 0, 2), 3, True), ((0, 0), 0, True),
], ids=["0 features", "0 features no bias", "vector 0 features", "0 outputs", "0 rows", "3-d 0 rows", "all 0"])
def test_affine_with_zero_size_dimensions_equals_linear(x_shape, out, bias):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(x_shape, generator=g, **f64)
    w = torch.randn(out, x_shape[-1], generator=g, **f64)
    b = torch.randn(out, generator=g, **f64) if bias else None
    args = [t for t in (x, w, b) if t is not None]
    results = []
    for f in (hg.affine, torch.nn.functional.linear):
        leaves = [t.clone().requires_grad_() for t in args]
        y = f(*leaves)
        results.append([y.detach(), *torch.autograd.grad(y, leaves, torch.ones_like(y))])
    for h, n in zip(*results):
        assert h.shape == n.shape and h.dtype == n.dtype
        torch.testing.assert_close(h, n, rtol=1e-12, atol=1e-12)


def test_cross_entropy_with_no_samples_and_no_classes_is_nan_like_torch():
    logits = torch.zeros(0, 0, requires_grad=True)
    target = torch.zeros(0, dtype=torch.long)
    loss = hg.cross_entropy(logits, target)
    assert loss.isnan() and torch.nn.functional.cross_entropy(logits, target).isnan()
    loss.backward()
    assert logits.grad.shape == (0, 0)


# ---------------------------------------------------------------------------------------------
# dtypes
# ---------------------------------------------------------------------------------------------

_F = torch.nn.functional
_DTYPES = [torch.float32, torch.float64, torch.bfloat16]


_COMBOS = [(a, b, c) for a in _DTYPES for b in _DTYPES for c in (*_DTYPES, None)]


@pytest.mark.parametrize("autocast", [False, True], ids=["plain", "autocast"])
@pytest.mark.parametrize("dx, dw, db", _COMBOS, ids=["-".join(str(d).replace("torch.", "") for d in c) for c in _COMBOS])
def test_affine_refuses_exactly_the_dtypes_linear_refuses(dx, dw, db, autocast):
    x, w = torch.randn(4, 3, dtype=dx), torch.randn(2, 3, dtype=dw)
    b = None if db is None else torch.randn(2, dtype=db)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        try:
            expected = _F.linear(x, w, b)
        except RuntimeError:
            expected = None
        if expected is None:
            with pytest.raises(TypeError, match="affine: x, weight and bias must have one dtype"):
                hg.affine(x, w, b)
        else:
            assert hg.affine(x, w, b).dtype == expected.dtype


@pytest.mark.parametrize("op", ["affine", "mse_loss", "cross_entropy", "l2_penalty"])
def test_autocast_leaves_float64_alone_as_torch_does(op):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4, 3, generator=g, **f64)
    args = {"affine": (a, torch.randn(2, 3, generator=g, **f64)), "mse_loss": (a, a.flip(0)),
            "cross_entropy": (a, torch.tensor([0, 2, 1, 0])), "l2_penalty": ([a], 0.1)}[op]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        hand, native = getattr(hg, op)(*args), getattr(hg.get_ops("native"), op)(*args)
    assert native.dtype == torch.float64 and hand.dtype == torch.float64
    torch.testing.assert_close(hand, native)


def test_mixed_dtype_gradients_keep_each_inputs_dtype_when_backward_is_called_directly():
    for case in CASES:
        if case.label.startswith("mixed dtypes"):
            cells = run_check(case, "shapes"), run_check(case, "shapes_ac")
            assert [r.status for r in cells] == ["ok", "ok"], (case.name, cells)


# ---------------------------------------------------------------------------------------------
# memory: a hand op keeps no more alive for backward than the native op does
# ---------------------------------------------------------------------------------------------


def _saved_bytes(fn, *args) -> int:
    """Bytes of the distinct storages ``fn`` saves for backward (seen through saved_tensors_hooks)."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(*args)
    return sum(storages.values())


@pytest.mark.parametrize("needs", ["x", "weight", "x and weight"])
def test_affine_saves_no_more_than_linear_whichever_gradients_are_needed(needs):
    # NOTE: a frozen weight (fine-tuning, a probe) needs no dW, so neither op may keep x alive for it
    x = torch.randn(64, 32, requires_grad="x" in needs)
    weight = torch.randn(16, 32, requires_grad="weight" in needs)
    bias = torch.randn(16, requires_grad=True)
    assert _saved_bytes(hg.affine, x, weight, bias) <= _saved_bytes(F.linear, x, weight, bias)
