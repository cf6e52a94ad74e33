"""The checks: one function each, registered with when it applies and why it skips (the report's columns, in order).

Each takes the :class:`~handgrad.testing.engine.Engine` and a :class:`~handgrad.testing.variants.Row`
and returns the cell's error (or ``(error, text)``); it raises ``Fail`` for a FAIL and ``Skip`` for a
skip. The numerical truth of the float64 rows is gradcheck's test (its tolerances, on Jacobians computed once); every
other row is compared with the reference (or, without one, the Function's own float64 result).
"""

from __future__ import annotations

import contextlib

import torch

from .. import compat
from .nodes import diff_outputs, has_jvp, has_vmap, names, once_differentiable_cls
from .numerics import (
    ATOL,
    CLOSE,
    EPS,
    RTOL,
    close_batches,
    compare,
    compare_all,
    constant_factor,
    floats,
    jacobian_mismatch,
    jacobians,
    out_names,
    randn_like,
    reentrant,
    seeded,
    worst_jacobian,
    zeros_for_none,
)
from .registry import register_check
from .report import Fail, Skip, first_line
from .variants import copy, fresh, is_float


def _without_reference_at_float64(engine, row) -> str | None:
    if engine.reference is None and row.dtype == torch.float64 and row.kind == "parity":
        return "no reference to compare with"
    return None


#: rows that differ from the float64 row in memory layout only
LAYOUT_ONLY = ("transposed", "strided")


def _once(engine, row) -> str | None:
    cls = [c for c in engine.classes if once_differentiable_cls(c)]
    return f"{names(cls)}.backward is declared @once_differentiable" if cls else None


def _not_layout_only(row) -> bool:
    # NOTE: gradgrad is the costliest check (finite differences of a backward); on a layout-only row it
    # would repeat the float64 row's values, and that row's backward layout handling is its grad check.
    return row.variant not in LAYOUT_ONLY


def _no_jvp(engine, row) -> str | None:
    cls = [c for c in engine.classes if not has_jvp(c)]
    return f"{names(cls)} defines no jvp" if cls else _without_reference_at_float64(engine, row)


def _no_vmap(engine, row) -> str | None:
    cls = [c for c in engine.classes if not has_vmap(c)]
    return f"{names(cls)} declares neither generate_vmap_rule nor vmap" if cls else None


# ---------------------------------------------------------------------------------------------
# derivatives
# ---------------------------------------------------------------------------------------------


@register_check(skips=_without_reference_at_float64)
def grad(engine, row):
    """float64: gradcheck's test (J_backward within its tolerance of J_finite-differences, a reentrant backward;
    error = max |J_backward - J_finite-differences|) and the reference's gradients; else parity."""
    if row.kind != "exact":
        return _grad_parity(engine, row)
    xs, f, labels, jacs = engine.jacobians(row)
    outs = floats(f(*xs))
    shapes_of = ([o.shape for o in outs], labels, [x.shape for x in xs])
    err, detail = worst_jacobian(jacs, out_names(len(outs)), *shapes_of)
    # NOTE: gradcheck's verdict from the Jacobians computed above: torch's gradcheck would compute both again
    failure = jacobian_mismatch(jacs, out_names(len(outs)), *shapes_of) or reentrant(outs, xs, seeded(engine.seed + 7))
    if failure:
        factor = constant_factor(jacs)
        raise Fail(detail or failure, err, **({"factor": factor} if factor is not None else {}))
    if engine.reference is not None:
        _grad_parity(engine, row, "gradients differ from the reference's: ")
    return err


def _grad_parity(engine, row, prefix=""):
    hand, own, truth = engine.parity(row)
    grads, want = hand.gradients(), truth.gradients()
    labels = [f"grad of input {i}" for i in row.diff]
    ok, err, detail = compare_all(labels, grads, want, engine.tol(row, want), own.gradients() if own else None, row.args)
    if not ok:
        raise Fail(prefix + detail, err)
    return err


@register_check(rows=("exact",), applies=_not_layout_only, skips=_once)
def gradgrad(engine, row):
    """gradgradcheck's test: backward is itself differentiable (skipped for a backward declared @once_differentiable).

    The Jacobian of (x, v) -> v^T J(x) by double backward within gradcheck's tolerance of its finite
    differences, and a reentrant double backward.
    """
    xs, f, labels = engine.setup(row)
    gen = seeded(engine.seed + 2)
    vs = [randn_like(o, gen).requires_grad_() for o in f(*xs) if o.requires_grad]

    def first_order(*both):
        ys, ws = both[: len(xs)], both[len(xs):]
        douts = [o for o in f(*ys) if o.requires_grad]
        return tuple(zeros_for_none(torch.autograd.grad(douts, ys, ws, create_graph=True, allow_unused=True), ys))

    inputs = [*xs, *vs]
    jacs = jacobians(first_order, inputs)
    shapes_of = ([x.shape for x in xs], labels + out_names(len(vs), "incoming grad"), [x.shape for x in inputs])
    err, detail = worst_jacobian(jacs, [f"grad of {n}" for n in labels], *shapes_of)
    failure = jacobian_mismatch(jacs, [f"grad of {n}" for n in labels], *shapes_of)
    failure = failure or reentrant(first_order(*inputs), inputs, seeded(engine.seed + 8))
    if failure:
        raise Fail(f"{detail or failure} (the backward's own derivative is wrong or missing; if backward is "
                   "not meant to be differentiated, declare it @once_differentiable)", err)
    return err


