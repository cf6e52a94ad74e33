"""The autograd graph of a tensor, drawn as the notes draw it: values left to right, gradients right to left.

Seed 000 draws the shopping example twice, as mermaid flowcharts: leaves and op nodes with the
forward value on each edge, then the same graph with the gradient of the output on each edge.
Given any output tensor, this module walks its autograd graph (``grad_fn.next_functions`` down to
the ``AccumulateGrad`` leaves) and writes those two pictures for handgrad's ops and PyTorch's alike::

    >>> import torch, handgrad as hg
    >>> from handgrad import graph
    >>> apple, n, tax = (torch.tensor(v, requires_grad=True) for v in (100.0, 2.0, 1.1))
    >>> price = hg.mul(hg.mul(apple, n), tax)
    >>> print(graph.mermaid(price, names={"apple": apple, "a_num": n, "tax": tax, "price": price}))
    ... # doctest: +SKIP

``mermaid`` and ``dot`` return text; ``render`` writes PNG or SVG with matplotlib (no Graphviz);
``to_image`` returns the picture as an (H, W, 3) uint8 array; ``model_graph`` draws a model's
objective on one batch for TensorBoard. ``python -m handgrad.graph --example shopping`` prints
the notes' examples.

Where the numbers come from:

* Forward values. A node does not keep its output, and the caller passes only the output, so
  the value on an edge is taken from what the graph already holds: a leaf's tensor, the output,
  a tensor the caller named, or a tensor some node saved for backward (matched to its edge by
  identity: a saved tensor's ``(grad_fn, output_nr)`` *is* the edge it travels on, whatever the
  op). An edge none of these covers (the output of a Mul feeding an Add, say: Add saves nothing)
  is recomputed from its producer's inputs by the op's forward rule, for handgrad's ops and the
  common native ones (``_RECOMPUTE``). What is still unknown is labelled ``?``; naming that
  tensor in ``names`` shows it.
* Gradients. Each edge carries what its consumer's backward sends to that input (so where a
  tensor feeds two ops, each edge shows its own share, the "+=" of seed 002). They are captured
  by hooks on the op nodes during one ``torch.autograd.grad`` call from the output, seeded with
  ones, with ``retain_graph=True``: no ``.grad`` is touched and the caller can still call
  ``backward()``.

Inputs that need no gradient (data, targets, constants) are not part of the autograd graph and
are not drawn.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from . import functional as hf
from . import registry

__all__ = [
    "Graph",
    "Node",
    "Edge",
    "Layout",
    "Box",
    "build",
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
    "EXAMPLES",
    "example",
    "main",
]


# ---------------------------------------------------------------------------------------------
# op labels
# ---------------------------------------------------------------------------------------------

# NOTE: handgrad's own ops are labelled (and recomputed) as their declarations say: registry.spec_of_node.

#: native node name without its trailing number -> label
_NATIVE_LABELS = {
    "Add": "Add", "Sub": "Sub", "Rsub": "Sub", "Mul": "Mul", "Div": "Div", "Neg": "Neg",
    "Relu": "ReLU", "Sigmoid": "Sigmoid", "Tanh": "Tanh", "Exp": "Exp", "Log": "Log", "Pow": "Pow",
    "Addmm": "Affine", "Linear": "Affine", "Mm": "MatMul", "Mv": "MatMul", "Bmm": "MatMul", "Dot": "Dot",
    "Maximum": "Max", "Minimum": "Min", "Sum": "Sum", "Mean": "Mean", "T": "Transpose",
    "Transpose": "Transpose", "Permute": "Permute", "Expand": "Expand", "View": "View",
    "Reshape": "Reshape", "UnsafeView": "View", "Unsqueeze": "Unsqueeze", "Squeeze": "Squeeze",
    "Select": "Index", "Slice": "Slice", "Index": "Index", "LogSoftmax": "LogSoftmax", "Softmax": "Softmax",
    "NllLoss": "NLLLoss", "MseLoss": "MSE", "BinaryCrossEntropy": "BCE", "Clone": "Clone",
    "ToCopy": "Cast", "LinalgVectorNorm": "Norm", "Cat": "Cat", "Stack": "Stack", "Where": "Where",
    "ClampMin": "ClampMin", "Clamp": "Clamp", "Square": "Square", "Sqrt": "Sqrt",
}


def op_label(node) -> str:
    """A readable name for an autograd node: Mul, Add, ReLU, Affine, ... (handgrad and native alike)."""
    hand = registry.spec_of_node(node)
    if hand is not None:
        return hand.label
    name = type(node).__name__
    if hasattr(node, "_forward_cls"):  # someone else's autograd.Function: its own class name
        return node._forward_cls.__name__
    base = re.sub(r"(Alias)?Backward\d*$", "", name)
    return _NATIVE_LABELS.get(base, base or name)


# ---------------------------------------------------------------------------------------------
# the graph
# ---------------------------------------------------------------------------------------------


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


@dataclass
class Graph:
    """Nodes in evaluation order (leaves and ops as autograd would run them forward), then the output."""

    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    backward: bool = False

    def node(self, node_id: str) -> Node:
        return next(n for n in self.nodes if n.id == node_id)


def _check_output(output) -> None:
    if not isinstance(output, torch.Tensor):
        raise TypeError(f"handgrad.graph: output must be a torch.Tensor, got {type(output).__name__}.")
    if output.grad_fn is None and not output.requires_grad:
        raise ValueError(
            "handgrad.graph: the output has no autograd graph (no grad_fn and requires_grad=False); "
            "compute it from tensors with requires_grad=True, outside torch.no_grad()."
        )


def _walk(root) -> list:
    """Every node reachable from ``root``, each after all of its inputs (post-order, inputs in order)."""
    order, seen, stack = [], {root}, [(root, iter(root.next_functions))]
    while stack:
        node, children = stack[-1]
        child = next((c for c, _ in children if c is not None and c not in seen), None)
        if child is None:
            order.append(node)
            stack.pop()
        else:
            seen.add(child)
            stack.append((child, iter(child.next_functions)))
    return order


def _is_leaf(node) -> bool:
    return hasattr(node, "variable")


_RESERVED = {"end", "graph", "subgraph", "flowchart", "style", "class", "classdef", "click", "linkstyle", "default",
             "node", "edge", "digraph", "strict"}


def _safe_id(text: str) -> str:
    """A mermaid / DOT identifier for ``text``: letters, digits and _, not a keyword."""
    out = re.sub(r"\W", "_", text, flags=re.ASCII) or "_"
    return out + "_" if out.lower() in _RESERVED or out[0].isdigit() else out


def _key(t: torch.Tensor) -> tuple:
    """The edge a tensor travels on: (its grad_fn, output number); for a leaf, ("leaf", its id)."""
    return (t.grad_fn, t.output_nr) if t.grad_fn is not None else ("leaf", id(t))


def _check_names(names) -> dict:
    if names is None:
        return {}
    if not isinstance(names, Mapping):
        raise TypeError(f"handgrad.graph: names must map display names to tensors, got {type(names).__name__}.")
    for name, t in names.items():
        if not isinstance(name, str) or not isinstance(t, torch.Tensor):
            raise TypeError(f"handgrad.graph: names must map strings to tensors; {name!r} maps to {type(t).__name__}.")
    return dict(names)


def build(output: torch.Tensor, names: Mapping[str, torch.Tensor] | None = None, backward: bool = False) -> Graph:
    """The drawable graph of ``output``: nodes, and edges labelled with values (and gradients if ``backward``).

    ``names`` maps a display name to a tensor of the graph: a leaf (named on its node), the output
    (the name of the final node) or an intermediate (named on its edges, ``q = 3``, ``dq = -4``).
    Unnamed leaves are t0, t1, ... and ops mul1, add1, ... in evaluation order. The backward pass
    is seeded with ones: for a non-scalar output the gradients are those of ``output.sum()``.
    """
    _check_output(output)
    names = _check_names(names)
    by_key: dict = {}
    for name, t in names.items():
        by_key.setdefault(_key(t), name)
    if output.grad_fn is None:  # a leaf that requires grad: the graph is one edge
        return _leaf_graph(output, by_key, backward)
    order = _walk(output.grad_fn)
    in_graph = {_key(n.variable) if _is_leaf(n) else n for n in order}
    for name, t in names.items():
        if (t.grad_fn if t.grad_fn is not None else _key(t)) not in in_graph:
            raise ValueError(f"handgrad.graph: names[{name!r}] is not a tensor of the output's graph.")

    graph = Graph(backward=backward)
    ids = _add_nodes(graph, order, by_key, by_key.get(_key(output), "output"))
    values = _forward_values(order, output, names)
    grads = _edge_gradients(order, output) if backward else {}
    for node in order:
        for slot, (child, nr) in enumerate(node.next_functions):
            if child is not None:
                name = None if _is_leaf(child) else by_key.get((child, nr))
                grad = _label(grads.get(node, {}).get(slot), name, "d") if backward else None
                graph.edges.append(Edge(ids[child], ids[node], _label(values.get((child, nr)), name, ""), grad))
    seed = _label(torch.ones_like(output), None, "") if backward else None
    graph.edges.append(Edge(ids[output.grad_fn], graph.nodes[-1].id, _label(output, None, ""), seed))
    return graph


def _add_nodes(graph: Graph, order, by_key, out_name: str) -> dict:
    """Append a Node for each autograd node in ``order``, then the output's; return node -> id."""
    ids, used, counters, unnamed = {}, set(), {}, 0
    for node in order:
        if _is_leaf(node):
            label = by_key.get(_key(node.variable))
            if label is None:
                label, unnamed = f"t{unnamed}", unnamed + 1
            kind, base = "leaf", _safe_id(label)
        else:
            label, kind = op_label(node), "op"
            counters[label] = counters.get(label, 0) + 1
            # NOTE: numbered per kind as the notes number them (x1, x2, +1); "l2_1", not "l21"
            base = _safe_id(f"{label.lower()}{'_' if label[-1].isdigit() else ''}{counters[label]}")
        ids[node] = _unique(base, used)
        graph.nodes.append(Node(ids[node], label, kind))
    graph.nodes.append(Node(_unique(_safe_id(out_name), used), out_name, "output"))
    return ids


