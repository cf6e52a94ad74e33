"""Layered layout of a :class:`~handgrad.graph.nodes.Graph`: left to right, or top down.

Layers by distance to the output (the output last, every other node just before its nearest
consumer); an edge that spans several layers runs through one invisible point per layer, so that
it bends around the nodes in between. Within a layer, items are ordered by barycentre sweeps to
reduce crossings and placed as near the mean of their neighbours as their sizes allow. Each edge's
label then goes into a gap between layers, at the candidate spot that overlaps no other label or
node and that no other edge passes through.

Top-down pictures are laid out as left-to-right ones with width and height swapped, then turned.
All sizes are in inches (text measured as matplotlib draws it), y growing downwards.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass

from .nodes import Graph, Node

__all__ = ["Box", "Layout", "Spacing", "LOOSE", "DENSE", "layout", "edge_texts", "segment_hits_box", "NODE_PT", "LABEL_PT"]


@dataclass(frozen=True)
class Spacing:
    """Font sizes (points) and the room around things (inches) of a picture."""

    node_pt: float  # node names
    label_pt: float  # edge labels and the caption
    pad: float  # white around a label's text
    min_gap: float  # between layers at least
    margin: float  # around the picture
    node_pad: tuple[float, float]  # a box node's room around its name, across and along
    gap_extra: float  # room beside the widest label in a gap between layers (left to right)
    sep_labels: float  # room between stacked items, in label heights (left to right) ...
    sep_extra: float  # ... plus this
    op_h: tuple[float, float] = (2.0, 0.0)  # an op's ellipse: height = text height * [0] + [1] ...
    op_w: tuple[float, float] = (1.35, 0.1)  # ... width = text width * [0] + [1] (at least its height)
    arrow: float = 12  # arrowhead size, points


#: the full picture's spacing: roomy, for a picture looked at in its own size
LOOSE = Spacing(11, 9, 0.06, 0.7, 0.25, (0.3, 0.22), 0.5, 2.0, 0.15)
#: a card's spacing: one font size, little room, so that a card shrunk into TensorBoard's box stays readable
DENSE = Spacing(9, 9, 0.025, 0.2, 0.05, (0.12, 0.08), 0.12, 1.5, 0.15, (1.0, 0.14), (1.2, 0.08), 8)
NODE_PT, LABEL_PT = LOOSE.node_pt, LOOSE.label_pt  # font sizes, points


@dataclass
class Box:
    """A rectangle by its centre and size, in inches, y growing downwards."""

    x: float
    y: float
    w: float
    h: float

    def overlaps(self, other: Box, margin: float = 0.0) -> bool:
        return (abs(self.x - other.x) * 2 < self.w + other.w + 2 * margin
                and abs(self.y - other.y) * 2 < self.h + other.h + 2 * margin)

    def turned(self) -> Box:
        return Box(self.y, self.x, self.h, self.w)


@dataclass
class Layout:
    """A laid-out graph, in inches: each node's box, one polyline per edge and each edge label's box."""

    width: float
    height: float
    nodes: dict[str, Box]
    paths: list[list[tuple[float, float]]]  # one polyline per graph edge, source to destination
    labels: list[Box]  # where each edge's label sits
    caption_h: float = 0.0  # room at the top for the caption
    spacing: Spacing = LOOSE


@functools.lru_cache(maxsize=1)
def _measurer():
    from matplotlib.backends.backend_agg import RendererAgg

    return RendererAgg(1, 1, 72)  # 72 dpi: one pixel is one point


@functools.lru_cache(maxsize=4096)
def _text_size(text: str, points: float) -> tuple[float, float]:
    """Width and height of ``text`` in inches, as matplotlib draws it (DejaVu Sans, its default font)."""
    from matplotlib.font_manager import FontProperties

    width, _, _ = _measurer().get_text_width_height_descent(text, FontProperties(family="DejaVu Sans", size=points), ismath=False)
    return width / 72, points * 1.25 / 72


def _node_size(node: Node, sp: Spacing = LOOSE) -> tuple[float, float]:
    w, h = _text_size(node.label, sp.node_pt)
    if node.kind == "op":  # an ellipse around the text (a circle for short names when loose, flat when dense)
        tall = h * sp.op_h[0] + sp.op_h[1]
        return max(tall, w * sp.op_w[0] + sp.op_w[1]), tall
    return w + sp.node_pad[0], h + sp.node_pad[1]


def edge_texts(graph: Graph, both: bool = False) -> list[list[str]]:
    """The lines of each edge's label: its value, its gradient, or with ``both`` the value above the gradient."""
    if both:  # NOTE: the value line already names the edge and its shape; the gradient line adds only its norm
        # NOTE: an edge with an empty value has no label (a card draws a cut edge's label on one side only)
        return [[e.value, "∂ " + re.sub(r"^(d\S+ = )?(\d+(×\d+)*, )?", "", e.grad or "?")] if e.value else [] for e in graph.edges]
    return [[e.grad if graph.backward else e.value] for e in graph.edges]


