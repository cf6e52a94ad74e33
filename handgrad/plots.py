"""Pictures for the dashboard, drawn with Pillow: a few milliseconds each, no matplotlib.

The gradient-flow chart is the one people paste into forum threads to find vanishing or
exploding gradients: mean and max |grad| per layer, input to output, on a log scale. Drawn
directly on a Pillow image (bars, lines, a log10 axis and a legend are all these charts need),
one costs 2-4 ms where matplotlib's figure machinery took 45-70 ms; the writer process draws
them while training runs, so that time is the wait at the end of a short run.
"""

from __future__ import annotations

import importlib.util
import math
import os
from collections.abc import Mapping, Sequence
from functools import cache, lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["gradient_flow", "curves"]

_LIGHT, _DARK, _BAD, _GOOD = "#9ecae1", "#08519c", "#cb181d", "#41ab5d"
_GRID, _INK, _WHITE, _MISSING = "#dddddd", "#222222", "white", "#999999"
#: one colour per series of a line chart (TensorBoard-like, told apart at a glance)
_SERIES = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
#: chart size in pixels: TensorBoard's image cards show a picture about 350 px wide, so the type is large
PANEL_W, CURVES_W, HEIGHT = 480, 560, 320
_TINY = 1e-30


# ---- type --------------------------------------------------------------------------------------

_ASCII = str.maketrans({"∂": "d", "θ": "theta", "‖": "|", "→": "->", "−": "-"})


@cache
def _font(size: int) -> tuple[ImageFont.ImageFont, bool]:
    """A font at ``size`` px and whether it has the charts' symbols (∂ θ ‖ →): DejaVu Sans from the
    system or from matplotlib's copy (found without importing matplotlib), else Pillow's own."""
    candidates = ["DejaVuSans.ttf"]  # NOTE: Pillow looks in the system's font folders
    spec = importlib.util.find_spec("matplotlib")
    if spec is not None and spec.submodule_search_locations:
        candidates.append(os.path.join(spec.submodule_search_locations[0], "mpl-data", "fonts", "ttf", "DejaVuSans.ttf"))
    for candidate in candidates:
        try:
            return ImageFont.truetype(candidate, size), True
        except (OSError, ImportError):  # NOTE: ImportError: a Pillow built without FreeType
            continue
    return ImageFont.load_default(size=size), False


@lru_cache(maxsize=1024)
def _stamp(text: str, size: int, anchor: str) -> tuple[Image.Image, int, int]:
    """``text`` rendered once as a mask, with its offset from the anchor point: the charts repeat
    their labels picture after picture, and pasting a mask costs a tenth of rendering the glyphs."""
    font, symbols = _font(size)
    text = text if symbols else text.translate(_ASCII)
    probe = ImageDraw.Draw(Image.new("L", (1, 1)))
    left, top, right, bottom = probe.multiline_textbbox((0, 0), text, font=font, anchor=anchor, align="center", spacing=1)
    left, top = math.floor(left), math.floor(top)
    mask = Image.new("L", (max(math.ceil(right) - left, 1), max(math.ceil(bottom) - top, 1)), 0)
    ImageDraw.Draw(mask).multiline_text((-left, -top), text, fill=255, font=font, anchor=anchor, align="center", spacing=1)
    return mask, left, top


def _text(image: Image.Image, xy: tuple[float, float], text: str, size: int, fill: str = _INK, anchor: str = "la",
          backdrop: bool = False) -> None:
    """``text`` at ``xy`` (Pillow's anchors: "mm" centred, "rm" right-middle, ...); lines centred on each other;
    ``backdrop``: on a white box, so a label drawn over bars stays readable."""
    mask, left, top = _stamp(text, size, anchor)
    x, y = round(xy[0]) + left, round(xy[1]) + top
    if backdrop:
        image.paste(_WHITE, (x - 2, y - 1, x + mask.width + 2, y + mask.height + 1))
    image.paste(fill, (x, y, x + mask.width, y + mask.height), mask)


def _width(text: str, size: int) -> float:
    font, symbols = _font(size)
    return font.getlength(text if symbols else text.translate(_ASCII))


# ---- axes --------------------------------------------------------------------------------------


