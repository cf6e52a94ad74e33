"""The monitor: computes the statistics of :mod:`.table` at the steps :mod:`.schedule` names."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from .. import compat
from ..nn import ReLU, Sigmoid
from . import table
from .events import Events
from .pictures import EarlyCurves, Pictures
from .records import RunRecords
from .schedule import EARLY_STEPS, LogSchedule
from .stats import data_gradients, gradient_norms, output_stats, synced
from .verdict import CompareCharts
from .writer import WriterFailed

__all__ = ["Monitor", "LOG10_FLOOR", "log10"]

from .table import LOG10_FLOOR, log10


class Monitor(RunRecords):
    """Writes one run's TensorBoard events; ``Monitor(None, ...)`` is a no-op with the same API.

    Per training step, in this order: ``before_forward(s)``, forward and backward, (compare runs:
    ``compare(s, result)``), ``before_update(s, logits, target)``, ``optimizer.step()``,
    ``after_update(s, scalars)``. The model may give ``weight_decay`` (λ) and ``weights()``.
    """

    def __init__(self, logdir: str | None, model: nn.Module, schedule: LogSchedule | None = None, *,
                 compare_tol: float | None = None) -> None:
        self.model, self.schedule, self.logdir, self.compare_tol = model, schedule, logdir, compare_tol
        self._named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self._names = [n for n, _ in self._named]
        penalized = {id(w) for w in model.weights()} if hasattr(model, "weights") else set()
        self._lam = float(getattr(model, "weight_decay", 0.0) or 0.0)
        self._penalized = [i for i, (_, p) in enumerate(self._named) if id(p) in penalized] if self._lam else []
        self._ce = getattr(model, "loss_name", "ce") == "ce"
        self._pending: list[tuple[str, str, object]] = []
        self._step1: dict = {}  # NOTE: step 1's values, which the early since-step-1 chart divides by
        self._snapshot, self._capture, self._hooks = None, False, []
        # NOTE: kept between logged steps: θ before the update, and the penalized weights' data
        # gradients; new tensors of the weights' size each step cost more than the statistics
        self._before: list[torch.Tensor] | None = None
        self._scratch: list[torch.Tensor] | None = None
        self._config, self._hparams_done = None, False
        self._cmp = CompareCharts(None, None)
        self.events, self.failure = None, None  # failure: why the event files are incomplete, after close()
        if logdir is None or schedule is None:
            return
        self.events = Events(logdir)
        self.pictures = Pictures(self.events, self._names)
        self._early_curves = EarlyCurves(schedule, self.pictures)
        self._cmp = CompareCharts(self.events, schedule)
        kinds = set()
        for name, module in model.named_modules():
            if isinstance(module, (ReLU, Sigmoid)) and name != "output_activation":
                kinds.add("dead" if isinstance(module, ReLU) else "saturated")
                self._hooks.append(module.register_forward_hook(self._unit_hook(name, isinstance(module, ReLU))))
        has = {{"dead": "relu", "saturated": "sigmoid"}[k] for k in kinds} | ({"penalty"} if self._penalized else set())
        self.events.layout(table.layout(has | ({"compare"} if compare_tol is not None else set())))

    # ---- collecting and writing --------------------------------------------------------------

    def _add(self, key: str, run: str, value) -> None:
        self._pending.append((key, run, value))

    def _flush(self, step: int, extra: Mapping[str, float] = {}) -> None:
        """The pending statistics (tensors: one host sync) and ``extra`` as events: raw, log10, early."""
        pending, self._pending = self._pending, []
        values = synced([v for _, _, v in pending])
        rows = _update_ratios([(k, run, v) for (k, run, _), v in zip(pending, values)])
        rows += [(k, "", v) for k, v in extra.items()]
        self._early_curves.add(step, rows)
        if step == 1:  # NOTE: merged: a second flush at step 1 (a one-step epoch's end) must not empty it
            self._step1 = {**self._step1, **table.step1_values(rows)}
        self.events.scalars(table.expand(rows, self.schedule.early_point(step), log10, self._step1), step)

    def _unit_hook(self, name: str, relu: bool):
        def hook(_module, _inputs, output):
            if self._capture:
                with torch.no_grad():
                    out = output.detach().reshape(-1, output.shape[-1])
                    # NOTE: a ReLU unit is dead on the batch when its largest output is 0 (cheaper than a bool .all)
                    value = (out.amax(dim=0) <= 0).float().mean() if relu else ((out - 0.5).abs() > 0.49).float().mean()
                self._add("dead" if relu else "saturated", name, value)

        return hook

    # ---- the run -----------------------------------------------------------------------------

    def start(self, step: int, evaluate: Callable[[], tuple[float, float]]) -> None:
        """Step 0 of a fresh run: test loss and accuracy and the weight norms before any update."""
        if self.events is None or step != 0:
            return
        test_loss, test_acc = evaluate()
        for (n, _), v in zip(self._named, compat.norms([p.detach() for _, p in self._named])):
            self._add("weight_norm", n, v)
        self._flush(0, {"test_loss": test_loss, "test_acc": test_acc})

    def wants(self, step: int) -> bool:
        """Whether ``step`` (counted from 1) logs its statistics."""
        return self.events is not None and (self.schedule.scalars(step) or self._failed_at(step))

    def _failed_at(self, step: int) -> bool:
        return self._cmp.failed_at(step)

    def before_forward(self, step: int) -> None:
        self._capture = self.wants(step)

    def data_gradients(self) -> list[torch.Tensor]:
        """∂L/∂θ per parameter: ∂J/∂θ, less λW for the penalized weights (closed form, no second backward)."""
        grads = [p.grad.detach() if p.grad is not None else torch.zeros_like(p) for _, p in self._named]
        return data_gradients(grads, [p.detach() for _, p in self._named], self._penalized, self._lam)

    def before_update(self, step: int, logits: torch.Tensor | None = None, target: torch.Tensor | None = None,
                      scalars: Mapping[str, torch.Tensor | float] = {},
                      grad_norms: Mapping[int, torch.Tensor] | None = None) -> None:
        """Gradient statistics of this step, taken while the weights are those the gradient belongs to.

        ``scalars`` (train.py's names, as for :meth:`after_update`) are written here only when the
        step's comparison failed: no update, so no ``after_update``, follows it. ``grad_norms``:
        ‖∂J/∂θ‖ by ``id`` of the parameter where the caller has them already (train.py's finiteness
        check), so they are not computed twice.
        """
        if self.events is None:
            return
        failed = self._failed_at(step)
        if self.schedule.picture(step) or failed:
            with torch.no_grad():
                self._snapshots(step, failed)
        if not self.wants(step):
            return
        self._capture = False
        with torch.no_grad():
            params = [p.detach() for _, p in self._named]
            grads = [p.grad.detach() if p.grad is not None else torch.zeros_like(p) for _, p in self._named]
            known = [grad_norms.get(id(p)) for _, p in self._named] if grad_norms else [None]
            totals = None if any(n is None for n in known) else known
            if self._before is None:
                self._before = [torch.empty_like(p) for p in params]
                self._scratch = [torch.empty_like(params[i]) for i in self._penalized]
            self._pending += gradient_norms(self._names, params, grads, self._penalized, self._lam, totals,
                                            self._scratch)
            if logits is not None and target is not None:
                self._output_stats(logits.detach().float(), target)
            compat.copy_(self._before, params)
            self._snapshot = self._before
        if failed:  # NOTE: no update follows a failed comparison: write this step's charts now
            for name, v in scalars.items():
                self._add(_TRAIN_NAMES.get(name, name), "", v)
            self._flush(step)

    def _output_stats(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        self._pending += [(k, "", v) for k, v in output_stats(logits, target, self._ce).items()]


    def _snapshots(self, step: int, failed: bool) -> None:
        errors = self._cmp.errors_at(step)
        early = step in EARLY_STEPS and not failed
        tag = "gradient_flow/compare_failure" if failed else ("gradient_flow/early" if early else "gradient_flow/epoch_end")
        self.pictures.snapshot(step, self.data_gradients(), [p for _, p in self._named], tag, errors, self.compare_tol)

    def after_update(self, step: int, scalars: Mapping[str, torch.Tensor | float]) -> None:
        """Weight norms, update ratios, the pending statistics and ``scalars`` (train.py's names), one host sync."""
        if self.wants(step):
            params = [p.detach() for _, p in self._named]
            weight_norms = compat.norms(params)
            self._pending += [("weight_norm", n, v) for n, v in zip(self._names, weight_norms)]
            if self._snapshot is not None:
                compat.sub_(self._snapshot, params)  # NOTE: in place: the copy is not needed again
                # NOTE: ‖Δθ‖ here, divided by ‖θ‖ on the host after the one sync (_update_ratios): five ops fewer a step
                self._pending += [("update_norm", n, d) for n, d in zip(self._names, compat.norms(self._snapshot))]
            for name, v in scalars.items():
                self._add(_TRAIN_NAMES.get(name, name), "", v)
            self._flush(step)
        self._pending.clear()
        self._snapshot = None

    def compare(self, step: int, result) -> None:
        """The comparison's result of this step (see :class:`handgrad.compare.CompareResult`), or None."""
        if result is not None:
            self._cmp.add(step, result)

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        """Per-epoch values under train.py's names (``train/epoch_loss``, ``test/loss``, ...)."""
        if self.events is not None:
            self._flush(step, {_TRAIN_NAMES.get(k, k): v for k, v in values.items()})

    def close(self) -> None:
        """The compare verdict (Text), hparams of a run that stopped early, and every file flushed."""
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
        if self.events is None:
            return
        try:
            self._cmp.close(self.hparams, self._config)
        finally:
            events, self.events = self.events, None
            try:
                events.close()
            except WriterFailed as err:  # NOTE: said once here; the caller decides what it means for the run
                self.failure = str(err)

#: train.py's names for the values it hands over -> the table's keys
_TRAIN_NAMES = {"train/loss": "step_loss", "train/lr": "lr", "train/epoch_loss": "epoch_loss", "test/loss": "test_loss",
                "test/accuracy": "test_acc", "train/samples_per_s": "samples_per_s"}


def _update_ratios(rows: list[tuple]) -> list[tuple]:
    """("update_norm", run, ‖Δθ‖) rows as ("update_ratio", run, ‖Δθ‖ / ‖θ‖), ‖θ‖ from the same step's weight_norm rows."""
    weights = {run: v for key, run, v in rows if key == "weight_norm"}
    return [("update_ratio", run, v / max(weights[run], 1e-12)) if key == "update_norm" else (key, run, v)
            for key, run, v in rows]