def _label_size(lines: list[str], sp: Spacing = LOOSE) -> tuple[float, float]:
    if not lines:
        return 0.0, 0.0
    sizes = [_text_size(t, sp.label_pt) for t in lines]
    return max(w for w, _ in sizes) + 2 * sp.pad, sum(h for _, h in sizes) + 2 * sp.pad


def layout(graph: Graph, direction: str = "LR", both: bool = False, caption: str = "caption",
           dense: bool | Spacing = False) -> Layout:
    """Positions of nodes, edge polylines and labels; no two labels overlap, and no edge runs through a label.

    ``direction``: ``"LR"`` (inputs left, output right) or ``"TB"`` (inputs at the top). ``both``:
    each label holds the value and the gradient (needs a graph built with ``backward=True``).
    ``caption``: the line drawn above the graph (the page is made wide enough for it). ``dense``:
    one font size and little room between things (:data:`DENSE`, or the :class:`Spacing` given),
    for a picture shown shrunk.
    """
    if direction not in ("LR", "TB"):
        raise ValueError(f"handgrad.graph.layout: direction must be 'LR' or 'TB', got {direction!r}.")
    turn = direction == "TB"
    sp = dense if isinstance(dense, Spacing) else DENSE if dense else LOOSE
    label_sizes = [_label_size(lines, sp) for lines in edge_texts(graph, both)]
    caption_w, caption_h = _text_size(caption, sp.label_pt)
    caption_h += sp.margin * 2 if sp is not LOOSE else sp.margin
    sizes = {n.id: _node_size(n, sp) for n in graph.nodes}
    if turn:  # NOTE: lay out with width and height swapped, then turn the result
        label_sizes = [(h, w) for w, h in label_sizes]
        sizes = {k: (h, w) for k, (w, h) in sizes.items()}
    lay = _layered(graph, sizes, label_sizes, turn, sp)
    if turn:
        lay = Layout(lay.height, lay.width, {k: b.turned() for k, b in lay.nodes.items()},
                     [[(y, x) for x, y in path] for path in lay.paths], [b.turned() for b in lay.labels])
    lay = _shifted(lay, caption_h)
    lay.width = max(lay.width, caption_w + 2 * sp.margin if sp is not LOOSE else caption_w + 0.2)
    lay.spacing = sp
    return lay


def _shifted(lay: Layout, dy: float) -> Layout:
    """``lay`` moved down by ``dy``, the room above it left for the caption."""
    return Layout(lay.width, lay.height + dy, {k: Box(b.x, b.y + dy, b.w, b.h) for k, b in lay.nodes.items()},
                  [[(x, y + dy) for x, y in path] for path in lay.paths],
                  [Box(b.x, b.y + dy, b.w, b.h) for b in lay.labels], dy)


