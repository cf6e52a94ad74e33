"""Drawing a laid-out graph with matplotlib (no pyplot, no Graphviz): PNG, SVG or an RGB array.

:func:`figure` and :func:`image_of` need no torch: a process that never imports it can draw a graph
received by pickle (:func:`~handgrad.graph.nodes.detached`). :func:`render` and :func:`to_image` read
the graph of a tensor first, and import torch for that.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ..files import write_atomically
from .layout import _text_size, edge_texts, layout
from .nodes import Graph

if TYPE_CHECKING:  # NOTE: torch only where a tensor's graph is read (render, to_image)
    import torch

__all__ = ["figure", "render", "to_image", "image_of", "check_target", "PICTURE_SUFFIXES", "MatplotlibMissing"]

_COLORS = {"leaf": "#dbe9f6", "op": "#fdf2d0", "output": "#d8f0d8", "ghost": "white"}  # ghost: a cut edge's far end
_FORWARD, _BACKWARD = "#333333", "#c0392b"

#: the picture formats, by file suffix
PICTURE_SUFFIXES = (".png", ".svg")


class MatplotlibMissing(ImportError):
    """Drawing a picture needs matplotlib, and it cannot be imported."""


def _matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError as err:
        raise MatplotlibMissing(
            f"handgrad.graph: drawing PNG or SVG pictures needs matplotlib, which cannot be imported ({err}); "
            "install it with `pip install matplotlib`, or write mermaid or dot text instead."
        ) from None


def _caption(graph: Graph, both: bool) -> str:
    out = graph.nodes[-1].label
    if both:
        return f"each edge: its value (black), and ∂{out}/∂(that value) (red) sent back along it"
    return f"backward: ∂{out}/∂(the value on each edge)" if graph.backward else "forward: the value on each edge"


def figure(graph: Graph, dpi: float = 100, direction: str = "LR", both: bool = False, max_width_px: int | None = None,
           caption: str | None = None, dense=False):
    """A matplotlib Figure (Agg canvas, no pyplot) of ``graph``: forward edges solid, gradients red and dashed.

    ``direction`` ``"TB"`` puts the inputs at the top; ``both`` writes the value and the gradient
    on every edge (the graph must be built with ``backward=True``); ``max_width_px`` lowers the dpi
    so that the picture is at most that wide; ``caption`` replaces the line drawn above the graph;
    ``dense``: one font size and little room (a card to be shown shrunk, see :mod:`~handgrad.graph.cards`).
    """
    _matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Ellipse, FancyArrowPatch, FancyBboxPatch
    from matplotlib.path import Path as MPath

    caption = _caption(graph, both) if caption is None else caption
    lay = layout(graph, direction, both, caption, dense)
    sp = lay.spacing
    if max_width_px is not None:
        dpi = min(dpi, max_width_px / lay.width)
    fig = Figure(figsize=(lay.width, lay.height), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, lay.width)
    ax.set_ylim(lay.height, 0)
    ax.axis("off")
    dashed = graph.backward and not both
    color = _BACKWARD if dashed else _FORWARD
    ax.text(min(0.1, sp.margin), min(0.1, sp.margin), caption, fontsize=sp.label_pt, color="#777777", ha="left", va="top")
    for n in graph.nodes:
        b = lay.nodes[n.id]
        if n.kind == "op":
            patch = Ellipse((b.x, b.y), b.w, b.h, facecolor=_COLORS["op"], edgecolor="#555555", lw=1)
        else:
            patch = FancyBboxPatch((b.x - b.w / 2, b.y - b.h / 2), b.w, b.h, boxstyle="round,pad=0,rounding_size=0.06",
                                   facecolor=_COLORS[n.kind], edgecolor="#555555", lw=1, linestyle="--" if n.kind == "ghost" else "-")
        ax.add_patch(patch)
        ax.text(b.x, b.y, n.label, fontsize=sp.node_pt, ha="center", va="center")
    for points, lb, lines in zip(lay.paths, lay.labels, edge_texts(graph, both)):
        points = points[::-1] if dashed else points
        codes = [MPath.MOVETO] + [MPath.LINETO] * (len(points) - 1)
        ax.add_patch(FancyArrowPatch(path=MPath(points, codes), arrowstyle="-|>", mutation_scale=sp.arrow, lw=1.1, color=color,
                                     linestyle="--" if dashed else "-", shrinkA=0, shrinkB=0))
        ax.add_patch(FancyBboxPatch((lb.x - lb.w / 2, lb.y - lb.h / 2), lb.w, lb.h, boxstyle="round,pad=0,rounding_size=0.04",
                                    facecolor="white", edgecolor="none"))
        colors = [_FORWARD, _BACKWARD] if both else [color]
        top = lb.y - lb.h / 2 + sp.pad
        for text, ink in zip(lines, colors):
            h = _text_size(text, sp.label_pt)[1]
            ax.text(lb.x, top + h / 2, text, fontsize=sp.label_pt, color=ink, ha="center", va="center")
            top += h
    return fig


def check_target(path: str | os.PathLike, what: str) -> Path:
    """``path`` as a Path; refused in one sentence where it names a folder or sits in a folder that does not exist."""
    raw = os.fspath(path)
    if raw.endswith(("/", os.sep)) or Path(raw).is_dir():
        raise ValueError(f"{what}: {raw!r} is a folder; give a file name in it, e.g. {str(Path(raw) / 'graph.png')!r}.")
    if not Path(raw).parent.is_dir():
        raise ValueError(f"{what}: the folder {str(Path(raw).parent)!r} does not exist.")
    return Path(raw)


def render(output: torch.Tensor, path: str | os.PathLike, names: Mapping[str, torch.Tensor] | None = None,
           backward: bool = False, dpi: float = 100) -> Path:
    """Write the picture of ``output``'s graph to ``path``: PNG or SVG by its suffix. Returns the path."""
    path = check_target(path, "handgrad.graph.render")
    fmt = path.suffix.lower().lstrip(".")
    if f".{fmt}" not in PICTURE_SUFFIXES:
        raise ValueError(f"handgrad.graph.render: the file name must end in .png or .svg, got {path.name!r}.")
    from .reading import build

    fig = figure(build(output, names, backward), dpi=dpi)
    write_atomically(path, lambda f: fig.savefig(f, format=fmt, dpi=dpi))
    return path


def to_image(output: torch.Tensor, names: Mapping[str, torch.Tensor] | None = None, backward: bool = False,
             dpi: float = 100):
    """The picture of ``output``'s graph as an (H, W, 3) uint8 numpy array (TensorBoard: ``dataformats="HWC"``)."""
    from .reading import build

    return image_of(build(output, names, backward), dpi)


def image_of(graph: Graph, dpi: float = 100, direction: str = "LR", both: bool = False, max_width_px: int | None = None,
             caption: str | None = None, dense=False):
    """The picture of a built :class:`Graph` as an (H, W, 3) uint8 array (arguments as :func:`figure`)."""
    import numpy as np

    fig = figure(graph, dpi=dpi, direction=direction, both=both, max_width_px=max_width_px, caption=caption, dense=dense)
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
