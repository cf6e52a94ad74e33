"""TensorBoard logging for training: losses, gradient and weight statistics, activations.

Tag groups (see the README, "Inspecting gradients"):

* ``train/*``, ``test/*``: losses, accuracy, learning rate, samples/s;
* ``grad_norm/<param>``, ``weight_norm/<param>``, ``update_ratio/<param>``: every ``log_every``
  steps, computed on the device and brought to the host in one transfer;
* ``grad_hist/<param>``, ``weight_hist/<param>``: histograms every epoch (or ``hist_every``
  steps) with a bounded number of bins;
* ``act/<layer>/dead_frac`` (ReLU units that are zero for the whole batch) and
  ``act/<layer>/saturated_frac`` (sigmoid outputs below 0.01 or above 0.99), from forward hooks;
* ``compare/*``: hand-vs-native differences, written by ``--ops compare``;
* the configuration as text and, at the end, hparams with the final metrics.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import torch
from torch import nn

from .nn import ReLU, Sigmoid

__all__ = ["Monitor", "HIST_BINS"]

HIST_BINS = 64  # NOTE: a full-resolution histogram of a 784x256 matrix costs more than a step


class Monitor:
    """Writes one run's TensorBoard events; ``Monitor(None, ...)`` is a no-op with the same API."""

    def __init__(self, logdir: str | None, model: nn.Module, *, log_every: int = 50,
                 hist_every: int = 0) -> None:
        self.model = model
        self.log_every = max(1, int(log_every))
        self.hist_every = int(hist_every)
        self.writer = None
        self.logdir = logdir
        self._named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self._snapshot: list[torch.Tensor] | None = None
        self._act_pending: dict[str, torch.Tensor] = {}
        self._hooks = []
        self._capture = False
        if logdir is None:
            return
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=logdir, flush_secs=30)
        for name, module in model.named_modules():
            if isinstance(module, (ReLU, Sigmoid)):
                self._hooks.append(module.register_forward_hook(self._activation_hook(name, module)))

    # ---- activations -------------------------------------------------------------------------

    def _activation_hook(self, name: str, module: nn.Module):
        tag = f"act/{name}/" + ("dead_frac" if isinstance(module, ReLU) else "saturated_frac")

        def hook(_module, _inputs, output):
            if not self._capture:
                return
            with torch.no_grad():
                out = output.detach().reshape(-1, output.shape[-1])
                if isinstance(module, ReLU):
                    value = (out <= 0).all(dim=0).float().mean()
                else:
                    value = ((out < 0.01) | (out > 0.99)).float().mean()
            self._act_pending[tag] = value

        return hook

    def wants(self, step: int) -> bool:
        """Whether ``step`` (counted from 1) is a logging step."""
        return self.writer is not None and step % self.log_every == 0

    def before_forward(self, step: int) -> None:
        self._capture = self.wants(step)

    def before_update(self, step: int) -> None:
        """Snapshot the weights on logging steps, for the update-to-weight ratio."""
        if self.wants(step):
            self._snapshot = [p.detach().clone() for _, p in self._named]

    # ---- per-step statistics -----------------------------------------------------------------

    def after_update(self, step: int, scalars: Mapping[str, torch.Tensor | float]) -> None:
        """Log norms, ratios, activation statistics and ``scalars`` with one host sync."""
        if not self.wants(step):
            return
        self._capture = False
        params = [p.detach() for _, p in self._named]
        grads = [p.grad.detach() if p.grad is not None else torch.zeros_like(p) for _, p in self._named]
        grad_norms = torch._foreach_norm(grads)
        weight_norms = torch._foreach_norm(params)
        stats = [*grad_norms, *weight_norms]
        if self._snapshot is not None:
            updates = torch._foreach_sub(params, self._snapshot)
            update_norms = torch._foreach_norm(updates)
            stats += [u / w.clamp_min(1e-12) for u, w in zip(update_norms, weight_norms)]
        keys = list(self._act_pending)
        stats += [self._act_pending[k] for k in keys]
        scalar_keys = [k for k, v in scalars.items() if isinstance(v, torch.Tensor)]
        stats += [scalars[k].detach().float().reshape(()) for k in scalar_keys]
        values = torch.stack([s.float().to(stats[0].device) for s in stats]).tolist()  # the one sync
        n = len(self._named)
        w = self.writer
        for i, (name, _) in enumerate(self._named):
            w.add_scalar(f"grad_norm/{name}", values[i], step)
            w.add_scalar(f"weight_norm/{name}", values[n + i], step)
            if self._snapshot is not None:
                w.add_scalar(f"update_ratio/{name}", values[2 * n + i], step)
        offset = 3 * n if self._snapshot is not None else 2 * n
        for j, k in enumerate(keys):
            w.add_scalar(k, values[offset + j], step)
        offset += len(keys)
        for j, k in enumerate(scalar_keys):
            w.add_scalar(k, values[offset + j], step)
        for k, v in scalars.items():
            if not isinstance(v, torch.Tensor):
                w.add_scalar(k, float(v), step)
        self._snapshot = None
        self._act_pending.clear()
        if self.hist_every and step % self.hist_every == 0:
            self.histograms(step)

    def histograms(self, step: int) -> None:
        if self.writer is None:
            return
        for name, p in self._named:
            self.writer.add_histogram(f"weight_hist/{name}", p.detach().float().cpu(), step, bins=HIST_BINS)
            if p.grad is not None:
                self.writer.add_histogram(f"grad_hist/{name}", p.grad.detach().float().cpu(), step, bins=HIST_BINS)

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        if self.writer is None:
            return
        for k, v in values.items():
            self.writer.add_scalar(k, float(v), step)

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
