"""Snapshots: gradient-flow pictures (Images tab and PNG files) and histograms with bounded bins.

Pictures are drawn on a background thread: the statistics (mean and max |∂L/∂θ| per parameter)
are taken at the step, the drawing (about 0.1 s with matplotlib) overlaps the training that
follows. Without matplotlib the run goes on and says once that pictures are skipped.
"""

from __future__ import annotations

import importlib.util
import sys
from concurrent.futures import ThreadPoolExecutor

import torch

from .events import Events

__all__ = ["Pictures", "HIST_BINS", "histograms"]

HIST_BINS = 64  # NOTE: a full-resolution histogram of a 784x256 matrix costs more than a training step


def _have_matplotlib() -> bool:
    try:
        return importlib.util.find_spec("matplotlib") is not None
    except (ImportError, ValueError):
        return False


class Pictures:
    """Gradient-flow pictures of one run, drawn off the training thread, written in step order."""

    def __init__(self, events: Events, names: list[str]) -> None:
        self.events, self.names = events, names
        self.available = _have_matplotlib()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="handgrad-pictures")
        self._failed: BaseException | None = None
        if not self.available:
            print("matplotlib is not installed: gradient-flow pictures are skipped (pip install matplotlib).",
                  file=sys.stderr)

    def gradient_flow(self, step: int, grads: list[torch.Tensor], tag: str, errors=None, tol=None) -> None:
        """Mean and max |g| per parameter now; the picture later, as ``tag`` and ``gradient_flow-step<N>.png``."""
        if not self.available:
            return
        with torch.no_grad():
            stats = torch.stack([torch.stack([g.abs().mean(), g.abs().amax()]) for g in grads]).double().cpu().numpy()
        self._pool.submit(self._draw, step, stats, tag, dict(errors) if errors else None, tol)

    def _draw(self, step, stats, tag, errors, tol) -> None:
        try:
            from .. import plots

            image = plots.gradient_flow(self.names, stats[:, 0], stats[:, 1], step, errors=errors, tol=tol)
            self.events.image(tag, image, step, png_name=f"gradient_flow-step{step:07d}.png")
        except BaseException as exc:  # NOTE: re-raised by close(), on the training thread
            self._failed = exc

    def early_curves(self, step: int, series: dict) -> None:
        """The data gradient of every layer over the first steps on a log axis (TensorBoard's percentile
        axis cuts the first steps of a fast collapse; a picture keeps every value)."""
        if self.available and series:
            self._pool.submit(self._draw_curves, step, {k: (list(s), list(v)) for k, (s, v) in series.items()})

    def _draw_curves(self, step, series) -> None:
        try:
            from .. import plots

            image = plots.curves(series, f"data gradient ‖∂L/∂θ‖ per parameter, steps 1-{step}")
            self.events.image("early/data_gradient_curves", image, step, png_name=f"early-data_gradient-step{step:07d}.png")
        except BaseException as exc:  # NOTE: re-raised by close(), on the training thread
            self._failed = exc

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        if self._failed is not None:
            raise self._failed


def histograms(events: Events, step: int, tensors: list[tuple[str, str, torch.Tensor]]) -> None:
    """One histogram per (run, tag, tensor) with at most HIST_BINS bins, binned on the device."""
    tensors = [(run, tag, t.detach().reshape(-1)) for run, tag, t in tensors if t.numel()]
    if not tensors:
        return
    with torch.no_grad():
        ranges = torch.stack([torch.stack(torch.aminmax(t)) for _, _, t in tensors]).double().tolist()
        for (run, tag, t), (lo, hi) in zip(tensors, ranges):
            if not hi > lo:  # NOTE: a constant tensor still gets one bin of nonzero width
                lo, hi = lo - 0.5, hi + 0.5
            counts = torch.histc(t.float(), HIST_BINS, lo, hi).double().cpu().numpy()
            events.histogram(run, tag, lo, hi, counts, t.numel(), float(t.sum()), float(torch.dot(t, t)), step)
