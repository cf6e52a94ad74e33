"""Hand-written gradients checked against PyTorch's native ones at every training step.

``train.py --ops compare`` trains the hand-op model and, once per step, asks a :class:`Comparison`
for the native twin's gradients at the same parameters on the same batch. The comparison returns
a :class:`CompareResult` (it never holds the monitor): the training loop hands it to the monitor,
and stops when ``result.ok`` is false.

By default both sides are recomputed in float64 on the compared step: float32 rounding alone
makes correct gradients differ by ~1e-7 relative, which would hide a backward off by 1e-5; in
float64 correct ops agree to ~1e-15, so a tolerance of 1e-8 catches the one and never the other.
The float32 noise floor ‖g32 − g64‖/‖g64‖ of the native gradients is measured beside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ["Comparison", "CompareResult", "GradientMismatch", "Objective", "compare_gradients", "DEFAULT_TOL"]

#: default tolerance by the dtype the comparison runs in
DEFAULT_TOL = {"float64": 1e-8, "float32": 1e-4}
NOISE_EVERY = 50  # NOTE: the float32 noise floor costs one more native pass: step 1, every 50th, a failure


class GradientMismatch(Exception):
    """A hand gradient differs from the native one by more than the tolerance."""


class Objective(nn.Module):
    """Wraps a model so that ``functional_call`` runs its ``objective`` rather than ``forward``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.m = model

    def forward(self, x, y):
        return self.m.objective(x, y)


def _total(out) -> torch.Tensor:
    """J from ``objective``'s result: a tuple (J, L, logits) or a named result with ``total``."""
    return out.total if hasattr(out, "total") else out[0]


def _grads(twin: nn.Module, params: dict, x, y, names: list[str]):
    total = _total(torch.func.functional_call(twin, {f"m.{k}": v for k, v in params.items()}, (x, y)))
    return torch.autograd.grad(total, [params[n] for n in names]), total.detach()


def _rel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """‖a − b‖ / ‖b‖ (an exact zero gradient compared with itself gives 0)."""
    return (a - b).norm() / b.norm().clamp_min(1e-30)


def compare_gradients(model: nn.Module, twin: nn.Module, x, y, names: list[str]):
    """Native gradients at the hand model's parameters, on the same batch, vs the hand ones (``.grad``).

    ``twin`` is ``Objective(native model)``; ``torch.func.functional_call`` runs it with the hand
    model's own parameter tensors, so nothing is copied. Returns the relative error per
    parameter, ‖g_hand − g_native‖ / ‖g_native‖, and the native objective, as tensors.
    """
    params = dict(model.named_parameters())
    grads, total = _grads(twin, params, x, y, names)
    return {n: _rel(params[n].grad, g) for n, g in zip(names, grads)}, total


@dataclass
class CompareResult:
    """One compared step, and the run so far: what the monitor draws and the verdict text says."""

    step: int
    errors: dict[str, float]
    objective_diff: float
    tol: float
    dtype: str
    noise: dict[str, float] | None
    worst: dict[str, float]
    steps: int
    noise_max: float | None = None
    likely_op: str = ""
    failed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def message(self) -> str:
        """One sentence for the terminal."""
        name = self.failed[0] if self.failed else max(self.worst, key=self.worst.get)
        if self.ok:
            return (f"compare: {self.steps} steps in {self.dtype}, largest relative gradient error "
                    f"{self.worst[name]:.3g} ({name}), tolerance {self.tol:g}")
        return (f"hand and native gradients disagree at step {self.step}: relative error {self.errors[name]:.3g} in "
                f"{name} exceeds the tolerance {self.tol:g} ({self.dtype} comparison); likely op: {self.likely_op}.")

    def markdown(self) -> str:
        """The verdict for TensorBoard's Text tab."""
        noise = f"{self.noise_max:.2g}" if self.noise_max is not None else "not measured"
        if self.ok:
            name = max(self.worst, key=self.worst.get)
            head = (f"## hand vs native: PASS\n\n{self.steps} steps compared in {self.dtype}: the largest relative "
                    f"gradient error was **{self.worst[name]:.2g}** (`{name}`) against the tolerance {self.tol:g}; "
                    f"float32 noise floor (native float32 vs float64 gradients): {noise}.")
        else:
            name = self.failed[0]
            times = f", {self.errors[name] / self.noise_max:.3g}× that floor" if self.noise_max else ""
            head = (f"## hand vs native: FAIL at step {self.step}\n\n`{name}`: relative gradient error "
                    f"**{self.errors[name]:.3g}** against the tolerance {self.tol:g} ({self.dtype} comparison; "
                    f"float32 noise floor {noise}{times}).\n\nLikely op: **{self.likely_op}**.")
        rows = [f"| `{n}` | {e:.3g} | {'FAIL' if n in self.failed else 'ok'} |" for n, e in self.errors.items()]
        return "\n".join([head, "", f"step {self.step}:", "", "| parameter | relative error | |", "|---|---|---|", *rows])


