"""A corpus of custom autograd.Functions with one realistic bug each, modelled on public bug reports,
and correct counterparts. Used by tests/test_testing_bugs.py and bench/checker.py.

Each entry: (name, broken Function, correct Function, samples, reference, options, the check that must
fail, where the bug pattern was reported). The Functions are written here, in handgrad's style.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

_gen = torch.Generator().manual_seed(7)
X = torch.randn(4, 3, generator=_gen, dtype=torch.float64)
W = torch.randn(3, generator=_gen, dtype=torch.float64)
AWAY = X.sign() * (X.abs() + 0.2)  # |x| ≥ 0.2: away from relu's kink


class _Unary(torch.autograd.Function):
    """Base: forward(x) in the setup_context style, saving x."""

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])


# -- in-place writes (pytorch/pytorch#30454, #81417) ---------------------------------------------


class ReLU(_Unary):
    """y = max(x, 0); dy/dx = 1 where x > 0."""

    @staticmethod
    def forward(x):
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (x > 0).to(grad.dtype)


class ReLUGradInPlace(ReLU):
    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        grad[x <= 0] = 0  # the bug: writes into grad_output
        return grad


class Triple(torch.autograd.Function):
    """y = 3x; dy/dx = 3 (nothing saved)."""

    @staticmethod
    def forward(x):
        return 3 * x

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, grad):
        return 3 * grad


class TripleInPlace(Triple):
    @staticmethod
    def backward(ctx, grad):
        grad *= 3  # the bug (pytorch#30454's `grad_output *= 2.0`): right value, computed in grad_output
        return grad


class ScaleInputInPlace(torch.autograd.Function):
    """y = 2x, written as pytorch#30454's forward: `x *= 2.0; return x`."""

    @staticmethod
    def forward(ctx, x):
        return x * 2.0

    @staticmethod
    def backward(ctx, grad):
        return grad * 2.0


class ScaleInputInPlaceBug(ScaleInputInPlace):
    @staticmethod
    def forward(ctx, x):
        x *= 2.0  # the bug: the caller's tensor is doubled
        return x.clone()


# -- tensors on ctx (pytorch/pytorch#25340, #5569, #58509) --------------------------------------------