def _unique(base: str, used: set[str]) -> str:
    out = base
    while out in used:
        out += "_"
    used.add(out)
    return out


def _leaf_graph(output, by_key, backward) -> Graph:
    name = by_key.get(_key(output), "t0")
    seed = torch.ones_like(output)
    return Graph(
        [Node(_safe_id(name), name, "leaf"), Node(_safe_id(name) + "_out", "output", "output")],
        [Edge(_safe_id(name), _safe_id(name) + "_out", _label(output, None, ""), _label(seed, None, "") if backward else None)],
        backward,
    )


# ---------------------------------------------------------------------------------------------
# labels
# ---------------------------------------------------------------------------------------------


def format_number(x: float) -> str:
    """4 significant digits, float noise gone: 715.0000001 -> 715, 1.100000023841858 -> 1.1, -0.0 -> 0."""
    if math.isnan(x) or math.isinf(x):
        return str(x)
    text = f"{x:.4g}"
    return "0" if text in ("0", "-0") else text


def describe(t: torch.Tensor | None) -> str:
    """A scalar's value, a tensor's shape and norm (``128×10, ‖·‖=3.21``), or ``?`` when unknown."""
    if t is None:
        return "?"
    t = t.detach()
    if t.numel() == 1:
        return format_number(t.item())
    shape = "×".join(str(n) for n in t.shape)
    return f"{shape}, ‖·‖={format_number(torch.linalg.vector_norm(t.double()).item())}"


