"""The lowercase API: validated calls into the hand-written ops, and ``get_ops``.

Each function checks its arguments (one clear ``TypeError``/``ValueError`` naming the op, the
argument and the shapes or dtypes), then calls its ``autograd.Function`` in one of three forms
built from the same static methods: the op itself under ``torch.func`` transforms, its twin
without ``jvp`` inside ``torch.compile`` (:func:`handgrad.twins.compile_twin`), and otherwise
its ctx-first twin, which has the least per-call overhead (:func:`handgrad.twins.fast_twin`).

``get_ops("hand")`` and ``get_ops("native")`` return namespaces with the same names, so a model
or a test switches implementation with one argument and never branches on which it got.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from numbers import Number
from types import SimpleNamespace
from typing import Union

import torch
import torch.nn.functional as F

from . import twins
from .autocast import autocast_dtype_of

__all__ = [
    "add",
    "mul",
    "maximum",
    "relu",
    "sigmoid",
    "affine",
    "l2_penalty",
    "cross_entropy",
    "mse_loss",
    "get_ops",
    "OP_NAMES",
]

Tensor = torch.Tensor
#: what the binary gates take: a tensor or a real Python number
Operand = Union[torch.Tensor, float, int]

_is_compiling = torch.compiler.is_compiling
# NOTE: value checks (target range) read data, which vmap cannot do per sample; skip them there.
_transforms_active = torch._C._are_functorch_transforms_active


def _apply(name: str, *args):
    """Call op ``name`` in the form that suits the context (see :mod:`handgrad.twins`)."""
    # NOTE: looked up by name: Dynamo traces a constant-string dict lookup without a break.
    if _is_compiling():
        return twins.COMPILED[name].apply(*args)
    if _transforms_active():
        return twins.FUNCTIONS[name].apply(*args)
    return twins.FAST[name].apply(*args)


# ---------------------------------------------------------------------------------------------
# argument checks
# ---------------------------------------------------------------------------------------------


def _describe(x) -> str:
    if isinstance(x, torch.Tensor):
        return f"tensor of shape {tuple(x.shape)}, dtype {x.dtype}, on {x.device}"
    return f"{type(x).__name__} {x!r}"


def _check_float(op: str, name: str, x) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {_describe(x)}.")
    if not x.is_floating_point():
        raise TypeError(
            f"{op}: {name} must be a floating-point tensor (float16/bfloat16/float32/float64), "
            f"got dtype {x.dtype}; convert it with .float()."
        )


def _check_operand(op: str, name: str, x) -> None:
    if isinstance(x, torch.Tensor):
        _check_float(op, name, x)
    elif not isinstance(x, Number) or isinstance(x, complex):
        raise TypeError(f"{op}: {name} must be a tensor or a real Python number, got {_describe(x)}.")


def _check_same_device(op: str, names, *tensors) -> None:
    """All of ``tensors`` (None entries skipped) on the first one's device.

    ``tensors[i]`` is called ``names[i]`` in the message; ``names`` may be a function that returns
    them, called only to write the message.
    """
    device = tensors[0].device
    for t in tensors[1:]:
        if t is not None and t.device != device:
            names = names() if callable(names) else names
            where = ", ".join(f"{n} on {t.device}" for n, t in zip(names, tensors) if t is not None)
            raise ValueError(f"{op}: all tensors must be on one device, got {where}; move them with .to().")


def _check_broadcast(op: str, a, b) -> None:
    shapes = [x.shape for x in (a, b) if isinstance(x, torch.Tensor)]
    try:
        torch.broadcast_shapes(*shapes)
    except RuntimeError:
        raise ValueError(
            f"{op}: shapes {tuple(shapes[0])} and {tuple(shapes[1])} do not broadcast "
            "(trailing dimensions must be equal or 1)."
        ) from None


def _binary(op: str, a, b) -> None:
    _check_operand(op, "a", a)
    _check_operand(op, "b", b)
    if not (isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor)):
        raise TypeError(f"{op}: at least one of a and b must be a tensor, got two numbers.")
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        _check_same_device(op, ("a", "b"), a, b)
        if a.shape != b.shape:
            _check_broadcast(op, a, b)


# ---------------------------------------------------------------------------------------------
# the ops
# ---------------------------------------------------------------------------------------------


def add(a: Operand, b: Operand) -> Tensor:
    """a + b with broadcasting; either operand may be a Python number."""
    _binary("add", a, b)
    return _apply("Add", a, b)


def mul(a: Operand, b: Operand) -> Tensor:
    """a * b with broadcasting; either operand may be a Python number."""
    _binary("mul", a, b)
    return _apply("Mul", a, b)


def maximum(a: Tensor, b: Tensor) -> Tensor:
    """Elementwise max(a, b) of two tensors that broadcast; ties split the gradient as torch does."""
    _check_float("maximum", "a", a)
    _check_float("maximum", "b", b)
    _check_same_device("maximum", ("a", "b"), a, b)
    if a.shape != b.shape:
        _check_broadcast("maximum", a, b)
    return _apply("Maximum", a, b)


def relu(x: Tensor) -> Tensor:
    """max(x, 0), with relu'(0) = 0."""
    _check_float("relu", "x", x)
    return _apply("ReLU", x)


