"""The model graph as a few pictures that each read well in one TensorBoard image card (no torch needed).

TensorBoard 2.21's Time Series shows an image inside a box of about 367 × 215 px (object-fit:
contain; measured in headless Chromium at 1400 and 1920 px windows, 319 × 215 at 1280): the whole
model graph with a value and a gradient on each of its edges shrinks there to unreadable 2 px text.
So the graph is cut into cards, one per layer (an op that takes parameters, with the elementwise ops
after it: Affine and its ReLU) and one for what follows the last layer (the loss, the penalty, their
sum), each drawn left to right, densely (:data:`~handgrad.graph.layout.DENSE`), at the box's size.
A parameter that feeds several cards (a weight in its layer and in the L2 penalty) is drawn in
each; an edge cut between two cards ends in a dashed node naming the op on the other side and its
card, and carries its numbers on the card it goes into. Labels are numbers only (the caption says
which is which), shapes are left to the Graphs tab.
"""

from __future__ import annotations

import dataclasses

from .layout import DENSE, Box, Spacing, layout, segment_hits_box
from .nodes import Edge, Graph, Node, format_number

__all__ = ["CARD_PX", "FULL_WIDTH_PX", "cards", "card_spacing", "card_images"]

#: TensorBoard's image box in a Time Series card, (width, height) in px, at its default card width
CARD_PX = (367, 215)
#: the whole graph's picture ("full"), at most this wide
FULL_WIDTH_PX = 960


def _number(x: float) -> str:
    """3 significant digits (a card's labels are read, not copied): 0.0009237 -> 0.000924, 315.9 -> 316."""
    text = format_number(float(f"{x:.3g}")) if abs(x) < 1e15 else f"{x:.3g}"
    return text


def _short(e: Edge) -> Edge:
    """``e`` labelled with numbers only: a tensor's norms, a scalar's value and gradient."""
    def number(text: str | None, norm: float | None) -> str:
        if e.shape or text is None:  # NOTE: a tensor (or an unknown shape): its norm
            return "?" if norm is None else _number(norm)
        text = text.rsplit("= ", 1)[-1]  # a scalar: "L = 2.309" -> "2.309"
        try:
            return _number(float(text))
        except ValueError:
            return text

    if e.shape is None and e.value_norm is not None and "×" in e.value:
        e = dataclasses.replace(e, shape=(0, 0))  # NOTE: shape unknown, the label says it is a tensor
    return dataclasses.replace(e, value=number(e.value, e.value_norm), grad=number(e.grad, e.grad_norm))