class _Axes:
    """A plotting box on an image with a log10 y axis: data (x, log10 y) to pixels, grid, frame, labels."""

    def __init__(self, image: Image.Image, box: tuple[int, int, int, int], low: float, high: float) -> None:
        self.image, self.draw = image, ImageDraw.Draw(image)
        self.left, self.top, self.right, self.bottom = box
        self.low, self.high = math.floor(low), math.ceil(high) + 0.05
        decades = np.arange(math.floor(low), math.ceil(high) + 1)
        every = max(1, math.ceil(len(decades) / 8))
        for d in decades[::every]:
            y = self.y(d)
            self.draw.line([(self.left, y), (self.right, y)], fill=_GRID, width=1)
            _text(self.image, (self.left - 5, y), f"1e{int(d)}", 12, anchor="rm")

    def y(self, log_value: float) -> float:
        """Pixel row of a log10 value, kept inside the box."""
        frac = (log_value - self.low) / (self.high - self.low)
        return self.bottom - min(max(frac, 0.0), 1.0) * (self.bottom - self.top)

    def frame(self, title: str) -> None:
        self.draw.rectangle([self.left, self.top, self.right, self.bottom], outline=_INK, width=1)
        _text(self.image, ((self.left + self.right) / 2, self.top - 8), title, 13, anchor="md")

    def slots(self, n: int) -> list[tuple[float, float]]:
        """(centre, width) of ``n`` equal slots across the box, for bars and their labels."""
        width = (self.right - self.left) / max(n, 1)
        return [(self.left + (i + 0.5) * width, width) for i in range(n)]

    def bar(self, centre: float, width: float, log_value: float, bottom: float, fill: str) -> None:
        if math.isfinite(log_value) and log_value > bottom:
            self.draw.rectangle([centre - width / 2, self.y(log_value), centre + width / 2, self.y(bottom)], fill=fill)

    def names(self, names: Sequence[str]) -> None:
        """``layers.0.weight`` as ``layers.0`` over ``weight``: six labels fit without rotation."""
        for (centre, _), name in zip(self.slots(len(names)), names):
            _text(self.image, (centre, self.bottom + 5), "\n".join(name.rsplit(".", 1)), 12, anchor="ma")

    def word(self, centre: float, word: str, fill: str) -> None:
        """A word in place of a slot's bar, below the legend's row."""
        _text(self.image, (centre, self.top + 28), word, 12, fill=fill, anchor="ma")

    def non_finite(self, centre: float, value: float) -> None:
        """A value that has no bar (inf or NaN) said in red in its slot."""
        self.word(centre, "nan" if math.isnan(value) else "inf", _BAD)

    def legend(self, entries: Sequence[tuple[str, str]], columns: int, right: bool = False) -> None:
        """Colour keys and labels in ``columns`` columns, in the box's top left corner (or its top right)."""
        column_w = max(_width(label, 12) for _, label in entries) + 26
        x0 = self.right - columns * column_w - 6 if right else self.left + 10
        for i, (colour, label) in enumerate(entries):
            cx, cy = x0 + (i % columns) * column_w, self.top + 8 + (i // columns) * 16
            self.draw.rectangle([cx, cy + 2, cx + 14, cy + 10], fill=colour)
            _text(self.image, (cx + 19, cy + 6), label, 12, anchor="lm")


def _logs(values) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log10(np.where(values > 0, values, _TINY)) if values.size else values


# ---- charts ------------------------------------------------------------------------------------


def gradient_flow(names: Sequence[str], mean: np.ndarray, maximum: np.ndarray, step: int, *,
                  errors: Mapping[str, float] | None = None, tol: float | None = None) -> np.ndarray:
    """An RGB image (H, W, 3, uint8): mean and max |g| per parameter, and the compare errors if given."""
    mean, maximum = np.asarray(mean, dtype=float), np.asarray(maximum, dtype=float)
    image = Image.new("RGB", (PANEL_W * (2 if errors else 1), HEIGHT), _WHITE)
    log_mean, log_max = _logs(mean), _logs(maximum)
    finite_mean = log_mean[np.isfinite(mean) & (mean > 0)]
    finite_max = log_max[np.isfinite(maximum) & (maximum > 0)]
    bottom = math.floor((finite_mean.min() if finite_mean.size else -8.0) - 0.5)
    # NOTE: one decade of headroom keeps the legend off the bars
    top = (finite_max.max() if finite_max.size else bottom + 1) + 1
    axes = _Axes(image, (52, 28, PANEL_W - 12, HEIGHT - 40), bottom, top)
    for (centre, width), lmax, lmean, m, g in zip(axes.slots(len(names)), log_max, log_mean, maximum, mean):
        axes.bar(centre, 0.8 * width, lmax, bottom, _LIGHT)
        axes.bar(centre, 0.45 * width, lmean, bottom, _DARK)
        if not (math.isfinite(m) and math.isfinite(g)):
            axes.non_finite(centre, m if not math.isfinite(m) else g)
    axes.names(names)
    axes.legend([(_LIGHT, "max |∂L/∂θ|"), (_DARK, "mean |∂L/∂θ|")], columns=2)
    axes.frame(f"gradient flow, step {step}: |∂L/∂θ|, input → output")
    if errors:
        _compare_panel(image, names, errors, tol, step)
    return np.asarray(image)


def _compare_panel(image: Image.Image, names: Sequence[str], errors: Mapping[str, float], tol: float | None,
                   step: int) -> None:
    err = np.array([errors.get(n, np.nan) for n in names], dtype=float)
    log_err = np.log10(np.maximum(np.where(np.isfinite(err), err, 1.0), 1e-20))
    shown = log_err[np.isfinite(err)]
    limit = math.log10(tol) if tol is not None and math.isfinite(tol) and tol > 0 else None
    low = min(shown.min() if shown.size else 0.0, limit if limit is not None else 0.0) - 1
    high = max(shown.max() if shown.size else 0.0, limit if limit is not None else 0.0) + 0.5
    axes = _Axes(image, (PANEL_W + 52, 28, 2 * PANEL_W - 12, HEIGHT - 40), low, high)
    bottom = math.floor(low)
    for (centre, width), name, e, le in zip(axes.slots(len(names)), names, err, log_err):
        if name not in errors:  # NOTE: not compared (no error recorded): a grey dash, not a red "nan"
            axes.word(centre, "–", _MISSING)
        elif math.isfinite(e):
            axes.bar(centre, 0.6 * width, le, bottom, _BAD if tol is not None and e > tol else _GOOD)
        else:
            axes.non_finite(centre, e)
    if limit is not None:
        y = axes.y(limit)
        for x in range(axes.left, axes.right, 8):  # NOTE: dashed, as a threshold is drawn
            axes.draw.line([(x, y), (min(x + 4, axes.right), y)], fill=_BAD, width=1)
        _text(axes.image, (axes.right - 4, y - 2), f"tolerance {tol:g}", 12, fill=_BAD, anchor="rd",
              backdrop=True)
    axes.names(names)
    axes.frame(f"hand vs native, step {step}: ‖g_hand − g_native‖ / ‖g_native‖")


def _nice_step(span: float, most: int = 8) -> float:
    """A tick spacing of 1, 2 or 5 times a power of ten giving at most ``most`` ticks over ``span``."""
    raw = max(span, 1e-12) / most
    power = 10 ** math.floor(math.log10(raw))
    return next(k * power for k in (1, 2, 5, 10) if k * power >= raw)


def curves(series: Mapping[str, tuple[Sequence[int], Sequence[float]]], title: str) -> np.ndarray:
    """An RGB image: one line per series (steps, values) on a log10 axis, with a legend; no value is cut off."""
    image = Image.new("RGB", (CURVES_W, HEIGHT), _WHITE)
    logs = {name: (np.asarray(steps, dtype=float), _logs(values)) for name, (steps, values) in series.items()}
    finite = np.concatenate([v[np.isfinite(v)] for _, v in logs.values()] or [np.zeros(0)])
    low, high = (finite.min(), finite.max()) if finite.size else (-1.0, 0.0)
    # NOTE: headroom above the highest value for the legend's rows
    rows = math.ceil(len(logs) / 2)
    axes = _Axes(image, (52, 28, CURVES_W - 12, HEIGHT - 40), low, high + 0.3 + 0.12 * rows)
    every = np.concatenate([s for s, _ in logs.values()] or [np.zeros(1)])
    x_low, x_high = float(every.min()), float(max(every.max(), every.min() + 1))
    pad = 0.04 * (x_high - x_low)
    x_low, x_high = x_low - pad, x_high + pad

    def x(step):
        return axes.left + (step - x_low) / (x_high - x_low) * (axes.right - axes.left)

    tick = _nice_step(x_high - x_low)
    for t in np.arange(math.ceil(x_low / tick) * tick, x_high, tick):
        axes.draw.line([(x(t), axes.bottom), (x(t), axes.bottom + 4)], fill=_INK)
        _text(axes.image, (x(t), axes.bottom + 6), f"{t:g}", 12, anchor="ma")
    _text(axes.image, ((axes.left + axes.right) / 2, HEIGHT - 4), "step", 12, anchor="md")
    for i, (steps, values) in enumerate(logs.values()):
        colour = _SERIES[i % len(_SERIES)]
        points = [(x(s), axes.y(v)) for s, v in zip(steps, values) if math.isfinite(v)]
        if len(points) > 1:
            axes.draw.line(points, fill=colour, width=2, joint="curve")
        elif points:
            axes.draw.ellipse([points[0][0] - 2, points[0][1] - 2, points[0][0] + 2, points[0][1] + 2], fill=colour)
    entries = [(_SERIES[i % len(_SERIES)], name) for i, name in enumerate(logs)]
    if entries:
        axes.legend(entries, columns=2, right=True)
    axes.frame(title)
    return np.asarray(image)
