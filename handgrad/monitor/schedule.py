"""When the monitor logs: dense at the start, sparse later, pictures at fixed early steps and a few epoch ends.

Every question is answered in O(1) time and memory, whatever ``--epochs`` says: a run of 1e9
epochs stopped after one must not build a set with an entry per epoch (it once grew to 22.8 GB).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LogSchedule", "EARLY_STEPS", "EARLY_END", "EARLY_POINTS"]

#: steps with a gradient-flow picture and histograms, whatever the run's length (the collapse of a
#: badly set-up network happens here: seed001's p_true falls from 0.5 to 0.007 by step 30)
EARLY_STEPS = (1, 2, 5, 10, 20, 50, 100, 200)
#: the early window: ``early/*`` tags and the early picture cover steps 1..EARLY_END, so their x-axis is the first steps
EARLY_END = 200
#: the steps at which the ``early/*`` tags are written: about ten per decade (1, 2, 3 ... 160, 200)
#: NOTE: TensorBoard's Time Series (default "Ignore outliers") sizes a card's y-axis from the pooled
#: values' 5% and 95% points, so ~5% of a card's points at each end fall outside it; every point
#: of a dense 1-100 series counts, and in seed001 the 5% were steps 1-8 of the fastest-falling layer.
#: Log-spaced points give steps 1-8 a third of a series (7 of 21) and one point per series to the cut.
EARLY_POINTS = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16, 20, 25, 32, 40, 50, 63, 80, 100, 126, 160, 200)
_EARLY_POINTS = frozenset(EARLY_POINTS)


@dataclass(frozen=True)
class LogSchedule:
    """Which steps log what. Steps count from 1 (step s is the s-th update); step 0 is the start.

    * scalars: every one of the first ``log_dense`` steps, then every ``log_every``, and always an
      epoch's last step, the run's last and the :data:`EARLY_POINTS`;
    * ``early/*`` tags: the :data:`EARLY_POINTS` only;
    * pictures and histograms: the :data:`EARLY_STEPS` and the end of at most ``histograms`` epochs
      (spread evenly, the last one always), each moved off a partial last batch (``full_batches``
      is the number of full batches per epoch); ``histograms=0`` turns both off.
    """

    total_steps: int
    steps_per_epoch: int
    full_batches: int
    log_every: int = 50
    log_dense: int = 100
    histograms: int = 10

    def scalars(self, step: int) -> bool:
        return (step <= self.log_dense or step % self.log_every == 0 or step % self.steps_per_epoch == 0
                or step == self.total_steps or step in _EARLY_POINTS)

    def early(self, step: int) -> bool:
        """Whether ``step`` is in the early window (the ``early/data_gradient_curves`` picture: every logged step)."""
        return 1 <= step <= EARLY_END

    def early_point(self, step: int) -> bool:
        """Whether ``step`` is written to the ``early/*`` tags."""
        return step in _EARLY_POINTS

    @property
    def epochs(self) -> int:
        return -(-self.total_steps // self.steps_per_epoch) if self.steps_per_epoch else 0

    def _last_full(self, epoch: int) -> int:
        """The step of ``epoch``'s (1-based) last full batch, or its last step when it has none."""
        end = min(epoch * self.steps_per_epoch, self.total_steps)
        in_epoch = end - (epoch - 1) * self.steps_per_epoch
        return end - (in_epoch - self.full_batches) if in_epoch > self.full_batches >= 1 else end

    def _picked_epoch(self, epoch: int) -> bool:
        """``epoch`` is one of ``histograms`` evenly spread epochs 1..E (O(1): no set is built)."""
        n, last = self.histograms, self.epochs
        if n <= 0 or not 1 <= epoch <= last:
            return False
        if n >= last:
            return True
        # NOTE: picks are 1 + round(k (E - 1) / (n - 1)) for k = 0..n-1; the k nearest epoch decides
        k = round((epoch - 1) * (n - 1) / (last - 1)) if n > 1 else 0
        picked = 1 + round(k * (last - 1) / (n - 1)) if n > 1 else last
        return picked == epoch

    def picture(self, step: int) -> bool:
        """A gradient-flow picture and histograms at this step."""
        if self.histograms <= 0 or not 1 <= step <= self.total_steps:
            return False
        if step in EARLY_STEPS:
            return True
        epoch = (step - 1) // self.steps_per_epoch + 1
        return step == self._last_full(epoch) and self._picked_epoch(epoch)

    histogram = picture  # NOTE: histograms are taken with the pictures, of the same data gradient
