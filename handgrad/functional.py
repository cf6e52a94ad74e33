"""The lowercase API: every op's one declaration, and ``get_ops``.

Each op below is declared once (:func:`handgrad.registry.op`): its Function, its native PyTorch
counterpart, its label in graph pictures, and a function that checks the arguments (one clear
``TypeError``/``ValueError`` naming the op, the argument and the shapes or dtypes) and returns what
the Function's ``apply`` takes. The decorator turns that function into the op: checks, then the
Function in one of three forms built from the same static methods (:func:`handgrad.twins.apply`):
the op itself under ``torch.func`` transforms, its twin without ``jvp`` inside ``torch.compile``,
and otherwise its ctx-first twin, which has the least per-call overhead.

``get_ops("hand")`` and ``get_ops("native")`` return namespaces with the same names, so a model
or a test switches implementation with one argument and never branches on which it got.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from numbers import Number
from typing import Union

import torch
import torch.nn.functional as F

from . import functions as fn
from . import registry
from .arguments import check_broadcast, check_float, check_operand, check_same_device, describe
from .autocast import autocast_dtype_of
from .compat import transforms_active
from .registry import OP_NAMES, ApplyArgs, get_ops, op

# NOTE: every declared op joins __all__ (registry.publish at the end), so declaring one is one place.
__all__ = ["get_ops", "OP_NAMES"]

Tensor = torch.Tensor
#: what the binary gates take: a tensor or a real Python number
Operand = Union[torch.Tensor, float, int]

_is_compiling = torch.compiler.is_compiling


def _saved(node) -> list:
    """What a handgrad op's node saved for backward, padded with None (all None once backward freed it)."""
    try:
        return list(node.saved_tensors) + [None] * 3
    except RuntimeError:  # NOTE: "saved tensors ... have already been freed"
        return [None] * 3


def _binary(op_name: str, a, b) -> None:
    check_operand(op_name, "a", a)
    check_operand(op_name, "b", b)
    if not (isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor)):
        raise TypeError(f"{op_name}: at least one of a and b must be a tensor, got two numbers.")
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        check_same_device(op_name, ("a", "b"), a, b)
        if a.shape != b.shape:
            check_broadcast(op_name, a, b)


# ---------------------------------------------------------------------------------------------
# add, multiply and max gates
# ---------------------------------------------------------------------------------------------


@op(fn.Add, native=torch.add)
def add(a: Operand, b: Operand) -> ApplyArgs:
    """a + b with broadcasting; either operand may be a Python number."""
    _binary("add", a, b)
    return a, b


def _recompute_mul(node, inputs):
    # NOTE: the node's inputs are its tensor operands only; a number operand is in ctx.numbers.
    slots, saved = iter(inputs), _saved(node)
    args = [n if n is not None else next(slots, None) for n in node.numbers]
    args = [a if a is not None else saved[i] for i, a in enumerate(args)]
    return None if any(a is None for a in args) else args[0] * args[1]


@op(fn.Mul, native=torch.mul, recompute=_recompute_mul)
def mul(a: Operand, b: Operand) -> ApplyArgs:
    """a * b with broadcasting; either operand may be a Python number."""
    _binary("mul", a, b)
    return a, b


@op(fn.Maximum, native=torch.maximum, label="Max")
def maximum(a: Tensor, b: Tensor) -> ApplyArgs:
    """Elementwise max(a, b) of two tensors that broadcast; ties split the gradient as torch does."""
    check_float("maximum", "a", a)
    check_float("maximum", "b", b)
    check_same_device("maximum", ("a", "b"), a, b)
    if a.shape != b.shape:
        check_broadcast("maximum", a, b)
    return a, b


# ---------------------------------------------------------------------------------------------
# activations
# ---------------------------------------------------------------------------------------------


@op(fn.ReLU, native=torch.relu)
def relu(x: Tensor) -> ApplyArgs:
    """max(x, 0), with relu'(0) = 0."""
    check_float("relu", "x", x)
    return (x,)


@op(fn.Sigmoid, native=torch.sigmoid)
def sigmoid(x: Tensor) -> ApplyArgs:
    """1 / (1 + e^-x), computed without overflow for any finite x."""
    check_float("sigmoid", "x", x)
    return (x,)


# ---------------------------------------------------------------------------------------------
# affine layer
# ---------------------------------------------------------------------------------------------


def _recompute_affine(node, inputs):
    saved = _saved(node)
    x = inputs[0] if inputs[0] is not None else saved[0]
    w = inputs[1] if inputs[1] is not None else saved[1]
    b = inputs[2] if len(inputs) > 2 else 0
    return None if x is None or w is None or b is None else x.matmul(w.t()) + b


@op(fn.Affine, native=F.linear, recompute=_recompute_affine)
def affine(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> ApplyArgs:
    """x Wᵀ + b: x (..., in), weight (out, in), bias (out,) or None; the ``F.linear`` layout."""
    check_float("affine", "x", x)
    check_float("affine", "weight", weight)
    if bias is not None:
        check_float("affine", "bias", bias)
    check_same_device("affine", ("x", "weight", "bias"), x, weight, bias)
    if weight.dim() != 2:
        raise ValueError(f"affine: weight must be 2-d (out, in), got shape {tuple(weight.shape)}.")
    if x.dim() < 1 or x.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"affine: x has {x.shape[-1] if x.dim() else 'no'} features (shape {tuple(x.shape)}) "
            f"but weight expects {weight.shape[1]} (shape {tuple(weight.shape)})."
        )
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(
            f"affine: bias must have shape ({weight.shape[0]},) to match weight "
            f"{tuple(weight.shape)}, got {tuple(bias.shape)}."
        )
    if x.dtype != weight.dtype or (bias is not None and bias.dtype != x.dtype):
        _check_affine_dtypes(x, weight, bias)
    return x, weight, bias