def _label(t, name: str | None, prefix: str) -> str:
    text = describe(t)
    return f"{prefix}{name} = {text}" if name else text


# ---------------------------------------------------------------------------------------------
# forward values: what the graph holds, then recomputed by the op's forward rule
# ---------------------------------------------------------------------------------------------


def _saved(node) -> list[torch.Tensor]:
    """The tensors a node saved for backward (none where an earlier backward freed them)."""
    if hasattr(node, "_forward_cls"):
        try:
            return [t for t in node.saved_tensors if t is not None]
        except RuntimeError:  # NOTE: "saved tensors ... have already been freed": values are recomputed instead
            return []
    values = (_attr(node, a) for a in dir(node) if a.startswith("_saved_"))
    return [v for v in values if isinstance(v, torch.Tensor)]


def _forward_values(order, output, names) -> dict:
    """(node, output number) -> the tensor on that edge: held by the graph, named, or recomputed."""
    values = {}
    in_graph = set(order)
    for node in order:
        if _is_leaf(node):
            values[(node, 0)] = node.variable
        for t in _saved(node):
            if t.grad_fn in in_graph:
                values.setdefault((t.grad_fn, t.output_nr), t)
    for t in (*names.values(), output):
        if t.grad_fn in in_graph:
            values[(t.grad_fn, t.output_nr)] = t
    with torch.no_grad():
        for node in order:
            if (node, 0) not in values and not _is_leaf(node):
                inputs = [None if c is None else values.get((c, nr)) for c, nr in node.next_functions]
                value = _recompute(node, inputs)
                if value is not None:
                    values[(node, 0)] = value
    return values


def _attr(node, name):
    """A node's saved attribute, or None where it is missing or freed."""
    try:
        return getattr(node, name, None)
    except (RuntimeError, ValueError):
        return None


def _fill(node, inputs, attrs):
    """The op's operands: each slot's value, or where unknown (a constant) the tensor the node saved."""
    out = list(inputs) + [None] * (len(attrs) - len(inputs))
    return [v if v is not None or a is None else _attr(node, a) for v, a in zip(out, attrs)]


_REDUCTIONS = {0: "none", 1: "mean", 2: "sum"}


def _signed(n: int) -> int:
    # NOTE: torch 2.14 returns NllLossBackward0._saved_ignore_index (-100) as an unsigned 64-bit int.
    return n - 2**64 if n >= 2**63 else n

