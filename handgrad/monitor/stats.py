"""The statistics the monitor computes from tensors: gradient norms per parameter, and the output's.

Pure functions of tensors (no writer, no schedule), so each is tested against a direct computation.
"""

from __future__ import annotations

import torch

from .. import compat

__all__ = ["data_gradients", "gradient_norms", "output_stats", "synced"]


def data_gradients(grads: list[torch.Tensor], params: list[torch.Tensor], penalized: list[int], lam: float,
                   out: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
    """∂L/∂θ per parameter: ∂J/∂θ less λW for the penalized weights (closed form, no second backward).

    ``out``: tensors shaped like the penalized weights, overwritten with their data gradients
    instead of new ones being allocated (a caller that does this every step keeps them)."""
    grads = list(grads)
    if penalized:
        pen_grads, pen_weights = [grads[i] for i in penalized], [params[i] for i in penalized]
        if out is None:
            out = compat.add_scaled(pen_grads, pen_weights, -lam)
        else:
            compat.copy_(out, pen_grads)
            compat.add_scaled_(out, pen_weights, -lam)
        for i, d in zip(penalized, out):
            grads[i] = d
    return grads


def gradient_norms(names: list[str], params: list[torch.Tensor], grads: list[torch.Tensor], penalized: list[int],
                   lam: float, totals: list[torch.Tensor] | None = None,
                   scratch: list[torch.Tensor] | None = None) -> list[tuple[str, str, torch.Tensor]]:
    """(key, parameter, norm) rows: total ‖∂J/∂θ‖, data ‖∂L/∂θ‖ and, for penalized weights, ‖λW‖
    (``totals``: the ‖∂J/∂θ‖ where the caller has them already; ``scratch``: tensors shaped like the
    penalized weights, overwritten with their data gradients instead of new ones being allocated)."""
    totals = compat.norms(grads) if totals is None else list(totals)
    data = list(totals)  # NOTE: an unpenalized parameter's data gradient is its total gradient
    rows = []
    if penalized:
        pen_data = data_gradients([grads[i] for i in penalized], [params[i] for i in penalized],
                                  list(range(len(penalized))), lam, out=scratch)
        for i, d in zip(penalized, compat.norms(pen_data)):
            data[i] = d
        rows += [("penalty_norm", names[i], lam * w) for i, w in zip(penalized, compat.norms([params[i] for i in penalized]))]
    for key, norms in (("total_norm", totals), ("data_norm", data)):
        rows += [(key, n, v) for n, v in zip(names, norms)]
    return rows


def synced(values: list) -> list[float]:
    """Tensors among ``values`` as floats, through one device-to-host transfer; numbers as they are."""
    tensors = [(i, v) for i, v in enumerate(values) if isinstance(v, torch.Tensor)]
    out = list(values)
    if tensors:
        first = tensors[0][1]
        plain = len({v.dtype for _, v in tensors}) == 1
        if plain:
            try:
                stacked = torch.stack([v for _, v in tensors])  # NOTE: the common case: 0-dim results of one dtype
                plain = stacked.dim() == 1
            except RuntimeError:  # NOTE: mixed devices or shapes
                plain = False
        if not plain:  # NOTE: mixed dtypes (stack promotes them) or shapes: each as a float64 scalar
            stacked = torch.stack([v.detach().double().reshape(()).to(first.device) for _, v in tensors])
        for (i, _), v in zip(tensors, stacked.tolist()):
            out[i] = v
    return out


def output_stats(logits: torch.Tensor, target: torch.Tensor, softmax: bool) -> dict[str, torch.Tensor]:
    """p_true, and the answers that are confident (true class > 0.99, the rest < 0.01) or stuck (all within 0.05)."""
    probs = logits.softmax(-1) if softmax else logits.sigmoid()
    p_true = probs.gather(-1, target.reshape(-1, 1)).squeeze(-1)
    others = probs.scatter(-1, target.reshape(-1, 1), 0.0).amax(-1)
    return {"p_true": p_true.mean(), "confident": ((p_true > 0.99) & (others < 0.01)).float().mean(),
            "stuck": ((probs.amax(-1) - probs.amin(-1)) < 0.05).float().mean()}
