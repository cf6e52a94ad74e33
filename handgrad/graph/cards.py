"""The graph cut into pieces that each fit one TensorBoard image card, readably (no torch needed).

TensorBoard 2.21's Time Series shows an image inside a box of about 367 × 215 px (object-fit:
contain; measured in headless Chromium at 1400 and 1920 px windows, 319 × 215 at 1280): a whole
model graph with a value and a gradient on each of its edges cannot be read at that size. So the
graph is cut between layers into pieces, each drawn left to right at the card's size: a leaf that
feeds several ops (a weight in its layer and in the L2 penalty) is drawn beside each consumer, and
an edge cut between two pieces ends in a dashed node naming the op on the other side.

NOTE: a prototype, not yet wired into write_model_graph: with layout()'s present spacing the
default MLP's labels show 2.1 px tall in one card and at most 3.4-8.5 px in six, short of the 10 px
card_images aims for; a denser layout (less room between stacked items) is what is missing.
"""

from __future__ import annotations

import dataclasses
import re

from .layout import LABEL_PT, _columns, layout
from .nodes import Edge, Graph, Node

__all__ = ["CARD_PX", "pieces", "card_images"]

#: TensorBoard's image box in a Time Series card, (width, height) in px, at its default card width
CARD_PX = (367, 215)
_MIN_LABEL_PX = 10  # the smallest label text, in px as shown, that a piece may have


def _short(e: Edge) -> Edge:
    # NOTE: shapes go (the Graphs tab and the mermaid text keep them): "128×784, ‖·‖=315.9" -> "‖·‖=315.9"
    value = re.sub(r"(= )?\d+(×\d+)*, ", "", e.value)
    grad = re.sub(r"^(d\S+ = )?(\d+(×\d+)*, )?", "", e.grad or "?")  # NOTE: edge_texts puts "∂ " before it
    return dataclasses.replace(e, value=value, grad=grad)


def _split_leaves(graph: Graph) -> Graph:
    """``graph`` with a copy of each shared leaf per consumer, so that no edge runs far."""
    uses: dict[str, int] = {}
    for e in graph.edges:
        uses[e.src] = uses.get(e.src, 0) + 1
    kinds = {n.id: n for n in graph.nodes}
    nodes = [n for n in graph.nodes if not (n.kind == "leaf" and uses.get(n.id, 0) > 1)]
    edges, seen = [], {}
    for e in graph.edges:
        src = e.src
        if kinds[src].kind == "leaf" and uses[src] > 1:
            seen[src] = seen.get(src, 0) + 1
            src = f"{e.src}__{seen[src]}"
            nodes.insert(0, Node(src, kinds[e.src].label, "leaf"))
        edges.append(dataclasses.replace(_short(e), src=src))
    return Graph(nodes, edges, graph.backward)


def pieces(graph: Graph, count: int) -> list[Graph]:
    """``graph`` cut into ``count`` pieces of consecutive layers (fewer when it has fewer layers)."""
    whole = _split_leaves(graph)
    col = _columns(whole)
    ops = sorted({c for n in whole.nodes if n.kind != "leaf" for c in [col[n.id]]})
    count = max(1, min(count, len(ops)))
    # NOTE: cut between op layers; a leaf goes with its consumer (it sits in the layer just before it)
    bounds = [ops[round(k * len(ops) / count)] for k in range(1, count)]
    part = {n.id: sum(col[n.id] >= b for b in bounds) for n in whole.nodes}
    consumer = {e.src: e.dst for e in whole.edges}
    for n in whole.nodes:
        if n.kind == "leaf":
            part[n.id] = part[consumer[n.id]]
    labels = {n.id: n.label for n in whole.nodes}
    out = [Graph([], [], graph.backward) for _ in range(count)]
    for n in whole.nodes:
        out[part[n.id]].nodes.append(n)
    for k, e in enumerate(whole.edges):
        a, b = part[e.src], part[e.dst]
        if a == b:
            out[a].edges.append(e)
            continue
        # NOTE: a cut edge is drawn in both pieces, its labels on both halves
        to_, from_ = f"\0to{k}", f"\0from{k}"
        out[a].nodes.append(Node(to_, f"{labels[e.dst]} ({b + 1}/{count})", "ghost"))
        out[a].edges.append(dataclasses.replace(e, dst=to_))
        out[b].nodes.insert(0, Node(from_, f"{labels[e.src]} ({a + 1}/{count})", "ghost"))
        out[b].edges.append(dataclasses.replace(e, src=from_))
    return out


def _label_px(graph: Graph, caption: str, size: tuple[int, int]) -> tuple[float, float]:
    """(px per inch, label text height in px) of ``graph`` drawn left to right to fit ``size``."""
    lay = layout(graph, "LR", True, caption)
    ppi = min(size[0] / lay.width, size[1] / lay.height)
    return ppi, LABEL_PT / 72 * ppi


def card_images(graph: Graph, size: tuple[int, int] = CARD_PX, most: int = 6) -> list:
    """``graph`` drawn as a few pictures, each at most ``size`` px with its labels readable there.

    The fewest pieces (up to ``most``) whose labels show at least 10 px tall, each an (H, W, 3)
    uint8 array at exactly the size TensorBoard shows it; ``graph`` needs its gradients
    (``backward=True``). Needs matplotlib, not torch.
    """
    from .draw import image_of

    for count in range(1, most + 1):
        parts = pieces(graph, count)
        captions = [_caption(k, len(parts)) for k in range(len(parts))]
        scales = [_label_px(p, c, size) for p, c in zip(parts, captions)]
        if min(px for _, px in scales) >= _MIN_LABEL_PX or count == most or len(parts) < count:
            break
    return [image_of(p, dpi=ppi, direction="LR", both=True, caption=c)
            for p, c, (ppi, _) in zip(parts, captions, scales)]


def _caption(k: int, count: int) -> str:
    return f"{k + 1}/{count}: value, ∂J/∂value (red)" if count > 1 else "value, ∂J/∂value (red)"
