"""The hand-written ops, one small ``torch.autograd.Function`` per op.

Every class follows the same shape:

* ``forward(*inputs)`` computes the value with plain tensor math (no ctx);
* ``setup_context(ctx, inputs, output)`` saves what ``backward`` and ``jvp`` need, nothing more;
* ``backward(ctx, grad)`` returns one gradient per input, each computed only when
  ``ctx.needs_input_grad`` asks for it, written in differentiable torch ops so that double
  backward works, and reduced to its input's exact shape and dtype;
* ``jvp(ctx, *tangents)`` is the forward-mode rule;
* ``generate_vmap_rule = True`` lets ``torch.func.vmap`` batch the Function.

Each class is declared as an op once, in :mod:`handgrad.functional` (its lowercase name, argument
checks, native counterpart and graph label: :mod:`handgrad.registry`); the lowercase op calls
``.apply`` of the class, or of a twin made from the same static methods (:mod:`handgrad.twins`).
Use the lowercase ops rather than these classes unless you are testing a backward directly. The
autocast plumbing lives in :mod:`handgrad.autocast`.
"""

from __future__ import annotations

import inspect
import math

import torch

from ._grad_utils import grad_like, meta_of, sum_to_shape
from .autocast import as_computed, autocast_backward, autocast_forward, autocast_inputs, autocast_metas, cast_back

# NOTE: every op class below is exported (see the end of the module), so adding one is one class.
__all__ = ["sum_to_shape"]


# ---------------------------------------------------------------------------------------------
# the base class
# ---------------------------------------------------------------------------------------------


class _Op(torch.autograd.Function):
    """Base of every handgrad op: batched by ``torch.func`` through a generated vmap rule."""

    generate_vmap_rule = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        forward = cls.__dict__.get("forward")
        if isinstance(forward, staticmethod):
            # NOTE: in the setup_context style, Function.apply binds the arguments with
            # inspect.signature(forward) on every call; computing that signature is most of a
            # custom op's fixed cost on CPU. A precomputed __signature__ is returned as is.
            forward.__func__.__signature__ = inspect.signature(forward.__func__)


# ---------------------------------------------------------------------------------------------
# add and multiply gates
# ---------------------------------------------------------------------------------------------


class Add(_Op):
    """z = a + b with broadcasting; dz/da = 1, dz/db = 1 (the add gate passes the gradient on)."""

    @staticmethod
    def forward(a, b):
        return a + b

    @staticmethod
    def setup_context(ctx, inputs, output):
        a, b = inputs
        ctx.metas = (meta_of(a), meta_of(b))
        ctx.out_meta = (output.shape, output.dtype)

    @staticmethod
    def backward(ctx, grad):
        meta_a, meta_b = ctx.metas
        grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_a = grad_like(grad, meta_a)
        if ctx.needs_input_grad[1]:
            grad_b = grad_like(grad, meta_b)
        return grad_a, grad_b

    @staticmethod
    def jvp(ctx, ta, tb):
        shape, dtype = ctx.out_meta
        out = ta if tb is None else tb if ta is None else ta + tb
        return out.to(dtype).expand(shape)


