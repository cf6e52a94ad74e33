"""Snapshots: gradient-flow pictures (Images tab and PNG files) and histograms with bounded bins.

Pictures and histograms are made on one background thread: at the step the training thread only
copies the tensors they need (one memcpy each); the statistics (mean and max |∂L/∂θ|, the bins,
in torch ops that release the GIL) and the drawing (about 0.1 s with matplotlib) overlap the
training that follows, and :meth:`Pictures.close` waits for them. Without matplotlib the run goes
on and says once that pictures are skipped (histograms are still written).
"""

from __future__ import annotations

import importlib.util
import sys
from concurrent.futures import ThreadPoolExecutor

import torch

from .events import Events
from .schedule import EARLY_END

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

    def snapshot(self, step: int, grads: list[torch.Tensor], weights: list[torch.Tensor], tag: str, errors=None,
                 tol=None) -> None:
        """The gradient-flow picture of ``grads`` (as ``tag`` and ``gradient_flow-step<N>.png``) and the
        histograms of ``grads`` and ``weights``, made later from copies taken now."""
        with torch.no_grad():
            # NOTE: copies, because optimizer.step() changes the weights in place before the thread reads them
            grads, weights = [g.detach().clone() for g in grads], [w.detach().clone() for w in weights]
        self._pool.submit(self._snapshot, step, grads, weights, tag, dict(errors) if errors else None, tol)

    def _snapshot(self, step, grads, weights, tag, errors, tol) -> None:
        try:
            histograms(self.events, step, [(n, "histogram/data_gradient", g) for n, g in zip(self.names, grads)]
                       + [(n, "histogram/weight", w) for n, w in zip(self.names, weights)])
            if not self.available:
                return
            with torch.no_grad():
                stats = torch.stack([torch.stack([g.abs().mean(), g.abs().amax()]) for g in grads]).double().cpu().numpy()
            from .. import plots

            image = plots.gradient_flow(self.names, stats[:, 0], stats[:, 1], step, errors=errors, tol=tol)
            self.events.image(tag, image, step, png_name=f"gradient_flow-step{step:07d}.png")
        except BaseException as exc:  # NOTE: re-raised by close(), on the training thread
            self._failed = exc

    def later(self, draw, write) -> None:
        """``write(draw())`` on the picture thread; a missing optional drawing package (ImportError) skips it."""
        self._pool.submit(self._later, draw, write)

    def _later(self, draw, write) -> None:
        try:
            write(draw())
        except ImportError:
            pass
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
        # NOTE: range, sum and sum of squares of every tensor leave the device in one transfer
        facts = torch.stack([torch.stack([*torch.aminmax(t), t.sum(), torch.dot(t, t)]) for _, _, t in tensors]).double().tolist()
        for (run, tag, t), (lo, hi, total, squares) in zip(tensors, facts):
            if not hi > lo:  # NOTE: a constant tensor still gets one bin of nonzero width
                lo, hi = lo - 0.5, hi + 0.5
            counts = torch.histc(t.float(), HIST_BINS, lo, hi).double().cpu().numpy()
            events.histogram(run, tag, lo, hi, counts, t.numel(), total, squares, step)


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
