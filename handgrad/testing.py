"""The whole gradient-check matrix for anyone's ``torch.autograd.Function``, in one call.

>>> from handgrad.testing import check_function, assert_function
>>> report = check_function(MySoftplus.apply, [(x,)], reference=torch.nn.functional.softplus,
...                         elementwise=True)
>>> print(report)          # the table: row (input variant) x check, ok/FAIL/ERROR/skip, largest error
>>> assert report.ok       # or assert_function(...), which raises AssertionError carrying the table

``fn`` is any callable built on autograd.Function(s); each sample is a tuple of its arguments.
Floating-point tensors are the inputs to differentiate (only those with ``requires_grad`` when a
sample marks some); numbers, integer targets and other arguments pass through untouched.

Rows, made from each sample on each device (CPU, and CUDA when present):

* ``float64``           the sample in float64, strides as given: every numerical check runs here
* ``transposed``        the same values in transposed (column-major) memory
* ``strided``           the same values as every other element of a wider buffer (no ``.view(-1)``)
* ``0-d`` / ``empty``   every tensor cut to one element / to none (``elementwise=True`` only)
* ``extremal <dtype>``  NaN, ±inf, ±huge (max/4) and ±tiny (smallest normal) written into the
                        inputs; compared with the reference only (needs ``reference``)
* ``<dtype>``           float32, bfloat16, float16 (``dtypes``): parity at the dtype's tolerance

With ``as_given=True`` each sample is instead one row exactly as given (its own dtypes, mixed or
not, and strides); with ``numerical=False`` no row uses finite differences (inputs at a kink, a
tie or NaN): every row is compared with the reference.

Checks (columns):

* ``grad``        float64 rows: ``gradcheck``, error = max |J_backward - J_finite-differences|, and the
                  gradients equal the reference's; other rows: the gradients equal the reference's
                  (or, without one, the Function's own in float64) at the row's tolerance
* ``gradgrad``    ``gradgradcheck``: backward is itself differentiable. Skipped only when a Function
                  declares otherwise with ``@once_differentiable`` on its backward: a backward that is
                  silently not differentiable (e.g. it detaches) fails here
* ``fwd_ad``      float64 rows: ``gradcheck(check_forward_ad=True)``, error = max |jvp - finite
                  differences|, and the jvps equal the reference's; other rows: the jvps equal the
                  reference's (or the Function's own in float64); skipped when a Function of ``fn``
                  defines no ``jvp``
* ``batched``     gradients for a batch of incoming gradients (``is_grads_batched``) and ``vmap`` of
                  the forward and the vjp, each against a loop; skipped unless every Function declares
                  ``generate_vmap_rule = True`` or a ``vmap`` staticmethod
* ``undef``       an undefined incoming gradient gives the gradients of a zero one
* ``shapes``      calls each Function's backward directly: every gradient has its input's shape,
                  dtype and device (autograd silently sums a wrong-shaped broadcast gradient and casts
                  a wrong dtype, so ``gradcheck`` cannot see either)
* ``shapes_ac``   rows in a lower precision: what ``shapes`` finds under ``torch.autocast`` (bfloat16 on
                  CPU, float16 on CUDA) and not without it, e.g. a gradient left in the autocast dtype
* ``needs_grad``  with one input needing a gradient at a time: backward returns None for every input
                  whose ``ctx.needs_input_grad`` is False, and the same gradient as before for the other
* ``values``      outputs equal the reference's (NaN in the same places) at the row's tolerance
* ``saved``       bytes saved for backward (unique storages seen by ``saved_tensors_hooks``) are at most
                  the reference's
* ``compile``     ``torch.compile(fn, fullgraph=True)`` gives the same values and gradients (off unless
                  ``compile=True`` or a backend name)

Tolerances (rtol, atol) per dtype are :data:`TOLERANCES`; in a lower precision a Function also passes
where it is at most :data:`SLACK` times as far from the float64 truth as the reference itself is in
that dtype at the same element (some references compute internally in float32). Each failure names
the row, the worst element's index and both values. A check that raises is an ERROR cell with the
exception's first line; the report never dies. ``python -m handgrad.testing --function file.py:Name
--shape 4,3`` (or ``python -m handgrad.check --function ...``) runs the same from the command line
(:func:`cli_function`). handgrad's own matrix (:mod:`handgrad.check`) is this engine on its cases.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import re
import sys
import time
import warnings
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.autograd.forward_ad as fwAD
from torch.autograd.function import once_differentiable
from torch.autograd.gradcheck import GradcheckError

__all__ = [
    "CHECKS",
    "DTYPES",
    "SLACK",
    "TOLERANCES",
    "VARIANTS",
    "Report",
    "Result",
    "assert_function",
    "check_function",
    "cli_function",
    "main",
]

CHECKS = ("grad", "gradgrad", "fwd_ad", "batched", "undef", "shapes", "shapes_ac", "needs_grad", "values", "saved",
          "compile")
#: the lower precisions checked by default
DTYPES = (torch.float32, torch.bfloat16, torch.float16)
#: the generated rows (0-d and empty only for elementwise functions, extremal only with a reference)
VARIANTS = ("transposed", "strided", "0-d", "empty", "extremal")
#: (rtol, atol) for values and gradients in each dtype. float64 and float32 as handgrad's own
#: matrix has always used them; bfloat16 and float16 about two units in the last place in rtol and
#: one at 1 in atol (a sum of O(1) terms that cancels keeps the absolute error of its terms).
TOLERANCES = {
    torch.float64: (1e-12, 1e-10),
    torch.float32: (1e-5, 1e-5),
    torch.bfloat16: (1.6e-2, 8e-3),
    torch.float16: (2e-3, 1e-3),
}
#: in a lower precision, a Function may be this many times as far from the truth as the reference, element by element
SLACK = 4.0

# NOTE: gradcheck's step and tolerances, as handgrad's own matrix has always used them.
_EPS, _ATOL, _RTOL = 1e-6, 1e-5, 1e-3
# NOTE: batched, undefined-gradient and compiled results differ from the plain ones only by
# summation order, so they are compared almost exactly.
_CLOSE = (1e-9, 1e-12)
_SHORT = {torch.float64: "float64", torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}
_ONCE_CODE = once_differentiable(lambda ctx, *grads: grads).__code__

# ---------------------------------------------------------------------------------------------
# the report
# ---------------------------------------------------------------------------------------------


@dataclass
class Result:
    """One cell: a check on one row. ``status`` is ok, FAIL, ERROR or skip."""

    row: str
    check: str
    status: str
    error: float | None = None  # the largest error found, where the check measures one
    message: str = ""
    shown: str | None = None  # what the cell shows after the status, when not the error

    @property
    def ok(self) -> bool:
        return self.status in ("ok", "skip")

    def cell(self) -> str:
        if self.status == "ERROR" or self.status == "skip":
            return self.status
        value = self.shown if self.shown is not None else (f"{self.error:.1e}" if self.error is not None else "")
        return f"{self.status} {value}".strip()


@dataclass
class Report:
    """Every result of one :func:`check_function` call; ``str(report)`` is the table and the details."""

    title: str
    rows: list[str]
    checks: list[str]
    results: list[Result] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    def __getitem__(self, key: tuple[str, str]) -> Result:
        row, check = key
        for r in self.results:
            if r.row == row and r.check == check:
                return r
        raise KeyError(f"no result for row {row!r}, check {check!r}")

    def failed(self) -> list[Result]:
        return [r for r in self.results if not r.ok]

    def failed_checks(self) -> set[str]:
        """The names of the checks with at least one FAIL or ERROR cell."""
        return {r.check for r in self.failed()}

    def statuses(self, check: str) -> dict[str, str]:
        return {r.row: r.status for r in self.results if r.check == check}

    def table(self) -> str:
        cells = {(r.row, r.check): r.cell() for r in self.results}
        return _table(["row", *self.checks], [[row, *(cells.get((row, c), "-") for c in self.checks)] for row in self.rows])

    def details(self) -> list[str]:
        lines = [f"{r.status:5s} {r.row} | {r.check}: {r.message}" for r in self.failed()]
        skips: dict[tuple[str, str], int] = {}
        for r in self.results:
            if r.status == "skip":
                skips[(r.check, r.message)] = skips.get((r.check, r.message), 0) + 1
        lines += [f"skip  {check} ({n} row{'s' if n > 1 else ''}): {why}" for (check, why), n in skips.items()]
        return lines

    def summary(self) -> str:
        count = {s: sum(r.status == s for r in self.results) for s in ("ok", "FAIL", "ERROR", "skip")}
        return (f"{len(self.results)} checks: {count['ok']} ok, {count['FAIL']} failed, {count['ERROR']} errors, "
                f"{count['skip']} skipped ({self.seconds:.1f} s)")

    def __str__(self) -> str:
        return "\n".join([self.title, self.table(), self.summary(), *self.details()])


def _table(header: list[str], body: list[list[str]]) -> str:
    """A Markdown table, each column as wide as its widest cell."""
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    fmt = lambda line: "| " + " | ".join(c.ljust(w) for c, w in zip(line, widths)) + " |"  # noqa: E731
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([fmt(header), rule, *(fmt(line) for line in body)])


# ---------------------------------------------------------------------------------------------
# rows: the variants made from each sample
# ---------------------------------------------------------------------------------------------


@dataclass
class _Row:
    label: str
    args: tuple
    diff: tuple[int, ...]  # positions of the inputs to differentiate
    dtype: torch.dtype  # the least precise float dtype among the inputs: the row's tolerance
    # "exact" (float64: the numerical checks), "parity" (float64 or as given, compared with the
    # reference only), "dtype" (a lower precision made from the sample) or "extremal"
    kind: str
    first: bool = False  # the sample's first row on its device: saved and compile run here


def _is_float(x) -> bool:
    return isinstance(x, torch.Tensor) and x.is_floating_point()


def _diff_positions(args) -> tuple[int, ...]:
    marked = tuple(i for i, a in enumerate(args) if _is_float(a) and a.requires_grad)
    return marked or tuple(i for i, a in enumerate(args) if _is_float(a))


def _strided_like(like: torch.Tensor, dtype=None, device=None) -> torch.Tensor:
    """Zeros with ``like``'s shape and strides (a view into a fresh buffer when they are not dense)."""
    dtype, device = dtype or like.dtype, device or like.device
    if like.is_contiguous() or like.numel() == 0 or 0 in like.stride():
        # NOTE: overlapping strides (an expanded tensor) cannot be written to: such inputs get a dense copy.
        return torch.zeros(like.shape, dtype=dtype, device=device)
    size = 1 + sum((n - 1) * s for n, s in zip(like.shape, like.stride()))
    return torch.zeros(size, dtype=dtype, device=device).as_strided(like.shape, like.stride())


