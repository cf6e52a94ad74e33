"""Modules that take an ops namespace: the same code runs hand-written or native ops.

    import handgrad as hg
    layer = hg.nn.Affine(784, 10)                  # nn.Linear's order; ops="hand" by default
    act = hg.nn.ReLU(ops="native")                 # PyTorch's own op, same module

Parameters are created and initialized exactly as ``torch.nn.Linear`` does, with the global RNG,
so the same seed gives the same weights whichever ops a module uses, and ``state_dict`` names do
not depend on the ops either: a checkpoint moves between hand and native.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Union

import torch
from torch import nn

from .functional import get_ops

__all__ = ["Affine", "ReLU", "Sigmoid", "resolve_ops"]

Ops = Union[str, SimpleNamespace]  # "hand", "native", or a namespace from get_ops


def resolve_ops(ops: Ops) -> SimpleNamespace:
    """``get_ops(ops)`` for a name, the namespace itself otherwise."""
    return get_ops(ops) if isinstance(ops, str) else ops


def _check_size(name: str, value: object) -> None:
    # NOTE: bool is an int subclass; Affine(784, True) is a mistake, not a 1-unit layer
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise TypeError(f"Affine: {name} must be a non-negative int, got {value!r}; the signature is "
                        "Affine(in_features, out_features, bias=True, *, ops='hand', device=None, dtype=None).")


class Affine(nn.Module):
    """y = x Wᵀ + b with weight (out, in) and bias (out,), computed by ``ops.affine``.

    The arguments are ``torch.nn.Linear``'s, plus the keyword ``ops`` ("hand", "native" or a
    namespace from ``get_ops``).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, ops: Ops = "hand",
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        _check_size("in_features", in_features)
        _check_size("out_features", out_features)
        if not isinstance(bias, bool):
            raise TypeError(f"Affine: bias must be True or False, got {bias!r}; pass ops by keyword: Affine(784, 10, ops='hand').")
        self.ops = resolve_ops(ops)
        self.in_features, self.out_features = in_features, out_features
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(out_features, in_features, **factory))
        self.bias = nn.Parameter(torch.empty(out_features, **factory)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # the nn.Linear initialization: U(-1/sqrt(in), 1/sqrt(in)) for both (kaiming_uniform, a=sqrt(5))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features) if self.in_features > 0 else 0
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ops.affine(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, ops={self.ops.kind}"


class _Activation(nn.Module):
    name = ""

    def __init__(self, *args: object, ops: Ops = "hand", **kwargs: object) -> None:
        if args or kwargs:
            # NOTE: Python's own message would name _Activation.__init__, which the user never wrote.
            got = ", ".join([*map(repr, args), *(f"{k}={v!r}" for k, v in kwargs.items())])
            name = type(self).__name__
            meant = args[0] if len(args) == 1 and isinstance(args[0], str) else "native"
            raise TypeError(f"{name} takes only the keyword ops, got {got}; the signature is {name}(*, ops='hand'): "
                            f"pass ops by keyword, {name}(ops={meant!r}).")
        super().__init__()
        self.ops = resolve_ops(ops)
        self.fn = getattr(self.ops, self.name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)

    def extra_repr(self) -> str:
        return f"ops={self.ops.kind}"


class ReLU(_Activation):
    """max(x, 0) through ``ops.relu``."""

    name = "relu"


class Sigmoid(_Activation):
    """1 / (1 + e^-x) through ``ops.sigmoid``."""

    name = "sigmoid"