@register_check(skips=_no_jvp)
def fwd_ad(engine, row):
    """float64: gradcheck(check_forward_ad=True)'s test (forward AD's Jacobian against the finite differences
    grad computed) and the reference's jvps; else the jvps' parity."""
    if row.kind != "exact":
        return _jvp_parity(engine, row)
    xs, f, labels, jacs = engine.jacobians(row)
    outs = floats(f(*xs))
    forward = engine.forward_jacobians(row, len(outs))
    jacs = [(k, j, num if forward[k][j] is None else forward[k][j].to(num), num) for k, j, _, num in jacs]
    failure = jacobian_mismatch(jacs, out_names(len(outs)), [o.shape for o in outs], labels, [x.shape for x in xs],
                                "Jacobian computed with forward mode mismatch")
    gen = seeded(engine.seed + 3)
    tangents = [copy(x, values=randn_like(x, gen)) for x in xs]
    _, jvps = engine.jvps(engine.fn, row.args, row.diff, tangents)
    with torch.no_grad():
        plus = f(*(x.detach() + EPS * t for x, t in zip(xs, tangents)))
        minus = f(*(x.detach() - EPS * t for x, t in zip(xs, tangents)))
    numeric = [(p - m) / (2 * EPS) for p, m in zip(floats(plus), floats(minus))]
    _, err, detail = compare_all(out_names(len(jvps), "jvp of out"), jvps, numeric, (RTOL, ATOL))
    if failure:
        raise Fail(detail.replace("reference", "numerical") or failure, err)
    if engine.reference is not None:
        with contextlib.suppress(Skip):  # NOTE: a reference without forward AD leaves the numerical check
            _jvp_parity(engine, row, "jvps differ from the reference's: ")
    return err


def _jvp_parity(engine, row, prefix=""):
    mine, own, truth = engine.jvp_parity(row)
    ok, err, detail = compare_all(out_names(len(mine), "jvp of out"), mine, truth, engine.tol(row, truth), own, row.args)
    if not ok:
        raise Fail(prefix + detail, err)
    return err


@register_check(rows=("exact",), skips=_no_vmap)
def batched(engine, row):
    """Gradients for a batch of incoming gradients and vmap of the forward and the vjp, each against a loop."""
    xs, f, _ = engine.setup(row)
    outs = [o for o in f(*xs) if o.requires_grad]
    gen = seeded(engine.seed + 4)
    batch = [torch.stack([randn_like(o, gen) for _ in range(3)]) for o in outs]
    together = torch.autograd.grad(outs, xs, batch, is_grads_batched=True, retain_graph=True, allow_unused=True)
    together = zeros_for_none(together, [x.expand(3, *x.shape) for x in xs])
    one_by_one = [zeros_for_none(torch.autograd.grad(outs, xs, [v[k] for v in batch], retain_graph=True,
                                                     allow_unused=True), xs) for k in range(3)]
    err = close_batches(together, one_by_one, "gradients for a batch of incoming gradients differ from a loop")

    floating = lambda *ys: tuple(floats(f(*ys)))  # noqa: E731
    stacked = [torch.stack([x.detach() * (1 + 0.1 * k) for k in range(3)]) for x in xs]
    values = torch.func.vmap(floating)(*stacked)
    loop = [floating(*(s[k] for s in stacked)) for k in range(3)]
    err = max(err, close_batches(values, loop, "vmap of the forward differs from a loop"))

    def vjp(*both):
        ys, ws = both[: len(xs)], both[len(xs):]
        return torch.func.vjp(floating, *ys)[1](tuple(ws))

    cots = [torch.stack([randn_like(o, gen) for _ in range(3)]) for o in loop[0]]
    grads = torch.func.vmap(vjp)(*stacked, *cots)
    loop = [vjp(*(s[k] for s in stacked), *(c[k] for c in cots)) for k in range(3)]
    return max(err, close_batches(grads, loop, "vmap of the vjp differs from a loop"))


@register_check(rows=("exact",), skips=lambda engine, row: None if compat.undefined_grad() else "this torch has no UndefinedGrad")
def undef(engine, row):
    """An undefined incoming gradient gives the gradients of a zero one."""
    undefined = compat.undefined_grad()
    leaves = fresh(row.args, row.diff)
    xs = [leaves[i] for i in row.diff]
    outs = diff_outputs(engine.fn(*leaves))
    gen = seeded(engine.seed + 5)
    cots = [randn_like(o, gen) for o in outs]
    err = 0.0
    for k in range(len(outs)):
        # NOTE: the zero gradient first: a backward that raises on any input is an ERROR, not this check's FAIL
        zeroed = [torch.zeros_like(c) if i == k else c for i, c in enumerate(cots)]
        want = torch.autograd.grad(outs, xs, zeroed, retain_graph=True, allow_unused=True)
        marked = [undefined()(o) if i == k else o for i, o in enumerate(outs)]
        try:
            got = torch.autograd.grad(marked, xs, cots, retain_graph=True, allow_unused=True)
        except Exception as exc:  # noqa: BLE001 - e.g. None * tensor: a TypeError is this check's finding too
            raise Fail(f"backward raised on an undefined incoming gradient for output {k}: {first_line(exc)}") from exc
        err = max(err, close_batches([zeros_for_none(got, xs)], [zeros_for_none(want, xs)],
                                     f"an undefined incoming gradient for output {k} does not act as a zero one"))
    return err