class Mul(_Op):
    """z = a * b with broadcasting; dz/da = b, dz/db = a (the multiply gate swaps its inputs)."""

    @staticmethod
    def forward(a, b):
        return a * b

    @staticmethod
    def setup_context(ctx, inputs, output):
        a, b = inputs
        # NOTE: dz/da needs b and dz/db needs a: each tensor is saved for backward only for the
        # other input's gradient (mul(tensor, number) saves nothing, as native mul). jvp needs
        # both; torch drops what save_for_forward holds once forward has run.
        need_a, need_b = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        tensors = tuple(x if isinstance(x, torch.Tensor) else None for x in inputs)
        ctx.save_for_backward(tensors[0] if need_b else None, tensors[1] if need_a else None)
        ctx.save_for_forward(*tensors)
        ctx.numbers = tuple(None if isinstance(x, torch.Tensor) else x for x in inputs)
        ctx.metas = (meta_of(a), meta_of(b))
        ctx.out_meta = (output.shape, output.dtype)

    @staticmethod
    def _operands(ctx):
        a, b = ctx.saved_tensors
        na, nb = ctx.numbers
        return (na if a is None else a), (nb if b is None else b)

    @staticmethod
    def backward(ctx, grad):
        a, b = Mul._operands(ctx)
        meta_a, meta_b = ctx.metas
        grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_a = grad_like(grad * b, meta_a)
        if ctx.needs_input_grad[1]:
            grad_b = grad_like(grad * a, meta_b)
        return grad_a, grad_b

    @staticmethod
    def jvp(ctx, ta, tb):
        a, b = Mul._operands(ctx)
        shape, dtype = ctx.out_meta
        out = None
        if ta is not None:
            out = ta * b
        if tb is not None:
            out = a * tb if out is None else out + a * tb
        return out.to(dtype).expand(shape)


# ---------------------------------------------------------------------------------------------
# max gate
# ---------------------------------------------------------------------------------------------


class Maximum(_Op):
    """z = max(a, b) elementwise; the gradient is routed to the larger input, split on ties.

    dz/da = [a > b] + ½[a = b], dz/db = [b > a] + ½[a = b] (torch's convention for ties); where a
    or b is NaN, z is NaN and each input gets the whole gradient, as in torch.
    """

    @staticmethod
    def forward(a, b):
        # NOTE: not where(a ≥ b, a, b), which returns b when a is NaN: torch.maximum propagates a
        # NaN from either side.
        return torch.maximum(a, b)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)
        ctx.save_for_forward(*inputs)
        ctx.metas = tuple(meta_of(x) for x in inputs)
        ctx.out_meta = (output.shape, output.dtype)

    @staticmethod
    def _routed(grad, mine, other):
        """grad where mine > other, grad/2 on a tie, 0 where mine < other; all of grad at a NaN.

        NOTE: selects, not grad · weight: an infinite or NaN grad must still give exactly 0 to the
        losing side (0 · inf = NaN), and NaN compares unequal, so it keeps the whole gradient on
        both sides, as torch's own backward does. Not on the training path, so speed matters less.
        """
        return torch.where(mine == other, grad / 2, grad).masked_fill(mine < other, 0)

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        meta_a, meta_b = ctx.metas
        grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_a = grad_like(Maximum._routed(grad, a, b), meta_a)
        if ctx.needs_input_grad[1]:
            grad_b = grad_like(Maximum._routed(grad, b, a), meta_b)
        return grad_a, grad_b

    @staticmethod
    def _share_of_a(a, b, dtype):
        # NOTE: a weight, not a boolean mask, so that ties give each side exactly half. Not
        # (1 + sign(a - b)) / 2, which is faster but NaN for a tie of two equal infinities. At a
        # NaN the share is 0, so the tangent is b's: torch's forward-mode rule does the same.
        return (a > b).to(dtype) + 0.5 * (a == b).to(dtype)

    @staticmethod
    def jvp(ctx, ta, tb):
        """ż = s ȧ + (1 - s) ḃ with s = [a > b] + ½[a = b]; rounds as torch's own rule does at a tie."""
        a, b = ctx.saved_tensors
        shape, dtype = ctx.out_meta
        share = Maximum._share_of_a(a, b, dtype)
        out = torch.zeros((), dtype=dtype, device=a.device)
        if ta is not None:
            out = out + ta * share
        if tb is not None:
            out = out + tb * (1 - share)
        return out.expand(shape)


# ---------------------------------------------------------------------------------------------
# activations
# ---------------------------------------------------------------------------------------------