def _copy(x: torch.Tensor, dtype=None, device=None, values=None) -> torch.Tensor:
    """A detached copy of ``x`` (or of ``values``) in ``dtype`` on ``device``, with ``x``'s strides."""
    out = _strided_like(x, dtype, device)
    with torch.no_grad():
        out.copy_(x if values is None else values)
    return out.detach()


def _fresh(args, diff, needs=None) -> tuple:
    """New leaves for the inputs to differentiate (``needs`` of them requiring grad), the rest as they are."""
    needs = diff if needs is None else needs
    return tuple(_copy(a).requires_grad_(i in needs) if i in diff else a for i, a in enumerate(args))


def _map_floats(args, f) -> tuple:
    return tuple(f(a) if _is_float(a) else a for a in args)


def _map_tensors(args, f) -> tuple:
    return tuple(f(a) if isinstance(a, torch.Tensor) else a for a in args)


def _transposed(x: torch.Tensor) -> torch.Tensor:
    if x.dim() < 2 or x.shape[-1] < 2 or x.shape[-2] < 2:
        return x
    return x.transpose(-1, -2).contiguous().transpose(-1, -2)


def _strided(x: torch.Tensor) -> torch.Tensor:
    if x.dim() < 1 or x.shape[-1] < 2:
        return x
    # NOTE: every other element of a buffer one wider than 2n, so that no dimension can be merged
    # with the next (a plain stride-2 view of a 2n-wide buffer still flattens with .view(-1)).
    n = x.shape[-1]
    buffer = torch.zeros(*x.shape[:-1], 2 * n + 1, dtype=x.dtype, device=x.device)
    buffer[..., : 2 * n : 2] = x
    return buffer[..., : 2 * n : 2]


def _specials(dtype) -> list[float]:
    info = torch.finfo(dtype)
    return [float("nan"), float("inf"), float("-inf"), info.max / 4, -info.max / 4, info.tiny, -info.tiny]


def _extremal(args, diff) -> tuple:
    """Each input to differentiate with the special values written in, input k from position 7k on."""
    out = list(args)
    for k, i in enumerate(diff):
        flat = args[i].detach().clone().reshape(-1)
        values = _specials(flat.dtype)
        for s, value in enumerate(values[: flat.numel()]):
            flat[(k * len(values) + s) % flat.numel()] = value
        out[i] = flat.reshape(args[i].shape)
    return tuple(out)


def _describe(args, float_dtypes: bool = False) -> str:
    """'(3, 4) int64(3,) 2.0': shapes, with the dtype of non-float tensors (of every tensor with ``float_dtypes``)."""
    parts = []
    for a in args:
        if isinstance(a, torch.Tensor):
            shape = "(" + ", ".join(map(str, a.shape)) + ("," if a.dim() == 1 else "") + ")"
            named = not a.is_floating_point() or float_dtypes
            parts.append(f"{str(a.dtype).replace('torch.', '')}{shape}" if named else shape)
        else:
            parts.append(repr(a))
    return " ".join(parts)


def _coarsest(args) -> torch.dtype:
    """The least precise float dtype among ``args`` (float64 when there is none)."""
    dtypes = [a.dtype for a in args if _is_float(a)]
    return max(dtypes, key=lambda d: torch.finfo(d).eps) if dtypes else torch.float64


