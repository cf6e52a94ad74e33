"""Autocast for ``setup_context``-style Functions: handgrad's own ``custom_fwd`` / ``custom_bwd``.

NOTE: torch.amp.custom_fwd/custom_bwd assume the old forward(ctx, ...) style and store their
state on the first input, which breaks setup_context-style Functions. The helpers here do the
same job in this style: forward casts floating inputs to the autocast dtype (or float32 for ops
that need the range) and computes with autocast off; setup_context records that state and saves
the inputs themselves; backward runs under the same state, casts the saved inputs again with a
differentiable ``.to`` (so that a second derivative reaches the inputs, as native autocast's cast
does) and casts each gradient back to its input's dtype.

An op uses them as::

    @staticmethod
    @autocast_forward("lower")            # or "float32"
    def forward(x, weight): ...

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight = autocast_inputs(ctx, inputs, "lower")
        ctx.metas = autocast_metas(ctx, inputs)
        ctx.save_for_backward(x, weight)

    @staticmethod
    @autocast_backward
    def backward(ctx, grad):
        x, weight = as_computed(ctx, *ctx.saved_tensors)
        ...
        return cast_back(ctx.metas, grad_x, grad_w)
"""

from __future__ import annotations

import functools

import torch

from . import compat
from ._grad_utils import grad_like, meta_of

__all__ = ["autocast_forward", "autocast_inputs", "as_computed", "autocast_backward", "autocast_metas", "cast_back",
           "autocast_dtype_of"]


def _device_type(args) -> str:
    for a in args:
        if isinstance(a, torch.Tensor):
            return a.device.type
        if isinstance(a, (list, tuple)):
            return _device_type(a)
    return "cpu"


#: True when autocast is on for any device: one cheap call that lets the common case skip the rest
#: (where a torch version lacks it, every call takes the full check).
_any_autocast = compat.any_autocast_enabled


def _autocast_device(args) -> str | None:
    """The device type of ``args`` if autocast is on for it, else None (the common case: one call)."""
    if not _any_autocast():
        return None
    device_type = _device_type(args)
    return device_type if torch.is_autocast_enabled(device_type) else None


def _cast_floating(x, dtype):
    # NOTE: float64 is never cast, as torch's own autocast leaves it (F.linear of float64 tensors
    # under autocast computes and returns float64).
    if isinstance(x, torch.Tensor) and x.is_floating_point() and x.dtype not in (dtype, torch.float64):
        return x.to(dtype)
    return x


def _compute_dtype(device_type: str, policy: str) -> torch.dtype:
    """The dtype an op with ``policy`` computes in under autocast on ``device_type``."""
    return torch.get_autocast_dtype(device_type) if policy == "lower" else torch.float32


def autocast_dtype_of(x: torch.Tensor) -> torch.dtype:
    """The dtype an op that autocast casts to the lower dtype computes ``x`` in, as torch's autocast does."""
    device_type = _autocast_device((x,))
    if device_type is None or not x.is_floating_point() or x.dtype == torch.float64:
        return x.dtype
    return torch.get_autocast_dtype(device_type)


def autocast_forward(policy: str):
    """Decorate a static ``forward``: under autocast, cast floating inputs and compute unautocast.

    ``policy`` is ``"lower"`` (the autocast dtype, for GEMMs) or ``"float32"`` (for reductions and
    losses that need the range, as native autocast does for ``cross_entropy`` and ``mse_loss``).
    """

    def decorate(forward):
        @functools.wraps(forward)
        def wrapper(*args):
            device_type = _autocast_device(args)
            if device_type is None:
                return forward(*args)
            dtype = _compute_dtype(device_type, policy)
            args = tuple(_cast_floating(a, dtype) for a in args)
            with torch.autocast(device_type, enabled=False):
                return forward(*args)

        return wrapper

    return decorate


def autocast_inputs(ctx, inputs, policy: str):
    """Call in ``setup_context``: record the autocast state and return the inputs, to save as they are.

    Under autocast, ``ctx.autocast`` is (device type, autocast dtype) and ``ctx.computed_in`` the
    dtype forward cast its floating inputs to (``policy`` as in :func:`autocast_forward`); without
    it both are None. Backward gets the tensors forward computed with from :func:`as_computed`.

    NOTE: not the cast copies forward computed with: setup_context runs without a graph, so a copy
    made here is disconnected from its input, and a second derivative through it silently misses
    the input (d²/dx dw of affine under CPU autocast was 0.373 where F.linear gives 1.664). The
    inputs are usually alive anyway (weights, the data batch, the previous layer's bfloat16 output).
    """
    device_type = _autocast_device(inputs)
    if device_type is None:
        ctx.autocast = ctx.computed_in = None
        return inputs
    ctx.autocast = (device_type, torch.get_autocast_dtype(device_type))
    ctx.computed_in = _compute_dtype(device_type, policy)
    return inputs


def as_computed(ctx, *saved):
    """In ``backward`` or ``jvp``: each saved input as forward computed with it (see :func:`autocast_inputs`).

    Without autocast, the tensors as they are; under it, each floating one cast to the dtype forward
    computed in, with ``Tensor.to``: under ``create_graph=True`` that cast is recorded, so double
    backward flows through it to the original input, as through native autocast's own cast.
    """
    dtype = getattr(ctx, "computed_in", None)
    if dtype is None:
        return saved
    return tuple(_cast_floating(t, dtype) for t in saved)


def autocast_backward(backward):
    """Decorate a static ``backward`` so that it runs under the forward's autocast state."""

    @functools.wraps(backward)
    def wrapper(ctx, *grads):
        if getattr(ctx, "autocast", None) is None:
            return backward(ctx, *grads)
        device_type, dtype = ctx.autocast
        with torch.autocast(device_type, dtype=dtype, enabled=True):
            return backward(ctx, *grads)

    return wrapper


def autocast_metas(ctx, inputs) -> tuple | None:
    """Each input's (shape, dtype) when the op runs under autocast (see ``autocast_inputs``), else None.

    For ops whose gradients already have their inputs' shapes and dtypes unless autocast cast the
    inputs: recording nothing keeps the common case free of the bookkeeping.
    """
    return None if ctx.autocast is None else tuple(meta_of(x) for x in inputs)


def cast_back(metas, *grads):
    """The gradients as they are, or, with ``metas`` recorded under autocast, each in its input's dtype."""
    if metas is None:
        return grads
    return tuple(None if g is None else grad_like(g, m) for g, m in zip(grads, metas))