class ReLU(_Op):
    """y = max(x, 0); dy/dx = [y ≠ 0]: 0 where x ≤ 0 (relu'(0) = 0, as torch), 1 where x > 0 or x is NaN."""

    @staticmethod
    def forward(x):
        return x.clamp_min(0)

    @staticmethod
    def setup_context(ctx, inputs, output):
        # NOTE: save the output, not the input: the next Affine keeps it alive anyway, and the
        # mask y ≠ 0 equals torch's x > 0 or x NaN.
        ctx.save_for_backward(output)
        ctx.save_for_forward(output)

    @staticmethod
    def _mask(y):
        # NOTE: y is ≥ 0 or NaN, so [y ≠ 0] is torch's [not y ≤ 0], which passes the gradient at a
        # NaN input. sign(y) alone is one fast kernel but gives 0 at NaN; nan_to_num first adds a
        # second fast one, where a bool mask and a cast are two slow ones on CPU (~40 µs vs ~5 µs
        # at 128×256).
        return y.nan_to_num(1.0).sign_()

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None
        # NOTE: grad · mask, not torch's select: the two differ only where grad itself is inf or
        # NaN at a unit whose output is 0 (0 · inf = NaN where torch gives 0), i.e. in a gradient
        # that is already non-finite. The select costs 2-3× this at 128×256 and up to 30× at
        # 512×256 on this CPU; the README lists the difference.
        return grad * ReLU._mask(y).to(grad.dtype)

    @staticmethod
    def jvp(ctx, tx):
        (y,) = ctx.saved_tensors
        return tx * ReLU._mask(y).to(tx.dtype)


class Sigmoid(_Op):
    """y = 1 / (1 + e^-x); dy/dx = y (1 - y), from the saved output."""

    @staticmethod
    def forward(x):
        # NOTE: e^min(x,0) / (1 + e^-|x|) is 1 / (1 + e^-x) for x ≥ 0 and e^x / (1 + e^x) for
        # x < 0: both exponents are ≤ 0, so nothing overflows for any finite x in any float
        # dtype, and there is no branch (a select on x ≥ 0 costs more than a second exp on CPU).
        # NOTE: out of place on purpose: the returned tensor is saved for backward, and when it was
        # the end of a chain of in-place ops on a temporary (exp_, div_), torch.compile (aot_eager
        # and inductor, torch 2.11) saved the wrong tensor and gave wrong gradients. In-place saved
        # nothing measurable here (128×256 float32, 2-core CPU).
        return torch.exp(x.clamp_max(0)) / (1 + torch.exp(-x.abs()))

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(output)
        ctx.save_for_forward(output)

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None
        return grad * y * (1 - y)

    @staticmethod
    def jvp(ctx, tx):
        (y,) = ctx.saved_tensors
        return tx * y * (1 - y)


# ---------------------------------------------------------------------------------------------
# affine layer
# ---------------------------------------------------------------------------------------------


def _rows(t: torch.Tensor) -> torch.Tensor:
    """``t`` as a matrix of its last dimension: (..., n) -> (rows, n), a vector -> (1, n)."""
    # NOTE: not reshape(-1, n), which cannot infer the rows when n = 0 (0 input features or outputs).
    return t.reshape(math.prod(t.shape[:-1]), t.shape[-1])


class Affine(_Op):
    """Y = X Wᵀ + b, X (..., in), W (out, in), b (out,): the ``nn.Linear`` layout.

    dX = dY W, dW = dYᵀ X (leading dims flattened), db = 1ᵀ dY.
    """

    @staticmethod
    @autocast_forward("lower")
    def forward(x, weight, bias=None):
        if x.dim() == 2 and bias is not None:
            return torch.addmm(bias, x, weight.t())
        y = x.matmul(weight.t())
        return y if bias is None else y + bias

    @staticmethod
    def setup_context(ctx, inputs, output):
        # NOTE: under autocast, save the inputs; backward casts them again in the graph (see autocast_inputs).
        x, weight, _ = autocast_inputs(ctx, inputs, "lower")
        ctx.metas = autocast_metas(ctx, inputs)
        # NOTE: dX needs only W and dW needs only X; skip the one nobody asked for (the first
        # layer never needs dX, and holding the input alive would cost memory).
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        ctx.save_for_backward(x if need_w else None, weight if need_x else None)
        ctx.save_for_forward(x, weight)

    @staticmethod
    @autocast_backward
    def backward(ctx, grad):
        x, weight = as_computed(ctx, *ctx.saved_tensors)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = grad.matmul(weight)
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            grad_2d = _rows(grad)
            if ctx.needs_input_grad[1]:
                grad_w = grad_2d.t().matmul(_rows(x))
            if ctx.needs_input_grad[2]:
                grad_b = grad_2d.sum(0)
        return cast_back(ctx.metas, grad_x, grad_w, grad_b)

    @staticmethod
    def jvp(ctx, tx, tw, tb):
        x, weight = as_computed(ctx, *ctx.saved_tensors)
        out = None
        for term in (
            None if tx is None else tx.matmul(weight.t()),
            None if tw is None else x.matmul(tw.t()),
            tb,
        ):
            if term is not None:
                out = term if out is None else out + term
        shape = x.shape[:-1] + weight.shape[:1]
        return out.expand(shape)