class Square(torch.autograd.Function):
    """y = x²; dy/dx = 2x."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return 2 * x * grad


class SquareCtxIntermediate(Square):
    @staticmethod
    def forward(ctx, x):
        ctx.twice = 2 * x  # the bug (pytorch#58509): an intermediate on ctx; double backward ignores it
        return x * x

    @staticmethod
    def backward(ctx, grad):
        return ctx.twice * grad


class Exp(torch.autograd.Function):
    """y = e^x; dy/dx = y (saved output)."""

    @staticmethod
    def forward(ctx, x):
        y = x.exp()
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return grad * y


class ExpCtxOutput(Exp):
    @staticmethod
    def forward(ctx, x):
        ctx.y = x.exp()  # the bug (pytorch#25340): the output on ctx, a reference cycle that leaks
        return ctx.y

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.y


# -- batch of one (BiDAF-pytorch#26, NVIDIA/tacotron2#303, vissl#179) ----------------------------------


class RowDot(torch.autograd.Function):
    """y_b = Σ_c x_bc w_c; dy/dx = w, dy/dw = Σ_b g_b x_b."""

    @staticmethod
    def forward(x, w):
        return x @ w

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx, grad):
        x, w = ctx.saved_tensors
        grad = grad.to(x.dtype)  # NOTE: under autocast grad arrives in the autocast dtype
        gx = grad.unsqueeze(-1) * w if ctx.needs_input_grad[0] else None
        return gx, grad @ x if ctx.needs_input_grad[1] else None


class RowDotSqueeze(RowDot):
    @staticmethod
    def backward(ctx, grad):
        x, w = ctx.saved_tensors
        grad = grad.to(x.dtype)
        g = grad.reshape(-1, 1).squeeze()  # the bug: with a batch of one, squeeze() drops the batch too
        gx = g.unsqueeze(-1) * w if ctx.needs_input_grad[0] else None
        return gx, grad @ x if ctx.needs_input_grad[1] else None


# -- broadcasting, factors, differentiability, overflow ------------------------------------------------


class BiasAdd(torch.autograd.Function):
    """y = x + b (b broadcast over rows); dy/dx = 1, dy/db = Σ over rows."""

    @staticmethod
    def forward(x, b):
        return x + b

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, grad):
        need = ctx.needs_input_grad
        return grad if need[0] else None, grad.sum(0) if need[1] else None


class BiasAddUnsummed(BiasAdd):
    @staticmethod
    def backward(ctx, grad):
        need = ctx.needs_input_grad
        return grad if need[0] else None, grad if need[1] else None  # the bug: the bias gradient is not summed to (C,)


class Mean(torch.autograd.Function):
    """y = mean(x); dy/dx = 1/n."""

    @staticmethod
    def forward(x):
        return x.mean()

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.shape, ctx.n = inputs[0].shape, inputs[0].numel()

    @staticmethod
    def backward(ctx, grad):
        return grad.expand(ctx.shape) / ctx.n


class MeanMissingN(Mean):
    @staticmethod
    def backward(ctx, grad):
        return grad.expand(ctx.shape).clone()  # the bug: the 1/n of the mean is missing


class Cube(_Unary):
    """y = x³; dy/dx = 3x²."""

    @staticmethod
    def forward(x):
        return x**3

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return 3 * x * x * grad


class CubeDetached(Cube):
    """The same, detached in backward (as code that goes through numpy is)."""

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (3 * x * x).detach()  # the bug: detached, so double backward sees a constant


class CubeOnce(Cube):
    """The same, declared @once_differentiable: correct."""

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (3 * x * x).detach()


class Sigmoid(torch.autograd.Function):
    """y = 1 / (1 + e^-x); dy/dx = y (1 - y) from the saved output."""

    @staticmethod
    def forward(x):
        return torch.sigmoid(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return grad * y * (1 - y)


class SigmoidOverflow(_Unary):
    @staticmethod
    def forward(x):
        return torch.sigmoid(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        e = torch.exp(-x)
        return grad * e / (1 + e) ** 2  # the bug: inf / inf = NaN once e^-x overflows


#: (name, broken, correct, samples, reference, options, the check that must fail, reported at)
CORPUS = [
    # NOTE: no extremal rows for relu: at NaN torch's relu passes the gradient on, this one does not
    ("relu grad_output[x<0]=0", ReLUGradInPlace, ReLU, [(AWAY,)], torch.relu, {"variants": ("transposed", "batch")},
     "untouched", "pytorch/pytorch#81417"),
    ("grad_output *= 3", TripleInPlace, Triple, [(X,)], lambda x: 3 * x, {}, "untouched", "pytorch/pytorch#30454"),
    ("x *= 2 in forward", ScaleInputInPlaceBug, ScaleInputInPlace, [(X,)], lambda x: 2 * x, {}, "untouched",
     "pytorch/pytorch#30454"),
    ("ctx.twice intermediate", SquareCtxIntermediate, Square, [(X,)], torch.square, {}, "saved", "pytorch/pytorch#58509"),
    ("ctx.y output", ExpCtxOutput, Exp, [(X,)], torch.exp, {}, "saved", "pytorch/pytorch#25340"),
    ("squeeze() batch of one", RowDotSqueeze, RowDot, [(X, W)], torch.matmul, {}, "shapes", "galsang/BiDAF-pytorch#26"),
    ("bias gradient unsummed", BiasAddUnsummed, BiasAdd, [(X, W)], torch.add, {}, "shapes", "DESIGN.md rule 4"),
    ("mean without 1/n", MeanMissingN, Mean, [(X,)], torch.mean, {}, "grad", "the 1/n of a mean"),
    ("detached backward", CubeDetached, CubeOnce, [(X,)], lambda x: x**3, {}, "gradgrad", "pytorch/pytorch#58509"),
    ("sigmoid backward overflows", SigmoidOverflow, Sigmoid, [(X,)], torch.sigmoid, {"elementwise": True}, "grad",
     "extremal inputs"),
]
