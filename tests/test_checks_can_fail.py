"""Proof that the shared check helpers catch a wrong backward.

Each broken Function below differs from the real one in a single deliberate mistake; the helper
that guards against that kind of mistake must report a failure.
"""

import torch

from handgrad import functions as fn
from handgrad.check import CASES, check_backward_shapes, check_gradients, check_parity


def _case(op, label):
    return next(c for c in CASES if c.op == op and c.label == label)


class WrongSignMul(fn.Mul):
    @staticmethod
    def backward(ctx, grad):
        grad_a, grad_b = fn.Mul.backward(ctx, grad)
        return (None if grad_a is None else -grad_a), grad_b


class UnreducedAdd(fn.Add):
    @staticmethod
    def backward(ctx, grad):
        # the mistake: the broadcast gradient is returned unsummed
        return grad, grad


class ForgetfulAffine(fn.Affine):
    @staticmethod
    def backward(ctx, grad):
        grad_x, grad_w, grad_b = fn.Affine.backward(ctx, grad)
        return grad_x, grad_w, None if grad_b is None else grad_b * 0.5


class NonDifferentiableSigmoid(fn.Sigmoid):
    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        # the mistake: detaching breaks double backward while first-order stays right
        return grad * (y * (1 - y)).detach()


def _ops_with(**overrides):
    from types import SimpleNamespace

    from handgrad.functional import get_ops

    ops = vars(get_ops("hand")).copy()
    ops.update(overrides)
    return SimpleNamespace(**ops)


def test_gradcheck_catches_a_wrong_sign():
    ops = _ops_with(mul=lambda a, b: WrongSignMul.apply(a, b))
    result = check_gradients(_case("mul", "matrix"), ops, "grad")
    assert not result.ok
    assert "Jacobian mismatch" in result.message


def test_parity_catches_a_wrong_sign_in_float64_and_float32():
    ops = _ops_with(mul=lambda a, b: WrongSignMul.apply(a, b))
    for dtype in (torch.float64, torch.float32):
        assert not check_parity(_case("mul", "matrix"), dtype, hand=ops).ok


def test_gradcheck_catches_a_halved_bias_gradient():
    ops = _ops_with(affine=lambda x, w, b=None: ForgetfulAffine.apply(x, w, b))
    assert not check_gradients(_case("affine", "matrix + bias"), ops, "grad").ok


def test_a_missing_broadcast_reduction_slips_past_gradcheck_but_not_the_shape_check():
    case = _case("add", "(2,1)x(2,)")
    ops = _ops_with(add=lambda a, b: UnreducedAdd.apply(a, b))
    # autograd quietly sums the wrong-shaped gradient, so gradcheck cannot see the bug ...
    assert check_gradients(case, ops, "grad").ok
    # ... but calling backward directly does
    result = check_backward_shapes(case, function=UnreducedAdd)
    assert not result.ok
    assert "gradient shape" in result.message
    assert check_backward_shapes(case).ok


def test_gradgradcheck_catches_a_backward_that_is_not_differentiable():
    ops = _ops_with(sigmoid=lambda x: NonDifferentiableSigmoid.apply(x))
    case = _case("sigmoid", "matrix")
    assert check_gradients(case, ops, "grad").ok
    assert not check_gradients(case, ops, "gradgrad").ok


class NanHidingMaximum(fn.Maximum):
    @staticmethod
    def forward(a, b):
        # the mistake: a NaN in a is replaced by b (where(a ≥ b, a, b) is false at a NaN)
        return torch.where(a >= b, a, b)


class SignMaskReLU(fn.ReLU):
    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        # the mistake: sign(NaN) = 0 in torch, so the gradient stops at a NaN input
        return grad * y.sign()


