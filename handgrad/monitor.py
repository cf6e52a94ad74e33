"""TensorBoard logging for training: a dashboard that shows the first steps and every layer at once.

When (:class:`LogSchedule`): step 0 (before any update), every step for the first ``log_dense``
steps, then every ``log_every`` steps, and always the last step of an epoch; about
``histograms`` histogram snapshots per run, from full batches; a gradient-flow picture at step 1
and once per epoch.

Tag groups (see the README, "Reading the dashboard"):

* ``train/*``, ``test/*``: losses, accuracy (also at step 0), learning rate, samples/s;
* ``grad_norm/<param>``: ‖∂J/∂θ‖ of the objective J = L + λ/2 Σ‖W‖² (what the optimizer sees);
  ``data_grad_norm/<param>``: ‖∂L/∂θ‖ of the data loss alone; ``penalty_grad_norm/<weight>``:
  ‖λW‖, the penalty's share, in closed form (∂L/∂W = ∂J/∂W − λW: no second backward);
* ``weight_norm/<param>``, ``update_ratio/<param>`` (‖ΔW‖/‖W‖) and ``update_ratio_log10/<param>``;
* ``act/<layer>/dead_frac`` (ReLU units zero for the whole batch), ``act/<layer>/saturated_frac``
  (sigmoid outputs below 0.01 or above 0.99; ``act/output_activation/...`` is the squared-error
  model's output sigmoid), ``output/p_true`` (mean predicted probability of the true class);
* ``compare/*``: hand-vs-native relative gradient errors, raw and as log10, with the tolerance as
  its own series (``--ops compare``, every step);
* ``grad_hist/<param>``, ``weight_hist/<param>``: histograms with at most ``HIST_BINS`` bins;
* images ``gradient_flow`` (mean and max |∂L/∂θ| per parameter in depth order) and ``graph/model``;
* a custom-scalars layout with one chart per statistic holding every layer; the configuration as
  text; at the end, hparams with the final metrics.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from torch import nn

from .nn import ReLU, Sigmoid

__all__ = ["Monitor", "LogSchedule", "HIST_BINS", "LOG10_FLOOR"]

HIST_BINS = 64  # NOTE: a full-resolution histogram of a 784x256 matrix costs more than a step
LOG10_FLOOR = -20.0  # log10 of an exact 0 (an error that vanished) is drawn here, not at -inf


def log10(value: float) -> float:
    """log10(max(v, 1e-20)): values TensorBoard's table would round to 0, in a readable form."""
    return math.log10(value) if value > 10**LOG10_FLOOR else LOG10_FLOOR