class Comparison:
    """Per step: hand vs native gradients of the objective, as a :class:`CompareResult`.

    ``model`` holds the hand gradients of the step (after ``backward``); ``native`` is the same
    architecture built on native ops (its own parameters are never used). ``dtype="float64"``
    recomputes both sides in float64 at the step's parameters and batch; ``"float32"`` compares
    the training gradients themselves (in the training dtype). ``worst`` keeps the largest error
    seen per parameter.
    """

    def __init__(self, model: nn.Module, native: nn.Module, tol: float | None = None, dtype: str = "float64") -> None:
        self.model, self.twin, self.hand = model, Objective(native), Objective(model)
        self.dtype = dtype
        self.tol = float(DEFAULT_TOL[dtype] if tol is None else tol)
        self.names = [n for n, _ in model.named_parameters()]
        self.worst = {n: 0.0 for n in self.names}
        self.steps, self._noise_max, self._noise = 0, None, None
        self._order = _module_order(model)

    def step(self, x: torch.Tensor, y: torch.Tensor, step: int, total: torch.Tensor) -> CompareResult:
        """Relative error per parameter at ``step``; ``result.ok`` is false above the tolerance (or NaN)."""
        if self.dtype == "float64":
            wide = {n: p.detach().double().requires_grad_() for n, p in self.model.named_parameters()}
            x64 = x.double()
            hand, hand_total = _grads(self.hand, wide, x64, y, self.names)
            native, native_total = _grads(self.twin, wide, x64, y, self.names)
            errors = {n: _rel(h, g) for n, h, g in zip(self.names, hand, native)}
        else:
            errors, native_total = compare_gradients(self.model, self.twin, x, y, self.names)
            hand_total = total.detach()
        values = torch.stack([*errors.values(), (hand_total - native_total).abs().double()]).tolist()  # one sync
        errors = dict(zip(self.names, values[:-1]))
        failed = [n for n in reversed(self.names) if not errors[n] <= self.tol]  # NOTE: a NaN fails too
        if step == 1 or step % NOISE_EVERY == 0 or failed:
            self._measure_noise(x, y)
        self.steps += 1
        for n, v in errors.items():
            self.worst[n] = max(self.worst[n], v) if v == v else v
        return CompareResult(step, errors, values[-1], self.tol, self.dtype, self._noise, dict(self.worst), self.steps,
                             self._noise_max, _likely_op(self._order, failed, getattr(self.model, "loss_name", "")),
                             failed)

    def _measure_noise(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """‖g32 − g64‖/‖g64‖ of the native gradients: how far float32 rounding alone moves a correct gradient."""
        params = {n: p.detach() for n, p in self.model.named_parameters()}
        narrow = {n: p.float().requires_grad_() for n, p in params.items()}
        wide = {n: p.double().requires_grad_() for n, p in params.items()}
        g32, _ = _grads(self.twin, narrow, x.float(), y, self.names)
        g64, _ = _grads(self.twin, wide, x.double(), y, self.names)
        noise = torch.stack([_rel(a.double(), b) for a, b in zip(g32, g64)]).tolist()
        self._noise = dict(zip(self.names, noise))
        self._noise_max = max(self._noise_max or 0.0, max(noise))

    def summary(self) -> str:
        worst = max(self.worst, key=self.worst.get)
        return (f"compare: {self.steps} steps in {self.dtype}, largest relative gradient error {self.worst[worst]:.3g} "
                f"({worst}), tolerance {self.tol:g}" + (f", float32 noise floor {self._noise_max:.2g}"
                                                       if self._noise_max is not None else ""))


def _module_order(model: nn.Module) -> list[tuple[str, str, list[str]]]:
    """(name, class, parameter names) of each leaf module, in registration (forward) order."""
    out = []
    for name, module in model.named_modules():
        if not list(module.children()):
            out.append((name, type(module).__name__, [f"{name}.{p}" for p, _ in module.named_parameters(recurse=False)]))
    return out


def _likely_op(order, failed: list[str], loss: str) -> str:
    """The op just above the highest parameter whose gradient is wrong (gradients flow down from the loss)."""
    if not failed:
        return ""
    bad = set(failed)
    with_params = [m for m in order if m[2]]
    if all(p in bad for m in with_params for p in m[2] if p.endswith("weight")) and not any(
            p in bad for m in with_params for p in m[2] if not p.endswith("weight")) and len(with_params) > 1:
        return "l2_penalty (every penalized weight disagrees, no bias does)"
    top = max(i for i, m in enumerate(order) if bad & set(m[2]))
    name, cls, params = order[top]
    if not set(params) <= bad:
        return f"{cls} {name}: its own backward for {', '.join(p.rsplit('.', 1)[1] for p in params if p in bad)}"
    for above, above_cls, above_params in order[top + 1:]:
        if above_params:
            return f"{above_cls} {above}'s input gradient, just above {params[0]} ({above_params[0]} agrees)"
        return f"{above_cls} {above}, the first op above {params[0]}"
    return {"ce": "cross_entropy", "mse": "mse_loss (or the output sigmoid)"}.get(loss, "the loss") + \
        f", the only op above {params[0]}"