# ---------------------------------------------------------------------------------------------
# the L2 weight penalty
# ---------------------------------------------------------------------------------------------


def _sum_of_squares(w: torch.Tensor) -> torch.Tensor:
    # NOTE: ‖W‖² as one dot product of W with itself: one BLAS call and no W-sized temporary,
    # half the time of w.square().sum() for a 256×784 weight on CPU.
    flat = w.reshape(-1)
    return torch.dot(flat, flat)


class L2Penalty(_Op):
    """s = λ/2 Σ_W ‖W‖²; ds/dW = λ W. Called as ``L2Penalty.apply(lam, *weights)``."""

    @staticmethod
    @autocast_forward("float32")
    def forward(lam, *weights):
        total = _sum_of_squares(weights[0])
        for w in weights[1:]:
            total = total + _sum_of_squares(w)
        return total * (lam / 2)

    @staticmethod
    def setup_context(ctx, inputs, output):
        lam, *weights = autocast_inputs(ctx, inputs, "float32")
        ctx.metas = autocast_metas(ctx, inputs)
        ctx.lam = lam
        ctx.save_for_backward(*weights)
        ctx.save_for_forward(*weights)

    @staticmethod
    def backward(ctx, grad):
        weights = as_computed(ctx, *ctx.saved_tensors)
        # NOTE: grad is 0-d: scale it once, then one full-size multiply per weight.
        scale = grad * ctx.lam
        grads = [w * scale if ctx.needs_input_grad[i + 1] else None for i, w in enumerate(weights)]
        return cast_back(ctx.metas, None, *grads)

    @staticmethod
    def jvp(ctx, _tlam, *tangents):
        weights = as_computed(ctx, *ctx.saved_tensors)
        out = None
        for w, t in zip(weights, tangents):
            if t is not None:
                term = (w * t).sum()
                out = term if out is None else out + term
        return out * ctx.lam


# ---------------------------------------------------------------------------------------------
# costs
# ---------------------------------------------------------------------------------------------


def _shifted(logits: torch.Tensor) -> torch.Tensor:
    # NOTE: subtracting the row max keeps every exponent ≤ 0, so large logits cannot overflow;
    # the max is detached: softmax does not depend on the shift, so no gradient flows through it.
    if logits.shape[-1] == 0:
        return logits  # no classes: nothing to shift (amax of an empty row is an error)
    return logits - logits.amax(dim=-1, keepdim=True).detach()