#: native node name -> (saved attribute of each operand, for constants; the forward rule)
_RECOMPUTE = {
    "AddBackward0": ((None, None), lambda n, a, b: a + _attr(n, "_saved_alpha") * b),
    "SubBackward0": ((None, None), lambda n, a, b: a - _attr(n, "_saved_alpha") * b),
    "MulBackward0": (("_saved_self", "_saved_other"), lambda n, a, b: a * b),
    "MulBackward1": ((None,), lambda n, a: a * _attr(n, "_saved_other")),
    "DivBackward0": (("_saved_self", "_saved_other"), lambda n, a, b: a / b),
    "DivBackward1": ((None,), lambda n, a: a / _attr(n, "_saved_other")),
    "NegBackward0": ((None,), lambda n, a: -a),
    "ReluBackward0": ((None,), lambda n, a: torch.relu(a)),
    "SigmoidBackward0": ((None,), lambda n, a: torch.sigmoid(a)),
    "TanhBackward0": ((None,), lambda n, a: torch.tanh(a)),
    "ExpBackward0": ((None,), lambda n, a: torch.exp(a)),
    "LogBackward0": ((None,), lambda n, a: torch.log(a)),
    "PowBackward0": ((None,), lambda n, a: a ** _attr(n, "_saved_exponent")),
    "SumBackward0": ((None,), lambda n, a: a.sum()),
    "SumBackward1": ((None,), lambda n, a: a.sum(_attr(n, "_saved_dim"), keepdim=_attr(n, "_saved_keepdim"))),
    "MeanBackward0": ((None,), lambda n, a: a.mean()),
    "MeanBackward1": ((None,), lambda n, a: a.mean(_attr(n, "_saved_dim"), keepdim=_attr(n, "_saved_keepdim"))),
    "TBackward0": ((None,), lambda n, a: a.t()),
    "TransposeBackward0": ((None,), lambda n, a: a.transpose(_attr(n, "_saved_dim0"), _attr(n, "_saved_dim1"))),
    "PermuteBackward0": ((None,), lambda n, a: a.permute(_attr(n, "_saved_dims"))),
    "UnsqueezeBackward0": ((None,), lambda n, a: a.unsqueeze(_attr(n, "_saved_dim"))),
    "AddmmBackward0": ((None, "_saved_mat1", "_saved_mat2"),
                       lambda n, b, m1, m2: _attr(n, "_saved_beta") * b + _attr(n, "_saved_alpha") * (m1 @ m2)),
    "MmBackward0": (("_saved_self", "_saved_mat2"), lambda n, a, b: a @ b),
    "MaximumBackward0": (("_saved_self", "_saved_other"), lambda n, a, b: torch.maximum(a, b)),
    "LogSoftmaxBackward0": ((None,), lambda n, a: torch.log_softmax(a, _attr(n, "_saved_dim"))),
    "NllLossBackward0": (("_saved_self",), lambda n, a: F.nll_loss(
        a, _attr(n, "_saved_target"), weight=_attr(n, "_saved_weight"),
        reduction=_REDUCTIONS[_attr(n, "_saved_reduction")], ignore_index=_signed(_attr(n, "_saved_ignore_index")))),
    "MseLossBackward0": (("_saved_self", "_saved_target"),
                         lambda n, a, b: F.mse_loss(a, b, reduction=_REDUCTIONS[_attr(n, "_saved_reduction")])),
}


def _recompute(node, inputs):
    """The output of ``node`` from its inputs' values, or None where that is not known."""
    try:
        hand = registry.spec_of_node(node)
        if hand is not None:
            return hand.recompute(node, inputs)
        rule = _RECOMPUTE.get(type(node).__name__)
        if rule is None:
            return None
        attrs, forward = rule
        args = _fill(node, inputs, attrs)
        return None if any(a is None for a in args) else forward(node, *args)
    except (RuntimeError, TypeError, ValueError, KeyError, AttributeError):  # NOTE: a value we cannot rebuild is shown as "?"
        return None


# ---------------------------------------------------------------------------------------------
# gradients: what each node's backward sends along each edge
# ---------------------------------------------------------------------------------------------