# ---------------------------------------------------------------------------------------------
# when to log
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LogSchedule:
    """Which steps log what. Steps count from 1 (step s is the s-th update); step 0 is the start.

    ``full_batches`` is the number of full batches per epoch: when it is less than
    ``steps_per_epoch`` the epoch's last batch is partial, and histograms and pictures avoid it.
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

    def histogram(self, step: int) -> bool:
        return step in self._histogram_steps

    def picture(self, step: int) -> bool:
        return step in self._picture_steps

    def _full(self, step: int) -> int:
        """``step``, or the epoch's last full-batch step when ``step`` is a partial batch."""
        in_epoch = (step - 1) % self.steps_per_epoch + 1
        if in_epoch > self.full_batches >= 1:
            return step - (in_epoch - self.full_batches)
        return step

    @cached_property
    def _histogram_steps(self) -> frozenset[int]:
        # NOTE: evenly spread from step 1 to the end; each then moved off a partial batch
        n, last = self.histograms, self.total_steps
        if n <= 0 or last <= 0:
            return frozenset()
        picks = {1 + round(k * (last - 1) / max(n - 1, 1)) for k in range(n)}
        return frozenset(self._full(s) for s in picks)

    @cached_property
    def _picture_steps(self) -> frozenset[int]:
        epochs = -(-self.total_steps // self.steps_per_epoch) if self.steps_per_epoch else 0
        ends = {min(e * self.steps_per_epoch, self.total_steps) for e in range(1, epochs + 1)}
        return frozenset({1} | {self._full(s) for s in ends}) if self.total_steps else frozenset()


# ---------------------------------------------------------------------------------------------
# the monitor
# ---------------------------------------------------------------------------------------------


class Monitor:
    """Writes one run's TensorBoard events; ``Monitor(None, ...)`` is a no-op with the same API.

    Per training step, in this order: ``before_forward(s)``, forward and backward,
    ``before_update(s, logits, target)``, ``optimizer.step()``, ``after_update(s, scalars)``.
    The model may give ``weight_decay`` (λ) and ``weights()`` (the penalized tensors), and
    ``loss_name`` ("ce" or "mse") for the output statistics.
    """

    def __init__(self, logdir: str | None, model: nn.Module, schedule: LogSchedule | None = None, *,
                 compare_tol: float | None = None) -> None:
        self.model, self.schedule, self.logdir, self.compare_tol = model, schedule, logdir, compare_tol
        self.writer = None
        self._named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        penalized = {id(w) for w in model.weights()} if hasattr(model, "weights") else set()
        self._lam = float(getattr(model, "weight_decay", 0.0) or 0.0)
        self._penalized = [i for i, (_, p) in enumerate(self._named) if id(p) in penalized] if self._lam else []
        self._loss_name = getattr(model, "loss_name", "ce")
        self._pending: list[tuple[str, torch.Tensor]] = []
        self._snapshot: list[torch.Tensor] | None = None
        self._compare_errors: tuple[int, dict[str, float]] | None = None
        self._hooks, self._act_kinds = [], {}
        self._capture = False
        if logdir is None or schedule is None:
            return
        from tensorboard.compat.proto.summary_pb2 import Summary
        from torch.utils.tensorboard import SummaryWriter

        from . import plots  # NOTE: imports matplotlib now (~0.5 s), not inside the first step

        self._plots, self._summary = plots, Summary
        self.writer = SummaryWriter(log_dir=logdir, flush_secs=30)
        for name, module in model.named_modules():
            if isinstance(module, (ReLU, Sigmoid)):
                self._act_kinds[name] = "dead_frac" if isinstance(module, ReLU) else "saturated_frac"
                self._hooks.append(module.register_forward_hook(self._activation_hook(name, module)))
        self.writer.add_custom_scalars(self.layout())

    # ---- writing -----------------------------------------------------------------------------

    def _write(self, step: int, values: Mapping[str, float]) -> None:
        """All ``values`` as one event: ~7 µs a value instead of ~150 µs for ``add_scalar`` each."""
        summary = self._summary(value=[self._summary.Value(tag=k, simple_value=float(v)) for k, v in values.items()])
        # NOTE: the same call add_scalar makes, once for every value of the step
        self.writer._get_file_writer().add_summary(summary, step)

    def layout(self) -> dict:
        """The custom-scalars layout: one chart per statistic, each holding every layer.

        Entries are regular expressions that TensorBoard matches at the start of each tag.
        """
        kinds = set(self._act_kinds.values())
        grads = {"data gradient ‖∂L/∂θ‖ (data loss only, penalty removed)": ["Multiline", ["data_grad_norm/"]]}
        if self._penalized:
            grads["penalty gradient ‖λW‖"] = ["Multiline", ["penalty_grad_norm/"]]
        grads["total gradient ‖∂J/∂θ‖ = data + penalty"] = ["Multiline", ["grad_norm/"]]
        weights = {"weight norm ‖W‖": ["Multiline", ["weight_norm/"]],
                   "update ratio ‖ΔW‖/‖W‖, log10": ["Multiline", ["update_ratio_log10/"]],
                   "update ratio ‖ΔW‖/‖W‖": ["Multiline", ["update_ratio/"]]}
        acts = {}
        if "dead_frac" in kinds:
            acts["dead ReLU units (zero for the whole batch)"] = ["Multiline", [r"act/.*/dead_frac$"]]
        if "saturated_frac" in kinds:
            acts["saturated sigmoid outputs (< 0.01 or > 0.99)"] = ["Multiline", [r"act/.*/saturated_frac$"]]
        output = [r"output/p_true$"] + ([r"act/output_activation/saturated_frac$"] if "output_activation" in
                                        self._act_kinds else [])
        acts["output layer: mean probability of the true class" + (", saturation" if len(output) > 1 else "")] = [
            "Multiline", output]
        run = {"loss": ["Multiline", [r"train/loss$", r"train/epoch_loss$", r"test/loss$"]],
               "test accuracy (%)": ["Multiline", [r"test/accuracy$"]],
               "learning rate": ["Multiline", [r"train/lr$"]]}
        layout = {}
        if self.compare_tol is not None:
            layout["hand vs native"] = {
                "relative gradient error, log10 (tolerance as its own line)": [
                    "Multiline", ["compare/log10_grad_rel_err/", r"compare/log10_tolerance$", r"compare/log10_max_rel_err$"]],
                "relative gradient error ‖g_hand − g_native‖ / ‖g_native‖": [
                    "Multiline", ["compare/grad_rel_err/", r"compare/tolerance$", r"compare/max_rel_err$"]],
                "objective difference |J_hand − J_native|": ["Multiline", [r"compare/loss_diff$"]]}
        layout.update({"gradients": grads, "weights and updates": weights, "activations and output": acts, "run": run})
        return layout

    # ---- activations -------------------------------------------------------------------------

    def _activation_hook(self, name: str, module: nn.Module):
        tag = f"act/{name}/{self._act_kinds[name]}"
        relu = isinstance(module, ReLU)

        def hook(_module, _inputs, output):
            if not self._capture:
                return
            with torch.no_grad():
                out = output.detach().reshape(-1, output.shape[-1])
                # NOTE: a ReLU unit is dead on the batch when its largest output is 0 (cheaper than a bool .all)
                value = (out.amax(dim=0) <= 0).float().mean() if relu else ((out - 0.5).abs() > 0.49).float().mean()
            self._pending.append((tag, value))

        return hook

    # ---- the run -----------------------------------------------------------------------------

    def start(self, step: int, evaluate: Callable[[], tuple[float, float]]) -> None:
        """Step 0 of a fresh run: test loss and accuracy and the weight norms before any update."""
        if self.writer is None or step != 0:
            return
        test_loss, test_acc = evaluate()
        norms = torch.stack(torch._foreach_norm([p.detach() for _, p in self._named])).tolist()
        self._write(0, {"test/loss": test_loss, "test/accuracy": test_acc,
                        **{f"weight_norm/{n}": v for (n, _), v in zip(self._named, norms)}})

    def wants(self, step: int) -> bool:
        """Whether ``step`` (counted from 1) logs its statistics."""
        return self.writer is not None and self.schedule.scalars(step)

    def before_forward(self, step: int) -> None:
        self._capture = self.wants(step)

    def before_update(self, step: int, logits: torch.Tensor | None = None, target: torch.Tensor | None = None) -> None:
        """Gradient statistics of this step, taken while the weights are those the gradient belongs to."""
        if self.writer is None:
            return
        if self.schedule.picture(step):
            self.gradient_flow(step)
        if not self.wants(step):
            return
        self._capture = False
        with torch.no_grad():
            params = [p.detach() for _, p in self._named]
            grads, data = self._gradients(params)
            names = [n for n, _ in self._named]
            self._pending += zip([f"grad_norm/{n}" for n in names], torch._foreach_norm(grads))
            self._pending += zip([f"data_grad_norm/{n}" for n in names], torch._foreach_norm(data))
            if self._penalized:
                norms = torch._foreach_norm([params[i] for i in self._penalized])
                self._pending += [(f"penalty_grad_norm/{names[i]}", self._lam * w) for i, w in zip(self._penalized, norms)]
            if logits is not None and target is not None:
                self._pending.append(("output/p_true", self._p_true(logits.detach(), target)))
            self._snapshot = [p.clone() for p in params]

    def _gradients(self, params: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(∂J/∂θ, ∂L/∂θ) per parameter; ∂L/∂W = ∂J/∂W − λW for the penalized weights."""
        grads = [p.grad.detach() if p.grad is not None else torch.zeros_like(p) for _, p in self._named]
        data = list(grads)
        if self._penalized:
            less = torch._foreach_add([grads[i] for i in self._penalized], [params[i] for i in self._penalized],
                                      alpha=-self._lam)
            for i, d in zip(self._penalized, less):
                data[i] = d
        return grads, data

    def _p_true(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean over the batch of the predicted probability of the true class (softmax or sigmoid)."""
        probs = logits.float().softmax(-1) if self._loss_name == "ce" else logits.float().sigmoid()
        return probs.gather(-1, target.reshape(-1, 1)).mean()

    def after_update(self, step: int, scalars: Mapping[str, torch.Tensor | float]) -> None:
        """Weight norms, update ratios, the pending statistics and ``scalars``, with one host sync."""
        if self.wants(step):
            params = [p.detach() for _, p in self._named]
            names = [n for n, _ in self._named]
            weight_norms = torch._foreach_norm(params)
            pending = self._pending + list(zip([f"weight_norm/{n}" for n in names], weight_norms))
            if self._snapshot is not None:
                updates = torch._foreach_norm(torch._foreach_sub(params, self._snapshot))
                pending += [(f"update_ratio/{n}", u / w.clamp_min(1e-12)) for n, u, w in zip(names, updates, weight_norms)]
            pending += [(k, v.detach()) for k, v in scalars.items() if isinstance(v, torch.Tensor)]
            device = params[0].device
            values = torch.stack([v.float().reshape(()).to(device) for _, v in pending]).tolist()  # the one sync
            out = dict(zip([k for k, _ in pending], values))
            out.update({f"update_ratio_log10/{k[13:]}": log10(v) for k, v in out.items() if k.startswith("update_ratio/")})
            out.update({k: float(v) for k, v in scalars.items() if not isinstance(v, torch.Tensor)})
            self._write(step, out)
        self._pending.clear()
        self._snapshot = None
        if self.writer is not None and self.schedule.histogram(step):
            self.histograms(step)

    def compare(self, step: int, errors: Mapping[str, float], loss_diff: float, tol: float) -> None:
        """Hand-vs-native relative errors per parameter, their maximum and the tolerance, raw and as log10."""
        self._compare_errors = (step, dict(errors))
        if self.writer is None:
            return
        worst = max(errors.values(), default=0.0)
        out = {f"compare/grad_rel_err/{n}": v for n, v in errors.items()}
        out.update({f"compare/log10_grad_rel_err/{n}": log10(v) for n, v in errors.items()})
        out.update({"compare/max_rel_err": worst, "compare/log10_max_rel_err": log10(worst), "compare/tolerance": tol,
                    "compare/log10_tolerance": log10(tol), "compare/loss_diff": loss_diff})
        self._write(step, out)

    def gradient_flow(self, step: int) -> None:
        """The gradient-flow picture: mean and max |∂L/∂θ| per parameter in depth order (Images tab)."""
        if self.writer is None:
            return
        with torch.no_grad():
            _, data = self._gradients([p.detach() for _, p in self._named])
            stats = torch.stack([torch.stack([d.abs().mean(), d.abs().amax()]) for d in data]).double().cpu().numpy()
        errors = self._compare_errors[1] if self._compare_errors and self._compare_errors[0] == step else None
        names = [n for n, _ in self._named]
        image = self._plots.gradient_flow(names, stats[:, 0], stats[:, 1], step, errors=errors, tol=self.compare_tol)
        self.writer.add_image("gradient_flow", image, step, dataformats="HWC")

    def histograms(self, step: int) -> None:
        """Weight and gradient histograms with at most HIST_BINS bins, binned on the device."""
        if self.writer is None:
            return
        tensors = [(f"weight_hist/{n}", p.detach()) for n, p in self._named]
        tensors += [(f"grad_hist/{n}", p.grad.detach()) for n, p in self._named if p.grad is not None]
        tensors = [(tag, t.reshape(-1)) for tag, t in tensors if t.numel()]
        with torch.no_grad():
            ranges = torch.stack([torch.stack(torch.aminmax(t)) for _, t in tensors]).double().tolist()
            for (tag, t), (lo, hi) in zip(tensors, ranges):
                if not hi > lo:  # NOTE: a constant tensor still gets one bin of nonzero width
                    lo, hi = lo - 0.5, hi + 0.5
                counts = torch.histc(t, HIST_BINS, lo, hi).double().cpu().numpy()
                edges = np.linspace(lo, hi, HIST_BINS + 1)
                # NOTE: TensorBoard stores right edges only; an empty first bucket carries the left edge
                self.writer.add_histogram_raw(tag, lo, hi, t.numel(), float(t.sum()), float(torch.dot(t, t)),
                                              edges, np.concatenate([[0.0], counts]), step)

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        if self.writer is not None:
            self._write(step, values)

    def graph(self, image: np.ndarray, mermaid: str) -> None:
        """The model's autograd graph for one batch: the picture (HWC uint8) in Images, the mermaid source in Text."""
        if self.writer is None:
            return
        self.writer.add_image("graph/model", image, 0, dataformats="HWC")
        self.writer.add_text("graph/mermaid", "\n".join("    " + line for line in mermaid.splitlines()), 0)

    def config(self, config: Mapping) -> None:
        if self.writer is None:
            return
        text = "\n".join(f"    {k}: {v}" for k, v in sorted(config.items()))
        self.writer.add_text("config", text, 0)

    def hparams(self, config: Mapping, metrics: Mapping[str, float]) -> None:
        if self.writer is None:
            return
        hp = {k: (v if isinstance(v, (int, float, str, bool)) else json.dumps(v)) for k, v in config.items()
              if v is not None}
        self.writer.add_hparams(hp, {f"hparam/{k}": float(v) for k, v in metrics.items()}, run_name=".")

    def close(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
            self.writer = None
