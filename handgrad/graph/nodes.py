"""The drawable graph as plain data: :class:`Node`, :class:`Edge`, :class:`Graph` (no torch needed).

:mod:`~handgrad.graph.reading` fills these from an autograd graph; layout, drawing and the
TensorBoard graph data read them. :func:`detached` drops the tensors behind the labels, so that a
graph can be pickled small and drawn in a process that never imports torch.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

__all__ = ["Graph", "Node", "Edge", "detached", "format_number"]


@dataclass
class Node:
    id: str  # unique, safe for mermaid and DOT
    label: str  # what the picture shows
    kind: str  # "leaf", "op" or "output"


@dataclass
class Edge:
    src: str
    dst: str
    value: str  # the forward label: a scalar's value, or a tensor's shape and norm
    grad: str | None = None  # the backward label, when drawn
    shape: tuple[int, ...] | None = None  # the value's shape, where known
    value_norm: float | None = None  # ‖value‖₂, where known
    grad_norm: float | None = None  # ‖gradient‖₂, when drawn
    tensors: tuple = field(default=(None, None), repr=False, compare=False)  # (value, gradient) behind the labels


@dataclass
class Graph:
    """Nodes in evaluation order (leaves and ops as autograd would run them forward), then the output."""

    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    backward: bool = False

    def node(self, node_id: str) -> Node:
        return next(n for n in self.nodes if n.id == node_id)


def detached(graph: Graph) -> Graph:
    """A copy of ``graph`` whose edges hold no tensors: labels, shapes and norms only.

    It pickles to a few kilobytes and unpickles without torch, for drawing in another process.
    """
    return Graph([dataclasses.replace(n) for n in graph.nodes],
                 [dataclasses.replace(e, tensors=(None, None)) for e in graph.edges], graph.backward)


def format_number(x: float) -> str:
    """4 significant digits, float noise gone: 715.0000001 -> 715, 1.100000023841858 -> 1.1, -0.0 -> 0."""
    if math.isnan(x) or math.isinf(x):
        return str(x)
    text = f"{x:.4g}"
    return "0" if text in ("0", "-0") else text
