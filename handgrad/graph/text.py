"""The graph as text: mermaid flowcharts (as the notes write them) and Graphviz DOT (no Graphviz needed)."""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from .reading import Graph, build

__all__ = ["mermaid", "mermaid_of", "dot", "dot_of"]


def _mermaid_text(text: str) -> str:
    """A mermaid label: bare when it is a plain word or number (as the notes write), else quoted."""
    if re.fullmatch(r"[\w.]+", text, flags=re.ASCII):
        return text
    return '"' + text.replace('"', "#quot;") + '"'


def mermaid(output: torch.Tensor, names: Mapping[str, torch.Tensor] | None = None, backward: bool = False) -> str:
    """Mermaid flowchart of ``output``'s graph: ``LR`` with values, or ``RL`` with dotted gradient edges."""
    return mermaid_of(build(output, names, backward))


def mermaid_of(graph: Graph) -> str:
    """Mermaid flowchart of a built :class:`Graph`."""
    lines = ["flowchart RL" if graph.backward else "flowchart LR"]
    for n in graph.nodes:
        shape = '(("{}"))' if n.kind == "op" else '["{}"]'
        lines.append(f"    {n.id}{shape.format(n.label.replace(chr(34), '#quot;'))}")
    # NOTE: the backward diagram lists its edges from the output back, in the order backward runs.
    for e in reversed(graph.edges) if graph.backward else graph.edges:
        if graph.backward:
            lines.append(f"    {e.dst} -.->|{_mermaid_text(e.grad)}| {e.src}")
        else:
            lines.append(f"    {e.src} -->|{_mermaid_text(e.value)}| {e.dst}")
    return "\n".join(lines) + "\n"


def _dot_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def dot(output: torch.Tensor, names: Mapping[str, torch.Tensor] | None = None, backward: bool = False) -> str:
    """Graphviz DOT text of ``output``'s graph (values, or with ``backward`` dashed gradient edges); no Graphviz needed."""
    return dot_of(build(output, names, backward))


def dot_of(graph: Graph) -> str:
    """Graphviz DOT text of a built :class:`Graph`."""
    lines = ["digraph handgrad {", f"    rankdir={'RL' if graph.backward else 'LR'};", '    node [fontname="Helvetica"];',
             '    edge [fontname="Helvetica", fontsize=10];']
    shapes = {"leaf": "box", "op": "circle", "output": "box"}
    for n in graph.nodes:
        lines.append(f"    {_dot_string(n.id)} [label={_dot_string(n.label)}, shape={shapes[n.kind]}];")
    for e in reversed(graph.edges) if graph.backward else graph.edges:
        if graph.backward:
            lines.append(f"    {_dot_string(e.dst)} -> {_dot_string(e.src)} "
                         f"[label={_dot_string(e.grad)}, style=dashed, color=red, fontcolor=red];")
        else:
            lines.append(f"    {_dot_string(e.src)} -> {_dot_string(e.dst)} [label={_dot_string(e.value)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"