def _layered(graph: Graph, sizes: dict, label_sizes: list, turned: bool, sp: Spacing = LOOSE) -> Layout:
    """The left-to-right layout for item ``sizes`` (layer axis first) and label sizes."""
    col = _columns(graph)
    label_h = max((h for _, h in label_sizes), default=0.2)
    room = {k: h for k, (_, h) in sizes.items()}  # NOTE: room across the layer each item needs
    chains = []
    for k, (e, (_, lh)) in enumerate(zip(graph.edges, label_sizes)):
        dummies = [f"\0{k}.{c}" for c in range(col[e.src] + 1, col[e.dst])]
        sizes.update({d: (0.0, 0.0 if turned else label_h) for d in dummies})
        room.update({d: lh + 0.1 if turned else label_h for d in dummies})
        if turned:  # a wide label beside a node needs the room too
            room[e.src] = max(room[e.src], lh + 0.1)
        chains.append([e.src, *dummies, e.dst])
    columns = _order_columns(graph, col, chains)
    ys = _place_rows(columns, room, chains, sep=0.35 if turned else sp.sep_labels * label_h + sp.sep_extra)

    gap = (lambda w: 2.5 * w + 0.3) if turned else (lambda w: w + sp.gap_extra if w else 0.0)
    least = [sp.min_gap] * len(columns)
    if turned:  # NOTE: labels of edges that meet at one node stack along the gap before it: room for all of them
        thick = max((w for w, _ in label_sizes), default=0.0)
        for e in graph.edges:
            c = col[e.dst] - 1
            least[c] = max(least[c], (sum(1 for f in graph.edges if f.dst == e.dst) + 0.6) * thick)
    xs, col_left, col_right, width = _place_columns(columns, sizes, chains, col, label_sizes, gap, least, sp.margin)
    boxes = {i: Box(xs[i], ys[i] + sp.margin, *sizes[i]) for i in xs}
    height = max(ys[i] + room[i] / 2 for i in ys) + 2 * sp.margin
    kinds = {n.id: n.kind for n in graph.nodes}

    paths = []
    for chain in chains:
        points = [(boxes[i].x, boxes[i].y) for i in chain]
        kind0, kind1 = kinds[chain[0]], kinds[chain[-1]]
        points[0] = _clip(boxes[chain[0]], kind0, points[1])
        points[-1] = _clip(boxes[chain[-1]], kind1, points[-2])
        paths.append(points)
    node_boxes = {n.id: boxes[n.id] for n in graph.nodes}
    labels = _place_labels(chains, paths, label_sizes, col, col_left, col_right, list(node_boxes.values()))
    return Layout(width, height, node_boxes, paths, labels)


def _columns(graph: Graph) -> dict[str, int]:
    """Column of each node: the output rightmost, every other node just left of its leftmost consumer."""
    consumers: dict[str, list[str]] = {n.id: [] for n in graph.nodes}
    for e in graph.edges:
        consumers[e.src].append(e.dst)
    rank: dict[str, int] = {}
    for n in reversed(graph.nodes):  # post-order reversed: consumers first
        rank[n.id] = 1 + max((rank[c] for c in consumers[n.id]), default=-1)
    last = max(rank.values())
    return {k: last - r for k, r in rank.items()}


def _order_columns(graph, col, chains) -> list[list[str]]:
    """Items (nodes and dummies) per column, ordered to reduce crossings (barycentre sweeps)."""
    n_cols = max(col.values()) + 1
    columns: list[list[str]] = [[] for _ in range(n_cols)]
    for n in graph.nodes:
        columns[col[n.id]].append(n.id)
    for chain in chains:
        for c, item in enumerate(chain[1:-1], start=col[chain[0]] + 1):
            columns[c].append(item)
    left: dict[str, list[str]] = {}
    right: dict[str, list[str]] = {}
    for chain in chains:
        for a, b in zip(chain, chain[1:]):
            right.setdefault(a, []).append(b)
            left.setdefault(b, []).append(a)

    def barycentre(item, k, pos, neighbours):
        near = [pos[m] for m in neighbours.get(item, []) if m in pos]
        return sum(near) / len(near) if near else k

    def sweep(cols, neighbours):
        for i in range(1, len(cols)):
            pos = {item: k for k, item in enumerate(cols[i - 1])}
            keyed = sorted((barycentre(item, k, pos, neighbours), k, item) for k, item in enumerate(cols[i]))
            cols[i] = [item for *_, item in keyed]

    best, best_cost = [list(c) for c in columns], _crossings(columns, chains)
    for _ in range(6):
        sweep(columns, left)
        columns.reverse()
        sweep(columns, right)
        columns.reverse()
        cost = _crossings(columns, chains)
        if cost < best_cost:
            best, best_cost = [list(c) for c in columns], cost
    return best


