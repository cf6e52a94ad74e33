"""The compare run's charts and verdict: what the training loop hands over from the comparison.

The comparison checks every step; the charts get a point on the scalar schedule holding the
largest error since the previous point (so TensorBoard's 1,000-points-per-tag default never drops
a failure), and the failing step always. The verdict text goes to the Text tab when the run ends.
"""

from __future__ import annotations

from .table import log10

__all__ = ["CompareCharts"]

_TOL_RUN, _NOISE_RUN = "tolerance", "float32 noise"


class CompareCharts:
    """Collects :class:`handgrad.compare.CompareResult` s; ``events`` None: records only."""

    def __init__(self, events, schedule) -> None:
        self.events, self.schedule = events, schedule
        self.last, self._window = None, {}

    def failed_at(self, step: int) -> bool:
        return self.last is not None and not self.last.ok and self.last.step == step

    def errors_at(self, step: int) -> dict | None:
        return self.last.errors if self.last is not None and self.last.step == step else None

    def add(self, step: int, result) -> None:
        self.last = result
        for n, e in result.errors.items():
            self._window[n] = max(self._window.get(n, 0.0), e) if e == e else e  # NOTE: keeps a NaN
        if self.events is None or not (self.schedule.scalars(step) or not result.ok):
            return
        out = {(n, "compare/rel_err_log10"): log10(e) for n, e in self._window.items()}
        out[(_TOL_RUN, "compare/rel_err_log10")] = log10(result.tol)
        if result.noise:
            out[(_NOISE_RUN, "compare/rel_err_log10")] = log10(max(result.noise.values()))
        out[("", "compare/worst_rel_err_log10")] = log10(max(self._window.values(), default=0.0))
        out[("", "compare/objective_diff_log10")] = log10(result.objective_diff)
        self.events.scalars(out, step)
        self._window = {}

    def close(self, hparams, config) -> None:
        """The verdict (Text tab) at the last compared step; a failed run's HParams entry."""
        if self.events is None or self.last is None:
            return
        self.events.text("compare/verdict", self.last.markdown(), self.last.step)
        if not self.last.ok and config is not None:
            keys = ("ops", "lr", "activation", "loss", "seed", "hidden", "preset", "inject_fault", "compare_dtype")
            hparams({k: v for k, v in config.items() if k in keys},
                    {"compare_worst_log10": log10(max(self.last.worst.values())), "compare_step": self.last.step})
