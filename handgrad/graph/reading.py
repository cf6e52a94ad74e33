"""Reading the autograd graph of a tensor: its nodes, the value on each edge and the gradient sent back along it.

Given an output tensor, :func:`build` walks ``grad_fn.next_functions`` down to the ``AccumulateGrad``
leaves and returns a :class:`Graph`: leaves, op nodes and the output, in evaluation order, with one
:class:`Edge` per input of each op.

Where the numbers come from:

* Forward values. A node does not keep its output, and the caller passes only the output, so
  the value on an edge is taken from what the graph already holds: a leaf's tensor, the output,
  a tensor the caller named, or a tensor some node saved for backward (matched to its edge by
  identity: a saved tensor's ``(grad_fn, output_nr)`` *is* the edge it travels on, whatever the
  op). An edge none of these covers (the output of a Mul feeding an Add, say: Add saves nothing)
  is recomputed from its producer's inputs by the op's forward rule: for handgrad's ops the
  ``recompute`` of their declaration (:mod:`handgrad.registry`), for the common native ones
  ``_RECOMPUTE``. What is still unknown is labelled ``?``; naming that
  tensor in ``names`` shows it.
* Gradients. Each edge carries what its consumer's backward sends to that input (so where a
  tensor feeds two ops, each edge shows its own share, the "+=" of seed 002). They are captured
  by hooks on the op nodes during one ``torch.autograd.grad`` call from the output, seeded with
  ones, with ``retain_graph=True``: no ``.grad`` is touched and the caller can still call
  ``backward()``.

Inputs that need no gradient (data, targets, constants) are not part of the autograd graph and
are not drawn (:func:`handgrad.graph.read_model` with ``draw_input``, as
:func:`handgrad.graph.write_model_graph` calls it, makes the batch ``x`` a leaf so that it is).
Every private torch attribute read here goes through :mod:`handgrad.compat`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
import torch.nn.functional as F

from .. import compat, functional, registry  # noqa: F401 - functional: importing it declares the ops the labels name
from .nodes import Edge, Graph, Node, detached, format_number

__all__ = ["Graph", "Node", "Edge", "build", "detached", "op_label", "format_number", "describe"]


# NOTE: handgrad's own ops are labelled and recomputed as their declarations say (handgrad.registry).


# ---------------------------------------------------------------------------------------------
# native op labels
# ---------------------------------------------------------------------------------------------

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
    cls = compat.forward_class(node)
    if cls is not None:  # someone else's autograd.Function: its own class name
        return cls.__name__
    name = type(node).__name__
    base = re.sub(r"(Alias)?Backward\d*$", "", name)
    return _NATIVE_LABELS.get(base, base or name)


# ---------------------------------------------------------------------------------------------
# the graph (Node, Edge and Graph live in .nodes, which needs no torch)
# ---------------------------------------------------------------------------------------------


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
    return hasattr(node, "variable")  # NOTE: AccumulateGrad's public attribute: the leaf tensor


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
                grad = grads.get(node, {}).get(slot) if backward else None
                graph.edges.append(_edge(ids[child], ids[node], values.get((child, nr)), grad, name, backward))
    seed = torch.ones_like(output) if backward else None
    graph.edges.append(_edge(ids[output.grad_fn], graph.nodes[-1].id, output, seed, None, backward))
    return graph


def _edge(src: str, dst: str, value, grad, name: str | None, backward: bool) -> Edge:
    """An edge with its labels (``name = value``, ``dname = grad``) and the numbers behind them."""
    value_norm, grad_norm = _norm(value), _norm(grad) if backward else None
    return Edge(src, dst, _label(value, name, "", value_norm), _label(grad, name, "d", grad_norm) if backward else None,
                None if value is None else tuple(value.shape), value_norm, grad_norm,
                (None if value is None else value.detach(), grad if backward else None))


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
    seed = torch.ones_like(output) if backward else None
    return Graph([Node(_safe_id(name), name, "leaf"), Node(_safe_id(name) + "_out", "output", "output")],
                 [_edge(_safe_id(name), _safe_id(name) + "_out", output, seed, None, backward)], backward)


# ---------------------------------------------------------------------------------------------
# labels
# ---------------------------------------------------------------------------------------------


def _norm(t: torch.Tensor | None) -> float | None:
    """‖t‖₂ in float64 (a scalar's absolute value), or None when unknown."""
    return None if t is None else torch.linalg.vector_norm(t.detach().double()).item()


def describe(t: torch.Tensor | None, norm: float | None = None) -> str:
    """A scalar's value, a tensor's shape and norm (``128×10, ‖·‖=3.21``), or ``?`` when unknown.

    ``norm``: ‖t‖₂ where the caller has it already.
    """
    if t is None:
        return "?"
    t = t.detach()
    if t.numel() == 1:
        return format_number(t.item())
    shape = "×".join(str(n) for n in t.shape)
    return f"{shape}, ‖·‖={format_number(_norm(t) if norm is None else norm)}"


def _label(t, name: str | None, prefix: str, norm: float | None = None) -> str:
    text = describe(t, norm)
    return f"{prefix}{name} = {text}" if name else text


# ---------------------------------------------------------------------------------------------
# forward values: what the graph holds, then recomputed by the op's forward rule
# ---------------------------------------------------------------------------------------------


def _saved(node) -> list[torch.Tensor]:
    """The tensors a node saved for backward (none where an earlier backward freed them)."""
    if compat.is_custom_function_node(node):
        try:
            return [t for t in node.saved_tensors if t is not None]
        except RuntimeError:  # NOTE: "saved tensors ... have already been freed": values are recomputed instead
            return []
    values = (compat.saved_attribute(node, a) for a in compat.saved_attribute_names(node))
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


def _attr(node, name: str):
    return compat.saved_attribute(node, name)


def _fill(node, inputs, attrs):
    """The op's operands: each slot's value, or where unknown (a constant) the tensor the node saved."""
    out = list(inputs) + [None] * (len(attrs) - len(inputs))
    return [v if v is not None or a is None else _attr(node, a) for v, a in zip(out, attrs)]


_REDUCTIONS = {0: "none", 1: "mean", 2: "sum"}


def _signed(n: int) -> int:
    # NOTE: torch 2.14 returns NllLossBackward0's saved ignore_index (-100) as an unsigned 64-bit int.
    return n - 2**64 if n >= 2**63 else n


#: native node name -> (saved attribute of each operand, for constants; the forward rule)
_RECOMPUTE = {
    "AddBackward0": ((None, None), lambda n, a, b: a + _attr(n, "alpha") * b),
    "SubBackward0": ((None, None), lambda n, a, b: a - _attr(n, "alpha") * b),
    "MulBackward0": (("self", "other"), lambda n, a, b: a * b),
    "MulBackward1": ((None,), lambda n, a: a * _attr(n, "other")),
    "DivBackward0": (("self", "other"), lambda n, a, b: a / b),
    "DivBackward1": ((None,), lambda n, a: a / _attr(n, "other")),
    "NegBackward0": ((None,), lambda n, a: -a),
    "ReluBackward0": ((None,), lambda n, a: torch.relu(a)),
    "SigmoidBackward0": ((None,), lambda n, a: torch.sigmoid(a)),
    "TanhBackward0": ((None,), lambda n, a: torch.tanh(a)),
    "ExpBackward0": ((None,), lambda n, a: torch.exp(a)),
    "LogBackward0": ((None,), lambda n, a: torch.log(a)),
    "PowBackward0": ((None,), lambda n, a: a ** _attr(n, "exponent")),
    "SumBackward0": ((None,), lambda n, a: a.sum()),
    "SumBackward1": ((None,), lambda n, a: a.sum(_attr(n, "dim"), keepdim=_attr(n, "keepdim"))),
    "MeanBackward0": ((None,), lambda n, a: a.mean()),
    "MeanBackward1": ((None,), lambda n, a: a.mean(_attr(n, "dim"), keepdim=_attr(n, "keepdim"))),
    "TBackward0": ((None,), lambda n, a: a.t()),
    "TransposeBackward0": ((None,), lambda n, a: a.transpose(_attr(n, "dim0"), _attr(n, "dim1"))),
    "PermuteBackward0": ((None,), lambda n, a: a.permute(_attr(n, "dims"))),
    "UnsqueezeBackward0": ((None,), lambda n, a: a.unsqueeze(_attr(n, "dim"))),
    "AddmmBackward0": ((None, "mat1", "mat2"), lambda n, b, m1, m2: _attr(n, "beta") * b + _attr(n, "alpha") * (m1 @ m2)),
    "MmBackward0": (("self", "mat2"), lambda n, a, b: a @ b),
    "MaximumBackward0": (("self", "other"), lambda n, a, b: torch.maximum(a, b)),
    "LogSoftmaxBackward0": ((None,), lambda n, a: torch.log_softmax(a, _attr(n, "dim"))),
    "NllLossBackward0": (("self",), lambda n, a: F.nll_loss(
        a, _attr(n, "target"), weight=_attr(n, "weight"),
        reduction=_REDUCTIONS[_attr(n, "reduction")], ignore_index=_signed(_attr(n, "ignore_index")))),
    "MseLossBackward0": (("self", "target"), lambda n, a, b: F.mse_loss(a, b, reduction=_REDUCTIONS[_attr(n, "reduction")])),
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