def _edge_gradients(order, output) -> dict:
    """node -> {slot: gradient its backward sent to input ``slot``}, from one autograd.grad call."""
    grads: dict = {}

    def hook(node):
        def record(grad_inputs, _grad_outputs):
            grads[node] = {i: g.detach() for i, g in enumerate(grad_inputs) if g is not None}

        return record

    leaves = [n.variable for n in order if _is_leaf(n)]
    handles = [n.register_hook(hook(n)) for n in order if not _is_leaf(n)]
    try:
        # NOTE: autograd.grad returns the leaves' gradients instead of accumulating them into .grad,
        # and retain_graph keeps the graph for the caller's own backward().
        torch.autograd.grad(output, leaves, grad_outputs=torch.ones_like(output), retain_graph=True, allow_unused=True)
    except RuntimeError as err:
        if "second time" in str(err) or "freed" in str(err):
            raise ValueError(
                "handgrad.graph: the output's graph was freed by an earlier backward(); draw it before "
                "calling backward, or call backward(retain_graph=True)."
            ) from None
        raise
    finally:
        for h in handles:
            h.remove()
    return grads


# ---------------------------------------------------------------------------------------------
# text: mermaid and DOT
# ---------------------------------------------------------------------------------------------


def _mermaid_text(text: str) -> str:
    """A mermaid label: bare when it is a plain word or number (as the notes write), else quoted."""
    if re.fullmatch(r"[\w.]+", text, flags=re.ASCII):
        return text
    return '"' + text.replace('"', "#quot;") + '"'


def mermaid(output: torch.Tensor, names: Mapping[str, torch.Tensor] | None = None, backward: bool = False) -> str:
    """Mermaid flowchart of ``output``'s graph: ``LR`` with values, or ``RL`` with dotted gradient edges."""
    return mermaid_of(build(output, names, backward))


def mermaid_of(graph: Graph) -> str:
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


# ---------------------------------------------------------------------------------------------
# layout: layered, left to right (columns by distance to the output, long edges through dummies)
# ---------------------------------------------------------------------------------------------

NODE_PT, LABEL_PT = 11, 9  # font sizes, points
_PAD = 0.06  # inches of white around a label's text
_MIN_GAP = 0.7  # inches between columns at least
_MARGIN = 0.25  # inches around the picture


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


@dataclass
class Layout:
    width: float
    height: float
    nodes: dict[str, Box]
    paths: list[list[tuple[float, float]]]  # one polyline per graph edge, source to destination
    labels: list[Box]  # where each edge's label sits


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


def _node_size(node: Node) -> tuple[float, float]:
    w, h = _text_size(node.label, NODE_PT)
    if node.kind == "op":  # an ellipse around the text, a circle for short names
        side = max(h * 2.0, w * 1.35 + 0.1)
        return side, h * 2.0
    return w + 0.3, h + 0.22


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
    segments = [(a, b) for chain in chains for a, b in zip(chain, chain[1:])]
    count = 0
    for i, (a, b) in enumerate(segments):
        for c, d in segments[i + 1:]:
            if a != c and b != d and (pos[a] - pos[c]) * (pos[b] - pos[d]) < 0 and _same_gap(a, c, columns):
                count += 1
    return count


def _same_gap(a, c, columns) -> bool:
    return any(a in col and c in col for col in columns)


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


def _place_rows(columns, sizes, chains, sep) -> dict[str, float]:
    """y of every item: near the mean of its neighbours, in column order, at least ``sep`` apart."""
    neighbours: dict[str, list[str]] = {}
    for chain in chains:
        for a, b in zip(chain, chain[1:]):
            neighbours.setdefault(a, []).append(b)
            neighbours.setdefault(b, []).append(a)
    y: dict[str, float] = {}
    for cols in columns:
        top = 0.0
        for item in cols:
            y[item] = top + sizes[item][1] / 2
            top += sizes[item][1] + sep
    for sweep in range(30):
        for cols in columns if sweep % 2 == 0 else reversed(columns):
            want = [sum(y[m] for m in neighbours.get(i, [])) / len(neighbours[i]) if neighbours.get(i) else y[i] for i in cols]
            # NOTE: with offsets s_k (the room the items above need), y_k - s_k must not decrease:
            # the closest such y is an isotonic regression of want - s.
            offsets, total = [], 0.0
            for k, item in enumerate(cols):
                if k:
                    total += (sizes[cols[k - 1]][1] + sizes[item][1]) / 2 + sep
                offsets.append(total)
            fitted = _isotonic([w - s for w, s in zip(want, offsets)])
            for item, f, s in zip(cols, fitted, offsets):
                y[item] = f + s
    low = min(y[i] - sizes[i][1] / 2 for i in y)
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