def _groups(graph: Graph, inputs: tuple[str, ...], most: int) -> list[list[str]]:
    """Op ids per card: one card per layer (merged to at most ``most - 1``), then one for the rest."""
    leaves = {n.id for n in graph.nodes if n.kind == "leaf"}
    into: dict[str, list[Edge]] = {n.id: [] for n in graph.nodes}
    for e in graph.edges:
        into[e.dst].append(e)
    reach = {n.id for n in graph.nodes if n.kind == "leaf" and n.label in inputs}
    layers: list[list[str]] = []
    tail: list[str] = []
    for n in graph.nodes:
        if n.id in leaves:
            continue
        edges = into[n.id]
        on_path = any(e.src in reach for e in edges)
        if on_path:
            reach.add(n.id)
        takes_params = any(e.src in leaves and e.src not in reach for e in edges)
        out_shape = next((f.shape for f in graph.edges if f.src == n.id), None)
        # NOTE: where a shape is unknown (someone else's Function, e.g. --inject-fault's gradient
        # scaler, saves nothing to read it from), an op that takes the layer's output alone stays in the layer
        elementwise = (len(edges) == 1 and layers and edges[0].src == layers[-1][-1]
                       and (None in (out_shape, edges[0].shape) or out_shape == edges[0].shape))
        if tail or not on_path:
            tail.append(n.id)
        elif takes_params:
            layers.append([n.id])
        elif elementwise or not layers:  # NOTE: ops before the first layer go with it
            (layers[-1] if layers else tail).append(n.id)
        else:
            tail.append(n.id)
    if not layers:
        return [tail]
    keep = max(1, most - 1)
    if len(layers) > keep:  # NOTE: consecutive layers share a card
        size = -(-len(layers) // keep)
        layers = [[i for layer in layers[k:k + size] for i in layer] for k in range(0, len(layers), size)]
    return layers + ([tail] if tail else [])


def cards(graph: Graph, inputs: tuple[str, ...] = ("x",), most: int = 4) -> list[tuple[str, Graph]]:
    """``graph`` cut into at most ``most`` pieces: (caption, piece) each, in order.

    ``inputs``: the labels of the leaves that are the data (the rest of the leaves are parameters).
    """
    groups = _groups(graph, inputs, most)
    card = {i: k for k, group in enumerate(groups) for i in group}
    nodes = {n.id: n for n in graph.nodes}
    count = len(groups)
    parts = [Graph([], [], graph.backward) for _ in groups]
    for n in graph.nodes:  # NOTE: evaluation order kept, a leaf in every card that uses it
        if n.kind == "leaf":
            for k in sorted({card[e.dst] for e in graph.edges if e.src == n.id}):
                parts[k].nodes.append(n)
        else:
            parts[card[n.id]].nodes.append(n)
    for j, e in enumerate(graph.edges):
        e = _short(e)
        b = card[e.dst]
        a = b if nodes[e.src].kind == "leaf" else card[e.src]
        if a == b:
            parts[b].edges.append(e)
            continue
        to_, from_ = f"to{j}", f"from{j}"
        parts[a].nodes.append(Node(to_, f"{nodes[e.dst].label} ({b + 1}/{count})", "ghost"))
        parts[a].edges.append(dataclasses.replace(e, dst=to_, value="", grad=None))  # NOTE: its numbers: on card b
        parts[b].nodes.insert(0, Node(from_, f"{nodes[e.src].label} ({a + 1}/{count})", "ghost"))
        parts[b].edges.append(dataclasses.replace(e, src=from_))
    out = graph.nodes[-1].label
    captions = []
    for k, group in enumerate(groups):
        ops = ", ".join(dict.fromkeys(nodes[i].label for i in group if nodes[i].kind == "op"))
        captions.append(f"{k + 1}/{count} {ops}: ‖value‖, ∂ ‖∂{out}/∂value‖ (red)" if count > 1
                        else f"‖value‖, ∂ ‖∂{out}/∂value‖ (red)")
    return list(zip(captions, parts))


#: room between stacked items tried for a card, (in label heights, plus inches), tightest first
_SEPARATIONS = ((1.0, 0.1), (1.2, 0.1), (1.3, 0.05), (1.5, 0.1), (1.5, 0.15), (2.0, 0.15))


def _head(path, size: float) -> Box:
    """The box around the arrowhead at the end of ``path`` (``size`` inches long)."""
    (x0, y0), (x1, y1) = path[-2], path[-1]
    length = max(((x1 - x0) ** 2 + (y1 - y0) ** 2) ** 0.5, 1e-9)
    t = size / 2 / length
    return Box(x1 - (x1 - x0) * t, y1 - (y1 - y0) * t, size, size)


def _clean(lay) -> bool:
    """No label on a node, on another label (with a hair of air) or crossed by another edge."""
    labels = [(i, b) for i, b in enumerate(lay.labels) if b.w]
    heads = [_head(path, lay.spacing.arrow / 72) for path in lay.paths]  # NOTE: an arrowhead is wider than its line
    for i, b in labels:
        others = [h for j, h in enumerate(heads) if j != i]  # NOTE: a label sits on its own edge, head included
        if any(b.overlaps(n) for n in [*lay.nodes.values(), *others]) or any(b.overlaps(c, 0.01) for j, c in labels if j > i):
            return False
        if any(segment_hits_box(b, p, q) for j, path in enumerate(lay.paths) if j != i for p, q in zip(path, path[1:])):
            return False
    return True


def card_spacing(piece: Graph, caption: str, size: tuple[int, int] = CARD_PX) -> tuple[Spacing, float]:
    """The spacing that shows ``piece``'s labels largest in ``size`` with none crossed or touched, and that size.

    The size is the font size in px as TensorBoard shows the card (scaled to fit ``size``).
    """
    best = None
    for rows, extra in _SEPARATIONS:
        sp = dataclasses.replace(DENSE, sep_labels=rows, sep_extra=extra)
        lay = layout(piece, "LR", True, caption, dense=sp)
        px = sp.label_pt / 72 * min(size[0] / lay.width, size[1] / lay.height)
        if _clean(lay) and (best is None or px > best[1]):
            best = (sp, px)
    return best or (sp, px)  # NOTE: none clean: the roomiest


def card_images(graph: Graph, size: tuple[int, int] = CARD_PX, full: bool = True) -> list:
    """The model graph as TensorBoard image cards: [(tag suffix, (H, W, 3) uint8 array)].

    ``"1"``, ``"2"``, ... : :func:`cards`, each drawn left to right at the largest size that fits
    ``size`` (so it shows 1:1 in TensorBoard's box); with ``full``, ``"full"``: the whole graph top
    down, at most :data:`FULL_WIDTH_PX` wide (for TensorBoard's "Show actual image size"). ``graph``: the model's
    graph with gradients, as :func:`~handgrad.graph.model.read_model` gives it, or
    :func:`~handgrad.graph.nodes.detached`. Needs matplotlib, not torch.
    """
    from .draw import image_of

    out = []
    for k, (caption, piece) in enumerate(cards(graph)):
        sp, px = card_spacing(piece, caption, size)
        # NOTE: a hair under the exact dpi, so that rounding never makes the image a pixel wider than the box
        ppi = px * 72 / sp.label_pt * 0.999
        out.append((str(k + 1), image_of(piece, dpi=ppi, direction="LR", both=True, caption=caption, dense=sp)))
    if full:
        out.append(("full", image_of(graph, dpi=100, direction="TB", both=True, max_width_px=FULL_WIDTH_PX)))
    return out