def _rows_of(label, args, device, *, elementwise, dtypes, variants, extremal, as_given=False, numerical=True) -> list[_Row]:
    """Every row of one sample on one device (see the module docstring)."""
    diff = _diff_positions(args)
    suffix = "" if device.type == "cpu" else f" {device.type}"
    exact = "exact" if numerical else "parity"
    if as_given:
        given = _map_tensors(args, lambda t: _copy(t, None, device))
        dtype = _coarsest(given)
        return [_Row(f"{label}{suffix}", given, diff, dtype, exact if dtype == torch.float64 else "parity", first=True)]
    base = _map_tensors(args, lambda t: _copy(t, torch.float64 if t.is_floating_point() else None, device))
    rows = [_Row(f"{label} float64{suffix}", base, diff, torch.float64, exact, first=True)]

    def add(name, new_args, dtype=torch.float64, kind=exact):
        rows.append(_Row(f"{label} {name}{suffix}", new_args, diff, dtype, kind))

    for name, make in (("transposed", _transposed), ("strided", _strided)):
        if name in variants:
            new = _map_floats(base, make)
            if any(not new[i].is_contiguous() for i in diff):
                add(name, new)
    tensors = [a for a in base if isinstance(a, torch.Tensor)]
    if elementwise and "0-d" in variants and all(t.numel() for t in tensors):
        add("0-d", _map_tensors(base, lambda t: t.reshape(-1)[0].clone()))
    if elementwise and "empty" in variants:
        add("empty", _map_tensors(base, lambda t: t.reshape(-1)[:0].clone()))
    for dtype in dtypes:
        add(_SHORT.get(dtype, str(dtype)), _map_floats(base, lambda t, d=dtype: t.to(d)), dtype, "dtype")
    if extremal and "extremal" in variants and diff:
        for dtype in (torch.float64, *dtypes):
            cast = _map_floats(base, lambda t, d=dtype: t.to(d))
            add(f"extremal {_SHORT.get(dtype, str(dtype))}", _extremal(cast, diff), dtype, "extremal")
    return rows


# ---------------------------------------------------------------------------------------------
# the Functions behind a callable
# ---------------------------------------------------------------------------------------------


def _tensor_outputs(result) -> tuple[torch.Tensor, ...]:
    if isinstance(result, torch.Tensor):
        return (result,)
    if isinstance(result, (tuple, list)):
        return tuple(r for r in result if isinstance(r, torch.Tensor))
    raise TypeError(f"the function returned {type(result).__name__}, not a tensor or a tuple of tensors")


def _diff_outputs(result) -> tuple[torch.Tensor, ...]:
    return tuple(o for o in _tensor_outputs(result) if o.requires_grad)


def _custom_nodes(outputs) -> list:
    """The backward nodes of custom autograd.Functions in the graph of ``outputs``."""
    stack = [o.grad_fn for o in outputs if o.grad_fn is not None]
    seen, found = set(), []
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if hasattr(node, "_forward_cls"):
            found.append(node)
        stack.extend(n for n, _ in node.next_functions)
    return found


def _overrides(cls, name) -> bool:
    return getattr(cls, name, None) is not getattr(torch.autograd.Function, name, None)


def _has_jvp(cls) -> bool:
    return _overrides(cls, "jvp")


def _has_vmap(cls) -> bool:
    return bool(getattr(cls, "generate_vmap_rule", False)) or _overrides(cls, "vmap")


def _once_differentiable(cls) -> bool:
    user = cls.vjp if _overrides(cls, "vjp") else cls.backward
    return getattr(user, "__code__", None) is _ONCE_CODE


def _names(classes) -> str:
    return ", ".join(c.__name__ for c in classes)


# ---------------------------------------------------------------------------------------------
# comparisons
# ---------------------------------------------------------------------------------------------


def _index(shape, flat: int) -> str:
    if not shape:
        return ""
    return "[" + ", ".join(str(int(i)) for i in torch.unravel_index(torch.tensor(flat), shape)) + "]"


def _num(x) -> str:
    return f"{float(x):.8g}"


def _where(args, shape, flat) -> str:
    """' where input i = v' for the first input of the output's shape (an elementwise op's own input)."""
    for i, a in enumerate(args):
        if isinstance(a, torch.Tensor) and a.shape == shape and a.numel():
            return f" where input {i} = {_num(a.detach().reshape(-1)[flat])}"
    return ""


def _compare(what, hand, truth, tol, own=None, args=()) -> tuple[bool, float, str]:
    """Is ``hand`` ``truth`` up to ``tol`` = (rtol, atol)? Returns (ok, max |hand - truth|, the worst element).

    Non-finite values must sit where ``own`` (the reference in the same dtype) or ``truth`` has
    them, and be equal. Elsewhere |hand - truth| must be ≤ atol + rtol |truth|, or ≤ SLACK times
    |own - truth| at the same element when given.
    """
    if hand.shape != truth.shape or (own is not None and hand.dtype != own.dtype):
        kind = "dtype" if hand.shape == truth.shape else "shape"
        theirs = own.dtype if kind == "dtype" else tuple(truth.shape)
        mine = hand.dtype if kind == "dtype" else tuple(hand.shape)
        return False, float("inf"), f"{what}: {kind} {mine}, the reference's is {theirs}"
    if hand.numel() == 0:
        return True, 0.0, ""
    rtol, atol = tol
    h, t = hand.detach().double().reshape(-1), truth.detach().double().reshape(-1)
    pattern = own.detach().double().reshape(-1) if own is not None else t
    special = ~torch.isfinite(pattern) | ~torch.isfinite(h)
    same = (h == pattern) | (h.isnan() & pattern.isnan())
    # NOTE: finite where the reference overflowed in a low precision is fine if it is the truth
    truthful = torch.isfinite(h) & torch.isfinite(t) & ((h - t).abs() <= atol + rtol * t.abs())
    wrong = special & ~same & ~truthful
    if wrong.any():
        k = int(wrong.nonzero()[0])
        return False, float("inf"), (f"{what}{_index(hand.shape, k)}: hand {_num(h[k])}, reference "
                                     f"{_num(pattern[k])}{_where(args, hand.shape, k)}")
    finite = (~special | truthful) & torch.isfinite(t)
    if not finite.any():
        return True, 0.0, ""
    zero = torch.zeros_like(h)
    gap = torch.where(finite, (h - t).abs(), zero)
    allowed = atol + rtol * t.abs()
    theirs = zero
    if own is not None:
        o = own.detach().double().reshape(-1)
        theirs = torch.where(finite & torch.isfinite(o), (o - t).abs(), zero)
    # NOTE: element by element: where the reference is exact, so must fn be (a zero tolerance stays exact)
    over = _ratio(gap, torch.maximum(allowed, SLACK * theirs))
    k = int(over.argmax())
    ok = float(over[k]) <= 1.0
    mention = (f"; the reference's own error there is {float(_ratio(theirs[k], allowed[k])):.3g}x"
               if SLACK * theirs[k] > allowed[k] else "")
    detail = "" if ok else (f"{what}{_index(hand.shape, k)}: hand {_num(h[k])}, reference {_num(t[k])} "
                            f"(off by {float(_ratio(gap[k], allowed[k])):.3g}x the tolerance rtol={rtol:g}, "
                            f"atol={atol:g}{mention}){_where(args, hand.shape, k)}")
    # NOTE: the error shown is absolute for |truth| ≤ 1 and relative above, so huge values read sensibly.
    return ok, float((gap / t.abs().clamp_min(1)).max()), detail


def _ratio(gap, bound):
    """gap / bound, with 0 / 0 = 0 (an exact match under a zero tolerance) and gap / 0 = inf."""
    return torch.where(gap == 0, torch.zeros_like(gap), gap / bound)


def _compare_all(names, hands, truths, tol, owns=None, args=()) -> tuple[bool, float, str]:
    """:func:`_compare` over lists of tensors, ``names[k]`` naming the k-th."""
    if len(hands) != len(truths):
        return False, float("inf"), f"{len(hands)} tensors, the reference gives {len(truths)}"
    owns = owns if owns is not None else [None] * len(hands)
    ok, err, details = True, 0.0, []
    for name, h, t, o in zip(names, hands, truths, owns):
        good, e, detail = _compare(name, h, t, tol, o, args)
        ok, err = ok and good, max(err, e)
        if detail:
            details.append(detail)
    return ok, err, "; ".join(details)