# ---------------------------------------------------------------------------------------------
# what backward returns
# ---------------------------------------------------------------------------------------------


@register_check(rows=("exact", "parity", "dtype"))
def shapes(engine, row):
    """Each Function's backward called directly: every gradient has its input's shape, dtype and device."""
    problems = shape_problems(engine, row)
    if problems:
        raise Fail("; ".join(problems))
    return None


def _lower_precision(row) -> bool:
    # NOTE: autocast leaves float64 alone: only rows in a lower precision
    return any(is_float(a) and a.dtype != torch.float64 for a in row.args)


@register_check(rows=("exact", "parity", "dtype"), applies=_lower_precision)
def shapes_ac(engine, row):
    """As a mixed-precision step runs: forward under torch.autocast, backward outside; what goes wrong there only."""
    device = next(a.device for a in row.args if isinstance(a, torch.Tensor))
    try:
        problems = shape_problems(engine, row, torch.autocast(device.type))
    except RuntimeError as exc:
        shape_problems(engine, row)  # NOTE: a backward that raises without autocast too is an ERROR, not this FAIL
        raise Fail("forward under autocast, backward outside it (as a mixed-precision step runs): backward "
                   f"raised {str(exc).splitlines()[0]}") from exc
    plain = set(shape_problems(engine, row)) if problems else set()
    problems = [p for p in problems if p not in plain]  # NOTE: those are the shapes column's to report
    if problems:
        raise Fail("under autocast: " + "; ".join(problems))
    return None


def shape_problems(engine, row, forward_context=None) -> list[str]:
    """Each gradient a Function's backward returns, against the one autograd made of it (see shapes)."""
    calls, _, graph = engine.backward_calls(row, row.diff, forward_context)
    if not calls:
        raise Skip("no custom autograd.Function in the output's graph")
    problems = []
    for node, raw, validated in calls:
        name = f"{compat.forward_class(node).__name__}.backward"
        needs = node.needs_input_grad
        if len(raw) < len(needs):
            problems.append(f"{name} returned {len(raw)} gradients for {len(needs)} inputs")
            continue
        # NOTE: backward returns one gradient per argument, autograd keeps one per tensor that
        # requires grad: the k-th argument that needs a gradient is the k-th live edge.
        wanted = [i for i, need in enumerate(needs) if need]
        live = [t for t, (nxt, _) in enumerate(node.next_functions) if nxt is not None]
        for i, t in zip(wanted, live):
            g, v = raw[i], validated[t] if validated is not None else None
            if g is None or v is None:
                continue
            for what, mine, theirs in (("shape", tuple(g.shape), tuple(v.shape)), ("dtype", g.dtype, v.dtype),
                                       ("device", g.device, v.device)):
                if mine != theirs:
                    silently = {"shape": " (autograd sums it silently)", "dtype": " (autograd casts it silently)"}
                    problems.append(f"{name} gradient {i} has {what} {mine}, its input {theirs}{silently.get(what, '')}")
                    break
    del graph
    return list(dict.fromkeys(problems))


@register_check(rows=("exact", "parity"))
def needs_grad(engine, row):
    """With one input needing a gradient at a time: None where ctx.needs_input_grad is False, the same gradient elsewhere."""
    _, leaves, _ = engine.backward_calls(row, row.diff)
    greedy: dict[str, set[int]] = {}
    problems, found, err, changed = [], False, 0.0, False
    for j in row.diff:
        calls, alone, graph = engine.backward_calls(row, (j,))
        found = found or bool(calls)
        for node, raw, _ in calls:
            unwanted = {i for i, (g, need) in enumerate(zip(raw, node.needs_input_grad)) if g is not None and not need}
            greedy.setdefault(f"{compat.forward_class(node).__name__}.backward", set()).update(unwanted)
        mine, before = zeros_for_none([alone[j].grad, leaves[j].grad], [alone[j], leaves[j]])
        ok, e, detail = compare(f"grad of input {j}", mine, before, CLOSE, None, row.args)
        err = max(err, e)
        if not ok:
            problems.append(f"the gradient changes when input {j} alone needs one: {detail}")
            changed = True
    problems = [f"{name} returns a gradient where ctx.needs_input_grad is False (its inputs "
                f"{', '.join(map(str, sorted(where)))}, with one input needing a gradient at a time)"
                for name, where in greedy.items() if where] + problems
    if not found:
        raise Skip("no custom autograd.Function in the output's graph")
    if problems:
        raise Fail("; ".join(problems), err if changed else None)
    return err
