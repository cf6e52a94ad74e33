"""Pictures for the dashboard, drawn with matplotlib's Agg canvas (no pyplot, no display).

The gradient-flow chart is the one people paste into forum threads to find vanishing or
exploding gradients: mean and max |grad| per layer, input to output, on a log scale.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["gradient_flow", "curves"]

_LIGHT, _DARK, _BAD, _GOOD = "#9ecae1", "#08519c", "#cb181d", "#41ab5d"


def _log_axis(ax, low: float, high: float) -> None:
    """Integer powers of ten as plain labels: log-scale axes with mathtext labels cost 3x the render."""
    ticks = np.arange(np.floor(low), np.ceil(high) + 1)
    step = max(1, int(np.ceil(len(ticks) / 8)))
    ticks = ticks[::step]
    ax.set_yticks(ticks, [f"1e{int(t)}" for t in ticks])
    ax.set_ylim(np.floor(low), np.ceil(high) + 0.05)
    ax.grid(axis="y", color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)


def _labels(names: Sequence[str]) -> list[str]:
    """``layers.0.weight`` on two lines, ``layers.0`` over ``weight``: six labels fit without rotation."""
    return ["\n".join(n.rsplit(".", 1)) for n in names]


def _bars_from(ax, x, values: np.ndarray, bottom: float, **kwargs):
    return ax.bar(x, values - bottom, bottom=bottom, **kwargs)


def gradient_flow(names: Sequence[str], mean: np.ndarray, maximum: np.ndarray, step: int, *,
                  errors: Mapping[str, float] | None = None, tol: float | None = None) -> np.ndarray:
    """An RGB image (H, W, 3, uint8): mean and max |g| per parameter, and the compare errors if given."""
    tiny = 1e-30
    log_mean, log_max = np.log10(np.maximum(mean, tiny)), np.log10(np.maximum(maximum, tiny))
    panels = 2 if errors else 1
    # NOTE: small and with large type: TensorBoard's image cards show it about 350 px wide
    fig = Figure(figsize=(6.0 * panels, 4.0), dpi=80)
    FigureCanvasAgg(fig)
    x = np.arange(len(names))
    ax = fig.add_subplot(1, panels, 1)
    finite = log_mean[mean > 0]
    bottom = np.floor((finite.min() if finite.size else -8.0) - 0.5)
    _bars_from(ax, x, log_max, bottom, color=_LIGHT, width=0.8, label="max |∂L/∂θ|")
    _bars_from(ax, x, log_mean, bottom, color=_DARK, width=0.45, label="mean |∂L/∂θ|")
    _log_axis(ax, bottom, log_max.max() + 1)  # NOTE: one decade of headroom keeps the legend off the bars
    ax.set_xticks(x, _labels(names), fontsize=10)
    ax.tick_params(axis="y", labelsize=10)
    ax.set_title(f"gradient flow, step {step}: |∂L/∂θ|, input → output", fontsize=11)
    ax.legend(loc="upper left", ncol=2, fontsize=10, frameon=False)
    if errors:
        _compare_panel(fig.add_subplot(1, panels, 2), names, errors, tol, step)
    fig.subplots_adjust(left=0.06 if panels == 2 else 0.11, right=0.98, bottom=0.15, top=0.92, wspace=0.2)
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def _compare_panel(ax, names: Sequence[str], errors: Mapping[str, float], tol: float | None, step: int) -> None:
    x = np.arange(len(names))
    err = np.array([errors.get(n, np.nan) for n in names], dtype=float)
    log_err = np.log10(np.maximum(np.nan_to_num(err, nan=0.0), 1e-20))
    limit = np.log10(tol) if tol else None
    low = min(log_err.min(), limit if limit is not None else 0.0) - 1
    high = max(log_err.max(), limit if limit is not None else 0.0) + 0.5
    colors = [_BAD if tol is not None and e > tol else _GOOD for e in err]
    _bars_from(ax, x, log_err, np.floor(low), color=colors, width=0.6)
    if limit is not None:
        ax.axhline(limit, color=_BAD, linestyle="--", linewidth=1)
        ax.text(len(names) - 0.5, limit, f"tolerance {tol:g}", color=_BAD, fontsize=10, ha="right", va="bottom")
    _log_axis(ax, low, high)
    ax.set_xticks(x, _labels(names), fontsize=10)
    ax.tick_params(axis="y", labelsize=10)
    ax.set_title(f"hand vs native, step {step}: ‖g_hand − g_native‖ / ‖g_native‖", fontsize=11)


def curves(series: Mapping[str, tuple[Sequence[int], Sequence[float]]], title: str) -> np.ndarray:
    """An RGB image: one line per series (steps, values) on a log10 axis, with a legend; no value is cut off."""
    fig = Figure(figsize=(7.0, 4.0), dpi=80)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    low, high = np.inf, -np.inf
    for name, (steps, values) in series.items():
        logs = np.log10(np.maximum(np.asarray(values, dtype=float), 1e-30))
        ax.plot(steps, logs, linewidth=1.4, label=name)
        low, high = min(low, logs.min()), max(high, logs.max())
    _log_axis(ax, low, high + 0.3)
    ax.set_xlabel("step", fontsize=10)
    ax.set_title(title, fontsize=11)
    ax.legend(loc="best", fontsize=8, frameon=False, ncol=2)
    fig.subplots_adjust(left=0.1, right=0.98, bottom=0.13, top=0.92)
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