def _crossings(columns, chains) -> int:
    pos = {item: k for cols in columns for k, item in enumerate(cols)}
    column_of = {item: c for c, cols in enumerate(columns) for item in cols}
    segments = [(a, b) for chain in chains for a, b in zip(chain, chain[1:])]
    count = 0
    for i, (a, b) in enumerate(segments):
        for c, d in segments[i + 1:]:
            if a != c and b != d and column_of[a] == column_of[c] and (pos[a] - pos[c]) * (pos[b] - pos[d]) < 0:
                count += 1
    return count


def _isotonic(values: list[float]) -> list[float]:
    """The non-decreasing sequence nearest to ``values`` in least squares (pool adjacent violators)."""
    blocks: list[list[float]] = []  # [mean, count]
    for v in values:
        blocks.append([v, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            m2, n2 = blocks.pop()
            m1, n1 = blocks.pop()
            blocks.append([(m1 * n1 + m2 * n2) / (n1 + n2), n1 + n2])
    return [m for m, n in blocks for _ in range(int(n))]


def _place_rows(columns, room, chains, sep) -> dict[str, float]:
    """Position across the layers of every item: near the mean of its neighbours, in order, ``room`` + ``sep`` apart."""
    neighbours: dict[str, list[str]] = {}
    for chain in chains:
        for a, b in zip(chain, chain[1:]):
            neighbours.setdefault(a, []).append(b)
            neighbours.setdefault(b, []).append(a)
    y: dict[str, float] = {}
    for cols in columns:
        top = 0.0
        for item in cols:
            y[item] = top + room[item] / 2
            top += room[item] + sep
    for sweep in range(30):
        for cols in columns if sweep % 2 == 0 else reversed(columns):
            want = [sum(y[m] for m in neighbours.get(i, [])) / len(neighbours[i]) if neighbours.get(i) else y[i] for i in cols]
            # NOTE: with offsets s_k (the room the items above need), y_k - s_k must not decrease:
            # the closest such y is an isotonic regression of want - s.
            offsets, total = [], 0.0
            for k, item in enumerate(cols):
                if k:
                    total += (room[cols[k - 1]] + room[item]) / 2 + sep
                offsets.append(total)
            fitted = _isotonic([w - s for w, s in zip(want, offsets)])
            for item, f, s in zip(cols, fitted, offsets):
                y[item] = f + s
    low = min(y[i] - room[i] / 2 for i in y)
    return {i: v - low for i, v in y.items()}


def _clip(box: Box, kind: str, towards: tuple[float, float]) -> tuple[float, float]:
    """Where the line from the centre of ``box`` towards ``towards`` leaves the node's outline."""
    dx, dy = towards[0] - box.x, towards[1] - box.y
    if dx == 0 and dy == 0:
        return box.x, box.y
    if kind == "op":  # ellipse
        t = 1 / math.sqrt((dx / (box.w / 2)) ** 2 + (dy / (box.h / 2)) ** 2)
    else:
        t = min(box.w / 2 / abs(dx) if dx else math.inf, box.h / 2 / abs(dy) if dy else math.inf)
    return box.x + dx * t, box.y + dy * t


def _place_columns(columns, sizes, chains, col, label_sizes, gap, least, margin):
    """x of every item, each column's left and right edge, and the page width.

    A gap between columns is at least ``least[c]`` and wide enough (``gap(label width)``) for the
    widest label of any edge that crosses it.
    """
    gaps = list(least)  # gaps[c]: room right of column c
    for chain, (w, _) in zip(chains, label_sizes):
        for c in range(col[chain[0]], col[chain[-1]]):
            gaps[c] = max(gaps[c], gap(w))
    x_left, xs, col_left, col_right = margin, {}, [], []
    for c, items in enumerate(columns):
        width = max((sizes[i][0] for i in items), default=0.0)
        col_left.append(x_left)
        col_right.append(x_left + width)
        xs.update({item: x_left + width / 2 for item in items})
        x_left += width + gaps[c]
    return xs, col_left, col_right, x_left - gaps[-1] + margin


_SPOTS = (0.5, 0.3, 0.7, 0.15, 0.85, 0.4, 0.6, 0.05, 0.95, 0.22, 0.78, 0.0, 1.0)


def _place_labels(chains, paths, label_sizes, col, col_left, col_right, obstacles) -> list[Box]:
    """Each label on its edge, inside a gap between columns, where it overlaps nothing and no other edge passes.

    Placed one by one, then each placed again among all the others (a few rounds), so that an early
    label does not keep a spot a later one needed more.
    """
    segments = [[(p, q) for p, q in zip(path, path[1:])] for path in paths]
    candidates = []
    for k, (chain, path, (w, h)) in enumerate(zip(chains, paths, label_sizes)):
        others = [s for j, segs in enumerate(segments) if j != k for s in segs]
        spots = []
        for seg, c in enumerate(range(col[chain[0]], col[chain[-1]])):
            (x0, y0), (x1, y1) = path[seg], path[seg + 1]
            lo, hi = col_right[c] + w / 2 + 0.05, col_left[c + 1] - w / 2 - 0.05
            for f in _SPOTS:
                x = lo + f * (hi - lo) if hi > lo else (lo + hi) / 2
                y = y0 + (y1 - y0) * (x - x0) / (x1 - x0) if x1 != x0 else (y0 + y1) / 2
                box = Box(x, y, w, h)
                spots.append((sum(segment_hits_box(box, p, q) for p, q in others), box))
        candidates.append(spots)
    placed: list[Box] = []
    for spots in candidates:
        placed.append(min(spots, key=lambda s: (s[0], _overlap(s[1], placed + obstacles)))[1])
    for _ in range(3):
        for k, spots in enumerate(candidates):
            rest = placed[:k] + placed[k + 1:] + obstacles
            placed[k] = min(spots, key=lambda s: (s[0], _overlap(s[1], rest)))[1]
    return placed


def _overlap(box: Box, others: list[Box], air: float = 0.04) -> float:
    """How much ``box`` overlaps ``others``, each kept ``air`` inches apart (NOTE: touching labels read as one)."""
    total = 0.0
    for o in others:
        dx = (box.w + o.w) / 2 + air - abs(box.x - o.x)
        dy = (box.h + o.h) / 2 + air - abs(box.y - o.y)
        if dx > 0 and dy > 0:
            total += dx * dy
    return total


def segment_hits_box(box: Box, p: tuple[float, float], q: tuple[float, float]) -> bool:
    """True when the segment p-q passes through the inside of ``box`` (Liang-Barsky clipping)."""
    t0, t1 = 0.0, 1.0
    dx, dy = q[0] - p[0], q[1] - p[1]
    for d, lo, hi, start in ((dx, box.x - box.w / 2, box.x + box.w / 2, p[0]), (dy, box.y - box.h / 2, box.y + box.h / 2, p[1])):
        if d == 0:
            if not lo < start < hi:
                return False
            continue
        a, b = (lo - start) / d, (hi - start) / d
        t0, t1 = max(t0, min(a, b)), min(t1, max(a, b))
    return t1 - t0 > 1e-9