def layout(graph: Graph) -> Layout:
    """Positions of nodes, edge polylines and labels; no two labels overlap each other or a node."""
    col = _columns(graph)
    texts = [e.grad if graph.backward else e.value for e in graph.edges]
    label_sizes = [_text_size(t, LABEL_PT) for t in texts]
    label_sizes = [(w + 2 * _PAD, h + 2 * _PAD) for w, h in label_sizes]
    label_h = max((h for _, h in label_sizes), default=0.2)
    sizes = {n.id: _node_size(n) for n in graph.nodes}
    chains = []
    for k, e in enumerate(graph.edges):
        dummies = [f"\0{k}.{c}" for c in range(col[e.src] + 1, col[e.dst])]
        sizes.update({d: (0.0, label_h) for d in dummies})
        chains.append([e.src, *dummies, e.dst])
    columns = _order_columns(graph, col, chains)
    ys = _place_rows(columns, sizes, chains, sep=2 * label_h + 0.15)

    xs, col_left, col_right, width = _place_columns(columns, sizes, chains, col, label_sizes)
    top = _MARGIN + label_h  # room for the caption
    boxes = {i: Box(xs[i], ys[i] + top, *sizes[i]) for i in xs}
    height = max(b.y + b.h / 2 for b in boxes.values()) + _MARGIN
    kinds = {n.id: n.kind for n in graph.nodes}

    paths = []
    for chain in chains:
        points = [(boxes[i].x, boxes[i].y) for i in chain]
        points[0] = _clip(boxes[chain[0]], kinds[chain[0]], points[1])
        points[-1] = _clip(boxes[chain[-1]], kinds[chain[-1]], points[-2])
        paths.append(points)
    node_boxes = {n.id: boxes[n.id] for n in graph.nodes}
    labels = _place_labels(chains, paths, label_sizes, col, col_left, col_right, list(node_boxes.values()))
    return Layout(width, height, node_boxes, paths, labels)


def _place_columns(columns, sizes, chains, col, label_sizes):
    """x of every item, each column's left and right edge, and the page width.

    A gap between columns is wide enough for the widest label of any edge that crosses it.
    """
    gaps = [_MIN_GAP] * len(columns)  # gaps[c]: room right of column c
    for chain, (w, _) in zip(chains, label_sizes):
        for c in range(col[chain[0]], col[chain[-1]]):
            gaps[c] = max(gaps[c], w + 0.5)
    x_left, xs, col_left, col_right = _MARGIN, {}, [], []
    for c, items in enumerate(columns):
        width = max((sizes[i][0] for i in items), default=0.0)
        col_left.append(x_left)
        col_right.append(x_left + width)
        xs.update({item: x_left + width / 2 for item in items})
        x_left += width + gaps[c]
    return xs, col_left, col_right, x_left - gaps[-1] + _MARGIN


def _place_labels(chains, paths, label_sizes, col, col_left, col_right, obstacles) -> list[Box]:
    """Each label on its edge, inside a gap between columns, where it overlaps nothing placed before."""
    placed: list[Box] = []
    for chain, path, (w, h) in zip(chains, paths, label_sizes):
        start = col[chain[0]]
        candidates = []
        for seg, c in enumerate(range(start, col[chain[-1]])):
            (x0, y0), (x1, y1) = path[seg], path[seg + 1]
            lo, hi = col_right[c] + w / 2 + 0.05, col_left[c + 1] - w / 2 - 0.05
            for f in (0.5, 0.15, 0.85, 0.3, 0.7, 0.0, 1.0):
                x = lo + f * (hi - lo) if hi > lo else (lo + hi) / 2
                y = y0 + (y1 - y0) * (x - x0) / (x1 - x0) if x1 != x0 else (y0 + y1) / 2
                candidates.append(Box(x, y, w, h))
        best = min(candidates, key=lambda b: _overlap(b, placed + obstacles))
        placed.append(best)
    return placed


def _overlap(box: Box, others: list[Box]) -> float:
    total = 0.0
    for o in others:
        dx = (box.w + o.w) / 2 - abs(box.x - o.x)
        dy = (box.h + o.h) / 2 - abs(box.y - o.y)
        if dx > 0 and dy > 0:
            total += dx * dy
    return total


# ---------------------------------------------------------------------------------------------
# drawing with matplotlib
# ---------------------------------------------------------------------------------------------

_COLORS = {"leaf": "#dbe9f6", "op": "#fdf2d0", "output": "#d8f0d8"}
_FORWARD, _BACKWARD = "#333333", "#c0392b"