class CrossEntropy(_Op):
    """L = mean_n(logsumexp(z_n) - z_n[t_n]); dL/dz = (softmax(z) - onehot(t)) / N.

    ``logits`` is (N, C) or (C,); ``target`` holds class indices, (N,) or ().
    """

    @staticmethod
    @autocast_forward("float32")
    def forward(logits, target):
        # NOTE: with s = z - max(z), logsumexp(z) - z[t] = log Σ e^s - s[t]: no N×C log-softmax.
        # forward runs without a graph, so exp may overwrite its own temporary (one N×C buffer).
        shifted = _shifted(logits)
        picked = shifted.gather(-1, target.unsqueeze(-1)).squeeze(-1)
        return (shifted.exp_().sum(dim=-1).log() - picked).mean()

    @staticmethod
    def setup_context(ctx, inputs, output):
        logits, target = autocast_inputs(ctx, inputs, "float32")
        ctx.metas = autocast_metas(ctx, inputs)
        # NOTE: keep the logits and recompute softmax in backward (N×C, the same bytes as the
        # log-probabilities native saves); a saved intermediate would break double backward.
        ctx.save_for_backward(logits, target)
        ctx.save_for_forward(logits, target)

    @staticmethod
    def _scaled_gradient(logits, target, scale):
        """scale · (softmax(z) - onehot(t)), differentiable in z and in a tensor ``scale``.

        NOTE: scale goes into the (N, 1) divisor and the one-hot term is a scatter-add of -scale,
        so the N×C work is a shift, an exp, a multiply and a scatter: four N×C buffers, not seven.
        """
        e = _shifted(logits).exp()
        if not isinstance(scale, torch.Tensor):
            scale = e.new_tensor(scale)
        index = target.unsqueeze(-1)
        out = e * (scale / e.sum(dim=-1, keepdim=True))
        return out.scatter_add(-1, index, (-scale).to(out.dtype).expand(index.shape))

    @staticmethod
    def _per_sample(target) -> float:
        return 1.0 / max(target.numel(), 1)

    @staticmethod
    def backward(ctx, grad):
        logits, target = as_computed(ctx, *ctx.saved_tensors)
        if not ctx.needs_input_grad[0]:
            return None, None
        scale = grad * CrossEntropy._per_sample(target)  # grad is 0-d: fold 1/N into it
        return cast_back(ctx.metas, CrossEntropy._scaled_gradient(logits, target, scale), None)

    @staticmethod
    def jvp(ctx, tlogits, _ttarget):
        logits, target = as_computed(ctx, *ctx.saved_tensors)
        # NOTE: each sample's slope · tangent, then the mean over samples: with 0 samples the jvp is
        # NaN, as the value (a mean of nothing) and torch's jvp are.
        slope = CrossEntropy._scaled_gradient(logits, target, 1.0)
        return (slope * tlogits).sum(dim=-1).mean()


class MSELoss(_Op):
    """L = mean((a - y)²); dL/da = 2 (a - y) / N, dL/dy = -2 (a - y) / N."""

    @staticmethod
    @autocast_forward("float32")
    def forward(pred, target):
        return (pred - target).square().mean()

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.metas = tuple(meta_of(x) for x in inputs)
        inputs = autocast_inputs(ctx, inputs, "float32")
        ctx.save_for_backward(*inputs)
        ctx.save_for_forward(*inputs)

    @staticmethod
    def _slope(pred, target):
        diff = pred - target
        return diff * (2.0 / max(diff.numel(), 1))

    @staticmethod
    def backward(ctx, grad):
        pred, target = as_computed(ctx, *ctx.saved_tensors)
        meta_p, meta_t = ctx.metas
        slope = grad * MSELoss._slope(pred, target)
        grad_p = grad_t = None
        if ctx.needs_input_grad[0]:
            grad_p = grad_like(slope, meta_p)
        if ctx.needs_input_grad[1]:
            grad_t = grad_like(-slope, meta_t)
        return grad_p, grad_t

    @staticmethod
    def jvp(ctx, tp, tt):
        pred, target = as_computed(ctx, *ctx.saved_tensors)
        # NOTE: 2 (a - y) ṫa + 2 (y - a) ṫy, then the mean: torch's own terms in torch's order, so
        # that where 2 (a - y) overflows the result is inf or NaN exactly where torch's is.
        terms = [2 * (u - v) * t for u, v, t in ((pred, target, tp), (target, pred, tt)) if t is not None]
        return (terms[0] if len(terms) == 1 else terms[0] + terms[1]).mean()


__all__ += [name for name, obj in list(globals().items()) if isinstance(obj, type) and issubclass(obj, _Op) and obj is not _Op]
