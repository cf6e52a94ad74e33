"""Hand-written gradients checked against PyTorch's native ones at every training step.

``train.py --ops compare`` trains the hand-op model and, once per step, asks a :class:`Comparison`
for the native twin's gradients at the same parameters on the same batch. The relative errors go
to the monitor (charts, and the gradient-flow picture of a failing step); one above the tolerance
stops training with :class:`GradientMismatch`.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Comparison", "GradientMismatch", "Objective", "compare_gradients"]


class GradientMismatch(Exception):
    """A hand gradient differs from the native one by more than the tolerance."""


class Objective(nn.Module):
    """Wraps a model so that ``functional_call`` runs its ``objective`` rather than ``forward``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.m = model

    def forward(self, x, y):
        return self.m.objective(x, y)


def compare_gradients(model: nn.Module, twin: nn.Module, x, y, names: list[str]):
    """Native gradients at the hand model's parameters, on the same batch, vs the hand ones.

    ``twin`` is ``Objective(native model)``; ``torch.func.functional_call`` runs it with the hand
    model's own parameter tensors, so nothing is copied. Returns the relative error per
    parameter, ‖g_hand − g_native‖ / ‖g_native‖, and the native objective, as tensors.
    """
    params = dict(model.named_parameters())
    total, *_ = torch.func.functional_call(twin, {f"m.{k}": v for k, v in params.items()}, (x, y))
    grads = torch.autograd.grad(total, [params[n] for n in names])
    errors = {n: (params[n].grad - g).norm() / g.norm().clamp_min(1e-30) for n, g in zip(names, grads)}
    return errors, total.detach()


class Comparison:
    """Per step: hand vs native gradients of the objective, logged, and checked against ``tol``.

    ``model`` holds the hand gradients of the step (after ``backward``); ``native`` is the same
    architecture built on native ops (its own parameters are never used). ``worst`` keeps the
    largest error seen per parameter.
    """

    def __init__(self, model: nn.Module, native: nn.Module, tol: float, monitor=None) -> None:
        self.model, self.twin, self.tol, self.monitor = model, Objective(native), float(tol), monitor
        self.names = [n for n, _ in model.named_parameters()]
        self.worst = {n: 0.0 for n in self.names}
        self.steps = 0

    def step(self, x: torch.Tensor, y: torch.Tensor, step: int, total: torch.Tensor) -> dict[str, float]:
        """Relative error per parameter at ``step``; raises GradientMismatch above the tolerance."""
        errors, native_total = compare_gradients(self.model, self.twin, x, y, self.names)
        values = torch.stack([*errors.values(), (total.detach() - native_total).abs()]).tolist()  # one sync
        errors = dict(zip(self.names, values[:-1]))
        self.steps += 1
        for n, v in errors.items():
            self.worst[n] = max(self.worst[n], v)
        if self.monitor is not None:
            self.monitor.compare(step, errors, values[-1], self.tol)
        worst = max(errors, key=errors.get)
        if not errors[worst] <= self.tol:  # NOTE: written so that a NaN error fails too
            if self.monitor is not None:
                self.monitor.gradient_flow(step)
            raise GradientMismatch(f"hand and native gradients disagree at step {step}: relative error "
                                   f"{errors[worst]:.3g} in {worst} exceeds --compare-tol {self.tol:g}.")
        return errors

    def summary(self) -> str:
        worst = max(self.worst, key=self.worst.get)
        return (f"compare: {self.steps} steps, largest relative gradient error {self.worst[worst]:.3g} ({worst}), "
                f"tolerance {self.tol:g}")