def figure(graph: Graph, dpi: float = 100):
    """A matplotlib Figure (Agg canvas, no pyplot) of ``graph``: forward edges solid, gradients red and dashed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Ellipse, FancyArrowPatch, FancyBboxPatch
    from matplotlib.path import Path as MPath

    lay = layout(graph)
    fig = Figure(figsize=(lay.width, lay.height), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, lay.width)
    ax.set_ylim(lay.height, 0)
    ax.axis("off")
    color = _BACKWARD if graph.backward else _FORWARD
    out = graph.nodes[-1].label
    caption = f"backward: ∂{out}/∂(the value on each edge)" if graph.backward else "forward: the value on each edge"
    ax.text(0.1, 0.1, caption, fontsize=LABEL_PT, color="#777777", ha="left", va="top")
    for n in graph.nodes:
        b = lay.nodes[n.id]
        if n.kind == "op":
            patch = Ellipse((b.x, b.y), b.w, b.h, facecolor=_COLORS["op"], edgecolor="#555555", lw=1)
        else:
            patch = FancyBboxPatch((b.x - b.w / 2, b.y - b.h / 2), b.w, b.h, boxstyle="round,pad=0,rounding_size=0.06",
                                   facecolor=_COLORS[n.kind], edgecolor="#555555", lw=1)
        ax.add_patch(patch)
        ax.text(b.x, b.y, n.label, fontsize=NODE_PT, ha="center", va="center")
    for e, points, lb in zip(graph.edges, lay.paths, lay.labels):
        points = points[::-1] if graph.backward else points
        codes = [MPath.MOVETO] + [MPath.LINETO] * (len(points) - 1)
        ax.add_patch(FancyArrowPatch(path=MPath(points, codes), arrowstyle="-|>", mutation_scale=12, lw=1.1, color=color,
                                     linestyle="--" if graph.backward else "-", shrinkA=0, shrinkB=0))
        ax.text(lb.x, lb.y, e.grad if graph.backward else e.value, fontsize=LABEL_PT, color=color, ha="center", va="center",
                bbox={"boxstyle": f"round,pad={_PAD * 72 / LABEL_PT:.3f}", "facecolor": "white", "edgecolor": "none"})
    return fig


def _write_atomically(path: Path, write) -> None:
    """``write(tmp)`` then rename over ``path``: a reader never sees a half-written file."""
    # NOTE: not tempfile.mkstemp, whose 0600 mode would stay on the picture after the rename.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def render(output: torch.Tensor, path: str | os.PathLike, names: Mapping[str, torch.Tensor] | None = None,
           backward: bool = False, dpi: float = 100) -> Path:
    """Write the picture of ``output``'s graph to ``path``: PNG or SVG by its suffix. Returns the path."""
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in ("png", "svg"):
        raise ValueError(f"handgrad.graph.render: the file name must end in .png or .svg, got {path.name!r}.")
    if not path.parent.is_dir():
        raise ValueError(f"handgrad.graph.render: the folder {str(path.parent)!r} does not exist.")
    fig = figure(build(output, names, backward), dpi=dpi)
    _write_atomically(path, lambda tmp: fig.savefig(tmp, format=fmt, dpi=dpi))
    return path


def to_image(output: torch.Tensor, names: Mapping[str, torch.Tensor] | None = None, backward: bool = False,
             dpi: float = 100):
    """The picture of ``output``'s graph as an (H, W, 3) uint8 numpy array (TensorBoard: ``dataformats="HWC"``)."""
    return image_of(build(output, names, backward), dpi)


def image_of(graph: Graph, dpi: float = 100):
    import numpy as np

    fig = figure(graph, dpi=dpi)
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


# ---------------------------------------------------------------------------------------------
# a model's objective on one batch (for the TensorBoard dashboard)
# ---------------------------------------------------------------------------------------------


def model_names(model: torch.nn.Module, **tensors: torch.Tensor) -> dict[str, torch.Tensor]:
    """Display names for a model's graph: its parameters by their state_dict names, plus ``tensors``.

    A tensor given twice keeps its first name (J and L are one tensor when there is no penalty).
    """
    names: dict[str, torch.Tensor] = {}
    for name, t in [*tensors.items(), *model.named_parameters()]:
        if t.requires_grad and not any(t is other for other in names.values()):
            names[name] = t
    return names


def model_graph(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor, backward: bool = False,
                dpi: float = 80) -> tuple:
    """``model.objective(x, target)`` on one batch, drawn: (image (H, W, 3) uint8, mermaid source).

    Parameters are named by their state_dict names; J, L and logits by theirs. The image goes to
    TensorBoard's Images tab (``add_image(tag, image, step, dataformats="HWC")``), the mermaid
    source to its Text tab. Runs one extra forward pass (module forward hooks see it) and, with
    ``backward``, one ``autograd.grad`` that leaves every ``.grad`` as it was (hooks registered on
    the parameters with ``Tensor.register_hook`` do see its gradients).
    """
    with torch.enable_grad():
        total, loss, logits = model.objective(x, target)
    graph = build(total, model_names(model, J=total, L=loss, logits=logits), backward)
    return image_of(graph, dpi), mermaid_of(graph)


# ---------------------------------------------------------------------------------------------
# the notes' examples
# ---------------------------------------------------------------------------------------------


def _scalars(**values: float) -> dict[str, torch.Tensor]:
    return {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in values.items()}


