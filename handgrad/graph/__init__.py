"""The autograd graph of a tensor, drawn as the notes draw it: values left to right, gradients right to left.

Seed 000 draws the shopping example twice, as mermaid flowcharts: leaves and op nodes with the
forward value on each edge, then the same graph with the gradient of the output on each edge.
Given any output tensor, this package walks its autograd graph (``grad_fn.next_functions`` down to
the ``AccumulateGrad`` leaves) and writes those two pictures for handgrad's ops and PyTorch's alike::

    >>> import torch, handgrad as hg
    >>> from handgrad import graph
    >>> apple, n, tax = (torch.tensor(v, requires_grad=True) for v in (100.0, 2.0, 1.1))
    >>> price = hg.mul(hg.mul(apple, n), tax)
    >>> print(graph.mermaid(price, names={"apple": apple, "a_num": n, "tax": tax, "price": price}))
    ... # doctest: +SKIP

``mermaid`` and ``dot`` return text; ``render`` writes PNG or SVG with matplotlib (no Graphviz);
``to_image`` returns the picture as an (H, W, 3) uint8 array; ``write_model_graph`` writes a
model's objective on one batch to TensorBoard (Graphs tab and Images); ``python -m handgrad.graph
--example shopping`` prints the notes' examples.

The package, one job per module:

* :mod:`~handgrad.graph.nodes`: the graph as plain data (no torch); :mod:`~handgrad.graph.reading`: read
  from autograd, with values and gradients;
* :mod:`~handgrad.graph.text`: mermaid and DOT;
* :mod:`~handgrad.graph.layout` and :mod:`~handgrad.graph.draw`: layered layout, matplotlib pictures;
* :mod:`~handgrad.graph.model`, :mod:`~handgrad.graph.tensorboard` and :mod:`~handgrad.graph.graphdef`
  (no torch): a model's graph for the dashboard;
* :mod:`~handgrad.graph.examples`: the notes' examples; :mod:`~handgrad.graph.cli`: the command line.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # NOTE: the names as static tools see them (mkdocstrings' API page, type checkers); _WHERE below at run time
    from .cli import build_parser, main
    from .draw import MatplotlibMissing, figure, image_of, render, to_image
    from .examples import EXAMPLES, example
    from .graphdef import graph_def_of
    from .layout import LABEL_PT, NODE_PT, Box, Layout, layout
    from .model import model_graph, model_names, read_model
    from .reading import Edge, Graph, Node, build, describe, detached, format_number, op_label
    from .tensorboard import graph_def, node_facts, write_model_graph
    from .text import dot, dot_of, mermaid, mermaid_of

# NOTE: names are imported on first use, so that `python -m handgrad.graph --help` and a mistyped
# flag answer without importing torch; the first name asked for imports them all.
_WHERE = {
    "cli": ("build_parser", "main"),
    "draw": ("MatplotlibMissing", "figure", "image_of", "render", "to_image"),
    "examples": ("EXAMPLES", "example"),
    "layout": ("LABEL_PT", "NODE_PT", "Box", "Layout", "layout"),
    "model": ("model_graph", "model_names", "read_model"),
    "graphdef": ("graph_def_of",),
    "reading": ("Edge", "Graph", "Node", "build", "describe", "detached", "format_number", "op_label"),
    "tensorboard": ("graph_def", "node_facts", "write_model_graph"),
    "text": ("dot", "dot_of", "mermaid", "mermaid_of"),
}


def _load() -> None:
    modules = {m: importlib.import_module(f".{m}", __name__) for m in _WHERE}
    globals().update({name: getattr(modules[m], name) for m, names in _WHERE.items() for name in names})


def __getattr__(name: str):
    if name.startswith("__") or not any(name in names for names in _WHERE.values()):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    _load()
    return globals()[name]


def __dir__():
    _load()
    return sorted(globals())


class _Package(types.ModuleType):
    def __setattr__(self, name: str, value) -> None:
        # NOTE: importing the submodule layout binds it here by name; the package's `layout` stays the
        # function (as when everything was imported eagerly), so that binding is left to __getattr__.
        if name == "layout" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

__all__ = [
    "Graph",
    "Node",
    "Edge",
    "Layout",
    "Box",
    "build",
    "detached",
    "op_label",
    "format_number",
    "describe",
    "layout",
    "figure",
    "mermaid_of",
    "dot_of",
    "image_of",
    "mermaid",
    "dot",
    "render",
    "to_image",
    "model_graph",
    "model_names",
    "read_model",
    "graph_def",
    "graph_def_of",
    "node_facts",
    "write_model_graph",
    "MatplotlibMissing",
    "EXAMPLES",
    "example",
    "build_parser",
    "main",
    "NODE_PT",
    "LABEL_PT",
]

