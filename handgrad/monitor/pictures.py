"""Snapshots: gradient-flow pictures (Images tab and PNG files) and histograms with bounded bins.

At a snapshot step the training process computes the numbers (mean and max |∂L/∂θ| per parameter,
each tensor's bins, range, sum and sum of squares: torch ops and one host transfer) and hands them
to the writer process (:mod:`.sink`), which draws the picture with Pillow (:mod:`handgrad.plots`,
a few milliseconds) on another core.
"""

from __future__ import annotations

import torch

from .events import Events
from .schedule import EARLY_END

__all__ = ["Pictures", "HIST_BINS", "histograms", "EarlyCurves"]

HIST_BINS = 64  # NOTE: a full-resolution histogram of a 784x256 matrix costs more than a training step


class Pictures:
    """Gradient-flow pictures and histograms of one run, from the tensors of the step they describe."""

    def __init__(self, events: Events, names: list[str]) -> None:
        self.events, self.names = events, names

    def snapshot(self, step: int, grads: list[torch.Tensor], weights: list[torch.Tensor], tag: str, errors=None,
                 tol=None) -> None:
        """The gradient-flow picture of ``grads`` (as ``tag`` and ``gradient_flow-step<N>.png``) and the
        histograms of ``grads`` (histogram/data_gradient) and ``weights`` (histogram/weight)."""
        with torch.no_grad():
            histograms(self.events, step, [(n, "histogram/data_gradient", g) for n, g in zip(self.names, grads)]
                       + [(n, "histogram/weight", w) for n, w in zip(self.names, weights)])
            stats = torch.stack([_mean_and_max(g.abs()) for g in grads]).double().tolist()
        self.events.gradient_flow(step, tag, self.names, [s[0] for s in stats], [s[1] for s in stats],
                                  dict(errors) if errors else None, tol)

    def early_curves(self, step: int, series: dict) -> None:
        """The data gradient of every layer over the first steps on a log axis (TensorBoard's percentile
        axis cuts the first steps of a fast collapse; a picture keeps every value)."""
        if series:
            self.events.curves(step, "early/data_gradient_curves", {k: (list(s), list(v)) for k, (s, v) in series.items()},
                               f"data gradient ‖∂L/∂θ‖ per parameter, steps 1-{step}", f"early-data_gradient-step{step:07d}.png")


def _mean_and_max(t: torch.Tensor) -> torch.Tensor:
    return torch.stack([t.mean(), t.amax()])


def histograms(events: Events, step: int, tensors: list[tuple[str, str, torch.Tensor]]) -> None:
    """One histogram per (run, tag, tensor) with at most HIST_BINS bins, binned on the device, one host transfer."""
    tensors = [(run, tag, t.detach().reshape(-1)) for run, tag, t in tensors if t.numel()]
    if not tensors:
        return
    with torch.no_grad():
        facts = torch.stack([torch.stack([*torch.aminmax(t), t.sum(), torch.dot(t, t)]) for _, _, t in tensors]).double()
        ranges = facts[:, :2].tolist()
        # NOTE: a constant tensor still gets one bin of nonzero width
        ranges = [(lo, hi) if hi > lo else (lo - 0.5, hi + 0.5) for lo, hi in ranges]
        counts = torch.stack([torch.histc(t.float(), HIST_BINS, lo, hi) for (_, _, t), (lo, hi) in zip(tensors, ranges)])
        counts, sums = counts.tolist(), facts[:, 2:].tolist()
    events.histograms(step, [(run, tag, lo, hi, c, t.numel(), total, squares)
                             for (run, tag, t), (lo, hi), c, (total, squares) in zip(tensors, ranges, counts, sums)])


class EarlyCurves:
    """Collects every layer's data gradient over the early steps; drawn once, at step 200 or the run's last step if sooner."""

    def __init__(self, schedule, pictures: Pictures) -> None:
        self.schedule, self.pictures, self.series, self.drawn = schedule, pictures, {}, False

    def add(self, step: int, rows) -> None:
        """``rows`` of (key, run, value) written at ``step``; the ``data_norm`` ones are kept."""
        if not self.schedule.early(step) or self.drawn:
            return
        for key, run, v in rows:
            if key == "data_norm":
                steps, values = self.series.setdefault(run, ([], []))
                steps.append(step), values.append(v)
        if step >= min(EARLY_END, self.schedule.total_steps):
            self.drawn = True
            self.pictures.early_curves(step, self.series)