def sigmoid(x: Tensor) -> Tensor:
    """1 / (1 + e^-x), computed without overflow for any finite x."""
    _check_float("sigmoid", "x", x)
    return _apply("Sigmoid", x)


def affine(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """x Wᵀ + b: x (..., in), weight (out, in), bias (out,) or None; the ``F.linear`` layout."""
    _check_float("affine", "x", x)
    _check_float("affine", "weight", weight)
    if bias is not None:
        _check_float("affine", "bias", bias)
    _check_same_device("affine", ("x", "weight", "bias"), x, weight, bias)
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
    return _apply("Affine", x, weight, bias)


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


def l2_penalty(weights: Tensor | Iterable[Tensor], lam: float) -> Tensor:
    """λ/2 Σ ‖W‖² over one tensor or a sequence of tensors; one op, backward λW."""
    if isinstance(weights, torch.Tensor):
        weights = (weights,)
    if not isinstance(weights, Sequence) and not hasattr(weights, "__iter__"):
        raise TypeError(f"l2_penalty: weights must be a tensor or a sequence of tensors, got {_describe(weights)}.")
    weights = tuple(weights)
    if not weights:
        raise ValueError("l2_penalty: weights is empty; pass at least one tensor.")
    if not isinstance(lam, Number) or isinstance(lam, (bool, complex)):
        raise TypeError(f"l2_penalty: lam must be a real Python number, got {_describe(lam)}.")
    if not all(isinstance(w, torch.Tensor) and w.is_floating_point() for w in weights):
        for i, w in enumerate(weights):
            _check_float("l2_penalty", f"weights[{i}]", w)
    _check_same_device("l2_penalty", lambda: [f"weights[{i}]" for i in range(len(weights))], *weights)
    return _apply("L2Penalty", float(lam), *weights)


def cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """Mean softmax cross-entropy of logits (N, C) or (C,) against class indices (N,) or ()."""
    _check_float("cross_entropy", "logits", logits)
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"cross_entropy: target must be a tensor of class indices, got {_describe(target)}.")
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise TypeError(
            f"cross_entropy: target must hold integer class indices (int64), got dtype {target.dtype}; "
            "class probabilities are not supported."
        )
    _check_same_device("cross_entropy", ("logits", "target"), logits, target)
    if logits.dim() not in (1, 2) or tuple(target.shape) != tuple(logits.shape[:-1]):
        raise ValueError(
            f"cross_entropy: logits must be (N, C) with target (N,), or (C,) with a 0-d target; "
            f"got logits {tuple(logits.shape)} and target {tuple(target.shape)}."
        )
    classes = logits.shape[-1]
    if classes == 0 and target.numel():
        raise ValueError(f"cross_entropy: logits have 0 classes, so none of the {target.numel()} targets can be valid.")
    if target.numel() and not _transforms_active() and not _is_compiling():
        low, high = torch.aminmax(target)  # one pass over the targets
        low, high = low.item(), high.item()
        if low < 0 or high >= classes:
            raise ValueError(
                f"cross_entropy: target values must lie in [0, {classes - 1}] for {classes} classes, "
                f"found values from {low} to {high}."
            )
    if target.dtype != torch.int64:
        target = target.long()
    return _apply("CrossEntropy", logits, target)


def mse_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Mean squared error mean((pred - target)²); the shapes must match."""
    _check_float("mse_loss", "pred", pred)
    _check_float("mse_loss", "target", target)
    _check_same_device("mse_loss", ("pred", "target"), pred, target)
    if pred.shape != target.shape:
        raise ValueError(
            f"mse_loss: pred {tuple(pred.shape)} and target {tuple(target.shape)} must have the "
            "same shape (one-hot encode class labels first)."
        )
    return _apply("MSELoss", pred, target)


# ---------------------------------------------------------------------------------------------
# hand or native
# ---------------------------------------------------------------------------------------------

OP_NAMES = (
    "add", "mul", "maximum", "relu", "sigmoid", "affine", "l2_penalty", "cross_entropy", "mse_loss",
)


def _native_l2_penalty(weights, lam: float):
    if isinstance(weights, torch.Tensor):
        weights = (weights,)
    return sum(w.square().sum() for w in weights) * (lam / 2)


def _native_mse_loss(pred, target):
    return F.mse_loss(pred, target)


def _native_cross_entropy(logits, target):
    return F.cross_entropy(logits, target)


_HAND = SimpleNamespace(
    kind="hand",
    add=add, mul=mul, maximum=maximum, relu=relu, sigmoid=sigmoid, affine=affine,
    l2_penalty=l2_penalty, cross_entropy=cross_entropy, mse_loss=mse_loss,
)
_NATIVE = SimpleNamespace(
    kind="native",
    add=torch.add, mul=torch.mul, maximum=torch.maximum, relu=torch.relu, sigmoid=torch.sigmoid,
    affine=F.linear, l2_penalty=_native_l2_penalty, cross_entropy=_native_cross_entropy,
    mse_loss=_native_mse_loss,
)


def get_ops(kind: str = "hand") -> SimpleNamespace:
    """The ops namespace: ``"hand"`` (handgrad's Functions) or ``"native"`` (PyTorch's own)."""
    if kind == "hand":
        return _HAND
    if kind == "native":
        return _NATIVE
    raise ValueError(f"get_ops: kind must be 'hand' or 'native', got {kind!r}.")