def _check_affine_dtypes(x, weight, bias) -> None:
    """x, weight and bias in one dtype, as F.linear requires (after autocast's casts, which spare float64)."""
    tensors = {"x": x, "weight": weight, "bias": bias}
    computed = {n: autocast_dtype_of(t) for n, t in tensors.items() if t is not None}
    if len(set(computed.values())) > 1:
        got = ", ".join(f"{n} {t.dtype}" for n, t in tensors.items() if t is not None)
        raise TypeError(
            f"affine: x, weight and bias must have one dtype, as F.linear requires (autocast does not cast "
            f"float64), got {got}; convert them with .to(dtype)."
        )


# ---------------------------------------------------------------------------------------------
# the L2 weight penalty
# ---------------------------------------------------------------------------------------------


def _native_l2_penalty(weights, lam: float):
    if isinstance(weights, torch.Tensor):
        weights = (weights,)
    return sum(w.square().sum() for w in weights) * (lam / 2)


def _recompute_l2_penalty(node, inputs):
    weights = inputs if all(w is not None for w in inputs) else [t for t in _saved(node) if t is not None]
    return fn.L2Penalty.forward(node.lam, *weights) if weights else None


@op(fn.L2Penalty, native=_native_l2_penalty, label="L2", recompute=_recompute_l2_penalty)
def l2_penalty(weights: Tensor | Iterable[Tensor], lam: float) -> ApplyArgs:
    """λ/2 Σ ‖W‖² over one tensor or a sequence of tensors, λ ≥ 0; one op, backward λW."""
    if isinstance(weights, torch.Tensor):
        weights = (weights,)
    if not isinstance(weights, Sequence) and not hasattr(weights, "__iter__"):
        raise TypeError(f"l2_penalty: weights must be a tensor or a sequence of tensors, got {describe(weights)}.")
    weights = tuple(weights)
    if not weights:
        raise ValueError("l2_penalty: weights is empty; pass at least one tensor.")
    if not isinstance(lam, Number) or isinstance(lam, (bool, complex)):
        raise TypeError(f"l2_penalty: lam must be a real Python number, got {describe(lam)}.")
    if not lam >= 0:  # NOTE: written so that NaN is refused too
        raise ValueError(f"l2_penalty: lam must be ≥ 0 (a negative penalty rewards large weights), got {lam!r}.")
    if not all(isinstance(w, torch.Tensor) and w.is_floating_point() for w in weights):
        for i, w in enumerate(weights):
            check_float("l2_penalty", f"weights[{i}]", w)
    check_same_device("l2_penalty", lambda: [f"weights[{i}]" for i in range(len(weights))], *weights)
    return (float(lam), *weights)


# ---------------------------------------------------------------------------------------------
# costs
# ---------------------------------------------------------------------------------------------


def _native_cross_entropy(logits, target):
    return F.cross_entropy(logits, target)


def _recompute_from_saved(function):
    """A recompute rule for an op that saves both of its inputs: its forward on what it saved."""

    def recompute(node, inputs):
        saved = _saved(node)
        return None if saved[0] is None or saved[1] is None else function.forward(saved[0], saved[1])

    return recompute


@op(fn.CrossEntropy, native=_native_cross_entropy, recompute=_recompute_from_saved(fn.CrossEntropy))
def cross_entropy(logits: Tensor, target: Tensor) -> ApplyArgs:
    """Mean softmax cross-entropy of logits (N, C) or (C,) against class indices (N,) or ()."""
    check_float("cross_entropy", "logits", logits)
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"cross_entropy: target must be a tensor of class indices, got {describe(target)}.")
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise TypeError(
            f"cross_entropy: target must hold integer class indices (int64), got dtype {target.dtype}; "
            "class probabilities are not supported."
        )
    check_same_device("cross_entropy", ("logits", "target"), logits, target)
    if logits.dim() not in (1, 2) or tuple(target.shape) != tuple(logits.shape[:-1]):
        raise ValueError(
            f"cross_entropy: logits must be (N, C) with target (N,), or (C,) with a 0-d target; "
            f"got logits {tuple(logits.shape)} and target {tuple(target.shape)}."
        )
    classes = logits.shape[-1]
    if classes == 0 and target.numel():
        raise ValueError(f"cross_entropy: logits have 0 classes, so none of the {target.numel()} targets can be valid.")
    # NOTE: value checks (target range) read data, which vmap cannot do per sample; skip them there.
    if target.numel() and not transforms_active() and not _is_compiling():
        low, high = torch.aminmax(target)  # one pass over the targets
        low, high = low.item(), high.item()
        if low < 0 or high >= classes:
            raise ValueError(
                f"cross_entropy: target values must lie in [0, {classes - 1}] for {classes} classes, "
                f"found values from {low} to {high}."
            )
    if target.dtype != torch.int64:
        target = target.long()
    return logits, target


def _native_mse_loss(pred, target):
    return F.mse_loss(pred, target)


@op(fn.MSELoss, native=_native_mse_loss, label="MSE", recompute=_recompute_from_saved(fn.MSELoss))
def mse_loss(pred: Tensor, target: Tensor) -> ApplyArgs:
    """Mean squared error mean((pred - target)²); the shapes must match."""
    check_float("mse_loss", "pred", pred)
    check_float("mse_loss", "target", target)
    check_same_device("mse_loss", ("pred", "target"), pred, target)
    if pred.shape != target.shape:
        raise ValueError(
            f"mse_loss: pred {tuple(pred.shape)} and target {tuple(target.shape)} must have the "
            "same shape (one-hot encode class labels first)."
        )
    return pred, target


registry.publish(globals())
