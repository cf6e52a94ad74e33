"""Proof that the matrix's columns (the checks of handgrad.testing) catch a wrong backward.

Each broken Function below differs from the real one in a single deliberate mistake; the column
that guards against that kind of mistake must report a failure, on the same row where the real
op passes.
"""

import torch

from handgrad import functions as fn
from handgrad.check import CASES, run_check


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
    assert run_check(_case("mul", "matrix"), "grad").ok
    result = run_check(_case("mul", "matrix"), "grad", hand=ops)
    assert result.status == "FAIL"
    assert "/ d input 0[" in result.message and "numerical" in result.message, result.message


def test_parity_catches_a_wrong_sign_in_float64_and_float32():
    ops = _ops_with(mul=lambda a, b: WrongSignMul.apply(a, b))
    for column in ("native64", "native32"):
        assert run_check(_case("mul", "matrix"), column).ok
        result = run_check(_case("mul", "matrix"), column, hand=ops)
        assert result.status == "FAIL" and "grad: grad of input 0" in result.message, result.message


def test_gradcheck_catches_a_halved_bias_gradient():
    ops = _ops_with(affine=lambda x, w, b=None: ForgetfulAffine.apply(x, w, b))
    assert run_check(_case("affine", "matrix + bias"), "grad").ok
    assert run_check(_case("affine", "matrix + bias"), "grad", hand=ops).status == "FAIL"


def test_a_missing_broadcast_reduction_slips_past_gradcheck_but_not_the_shape_check():
    case = _case("add", "(2,1)x(2,)")
    ops = _ops_with(add=lambda a, b: UnreducedAdd.apply(a, b))
    # autograd quietly sums the wrong-shaped gradient, so gradcheck cannot see the bug ...
    assert run_check(case, "grad", hand=ops).ok
    # ... but calling backward directly does
    result = run_check(case, "shapes", hand=ops)
    assert result.status == "FAIL"
    assert "UnreducedAdd.backward gradient 1 has shape (2, 2), its input (2,)" in result.message
    assert run_check(case, "shapes").ok


def test_gradgradcheck_catches_a_backward_that_is_not_differentiable():
    ops = _ops_with(sigmoid=lambda x: NonDifferentiableSigmoid.apply(x))
    case = _case("sigmoid", "matrix")
    assert run_check(case, "grad", hand=ops).ok
    assert run_check(case, "gradgrad").ok
    assert run_check(case, "gradgrad", hand=ops).status == "FAIL"


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
        for column in ("native64", "native32"):
            assert run_check(_case(op, "NaN/inf"), column).ok
            result = run_check(_case(op, "NaN/inf"), column, hand=ops)
            assert result.status == "FAIL" and "where input 0 = nan" in result.message, result.message
        # on finite inputs the broken ops are right, so only the NaN rows can tell
        assert run_check(_case(op, "matrix"), "native64", hand=ops).ok


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
    ops = _ops_with(mul=lambda a, b: UncastMul.apply(a, b))
    assert run_check(case, "shapes").ok
    result = run_check(case, "shapes", hand=ops)
    assert result.status == "FAIL"
    assert "gradient 1 has dtype torch.float64, its input torch.float16" in result.message, result.message
    # autograd casts the wrong dtype back silently, so a plain backward cannot tell
    a = torch.randn(3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float16, requires_grad=True)
    UncastMul.apply(a, b).sum().backward()
    assert b.grad.dtype == torch.float16


def test_the_autocast_shape_check_catches_a_missing_cast_back():
    case = _case("affine", "matrix + bias")
    ops = _ops_with(affine=lambda x, w, b=None: NoCastBackAffine.apply(x, w, b))
    float32 = case.make(torch.float32, "cpu", torch.Generator().manual_seed(0))
    assert run_check(case, "shapes", hand=ops, inputs=float32).ok  # fine without autocast
    result = run_check(case, "shapes_ac", hand=ops)
    assert result.status == "FAIL"
    assert "under autocast: NoCastBackAffine.backward gradient 0 has dtype torch.bfloat16, its input torch.float32" \
        in result.message, result.message
    assert run_check(case, "shapes_ac").ok


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
        assert run_check(_case(op, label), "native32").ok
        assert run_check(_case(op, label), "native32", hand=ops).status == "FAIL", (op, label)
        assert run_check(_case(op, "matrix"), "native32", hand=ops).ok  # ordinary rows miss it


class GreedyAffine(fn.Affine):
    @staticmethod
    def backward(ctx, grad):
        # the mistake: ctx.needs_input_grad ignored; without it the first layer computes dX, a whole GEMM
        x, weight = ctx.saved_tensors
        return grad.matmul(weight), grad.t().matmul(x), grad.sum(0)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, _ = inputs
        ctx.save_for_backward(x, weight)


class HoardingMul(fn.Mul):
    @staticmethod
    def setup_context(ctx, inputs, output):
        fn.Mul.setup_context(ctx, inputs, output)
        # the mistake: both tensors saved whatever the gradients need (mul(x, 2.5) keeps x alive)
        ctx.save_for_backward(*(x if isinstance(x, torch.Tensor) else None for x in inputs))


class WrongJvpSigmoid(fn.Sigmoid):
    @staticmethod
    def jvp(ctx, tx):
        (y,) = ctx.saved_tensors
        return tx * y  # the mistake: y, not y (1 - y)


def test_the_new_columns_catch_an_ignored_needs_input_grad_a_needless_saved_tensor_and_a_wrong_jvp():
    broken = [
        ("affine", "matrix + bias", "needs_grad", _ops_with(affine=lambda x, w, b=None: GreedyAffine.apply(x, w, b)),
         "GreedyAffine.backward returns a gradient where ctx.needs_input_grad is False"),
        ("mul", "tensor x number", "saved", _ops_with(mul=lambda a, b: HoardingMul.apply(a, b)),
         "saves 96 bytes for backward in 1 storages, the reference 0 bytes in 0"),
        ("sigmoid", "matrix", "fwd_ad", _ops_with(sigmoid=lambda x: WrongJvpSigmoid.apply(x)), "jvp of out"),
        ("sigmoid", "matrix", "native64", _ops_with(sigmoid=lambda x: WrongJvpSigmoid.apply(x)), "fwd_ad: jvp of out"),
    ]
    for op, label, column, ops, words in broken:
        assert run_check(_case(op, label), column).ok, (op, label, column)
        result = run_check(_case(op, label), column, hand=ops)
        assert result.status == "FAIL" and words in result.message, (column, result.message)
    # a tensor times a tensor needs both, as native mul saves both: only the number row can tell
    assert run_check(_case("mul", "matrix"), "saved", hand=_ops_with(mul=lambda a, b: HoardingMul.apply(a, b))).ok
