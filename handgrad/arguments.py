"""Argument checks for the lowercase ops: one clear sentence naming the op, the argument and what it got.

Each check raises ``TypeError`` (wrong kind of thing) or ``ValueError`` (right kind, wrong shape,
device or value) and returns nothing; an op's declaration (:mod:`handgrad.functional`) calls the
ones it needs before its Function runs, and :func:`default_check` is what an op declared without
checks of its own gets.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from numbers import Number

import torch

__all__ = ["describe", "check_float", "check_operand", "check_same_device", "check_broadcast", "default_check"]


def describe(x) -> str:
    """What ``x`` is, for an error message: a tensor's shape, dtype and device, or a value's type and repr."""
    if isinstance(x, torch.Tensor):
        return f"tensor of shape {tuple(x.shape)}, dtype {x.dtype}, on {x.device}"
    return f"{type(x).__name__} {x!r}"


def check_float(op: str, name: str, x) -> None:
    """``x`` is a floating-point tensor."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {describe(x)}.")
    if not x.is_floating_point():
        raise TypeError(
            f"{op}: {name} must be a floating-point tensor (float16/bfloat16/float32/float64), "
            f"got dtype {x.dtype}; convert it with .float()."
        )


def check_operand(op: str, name: str, x) -> None:
    """``x`` is a floating-point tensor or a real Python number."""
    if isinstance(x, torch.Tensor):
        check_float(op, name, x)
    elif not isinstance(x, Number) or isinstance(x, complex):
        raise TypeError(f"{op}: {name} must be a tensor or a real Python number, got {describe(x)}.")


def check_same_device(op: str, names, *tensors) -> None:
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


def check_broadcast(op: str, a, b) -> None:
    """The shapes of the tensors among ``a`` and ``b`` broadcast together."""
    shapes = [x.shape for x in (a, b) if isinstance(x, torch.Tensor)]
    try:
        torch.broadcast_shapes(*shapes)
    except RuntimeError:
        raise ValueError(
            f"{op}: shapes {tuple(shapes[0])} and {tuple(shapes[1])} do not broadcast "
            "(trailing dimensions must be equal or 1)."
        ) from None


def default_check(op: str, function: type[torch.autograd.Function]) -> Callable[..., tuple]:
    """The checks an op declared without its own gets, from its Function's ``forward`` signature.

    The returned function binds a call to that signature (defaults filled in: the fast twin takes
    every argument), requires each tensor argument to be floating point and all of them on one
    device, and returns the arguments for ``function.apply`` in order.
    """
    signature = inspect.signature(function.forward)

    def check(*args, **kwargs) -> tuple:
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{op}{signature}: {exc}.") from None
        bound.apply_defaults()
        tensors = {n: v for n, v in bound.arguments.items() if isinstance(v, torch.Tensor)}
        for name, value in tensors.items():
            check_float(op, name, value)
        if len(tensors) > 1:
            check_same_device(op, list(tensors), *tensors.values())
        return bound.args

    check.__signature__ = signature
    check.__doc__ = function.__doc__
    return check