def shopping():
    """Seed 000: 2 apples at 100 and 3 oranges ("pear") at 150, tax 1.1: price 715."""
    v = _scalars(apple=100.0, a_num=2.0, pear=150.0, p_num=3.0, tax=1.1)
    price = hf.mul(hf.add(hf.mul(v["apple"], v["a_num"]), hf.mul(v["pear"], v["p_num"])), v["tax"])
    return price, {**v, "price": price}


def xyz():
    """Seeds 002/003: f = (x + y) z at x = -2, y = 5, z = -4, with q = x + y: f = -12, df/dx = df/dy = -4, df/dz = 3."""
    v = _scalars(x=-2.0, y=5.0, z=-4.0)
    q = hf.add(v["x"], v["y"])
    f = hf.mul(q, v["z"])
    return f, {**v, "q": q, "f": f}


def neuron():
    """Seed 002: f = sigmoid(w0 x0 + w1 x1 + w2) with w = [2, -3, -3], x = [-1, -2]: f = 0.7311."""
    v = _scalars(w0=2.0, x0=-1.0, w1=-3.0, x1=-2.0, w2=-3.0)
    dot_ = hf.add(hf.add(hf.mul(v["w0"], v["x0"]), hf.mul(v["w1"], v["x1"])), v["w2"])
    f = hf.sigmoid(dot_)
    return f, {**v, "f": f}


def mlp():
    """Seed 004: z = W1 x, h = ReLU(z), o = W2 h, L = CE(o, y), s = λ/2 (‖W1‖² + ‖W2‖²), J = L + s."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, generator=gen, dtype=torch.float64)  # a batch of 2, d = 4 features
    y = torch.tensor([0, 2])
    w1 = torch.randn(3, 4, generator=gen, dtype=torch.float64).requires_grad_()  # h = 3 hidden units
    w2 = torch.randn(3, 3, generator=gen, dtype=torch.float64).requires_grad_()  # q = 3 classes
    z = hf.affine(x, w1)
    h = hf.relu(z)
    o = hf.affine(h, w2)
    loss = hf.cross_entropy(o, y)
    s = hf.l2_penalty([w1, w2], 0.1)
    j = hf.add(loss, s)
    return j, {"W1": w1, "W2": w2, "z": z, "h": h, "o": o, "L": loss, "s": s, "J": j}


#: name -> function returning (output, names)
EXAMPLES = {"shopping": shopping, "xyz": xyz, "neuron": neuron, "mlp": mlp}


def example(name: str):
    """(output, names) of one of the notes' examples: shopping, xyz, neuron or mlp."""
    if name not in EXAMPLES:
        raise ValueError(f"handgrad.graph: no example {name!r}; choose one of {', '.join(EXAMPLES)}.")
    return EXAMPLES[name]()


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------

_FORMATS = ("mermaid", "dot", "png", "svg")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m handgrad.graph",
        description="Draw the notes' computational graphs from live tensors: values on the edges, or gradients with --backward.",
    )
    p.add_argument("--example", choices=list(EXAMPLES), default="shopping", help="which graph (default: shopping)")
    p.add_argument("--backward", action="store_true", help="draw the gradients instead of the forward values")
    p.add_argument("--format", choices=_FORMATS, default=None,
                   help="mermaid or dot text, png or svg picture (default: from --output's suffix, else mermaid)")
    p.add_argument("--output", default=None,
                   help="file to write (default: text to stdout, pictures to graph-<example>[-backward].<format>)")
    return p


def _format_of(args, parser) -> str:
    by_suffix = {".png": "png", ".svg": "svg", ".dot": "dot", ".gv": "dot", ".mmd": "mermaid"}
    guessed = by_suffix.get(Path(args.output).suffix.lower()) if args.output else None
    if args.format and guessed and guessed != args.format:
        parser.error(f"--format {args.format} does not match the output file {args.output!r}")
    if args.format in ("png", "svg") and args.output and Path(args.output).suffix.lower() != f".{args.format}":
        parser.error(f"--format {args.format} needs an output file ending in .{args.format}, got {args.output!r}")
    return args.format or guessed or "mermaid"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    fmt = _format_of(args, parser)
    output, names = example(args.example)
    try:
        if fmt in ("png", "svg"):
            path = args.output or f"graph-{args.example}{'-backward' if args.backward else ''}.{fmt}"
            print(f"wrote {render(output, path, names, backward=args.backward)}")
            return 0
        text = (mermaid if fmt == "mermaid" else dot)(output, names, backward=args.backward)
        if args.output:
            _write_atomically(Path(args.output), lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
            print(f"wrote {args.output}")
        else:
            sys.stdout.write(text)
    except (OSError, ValueError) as err:
        print(f"python -m handgrad.graph: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
