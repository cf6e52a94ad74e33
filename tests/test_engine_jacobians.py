"""grad, gradgrad and fwd_ad judge gradcheck's test on the engine's own Jacobians (computed once per row)
instead of calling torch's gradcheck: each verdict must be the one torch.autograd.gradcheck gives."""

from __future__ import annotations

import pytest
import torch

from handgrad.testing import check_function
from handgrad.testing.numerics import ATOL, EPS, RTOL, jacobian_mismatch, jacobians

X = torch.randn(3, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)


class Cube(torch.autograd.Function):
    """y = x^3; dy/dx = 3 x^2, written in torch ops (twice differentiable); jvp 3 x^2 t."""

    @staticmethod
    def forward(x):
        return x**3

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])
        ctx.save_for_forward(inputs[0])

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * 3 * x**2

    @staticmethod
    def jvp(ctx, tx):
        (x,) = ctx.saved_tensors
        return tx * 3 * x**2


class CubeTwiceAsSteep(Cube):
    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * 6 * x**2  # the bug: a factor of 2


class CubeNaN(Cube):
    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * 3 * x**2 * torch.where(x > 0.5, float("nan"), 1.0)  # the bug: NaN where x > 0.5


class CubeNotReentrant(Cube):
    """backward changes its own state: the second backward on the same graph differs (retain_graph)."""

    @staticmethod
    def setup_context(ctx, inputs, output):
        Cube.setup_context(ctx, inputs, output)
        ctx.calls = 0

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        ctx.calls += 1
        return grad * 3 * x**2 * (1 + 1e-3 * (ctx.calls - 1))


class CubeWrongJvp(Cube):
    @staticmethod
    def jvp(ctx, tx):
        (x,) = ctx.saved_tensors
        return tx * 3 * x  # the bug: x, not x^2


class CubeDetachedBackward(Cube):
    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return (grad * 3 * x**2).detach()  # the bug: not differentiable, silently


def _torch(check, cls, **flags) -> bool:
    x = X.clone().requires_grad_()
    return check(cls.apply, (x,), eps=EPS, atol=ATOL, rtol=RTOL, raise_exception=False, **flags)


@pytest.mark.parametrize("cls", [Cube, CubeTwiceAsSteep, CubeNaN])
def test_the_jacobian_criterion_agrees_with_gradcheck(cls):
    x = X.clone().requires_grad_()
    mismatch = jacobian_mismatch(jacobians(lambda y: (cls.apply(y),), [x]), ["out"], [x.shape], ["input 0"], [x.shape])
    assert (mismatch is None) == _torch(torch.autograd.gradcheck, cls, check_undefined_grad=False)
    assert (mismatch is None) == (cls is Cube)


@pytest.mark.parametrize("cls, check, words", [
    (Cube, None, None),
    (CubeTwiceAsSteep, "grad", "2 times the true one"),
    (CubeNaN, "grad", "nan"),
    (CubeNotReentrant, "grad", "not reentrant"),
    (CubeWrongJvp, "fwd_ad", "jvp of out"),
    (CubeDetachedBackward, "gradgrad", "backward's own derivative"),
])
def test_each_numerical_check_fails_where_torchs_gradcheck_does(cls, check, words):
    report = check_function(cls.apply, [(X,)], dtypes=(), variants=(), checks=("grad", "gradgrad", "fwd_ad"))
    statuses = {r.check: r.status for r in report.results}
    torch_ok = {"grad": _torch(torch.autograd.gradcheck, cls, check_undefined_grad=False),
                "gradgrad": _torch(torch.autograd.gradgradcheck, cls),
                "fwd_ad": _torch(torch.autograd.gradcheck, cls, check_forward_ad=True, check_backward_ad=False,
                                 check_undefined_grad=False)}
    if check is None:
        assert set(statuses.values()) == {"ok"} and all(torch_ok.values()), str(report)
        return
    assert statuses[check] == "FAIL", str(report)
    assert not torch_ok[check]
    assert words in str(report).lower(), str(report)


def test_gradgrad_runs_on_the_float64_and_batch_rows_not_on_the_layout_only_ones():
    report = check_function(CubeDetachedBackward.apply, [(X,)], dtypes=(), checks="gradgrad",
                            variants=("transposed", "strided", "batch"))
    rows = {r.row for r in report.results}
    assert rows == {"(3, 4) float64", "(3, 4) batch 1"}, str(report)
    assert {r.status for r in report.results} == {"FAIL"}, str(report)
