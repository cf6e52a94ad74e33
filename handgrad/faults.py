"""A deliberately wrong backward, swapped into an ops namespace: to see what a bug looks like.

    python train.py --ops compare --inject-fault relu:scale=1.5      # stops at step 1: FAIL, names the ReLU
    python train.py --ops compare --inject-fault relu:scale=1.00001  # off by 1e-5: still caught (float64 compare)

    import handgrad as hg
    from handgrad.faults import inject
    ops = inject(hg.get_ops("hand"), "relu:scale=1.5")     # a namespace like get_ops' own
    model = MLP(ops)                                       # trains with relu's input gradient × 1.5

Patching ``handgrad.functions.ReLU.backward`` after import changes nothing in training: the
lowercase API runs twins derived from the class at import time. :func:`inject` works one level
up, on the namespace a model is built from, so it holds whatever the ops are made of: the op's
forward is unchanged, and the gradient that reaches each tensor argument is scaled,
d/dx faulty(x) = scale · d/dx op(x). For ReLU that is exactly a backward returning
``scale * grad * (x > 0)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import torch

__all__ = ["Fault", "FaultError", "parse_fault", "inject"]


class FaultError(ValueError):
    """A fault specification that cannot be used; the message is one sentence."""


@dataclass(frozen=True)
class Fault:
    """``op``'s input gradients multiplied by ``scale``."""

    op: str
    scale: float

    def __str__(self) -> str:
        return f"{self.op}:scale={self.scale:g}"


def parse_fault(text: str) -> Fault:
    """``"relu:scale=1.5"`` -> Fault("relu", 1.5)."""
    op, _, rest = text.partition(":")
    key, _, value = rest.partition("=")
    try:
        scale = float(value)
    except ValueError:
        scale = None
    if not op or key != "scale" or scale is None or scale != scale:
        raise FaultError(f"--inject-fault {text!r} is not OP:scale=NUMBER (for example relu:scale=1.5).")
    return Fault(op.strip(), scale)


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by ``scale``: d/dx = scale."""

    @staticmethod
    def forward(x, scale):
        return x.view_as(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.scale = inputs[1]

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None


def _scaled(value, scale: float):
    if isinstance(value, torch.Tensor) and value.requires_grad:
        return _ScaleGrad.apply(value, scale)
    if isinstance(value, (list, tuple)):
        return type(value)(_scaled(v, scale) for v in value)
    return value


def inject(ops, fault: Fault | str) -> SimpleNamespace:
    """A copy of the namespace ``ops`` whose op ``fault.op`` passes ``scale ×`` the right gradient to its inputs."""
    fault = parse_fault(fault) if isinstance(fault, str) else fault
    names = {n: getattr(ops, n) for n in dir(ops) if not n.startswith("_")}
    if not callable(names.get(fault.op)):
        ops_list = ", ".join(n for n, f in names.items() if callable(f) and n != "get_ops")
        raise FaultError(f"--inject-fault: there is no op {fault.op!r}; the ops are {ops_list}.")
    op = names[fault.op]

    def faulty(*args, **kwargs):
        return op(*(_scaled(a, fault.scale) for a in args), **kwargs)

    faulty.__name__, faulty.__doc__ = fault.op, f"{op.__doc__}\n\nFAULT INJECTED: input gradients × {fault.scale:g}."
    faulty.fault = fault
    return SimpleNamespace(**{**names, fault.op: faulty, "fault": fault})