def test_parity_on_nan_rows_catches_a_maximum_that_hides_nan_and_a_relu_that_stops_at_nan():
    broken = {
        "maximum": _ops_with(maximum=lambda a, b: NanHidingMaximum.apply(a, b)),
        "relu": _ops_with(relu=lambda x: SignMaskReLU.apply(x)),
    }
    for op, ops in broken.items():
        for dtype in (torch.float64, torch.float32):
            assert check_parity(_case(op, "NaN/inf"), dtype).ok
            result = check_parity(_case(op, "NaN/inf"), dtype, hand=ops)
            assert not result.ok and "differs from native" in result.message
        # on finite inputs the broken ops are right, so only the NaN rows can tell
        assert check_parity(_case(op, "matrix"), torch.float64, hand=ops).ok


class UncastMul(fn.Mul):
    @staticmethod
    def backward(ctx, grad):
        a, b = fn.Mul._operands(ctx)
        # the mistake: the gradients keep the promoted dtype instead of each input's own
        return grad * b, grad * a


class NoCastBackAffine(fn.Affine):
    @staticmethod
    @fn.autocast_backward
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        need = ctx.needs_input_grad
        # the mistake: under autocast the gradients stay in the autocast dtype (no cast_back)
        return (grad.matmul(weight) if need[0] else None, grad.t().matmul(x) if need[1] else None,
                grad.sum(0) if need[2] else None)


def test_the_shape_check_catches_a_gradient_in_the_promoted_dtype_on_mixed_rows():
    case = _case("mul", "mixed dtypes x float16")
    assert check_backward_shapes(case).ok
    result = check_backward_shapes(case, function=UncastMul)
    assert not result.ok and "gradient dtype torch.float64 != input dtype torch.float16" in result.message
    # autograd casts the wrong dtype back silently, so a plain backward cannot tell
    a = torch.randn(3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float16, requires_grad=True)
    UncastMul.apply(a, b).sum().backward()
    assert b.grad.dtype == torch.float16


def test_the_autocast_shape_check_catches_a_missing_cast_back():
    case = _case("affine", "matrix + bias")
    assert check_backward_shapes(case, dtype=torch.float32, function=NoCastBackAffine).ok  # fine without autocast
    result = check_backward_shapes(case, dtype=torch.float32, function=NoCastBackAffine, autocast=True)
    assert not result.ok and "gradient dtype torch.bfloat16 != input dtype torch.float32" in result.message
    assert check_backward_shapes(case, dtype=torch.float32, autocast=True).ok


class NaiveSigmoid(fn.Sigmoid):
    @staticmethod
    def forward(x):
        # the mistake: e^-x overflows float16 for x < -11.1, so the tail underflows to 0
        return 1 / (1 + torch.exp(-x))


class OverflowingSigmoid(fn.Sigmoid):
    @staticmethod
    def forward(x):
        # the mistake: e^x / (1 + e^x) is inf / inf = NaN once e^x overflows (x = 100 in float32)
        return torch.exp(x) / (1 + torch.exp(x))


class WinnerTakesTiesMaximum(fn.Maximum):
    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        # the mistake: a tie gives a the whole gradient instead of half to each side
        return grad * (a >= b).to(grad.dtype), grad * (a < b).to(grad.dtype)


def test_the_new_rows_catch_float16_underflow_overflow_nan_and_a_wrong_tie_share():
    broken = [
        ("sigmoid", "float16 tail [-17,-11]", _ops_with(sigmoid=lambda x: NaiveSigmoid.apply(x))),
        ("sigmoid", "±100, ±1e4", _ops_with(sigmoid=lambda x: OverflowingSigmoid.apply(x))),
        ("maximum", "ties", _ops_with(maximum=lambda a, b: WinnerTakesTiesMaximum.apply(a, b))),
    ]
    for op, label, ops in broken:
        assert check_parity(_case(op, label), torch.float32).ok
        assert not check_parity(_case(op, label), torch.float32, hand=ops).ok, (op, label)
        assert check_parity(_case(op, "matrix"), torch.float32, hand=ops).ok  # ordinary rows miss it
