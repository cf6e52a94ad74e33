"""Property-based tests: random shapes, broadcasts and values, hand against native."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from handgrad.check import Case, run_case
from handgrad.functional import get_ops

HAND, NATIVE = get_ops("hand"), get_ops("native")


@st.composite
def broadcast_pair(draw):
    """Two shapes that broadcast: a common shape with dims dropped from the front or set to 1."""
    common = draw(st.lists(st.integers(0, 4), min_size=0, max_size=4))

    def variant():
        shape = list(common[draw(st.integers(0, len(common))):])
        return tuple(1 if draw(st.booleans()) else n for n in shape)

    return variant(), variant()


def _tensor(shape, seed, dtype):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64).to(dtype).requires_grad_()


def _as_case(op, make):
    return Case(op, "hypothesis", make)


def _native_and_shapes_ok(case, inputs, columns=("native64", "shapes")) -> bool:
    """The matrix's native comparison and direct backward check, on these inputs (in their own dtype)."""
    cells = run_case(case, "cpu", columns, inputs=inputs)
    return all(r.status == "ok" for r in cells.values())


@pytest.mark.parametrize("op", ["add", "mul", "maximum"])
@given(shapes=broadcast_pair(), seed=st.integers(0, 2**16), dtype=st.sampled_from([torch.float64, torch.float32]))
def test_binary_ops_match_native_on_random_broadcasts(op, shapes, seed, dtype):
    sa, sb = shapes
    # NOTE: continuous random values: a tie in maximum has probability zero.
    case = _as_case(op, lambda d, dev, g: (_tensor(sa, seed, d), _tensor(sb, seed + 1, d)))
    inputs = case.make(dtype, "cpu", None)
    assert _native_and_shapes_ok(case, inputs)


@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=3), number=st.floats(-10, 10),
       first=st.booleans(), op=st.sampled_from(["add", "mul"]))
def test_number_operands(shape, number, first, op):
    x = _tensor(tuple(shape), 0, torch.float64)
    args = (number, x) if first else (x, number)
    out = getattr(HAND, op)(*args)
    torch.testing.assert_close(out, getattr(NATIVE, op)(*args))
    (grad,) = torch.autograd.grad(out.sum(), x)
    expected = torch.ones_like(x) if op == "add" else torch.full_like(x, number)
    torch.testing.assert_close(grad, expected)


@given(lead=st.lists(st.integers(0, 3), max_size=3), fin=st.integers(1, 6), fout=st.integers(1, 6),
       bias=st.booleans(), seed=st.integers(0, 2**16), dtype=st.sampled_from([torch.float64, torch.float32]))
def test_affine_matches_linear_for_any_leading_dims(lead, fin, fout, bias, seed, dtype):
    def make(d, dev, g):
        x, w = _tensor((*lead, fin), seed, d), _tensor((fout, fin), seed + 1, d)
        return (x, w, _tensor((fout,), seed + 2, d)) if bias else (x, w)

    case = _as_case("affine", make)
    inputs = make(dtype, "cpu", None)
    assert _native_and_shapes_ok(case, inputs)


@given(values=st.lists(st.floats(-1e4, 1e4, allow_nan=False), min_size=1, max_size=20),
       dtype=st.sampled_from([torch.float16, torch.bfloat16, torch.float32, torch.float64]))
def test_sigmoid_is_finite_and_matches_native_for_any_finite_input(values, dtype):
    x = torch.tensor(values, dtype=torch.float64).to(dtype)
    y = HAND.sigmoid(x)
    assert torch.isfinite(y).all()
    assert ((y >= 0) & (y <= 1)).all()
    tol = {torch.float16: 1e-3, torch.bfloat16: 8e-3, torch.float32: 1e-6, torch.float64: 1e-15}[dtype]
    torch.testing.assert_close(y.double(), torch.sigmoid(x.double()).to(dtype).double(), atol=tol, rtol=tol)


@given(n=st.integers(1, 6), c=st.integers(2, 6), scale=st.sampled_from([1.0, 100.0, 1e4]),
       seed=st.integers(0, 2**16))
def test_cross_entropy_matches_native_and_is_stable(n, c, scale, seed):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(n, c, generator=g, dtype=torch.float64) * scale).requires_grad_()
    target = torch.randint(0, c, (n,), generator=g)
    case = _as_case("cross_entropy", lambda d, dev, gg: (logits.to(d).detach().requires_grad_(), target))
    for dtype in (torch.float64, torch.float32):
        inputs = case.make(dtype, "cpu", None)
        out = HAND.cross_entropy(*inputs)
        assert torch.isfinite(out)
        assert _native_and_shapes_ok(case, inputs, ("native64",))