def _out_names(n: int, prefix: str = "out") -> list[str]:
    return [prefix] if n == 1 else [f"{prefix}{k}" for k in range(n)]


def _randn_like(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return torch.randn(x.shape, generator=gen, dtype=torch.float64).to(device=x.device, dtype=x.dtype)


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _cotangent(out: torch.Tensor, gen: torch.Generator, extreme: bool = False) -> torch.Tensor:
    """A seeded normal incoming gradient for ``out``; ``extreme``: inf at every 4th element from the 2nd, NaN from the 4th."""
    grad = _randn_like(out, gen)
    if extreme:
        flat = grad.view(-1)
        if flat.numel() <= 1:
            flat.fill_(float("inf"))
        flat[1::4] = float("inf")
        flat[3::4] = float("nan")
    return grad


def _split(fn, args, diff) -> Callable:
    """``fn`` as a function of the inputs to differentiate only, returning its tensor outputs."""

    def f(*xs):
        full = list(args)
        for i, x in zip(diff, xs):
            full[i] = x
        return _tensor_outputs(fn(*full))

    return f


def _zeros_for_none(grads, like) -> list[torch.Tensor]:
    return [torch.zeros_like(x) if g is None else g for g, x in zip(grads, like)]


def _jacobians(f, xs, eps=_EPS):
    """[(output k, input j, J_backward, J_finite-differences)], each J of shape (out.numel(), x.numel())."""
    outs = _floats(f(*xs))
    result = []
    for k, out in enumerate(outs):
        rows = []
        for m in range(out.numel()):
            onehot = torch.zeros_like(out).reshape(-1)
            onehot[m] = 1
            if out.requires_grad:
                g = torch.autograd.grad(out, xs, onehot.reshape(out.shape), retain_graph=True, allow_unused=True)
            else:
                g = [None] * len(xs)
            rows.append([z.reshape(-1) for z in _zeros_for_none(g, xs)])
        for j, x in enumerate(xs):
            analytic = torch.stack([r[j] for r in rows]) if rows else x.new_zeros(0, x.numel())
            result.append((k, j, analytic, _numerical(f, xs, j, k, eps).to(analytic)))
    return result


def _numerical(f, xs, j, k, eps):
    """Column m: (f(x + eps e_m) - f(x - eps e_m)) / 2 eps for output k and input j (central differences)."""
    x = xs[j]
    cols = []
    for m in range(x.numel()):
        index = tuple(int(i) for i in torch.unravel_index(torch.tensor(m), x.shape))
        values = []
        for step in (eps, -eps):
            moved = [_copy(y).requires_grad_(y.requires_grad) for y in xs]
            with torch.no_grad():
                moved[j][index] += step
            values.append(_floats(f(*moved))[k].detach().reshape(-1))
        cols.append((values[0] - values[1]) / (2 * eps))
    if not cols:
        return torch.zeros(_floats(f(*xs))[k].numel(), 0, dtype=x.dtype, device=x.device)
    return torch.stack(cols, dim=1)


def _floats(outs) -> list[torch.Tensor]:
    return [o for o in outs if o.is_floating_point()]


def _worst_jacobian(jacs, out_names, out_shapes, in_names, in_shapes, atol=_ATOL, rtol=_RTOL) -> tuple[float, str]:
    """The largest |J_backward - J_numerical| and the entry furthest outside gradcheck's tolerance."""
    err, worst, detail = 0.0, -float("inf"), ""
    for k, j, an, num in jacs:
        if an.numel() == 0:
            continue
        gap = (an - num).abs()
        err = max(err, float(gap.max()))
        excess = (gap - (atol + rtol * num.abs())).reshape(-1)
        flat = int(excess.argmax())
        if float(excess[flat]) > worst:
            worst = float(excess[flat])
            r, c = divmod(flat, an.shape[1])
            detail = (f"d {out_names[k]}{_index(out_shapes[k], r)} / d {in_names[j]}{_index(in_shapes[j], c)}: "
                      f"hand {_num(an[r, c])}, numerical {_num(num[r, c])}")
    return err, detail if worst > 0 else ""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".strip()


class _Skip(Exception):
    """A check found nothing to check: skip, with this reason."""


class _Fail(Exception):
    """A check found a problem: FAIL, with this message and the error measured."""

    def __init__(self, message, error=None):
        super().__init__(message)
        self.error = error


# ---------------------------------------------------------------------------------------------
# the engine
# ---------------------------------------------------------------------------------------------


@dataclass
class _Engine:
    fn: Callable
    reference: Callable | None
    classes: list  # the autograd.Function classes behind fn (given, or found in the graph)
    compile_backend: str | None
    tolerances: dict
    seed: int
    skip: Mapping[str, str]
    extreme_upstream: bool = False  # incoming gradients with inf and NaN in them (reference comparisons)
    _cache: dict = field(default_factory=dict)

    # -- which checks run where -------------------------------------------------------------

    def applies(self, check: str, row: _Row) -> bool:
        if check in ("saved", "compile"):
            return row.first
        if check in ("gradgrad", "batched", "undef"):
            return row.kind == "exact"
        if check == "needs_grad":
            return row.kind in ("exact", "parity")
        if check == "shapes":
            return row.kind != "extremal"
        if check == "shapes_ac":  # NOTE: autocast leaves float64 alone: only rows in a lower precision
            return row.kind != "extremal" and any(_is_float(a) and a.dtype != torch.float64 for a in row.args)
        return True  # grad, fwd_ad and values: on every row

    def skip_reason(self, check: str, row: _Row) -> str | None:
        if check in self.skip:
            return self.skip[check]
        if not row.diff and check not in ("values",):
            return "no floating-point input to differentiate"
        cls = self.classes
        if check == "gradgrad" and any(_once_differentiable(c) for c in cls):
            return f"{_names(c for c in cls if _once_differentiable(c))}.backward is declared @once_differentiable"
        if check == "fwd_ad" and not all(_has_jvp(c) for c in cls):
            return f"{_names(c for c in cls if not _has_jvp(c))} defines no jvp"
        if check == "batched" and not all(_has_vmap(c) for c in cls):
            return f"{_names(c for c in cls if not _has_vmap(c))} declares neither generate_vmap_rule nor vmap"
        if check in ("saved",) and self.reference is None:
            return "no reference to compare with"
        if self.reference is None and row.dtype == torch.float64 and (
                check == "values" or (check in ("grad", "fwd_ad") and row.kind == "parity")):
            return "no reference to compare with"
        if check == "undef" and getattr(torch._C._functions, "UndefinedGrad", None) is None:
            return "this torch has no UndefinedGrad"
        return None

    def run(self, check: str, row: _Row) -> Result:
        reason = self.skip_reason(check, row)
        if reason is not None:
            return Result(row.label, check, "skip", message=reason)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                outcome = getattr(self, f"check_{check}")(row)
        except _Skip as exc:
            return Result(row.label, check, "skip", message=str(exc))
        except _Fail as exc:
            return Result(row.label, check, "FAIL", exc.error, str(exc))
        except Exception as exc:  # noqa: BLE001 - the report never dies: a check that raises is an ERROR cell
            return Result(row.label, check, "ERROR", None, _first_line(exc))
        error, shown = outcome if isinstance(outcome, tuple) else (outcome, None)
        return Result(row.label, check, "ok", error, shown=shown)

    # -- shared runs ---------------------------------------------------------------------------

    def evaluate(self, func, args, diff, cotangents=None):
        """(outputs, gradients of the inputs to differentiate, cotangents) of one forward and backward."""
        leaves = _fresh(args, diff)
        outs = _tensor_outputs(func(*leaves))
        douts = [o for o in outs if o.requires_grad]
        if cotangents is None:
            gen = _seeded(self.seed + 1)
            cotangents = [_cotangent(o, gen, self.extreme_upstream) for o in douts]
        xs = [leaves[i] for i in diff]
        grads = torch.autograd.grad(douts, xs, cotangents, allow_unused=True) if douts and xs else ()
        return [o.detach() for o in outs], _zeros_for_none(grads, xs), cotangents

    def parity(self, row):
        """(hand, reference in the row's dtype or None, float64 truth), each (outputs, gradients, cotangents).

        The truth is the reference (or, without one, fn) in float64 on the row's own inputs and
        cotangents, so that rounding the inputs to the row's dtype is not counted as an error. On a
        float64 row the truth is also the reference in the row's dtype, so that dtypes are compared.
        """
        if row.label not in self._cache:
            hand = self.evaluate(self.fn, row.args, row.diff)
            own = None
            if self.reference is not None and row.dtype != torch.float64:
                own = self.evaluate(self.reference, row.args, row.diff, hand[2])
            up = _map_floats(row.args, lambda t: t.double())
            truth = self.evaluate(self.reference or self.fn, up, row.diff, [c.double() for c in hand[2]])
            self._cache[row.label] = hand, own if row.dtype != torch.float64 else truth, truth
        return self._cache[row.label]

    def jvps(self, func, args, diff, tangents) -> tuple[list, list]:
        """(outputs, jvps) of ``func`` at ``args`` along ``tangents`` (forward-mode AD), floating outputs only."""
        duals = list(args)
        with fwAD.dual_level():
            for i, t in zip(diff, tangents):
                duals[i] = fwAD.make_dual(_copy(args[i]), _copy(args[i], values=t))
            unpacked = [fwAD.unpack_dual(o) for o in _floats(_tensor_outputs(func(*duals)))]
        outs = [u.primal.detach() for u in unpacked]
        return outs, [torch.zeros_like(o) if u.tangent is None else u.tangent.detach() for u, o in zip(unpacked, outs)]

    def jvp_parity(self, row):
        """(hand's jvps, the reference's in the row's dtype or None, float64 truth) along seeded tangents.

        Raises _Skip when the reference has no forward-mode derivative. NOTE: the reference's jvp
        is taken in its output's dtype: torch.func/forward AD can return a float64 tangent for a
        float32 output of a native op (``t * 0.15``, torch 2.14); fn's own must match its output.
        """
        key = ("jvp", row.label)
        if key not in self._cache:
            gen = _seeded(self.seed + 6)
            tangents = [_randn_like(row.args[i], gen) for i in row.diff]
            outs, mine = self.jvps(self.fn, row.args, row.diff, tangents)
            for k, (o, j) in enumerate(zip(outs, mine)):
                if j.dtype != o.dtype:
                    raise _Fail(f"jvp of {_out_names(len(outs))[k]} has dtype {j.dtype}, its output {o.dtype}")
            try:
                own = None
                if self.reference is not None and row.dtype != torch.float64:
                    own = [j.to(o.dtype) for o, j in zip(*self.jvps(self.reference, row.args, row.diff, tangents))]
                up = _map_floats(row.args, lambda t: t.double())
                truth = [j.to(o.dtype) for o, j in zip(*self.jvps(self.reference or self.fn, up, row.diff,
                                                                   [t.double() for t in tangents]))]
            except Exception as exc:  # noqa: BLE001 - a reference without forward AD: nothing to compare with
                raise _Skip(f"the reference has no forward-mode derivative here ({_first_line(exc)})") from exc
            self._cache[key] = mine, own if row.dtype != torch.float64 else truth, truth
        return self._cache[key]

    def backward_calls(self, row, needs):
        """Run fn and its backward once; per custom Function node reached: (node, raw gradients, autograd's).

        The raw gradients come from calling the node (its Function's backward, with the real ctx)
        directly; autograd's are what it made of them (summed to shape, cast to dtype).
        """
        leaves = _fresh(row.args, row.diff, needs)
        outs = _diff_outputs(self.fn(*leaves))
        nodes = _custom_nodes(outs)
        incoming, outgoing = {}, {}

        def recorder(store, node):
            def hook(grads, *_):  # a prehook gets the incoming gradients, a hook the outgoing ones first
                store[node] = grads

            return hook

        handles = [n.register_prehook(recorder(incoming, n)) for n in nodes]
        handles += [n.register_hook(recorder(outgoing, n)) for n in nodes]
        try:
            gen = _seeded(self.seed + 1)
            torch.autograd.backward(outs, [_randn_like(o, gen) for o in outs], retain_graph=True)
        finally:
            for h in handles:
                h.remove()
        calls = []
        for node in (n for n in nodes if n in incoming):
            metas = getattr(node, "_input_metadata", [None] * len(incoming[node]))
            grads = tuple(g if g is not None else torch.zeros(m.shape, dtype=m.dtype, device=m.device)
                          for g, m in zip(incoming[node], metas))
            with torch.no_grad():
                raw = node.apply(*grads)
            calls.append((node, raw if isinstance(raw, tuple) else (raw,), outgoing.get(node)))
        return calls, leaves

    def _setup(self, row):
        """Fresh leaves, the inputs to differentiate, fn of those alone, and their names."""
        leaves = _fresh(row.args, row.diff)
        xs = [leaves[i] for i in row.diff]
        return xs, _split(self.fn, leaves, row.diff), [f"input {i}" for i in row.diff]

    # -- the checks ----------------------------------------------------------------------------

    def check_grad(self, row):
        if row.kind != "exact":
            return self._grad_parity(row)
        xs, f, names = self._setup(row)
        failure = _gradcheck(torch.autograd.gradcheck, f, xs, check_undefined_grad=False)
        outs = _floats(f(*xs))
        err, detail = _worst_jacobian(_jacobians(f, xs), _out_names(len(outs)), [o.shape for o in outs],
                                      names, [x.shape for x in xs])
        if failure:
            raise _Fail(detail or failure, err)
        if self.reference is not None:
            self._grad_parity(row, "gradients differ from the reference's: ")
        return err

    def _grad_parity(self, row, prefix=""):
        (_, grads, _), own, (_, truth, _) = self.parity(row)
        names = [f"grad of input {i}" for i in row.diff]
        ok, err, detail = _compare_all(names, grads, truth, self.tol(row), own[1] if own else None, row.args)
        if not ok:
            raise _Fail(prefix + detail, err)
        return err

    def check_gradgrad(self, row):
        xs, f, names = self._setup(row)
        failure = _gradcheck(torch.autograd.gradgradcheck, f, xs)
        gen = _seeded(self.seed + 2)
        vs = [_randn_like(o, gen).requires_grad_() for o in f(*xs) if o.requires_grad]

        def first_order(*both):
            ys, ws = both[: len(xs)], both[len(xs):]
            douts = [o for o in f(*ys) if o.requires_grad]
            return tuple(_zeros_for_none(torch.autograd.grad(douts, ys, ws, create_graph=True, allow_unused=True), ys))

        inputs = [*xs, *vs]
        err, detail = _worst_jacobian(_jacobians(first_order, inputs), [f"grad of {n}" for n in names],
                                      [x.shape for x in xs], names + _out_names(len(vs), "incoming grad"),
                                      [x.shape for x in inputs])
        if failure:
            raise _Fail(f"{detail or failure} (the backward's own derivative is wrong or missing; if backward is "
                        "not meant to be differentiated, declare it @once_differentiable)", err)
        return err

    def check_fwd_ad(self, row):
        if row.kind != "exact":
            return self._jvp_parity(row)
        xs, f, _ = self._setup(row)
        failure = _gradcheck(torch.autograd.gradcheck, f, xs, check_forward_ad=True, check_backward_ad=False,
                             check_undefined_grad=False, check_batched_grad=False)
        gen = _seeded(self.seed + 3)
        tangents = [_copy(x, values=_randn_like(x, gen)) for x in xs]
        _, jvps = self.jvps(self.fn, row.args, row.diff, tangents)
        with torch.no_grad():
            plus = f(*(x.detach() + _EPS * t for x, t in zip(xs, tangents)))
            minus = f(*(x.detach() - _EPS * t for x, t in zip(xs, tangents)))
        numeric = [(p - m) / (2 * _EPS) for p, m in zip(_floats(plus), _floats(minus))]
        _, err, detail = _compare_all(_out_names(len(jvps), "jvp of out"), jvps, numeric, (_RTOL, _ATOL))
        if failure:
            raise _Fail(detail.replace("reference", "numerical") or failure, err)
        if self.reference is not None:
            with contextlib.suppress(_Skip):  # NOTE: a reference without forward AD leaves the numerical check
                self._jvp_parity(row, "jvps differ from the reference's: ")
        return err

    def _jvp_parity(self, row, prefix=""):
        mine, own, truth = self.jvp_parity(row)
        ok, err, detail = _compare_all(_out_names(len(mine), "jvp of out"), mine, truth, self.tol(row), own, row.args)
        if not ok:
            raise _Fail(prefix + detail, err)
        return err

    def check_batched(self, row):
        xs, f, _ = self._setup(row)
        outs = [o for o in f(*xs) if o.requires_grad]
        gen = _seeded(self.seed + 4)
        batch = [torch.stack([_randn_like(o, gen) for _ in range(3)]) for o in outs]
        together = torch.autograd.grad(outs, xs, batch, is_grads_batched=True, retain_graph=True, allow_unused=True)
        together = _zeros_for_none(together, [x.expand(3, *x.shape) for x in xs])
        one_by_one = [_zeros_for_none(torch.autograd.grad(outs, xs, [v[k] for v in batch], retain_graph=True,
                                                          allow_unused=True), xs) for k in range(3)]
        err = _close_batches(together, one_by_one, "gradients for a batch of incoming gradients differ from a loop")

        floating = lambda *ys: tuple(_floats(f(*ys)))  # noqa: E731
        stacked = [torch.stack([x.detach() * (1 + 0.1 * k) for k in range(3)]) for x in xs]
        values = torch.func.vmap(floating)(*stacked)
        loop = [floating(*(s[k] for s in stacked)) for k in range(3)]
        err = max(err, _close_batches(values, loop, "vmap of the forward differs from a loop"))

        def vjp(*both):
            ys, ws = both[: len(xs)], both[len(xs):]
            return torch.func.vjp(floating, *ys)[1](tuple(ws))

        cots = [torch.stack([_randn_like(o, gen) for _ in range(3)]) for o in loop[0]]
        grads = torch.func.vmap(vjp)(*stacked, *cots)
        loop = [vjp(*(s[k] for s in stacked), *(c[k] for c in cots)) for k in range(3)]
        return max(err, _close_batches(grads, loop, "vmap of the vjp differs from a loop"))

    def check_undef(self, row):
        undefined = torch._C._functions.UndefinedGrad
        leaves = _fresh(row.args, row.diff)
        xs = [leaves[i] for i in row.diff]
        outs = _diff_outputs(self.fn(*leaves))
        gen = _seeded(self.seed + 5)
        cots = [_randn_like(o, gen) for o in outs]
        err = 0.0
        for k in range(len(outs)):
            # NOTE: the zero gradient first: a backward that raises on any input is an ERROR, not this check's FAIL
            zeroed = [torch.zeros_like(c) if i == k else c for i, c in enumerate(cots)]
            want = torch.autograd.grad(outs, xs, zeroed, retain_graph=True, allow_unused=True)
            marked = [undefined()(o) if i == k else o for i, o in enumerate(outs)]
            try:
                got = torch.autograd.grad(marked, xs, cots, retain_graph=True, allow_unused=True)
            except RuntimeError as exc:
                raise _Fail(f"backward raised on an undefined incoming gradient for output {k}: {_first_line(exc)}") from exc
            err = max(err, _close_batches([_zeros_for_none(got, xs)], [_zeros_for_none(want, xs)],
                                          f"an undefined incoming gradient for output {k} does not act as a zero one"))
        return err

    def check_shapes(self, row):
        problems = self.shape_problems(row)
        if problems:
            raise _Fail("; ".join(problems))
        return None

    def check_shapes_ac(self, row):
        """check_shapes under torch.autocast (bfloat16 on CPU, float16 on CUDA): what goes wrong there only."""
        device = next(a.device for a in row.args if isinstance(a, torch.Tensor))
        with torch.autocast(device.type):
            problems = self.shape_problems(row)
        plain = set(self.shape_problems(row)) if problems else set()
        problems = [p for p in problems if p not in plain]  # NOTE: those are the shapes column's to report
        if problems:
            raise _Fail("under autocast: " + "; ".join(problems))
        return None

    def shape_problems(self, row) -> list[str]:
        """Each gradient a Function's backward returns, against the one autograd made of it (see check_shapes)."""
        calls, _ = self.backward_calls(row, row.diff)
        if not calls:
            raise _Skip("no custom autograd.Function in the output's graph")
        problems = []
        for node, raw, validated in calls:
            name = f"{node._forward_cls.__name__}.backward"
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
        return list(dict.fromkeys(problems))

    def check_needs_grad(self, row):
        _, leaves = self.backward_calls(row, row.diff)
        greedy: dict[str, set[int]] = {}
        problems, found, err, changed = [], False, 0.0, False
        for j in row.diff:
            calls, alone = self.backward_calls(row, (j,))
            found = found or bool(calls)
            for node, raw, _ in calls:
                unwanted = {i for i, (g, need) in enumerate(zip(raw, node.needs_input_grad)) if g is not None and not need}
                greedy.setdefault(f"{node._forward_cls.__name__}.backward", set()).update(unwanted)
            mine, before = _zeros_for_none([alone[j].grad, leaves[j].grad], [alone[j], leaves[j]])
            ok, e, detail = _compare(f"grad of input {j}", mine, before, _CLOSE, None, row.args)
            err = max(err, e)
            if not ok:
                problems.append(f"the gradient changes when input {j} alone needs one: {detail}")
                changed = True
        problems = [f"{name} returns a gradient where ctx.needs_input_grad is False (its inputs "
                    f"{', '.join(map(str, sorted(where)))}, with one input needing a gradient at a time)"
                    for name, where in greedy.items() if where] + problems
        if not found:
            raise _Skip("no custom autograd.Function in the output's graph")
        if problems:
            raise _Fail("; ".join(problems), err if changed else None)
        return err

    def check_values(self, row):
        (outs, _, _), own, (truth, _, _) = self.parity(row)
        ok, err, detail = _compare_all(_out_names(len(outs)), outs, truth, self.tol(row), own[0] if own else None, row.args)
        if not ok:
            raise _Fail(detail, err)
        return err

    def check_saved(self, row):
        mine, theirs = (_saved_bytes(f, row.args, row.diff) for f in (self.fn, self.reference))
        if mine[0] > theirs[0]:
            raise _Fail(f"saves {mine[0]} bytes for backward in {mine[1]} storages, the reference {theirs[0]} "
                        f"bytes in {theirs[1]}")
        return None, f"{mine[0]}/{theirs[0]} B"

    def check_compile(self, row):
        compiled = torch.compile(self.fn, fullgraph=True, backend=self.compile_backend)
        outs, grads, cots = self.evaluate(self.fn, row.args, row.diff)
        c_outs, c_grads, _ = self.evaluate(compiled, row.args, row.diff, cots)
        names = _out_names(len(outs)) + [f"grad of input {i}" for i in row.diff]
        ok, err, detail = _compare_all(names, c_outs + c_grads, outs + grads, _CLOSE)
        if not ok:
            raise _Fail("compiled " + detail.replace("reference", "eager"), err)
        return err

    def tol(self, row):
        return self.tolerances.get(row.dtype, (1e-2, 1e-2))


def _gradcheck(check, f, xs, **options) -> str | None:
    """None when torch's ``check`` passes, else the first line of its complaint."""
    try:
        check(f, tuple(xs), eps=_EPS, atol=_ATOL, rtol=_RTOL, **options)
    except GradcheckError as exc:
        return _first_line(exc)
    except RuntimeError as exc:
        # NOTE: a backward whose result is detached makes gradgradcheck's own backward raise this.
        if "does not require grad" not in str(exc):
            raise
        return _first_line(exc)
    return None


def _close_batches(batched, looped, what) -> float:
    """Largest difference of ``batched[i][k]`` from ``looped[k][i]``; _Fail when not almost equal."""
    err = 0.0
    for i, b in enumerate(batched):
        for k, lo in enumerate(looped):
            ok, e, detail = _compare(f"[batch {k}] result {i}", b[k], lo[i], _CLOSE)
            err = max(err, e)
            if not ok:
                raise _Fail(f"{what}: {detail.replace('reference', 'loop')}", e)
    return err


def _saved_bytes(func, args, diff) -> tuple[int, int]:
    """(bytes, count) of the unique storages saved for backward by one call of ``func``."""
    storages: dict = {}

    def pack(t):
        s = t.untyped_storage()
        storages[(str(s.device), s.data_ptr(), s.nbytes())] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        result = func(*_fresh(args, diff))
    del result
    return sum(storages.values()), len(storages)


# ---------------------------------------------------------------------------------------------
# the public API
# ---------------------------------------------------------------------------------------------


def _samples(samples, float_dtypes: bool = False) -> list[tuple[str, tuple]]:
    if isinstance(samples, torch.Tensor) or (isinstance(samples, tuple) and any(isinstance(s, torch.Tensor) for s in samples)):
        raise TypeError("check_function: samples is a list of argument tuples, one per sample, e.g. [(x, w)]; "
                        "got the arguments themselves: wrap them in a list.")
    items = samples.items() if isinstance(samples, Mapping) else [(None, s) for s in samples]
    if not items:
        raise ValueError("check_function: no samples given; pass at least one tuple of arguments.")
    out, labels = [], set()
    for label, sample in items:
        args = sample if isinstance(sample, tuple) else (sample,)
        label = label or _describe(args, float_dtypes)
        while label in labels:
            label += "'"
        labels.add(label)
        out.append((label, args))
    return out


def _discover(fn, samples, device) -> list:
    classes = []
    for _, args in samples:
        try:
            base = _map_tensors(args, lambda t: _copy(t, torch.float64 if t.is_floating_point() else None, device))
            nodes = _custom_nodes(_diff_outputs(fn(*_fresh(base, _diff_positions(base)))))
        except Exception:  # noqa: BLE001 - the checks report what fails; discovery only looks
            continue
        classes += [n._forward_cls for n in nodes if n._forward_cls not in classes]
    return classes


def _devices(device) -> list[torch.device]:
    if device is None:
        return [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    devices = device if isinstance(device, (list, tuple)) else [device]
    return [torch.device(d) for d in devices]


def _title(fn, reference, devices) -> str:
    def name(f):
        qualified = getattr(f, "__qualname__", None) or ""
        # NOTE: torch's builtins have qualified names such as _VariableFunctionsClass.sin; say sin
        return qualified if qualified and not qualified.startswith("_") else getattr(f, "__name__", None) or repr(f)

    against = f" against {name(reference)}" if reference is not None else ""
    where = ", ".join(str(d) for d in devices)
    return f"handgrad.testing: {name(fn)}{against} on {where} (torch {torch.__version__})"


def check_function(
    fn: Callable,
    samples: Sequence | Mapping[str, tuple],
    reference: Callable | None = None,
    *,
    elementwise: bool = False,
    function: type | Sequence[type] | None = None,
    dtypes: Sequence[torch.dtype] = DTYPES,
    device=None,
    compile: bool | str = False,
    checks: Collection[str] | None = None,
    variants: Collection[str] = VARIANTS,
    tolerances: Mapping[torch.dtype, tuple[float, float]] | None = None,
    skip: Mapping[str, str] | None = None,
    seed: int = 0,
    as_given: bool = False,
    numerical: bool = True,
    extreme_upstream: bool = False,
) -> Report:
    """Run the whole gradient-check matrix on ``fn`` and return the :class:`Report` (see the module doc).

    ``samples``: a list of argument tuples (a lone tensor is a 1-tuple), or a dict label -> tuple.
    ``reference``: a callable taking the same arguments whose values and gradients ``fn`` must equal.
    ``elementwise``: also check 0-d and empty inputs. ``function``: the autograd.Function class(es)
    whose declarations (jvp, vmap, once_differentiable) decide which checks run, when those found in
    the output's graph are not the ones to go by. ``dtypes``: the lower precisions for parity.
    ``device``: a device or a list of them (default: CPU, and CUDA when present). ``compile``: True or
    a ``torch.compile`` backend name adds the compile check. ``checks`` / ``variants``: subsets of
    :data:`CHECKS` / :data:`VARIANTS`. ``tolerances``: dtype -> (rtol, atol) overriding
    :data:`TOLERANCES`. ``skip``: check -> reason, for checks that do not apply to ``fn``.
    ``as_given``: each sample is one row, in its own dtypes and strides (mixed dtypes, a float16
    sample): no float64 copy, no variants, no ``dtypes`` rows; a float64 sample gets the numerical
    checks, any other is compared at its least precise input's tolerance. ``numerical=False``: no
    finite differences anywhere (inputs at a kink, a tie, NaN): every row is compared with the
    reference. ``extreme_upstream``: incoming gradients hold inf and NaN (every 4th element from the
    2nd / the 4th), so that the gradients compared with the reference show how backward passes them on.
    """
    start = time.perf_counter()
    devices = _devices(device)
    labelled = _samples(samples, float_dtypes=as_given)
    if function is not None:
        classes = list(function) if isinstance(function, (list, tuple)) else [function]
    else:
        classes = _discover(fn, labelled, devices[0])
    wanted = [c for c in CHECKS if (checks is None or c in checks) and (c != "compile" or compile)]
    engine = _Engine(fn, reference, classes, "inductor" if compile is True else (compile or None),
                     {**TOLERANCES, **(tolerances or {})}, seed, dict(skip or {}), extreme_upstream)
    report = Report(_title(fn, reference, devices), [], wanted)
    rows = []
    for dev in devices:
        for label, args in labelled:
            try:
                rows += _rows_of(label, args, dev, elementwise=elementwise, dtypes=dtypes, variants=variants,
                                 extremal=reference is not None, as_given=as_given, numerical=numerical)
            except Exception as exc:  # noqa: BLE001 - the report never dies: a sample it cannot vary is an ERROR row
                report.rows.append(f"{label} {dev.type}")
                report.results.append(Result(report.rows[-1], wanted[0], "ERROR", message=f"making the rows: {_first_line(exc)}"))
    report.rows += [r.label for r in rows]
    for row in rows:
        for check in wanted:
            if engine.applies(check, row):
                report.results.append(engine.run(check, row))
    report.seconds = time.perf_counter() - start
    return report


def assert_function(fn: Callable, samples, reference: Callable | None = None, **options) -> Report:
    """:func:`check_function`, raising ``AssertionError`` with the whole report when anything fails."""
    report = check_function(fn, samples, reference, **options)
    if not report.ok:
        raise AssertionError("\n" + str(report))
    return report


# ---------------------------------------------------------------------------------------------
# the command line
# ---------------------------------------------------------------------------------------------


class _Usage(Exception):
    """A mistake on the command line: one sentence for the person, exit status 2."""


def _load(spec: str, what: str):
    """The object named by ``file.py:Name``, ``module:Name`` or a dotted path ``package.module.name``."""
    if ":" in spec:
        where, name = spec.rsplit(":", 1)
        module = _import_file(where, what) if where.endswith(".py") or Path(where).is_file() else _import(where, what)
    else:
        module, name = None, spec
        parts = spec.split(".")
        for cut in range(len(parts) - 1, 0, -1):
            try:
                module, name = importlib.import_module(".".join(parts[:cut])), ".".join(parts[cut:])
                break
            except ImportError:
                continue
        if module is None:
            raise _Usage(f"{what} {spec!r} names no importable module; use file.py:Name, module:Name or package.module.name.")
    obj, path = module, spec.rsplit(":", 1)[0] if ":" in spec else spec[: len(spec) - len(name) - 1]
    for part in name.split("."):
        if not hasattr(obj, part):
            raise _Usage(f"{what} {spec!r}: {path} has no attribute {part!r}.")
        obj, path = getattr(obj, part), f"{path}.{part}"
    if not callable(obj):
        raise _Usage(f"{what} {spec!r} is a {type(obj).__name__}, not a callable or an autograd.Function.")
    return obj


def _import(name: str, what: str):
    try:
        return importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001 - any failure to import is the user's to fix: say which
        raise _Usage(f"{what}: could not import module {name!r} ({_first_line(exc)}).") from None


def _import_file(path: str, what: str):
    file = Path(path)
    if not file.is_file():
        raise _Usage(f"{what}: no file {path!r}.")
    spec = importlib.util.spec_from_file_location(f"_handgrad_user_{file.stem}", file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # NOTE: dataclasses and pickling look a class's module up here
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - an error in the user's file: say where, not a traceback
        raise _Usage(f"{what}: running {path} failed ({_first_line(exc)}).") from None
    return module


def _shape(text: str) -> tuple[int, ...]:
    """'4,3' or '4x3' -> (4, 3); '()' or '' -> () (a 0-d tensor)."""
    inner = text.strip().strip("()").replace(" ", "").rstrip(",")
    if inner and not re.fullmatch(r"\d+([,x]\d+)*", inner):
        raise _Usage(f"--shape {text!r} is not a shape; write sizes separated by commas, e.g. 4,3 (or () for 0-d).")
    return tuple(int(n) for n in re.split("[,x]", inner)) if inner else ()


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Run handgrad's whole gradient-check matrix on your own autograd.Function and print the report.",
    )
    parser.add_argument("--function", required=True, metavar="FILE.py:NAME|MODULE:NAME",
                        help="the autograd.Function class (or any callable built on one) to check")
    parser.add_argument("--reference", metavar="DOTTED.NAME",
                        help="what values and gradients must equal, e.g. torch.nn.functional.gelu (default: none)")
    parser.add_argument("--shape", action="append", nargs="+", required=True, metavar="SHAPE",
                        help="one sample: the shape of each tensor argument, e.g. --shape 4,3 3; repeat for more samples")
    parser.add_argument("--elementwise", action="store_true", help="also check 0-d and empty inputs")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cpu, and cuda when present)")
    parser.add_argument("--dtypes", default="float32,bfloat16,float16",
                        help="lower precisions to check against the reference (default: float32,bfloat16,float16)")
    parser.add_argument("--compile", nargs="?", const="inductor", default=None, metavar="BACKEND",
                        help="also check torch.compile(fullgraph=True) (default backend: inductor)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default: 0)")
    return parser


def _dtypes(text: str) -> tuple[torch.dtype, ...]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    dtypes = tuple(getattr(torch, n, None) for n in names)
    bad = [n for n, d in zip(names, dtypes) if not isinstance(d, torch.dtype) or not d.is_floating_point]
    if bad:
        raise _Usage(f"--dtypes: {', '.join(bad)} is not a floating-point torch dtype (e.g. float32, bfloat16, float16).")
    return dtypes


def _device(text: str | None):
    if text is None:
        return None
    try:
        device = torch.device(text)
    except RuntimeError:
        raise _Usage(f"--device {text!r} is not a device; use cpu, cuda or cuda:N.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise _Usage("--device cuda was given but CUDA is not available here; use --device cpu.")
    if device.type == "meta":
        raise _Usage("--device meta holds no values to check; use --device cpu or cuda.")
    try:
        torch.empty(1, device=device)
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError, AssertionError... per backend
        said = str(exc).strip()
        reason = said.split(". ")[0].splitlines()[0][:120] if said else type(exc).__name__
        raise _Usage(f"--device {text} cannot be used here ({reason}); use --device cpu.") from None
    return device


def cli_function(argv: Sequence[str] | None = None, prog: str = "python -m handgrad.testing") -> int:
    """``--function ... --shape ...``: check a user's Function from the command line; 0 when all passes, 1 if not.

    Bad arguments: one sentence on stderr and exit status 2 (``SystemExit``).
    """
    parser = _parser(prog)
    args = parser.parse_args(argv)
    try:
        target = _load(args.function, "--function")
        reference = _load(args.reference, "--reference") if args.reference else None
        samples = _random_samples(args.shape, args.seed)
        options = dict(elementwise=args.elementwise, dtypes=_dtypes(args.dtypes), device=_device(args.device),
                       compile=args.compile or False, seed=args.seed)
    except _Usage as exc:
        parser.exit(2, f"error: {exc}\n")
    function = target if isinstance(target, type) and issubclass(target, torch.autograd.Function) else None
    report = check_function(target.apply if function else target, samples, reference, function=function, **options)
    print(report)
    return 0 if report.ok else 1


def _random_samples(shapes: list[list[str]], seed: int) -> list[tuple]:
    gen = _seeded(seed)
    return [tuple(torch.randn(_shape(s), generator=gen, dtype=torch.float64) for s in sample) for sample in shapes]


def main(argv: Sequence[str] | None = None) -> int:
    return cli_function(argv)


if __name__ == "__main__":
    sys.exit(main())
