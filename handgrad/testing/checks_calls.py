"""The checks of what one call computes, keeps and writes: untouched, values, saved, compile.

Registered after :mod:`handgrad.testing.checks`, so these are the report's last columns.
"""

from __future__ import annotations

import torch

from .. import compat
from .nodes import Graph
from .numerics import CLOSE, compare_all, out_names
from .registry import register_check
from .report import Fail
from .variants import fresh


def _snapshot(t: torch.Tensor) -> tuple:
    return t.detach().clone(), compat.version_counter(t)


def _changed(t: torch.Tensor, snap: tuple) -> bool:
    """Whether ``t`` was written in place since ``snap``: its version counter moved or its values differ."""
    value, version = snap
    if version is not None and compat.version_counter(t) != version:
        return True
    now = t.detach()
    if now.is_floating_point() or now.is_complex():
        return not bool(((now == value) | (now.isnan() & value.isnan())).all())
    return not torch.equal(now, value)


@register_check(rows=("exact", "parity"))
def untouched(engine, row):
    """Forward leaves its inputs alone; backward leaves its incoming gradients, the inputs and the outputs alone."""
    leaves = fresh(row.args, row.diff)
    tensors = {i: a for i, a in enumerate(leaves) if isinstance(a, torch.Tensor)}
    before = {i: _snapshot(a) for i, a in tensors.items()}
    saved: set = set()

    def pack(t):
        saved.add(t.data_ptr())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        graph = Graph.of(engine.fn(*leaves))
    problems = []
    for i, a in tensors.items():
        if _changed(a, before[i]):
            after = a.numel() and a.data_ptr() in saved
            problems.append(f"forward writes into input {i} in place{' after saving it for backward' if after else ''} "
                            "(the caller's tensor changes; work on a copy)")
    inputs = {i: _snapshot(a) for i, a in tensors.items()}
    outputs = [_snapshot(o) for o in graph.outputs]
    incoming: dict = {}

    def before_backward(node):
        def hook(grads):
            incoming[node] = [(g, _snapshot(g)) for g in grads if g is not None]

        return hook

    def after_backward(node):
        def hook(grad_inputs, grad_outputs):
            name = f"{compat.forward_class(node).__name__}.backward"
            for k, (g, snap) in enumerate(incoming.get(node, [])):
                if _changed(g, snap):
                    problems.append(f"{name} writes into its incoming gradient (grad_output {k}) in place: the "
                                    "gradient other nodes receive changes; clone it or compute out of place")

        return hook

    handles = [n.register_prehook(before_backward(n)) for n in graph.nodes]
    handles += [n.register_hook(after_backward(n)) for n in graph.nodes]
    cots = engine.cotangents(graph.outputs)
    given = [c.clone() for c in cots]
    try:
        torch.autograd.backward(graph.outputs, given)
    finally:
        for h in handles:
            h.remove()
    problems += [f"backward writes into the incoming gradient of output {k} in place"
                 for k, (c, g) in enumerate(zip(cots, given)) if _changed(g, (c, None)) and not incoming]
    problems += [f"backward writes into input {i} (saved for backward) in place" for i, a in tensors.items()
                 if _changed(a, inputs[i])]
    problems += [f"backward writes into output {k} (saved for backward) in place" for k, o in enumerate(graph.outputs)
                 if _changed(o, outputs[k])]
    if problems:
        raise Fail("; ".join(dict.fromkeys(problems)))
    return None


def _no_reference(engine, row) -> str | None:
    return "no reference to compare with" if engine.reference is None and row.dtype == torch.float64 else None


@register_check(needs_diff=False, skips=_no_reference)
def values(engine, row):
    """The outputs equal the reference's (NaN in the same places) at the row's tolerance: the forward alone."""
    hand, own, truth = engine.parity(row)
    ok, err, detail = compare_all(out_names(len(hand.outs)), hand.outs, truth.outs, engine.tol(row, truth.outs),
                                  own.outs if own else None, row.args)
    if not ok:
        raise Fail(detail, err)
    return err


def ctx_tensors(graph) -> list[str]:
    """'MyFn: ctx.y' for each tensor a Function keeps as a ctx attribute instead of with save_for_backward."""
    found = []
    for node in graph.nodes:
        for attr, value in vars(node).items():
            items = value if isinstance(value, (list, tuple)) else [value]
            if any(isinstance(v, torch.Tensor) for v in items):
                found.append(f"{compat.forward_class(node).__name__}: ctx.{attr}")
    return found


def saved_bytes(func, args, diff) -> tuple[int, int, list[str]]:
    """(bytes, count) of the unique storages saved for backward by one call of ``func``, and its ctx tensors."""
    storages: dict = {}

    def pack(t):
        s = t.untyped_storage()
        storages[(str(s.device), s.data_ptr(), s.nbytes())] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        graph = Graph.of(func(*fresh(args, diff)))
    return sum(storages.values()), len(storages), ctx_tensors(graph)


@register_check(first=True)
def saved(engine, row):
    """No tensor kept as a ctx attribute; bytes saved for backward at most the reference's."""
    mine = saved_bytes(engine.fn, row.args, row.diff)
    if mine[2]:
        raise Fail(f"keeps tensors as ctx attributes ({', '.join(mine[2])}): they stay alive as long as the graph "
                   "(a leak, a reference cycle when it is the output) and escape saved-tensor hooks; pass them to "
                   "ctx.save_for_backward")
    if engine.reference is None:
        return None, f"{mine[0]} B"
    theirs = saved_bytes(engine.reference, row.args, row.diff)
    if mine[0] > theirs[0]:
        raise Fail(f"saves {mine[0]} bytes for backward in {mine[1]} storages, the reference {theirs[0]} "
                   f"bytes in {theirs[1]}")
    return None, f"{mine[0]}/{theirs[0]} B"


@register_check(first=True, default=False)
def compile(engine, row):  # noqa: A001 - the check's name is the column's
    """torch.compile(fn, fullgraph=True) gives the same values and gradients (only when asked: compile=True)."""
    compiled = torch.compile(compat.compilable(engine.fn), fullgraph=True, backend=engine.compile_backend)
    eager = engine.evaluate(engine.fn, row.args, row.diff)
    done = engine.evaluate(compiled, row.args, row.diff, eager.cotangents)
    names = out_names(len(eager.outs)) + [f"grad of input {i}" for i in row.diff]
    ok, err, detail = compare_all(names, done.outs + done.gradients(), eager.outs + eager.gradients(), CLOSE)
    if not ok:
        raise Fail("compiled " + detail.replace("reference", "eager"), err)
    return err
