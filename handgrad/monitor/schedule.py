"""When the monitor logs: dense at the start, sparse later, pictures at fixed early steps and a few epoch ends.

Every question is answered in O(1) time and memory, whatever ``--epochs`` says: a run of 1e9
epochs stopped after one must not build a set with an entry per epoch (it once grew to 22.8 GB).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LogSchedule", "EARLY_STEPS", "EARLY_END"]

#: steps with a gradient-flow picture and histograms, whatever the run's length (the collapse of a
#: badly set-up network happens here: seed001's p_true falls from 0.5 to 0.007 by step 30)
EARLY_STEPS = (1, 2, 5, 10, 20, 50, 100, 200)
#: the ``early/*`` tags are written for steps 1..EARLY_END only, so their x-axis is the first steps
EARLY_END = 200


@dataclass(frozen=True)
class LogSchedule:
    """Which steps log what. Steps count from 1 (step s is the s-th update); step 0 is the start.

    * scalars: every one of the first ``log_dense`` steps, then every ``log_every``, and always an
      epoch's last step and the run's last;
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
                or step == self.total_steps)

    def early(self, step: int) -> bool:
        """Whether ``step`` belongs on the ``early/*`` charts."""
        return 1 <= step <= EARLY_END

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
