"""The model's graph for TensorBoard: graph data for the Graphs tab, and the picture for Images.

:func:`graph_def` turns a read :class:`~handgrad.graph.nodes.Graph` into a TensorBoard ``GraphDef``
in two steps: :func:`node_facts` reads plain numbers from the graph's tensors (torch),
:func:`~handgrad.graph.graphdef.graph_def_of` builds the protobuf from them (no torch), so the
second step can run in a process that never imports torch. The graph has one node per op, per
parameter and per input, plus the output, each edge an input of its consumer. Every node carries its
output's shape (``_output_shapes``, which TensorBoard writes on the edges) and, as attributes shown
when a node is selected, ``shape``, ``value_norm`` ‖v‖₂, ``grad_norm`` ‖∂J/∂v‖₂ (the gradient summed
over the node's consumers), ``dtype``, and for a scalar its ``value`` and ``grad``.
:func:`write_model_graph` writes it and the picture in one call.
"""

from __future__ import annotations

import dataclasses

import torch

from .. import compat
from .cards import FULL_WIDTH_PX
from .graphdef import graph_def_of
from .model import read_model
from .reading import Graph
from .text import mermaid_of

__all__ = ["graph_def", "node_facts", "mermaid_markdown", "write_model_graph", "PICTURE_WIDTH_PX"]

#: the whole graph's picture (``tag/full``) is at most this wide
PICTURE_WIDTH_PX = FULL_WIDTH_PX

_OPS = {"leaf": "Parameter", "output": "Output"}


def _node_op(node, inputs: set[str]) -> str:
    if node.kind == "op":
        return node.label
    return "Input" if node.id in inputs else _OPS[node.kind]


def _total(tensors: list) -> torch.Tensor | None:
    """The sum of a node's gradient shares (one per consumer), or None where one is unknown."""
    if not tensors or any(t is None for t in tensors):
        return None
    return torch.stack([t.double() for t in tensors]).sum(0) if len(tensors) > 1 else tensors[0]


def _norm(t: torch.Tensor) -> float:
    return torch.linalg.vector_norm(t.detach().double()).item()


def _scalar(t: torch.Tensor | None) -> float | None:
    return t.item() if t is not None and t.numel() == 1 else None


def node_facts(graph: Graph, inputs: tuple[str, ...] = ("x",)) -> list[dict]:
    """What the Graphs tab shows of each node of ``graph``, as plain Python values (see :func:`graph_def_of`).

    A node per op, parameter, input (leaves named in ``inputs``) and the output; ``graph`` must
    still hold its tensors (not :func:`~handgrad.graph.nodes.detached`).
    """
    out_edges: dict[str, list] = {n.id: [] for n in graph.nodes}
    in_edges: dict[str, list] = {n.id: [] for n in graph.nodes}
    for e in graph.edges:
        out_edges[e.src].append(e)
        in_edges[e.dst].append(e)
    names = {n.id: (n.label if n.kind != "op" else n.id) for n in graph.nodes}
    input_ids = {n.id for n in graph.nodes if n.kind == "leaf" and n.label in inputs}
    facts = []
    for n in graph.nodes:
        outs = out_edges[n.id] or in_edges[n.id]  # NOTE: the output node shows what flows into it
        value = outs[0].tensors[0] if outs else None
        grad = _total([e.tensors[1] for e in out_edges[n.id]]) if out_edges[n.id] else (outs[0].tensors[1] if outs else None)
        facts.append({
            "name": names[n.id], "op": _node_op(n, input_ids), "inputs": [names[e.src] for e in in_edges[n.id]],
            "shape": None if value is None else list(value.shape),
            "dtype": None if value is None else str(value.dtype).removeprefix("torch."),
            "value_norm": None if value is None else _norm(value), "grad_norm": None if grad is None else _norm(grad),
            "value": _scalar(value), "grad": _scalar(grad),
        })
    return facts


def graph_def(graph: Graph, inputs: tuple[str, ...] = ("x",)):
    """A TensorBoard ``GraphDef`` of ``graph``: a node per op, parameter, input (leaves named in ``inputs``) and the output."""
    return graph_def_of(node_facts(graph, inputs))


def mermaid_markdown(graph: Graph) -> str:
    """The Text tab's mermaid source of ``graph``: the forward diagram, then the backward one, as an indented code block."""
    text = f"{mermaid_of(dataclasses.replace(graph, backward=False))}\n{mermaid_of(graph)}"
    return "\n".join("    " + line for line in text.splitlines())


def write_model_graph(writer, model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor, step: int = 0,
                      tag: str = "graph/model") -> Graph:
    """Write the graph of ``model.objective(x, target)`` on one batch to a ``SummaryWriter``.

    Three things, all at ``step``: the Graphs tab's graph data (:func:`graph_def`, ops, parameters
    and the input ``x`` as nodes, shapes and value / gradient norms as attributes); the pictures in
    Images (:func:`~handgrad.graph.cards.card_images`: ``tag/1``, ``tag/2``, ... one card-sized
    picture per layer and one for the loss, value and gradient on every edge; ``tag/full`` the whole
    graph top down, at most :data:`PICTURE_WIDTH_PX` wide); the mermaid source in Text under
    ``tag + "/mermaid"``. Every
    ``.grad`` is left as it was. Returns the graph. Without matplotlib the picture alone is
    missing: the rest is written, then :class:`~handgrad.graph.draw.MatplotlibMissing` says so in
    one sentence.
    """
    from tensorboard.compat.proto.event_pb2 import Event

    from .cards import card_images

    graph = read_model(model, x, target, backward=True, draw_input=True)
    files = compat.event_file_writer(writer)
    files.add_event(Event(graph_def=graph_def(graph).SerializeToString()), step)
    writer.add_text(f"{tag}/mermaid", mermaid_markdown(graph), step)
    for suffix, image in card_images(graph):
        writer.add_image(f"{tag}/{suffix}", image, step, dataformats="HWC")
    return graph
