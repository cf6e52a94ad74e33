"""The monitor: computes the statistics of :mod:`.table` at the steps :mod:`.schedule` names."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from ..nn import ReLU, Sigmoid
from . import table
from .events import Events
from .pictures import Pictures
from .records import RunRecords
from .schedule import EARLY_END, EARLY_STEPS, LogSchedule
from .verdict import CompareCharts

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
        self._snapshot, self._capture, self._hooks = None, False, []
        self._config, self._hparams_done, self._early, self._curves_drawn = None, False, {}, False
        self._cmp = CompareCharts(None, None)
        self.writer = self.events = None
        if logdir is None or schedule is None:
            return
        self.events = Events(logdir)
        self.writer = self.events.main
        self.pictures = Pictures(self.events, self._names)
        self._cmp = CompareCharts(self.events, schedule)
        kinds = set()
        for name, module in model.named_modules():
            if isinstance(module, (ReLU, Sigmoid)) and name != "output_activation":
                kinds.add("dead" if isinstance(module, ReLU) else "saturated")
                self._hooks.append(module.register_forward_hook(self._unit_hook(name, isinstance(module, ReLU))))
        has = {{"dead": "relu", "saturated": "sigmoid"}[k] for k in kinds} | ({"penalty"} if self._penalized else set())
        self.writer.add_custom_scalars(table.layout(has | ({"compare"} if compare_tol is not None else set())))

    # ---- collecting and writing --------------------------------------------------------------

    def _add(self, key: str, run: str, value) -> None:
        self._pending.append((key, run, value))

    def _flush(self, step: int, extra: Mapping[str, float] = {}) -> None:
        """The pending statistics (tensors: one host sync) and ``extra`` as events: raw, log10, early."""
        pending, self._pending = self._pending, []
        values = _synced([v for _, _, v in pending])
        rows = [(k, run, v) for (k, run, _), v in zip(pending, values)] + [(k, "", v) for k, v in extra.items()]
        self._curves(step, rows)
        self.events.scalars(table.expand(rows, self.schedule.early(step), log10), step)

    def _curves(self, step: int, rows) -> None:
        """Collect the early data gradients; draw them once, at step 200 or the run's last step if sooner."""
        if not self.schedule.early(step) or self._curves_drawn:
            return
        for key, run, v in rows:
            if key == "data_norm":
                steps, values = self._early.setdefault(run, ([], []))
                steps.append(step), values.append(v)
        if step >= min(EARLY_END, self.schedule.total_steps):
            self._curves_drawn = True
            self.pictures.early_curves(step, self._early)

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
        if self.writer is None or step != 0:
            return
        test_loss, test_acc = evaluate()
        for (n, _), v in zip(self._named, torch._foreach_norm([p.detach() for _, p in self._named])):
            self._add("weight_norm", n, v)
        self._flush(0, {"test_loss": test_loss, "test_acc": test_acc})

    def wants(self, step: int) -> bool:
        """Whether ``step`` (counted from 1) logs its statistics."""
        return self.writer is not None and (self.schedule.scalars(step) or self._failed_at(step))

    def _failed_at(self, step: int) -> bool:
        return self._cmp.failed_at(step)

    def before_forward(self, step: int) -> None:
        self._capture = self.wants(step)

    def data_gradients(self) -> list[torch.Tensor]:
        """∂L/∂θ per parameter: ∂J/∂θ, less λW for the penalized weights (closed form, no second backward)."""
        grads = [p.grad.detach() if p.grad is not None else torch.zeros_like(p) for _, p in self._named]
        if self._penalized:
            weights = [self._named[i][1].detach() for i in self._penalized]
            for i, d in zip(self._penalized, torch._foreach_add([grads[i] for i in self._penalized], weights,
                                                                 alpha=-self._lam)):
                grads[i] = d
        return grads

    def before_update(self, step: int, logits: torch.Tensor | None = None, target: torch.Tensor | None = None) -> None:
        """Gradient statistics of this step, taken while the weights are those the gradient belongs to."""
        if self.writer is None:
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
            totals = torch._foreach_norm(grads)
            data = list(totals)  # NOTE: an unpenalized parameter's data gradient is its total gradient
            if self._penalized:
                pen = self._penalized
                for i, d in zip(pen, torch._foreach_norm(torch._foreach_add([grads[i] for i in pen], [params[i] for i in pen],
                                                                            alpha=-self._lam))):
                    data[i] = d
                norms = torch._foreach_norm([params[i] for i in pen])
                self._pending += [("penalty_norm", self._names[i], self._lam * w) for i, w in zip(pen, norms)]
            for key, norms in (("total_norm", totals), ("data_norm", data)):
                self._pending += [(key, n, v) for n, v in zip(self._names, norms)]
            if logits is not None and target is not None:
                self._output_stats(logits.detach().float(), target)
            self._snapshot = [p.clone() for p in params]
        if failed:  # NOTE: no update follows a failed comparison: write this step's charts now
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
            weight_norms = torch._foreach_norm(params)
            self._pending += [("weight_norm", n, v) for n, v in zip(self._names, weight_norms)]
            if self._snapshot is not None:
                torch._foreach_sub_(self._snapshot, params)  # NOTE: in place: the copy is not needed again
                updates = torch._foreach_norm(self._snapshot)
                self._pending += [("update_ratio", n, u / w.clamp_min(1e-12)) for n, u, w in zip(self._names, updates, weight_norms)]
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
        if self.writer is not None:
            self._flush(step, {_TRAIN_NAMES.get(k, k): v for k, v in values.items()})

    def close(self) -> None:
        """The compare verdict (Text), hparams of a run that stopped early, and every file flushed."""
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
        if self.writer is None:
            return
        try:
            self.pictures.close()
        finally:
            self._cmp.close(self.hparams, self._config)
            self.events.close()
            self.writer = None

def _synced(values: list) -> list[float]:
    """Tensors among ``values`` as floats, through one device-to-host transfer; numbers as they are."""
    tensors = [(i, v) for i, v in enumerate(values) if isinstance(v, torch.Tensor)]
    out = list(values)
    if tensors:
        device = tensors[0][1].device
        for (i, _), v in zip(tensors, torch.stack([v.detach().float().reshape(()).to(device) for _, v in tensors]).tolist()):
            out[i] = v
    return out


def output_stats(logits: torch.Tensor, target: torch.Tensor, softmax: bool) -> dict[str, torch.Tensor]:
    """p_true, and the answers that are confident (true class > 0.99, the rest < 0.01) or stuck (all within 0.05)."""
    probs = logits.softmax(-1) if softmax else logits.sigmoid()
    p_true = probs.gather(-1, target.reshape(-1, 1)).squeeze(-1)
    others = probs.scatter(-1, target.reshape(-1, 1), 0.0).amax(-1)
    return {"p_true": p_true.mean(), "confident": ((p_true > 0.99) & (others < 0.01)).float().mean(),
            "stuck": ((probs.amax(-1) - probs.amin(-1)) < 0.05).float().mean()}


#: train.py's names for the values it hands over -> the table's keys
_TRAIN_NAMES = {"train/loss": "step_loss", "train/lr": "lr", "train/epoch_loss": "epoch_loss", "test/loss": "test_loss",
                "test/accuracy": "test_acc", "train/samples_per_s": "samples_per_s"}
