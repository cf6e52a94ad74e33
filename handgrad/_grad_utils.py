"""Small helpers shared by the ops and the autocast plumbing: a gradient in its input's shape and dtype.

NOTE: a module of its own because both :mod:`handgrad.functions` and :mod:`handgrad.autocast` use
them, and autocast must not import the ops (the ops import autocast).
"""

from __future__ import annotations

import torch

__all__ = ["sum_to_shape", "grad_like", "meta_of"]

#: an input as backward needs to know it: its shape and dtype
Meta = tuple[torch.Size, torch.dtype]


def sum_to_shape(grad: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Reduce a broadcast gradient to ``shape``: broadcast backward is a sum.

    Sums the leading dimensions ``grad`` has and ``shape`` lacks, and every dimension where
    ``shape`` is 1 but ``grad`` is not.
    """
    if grad.shape == shape:
        return grad
    lead = grad.dim() - len(shape)
    dims = list(range(lead))
    dims += [lead + i for i, n in enumerate(shape) if n == 1 and grad.shape[lead + i] != 1]
    if dims:
        grad = grad.sum(dim=dims, keepdim=True)
    return grad.reshape(shape)


def grad_like(grad: torch.Tensor, meta: Meta) -> torch.Tensor:
    """Gradient for an input recorded as ``(shape, dtype)``: summed to its shape, in its dtype."""
    shape, dtype = meta
    grad = sum_to_shape(grad, shape)
    return grad if grad.dtype == dtype else grad.to(dtype)


def meta_of(x) -> Meta | None:
    """``(shape, dtype)`` of a tensor; None for anything else (a Python number)."""
    return (x.shape, x.dtype) if isinstance(x, torch.Tensor) else None
