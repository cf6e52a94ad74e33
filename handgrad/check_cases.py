"""The gradient-check matrix's table: its columns and its rows (ops × inputs), no running here.

A row (:class:`Case`) says how to make its inputs and call its op, which columns do not apply to it
and why, and its own tolerance where the dtype's is not the one to use. The rows per op: ordinary
shapes (0-d, empty, broadcast, transposed, strided), NaN/±inf/huge inputs and an inf/NaN upstream
gradient, mixed dtypes, ties in maximum, sigmoid's float16 tail. ``handgrad.check`` runs them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from . import registry

__all__ = ["Case", "CASES", "COLUMNS", "NUMERICAL", "cases_of"]

#: column -> (the row's float dtype, compared with get_ops("native")?, the engine's checks it gathers)
COLUMNS: dict[str, tuple[torch.dtype, bool, tuple[str, ...]]] = {
    "grad": (torch.float64, False, ("grad",)),
    "gradgrad": (torch.float64, False, ("gradgrad",)),
    "fwd_ad": (torch.float64, False, ("fwd_ad",)),
    "batched": (torch.float64, False, ("batched",)),
    "undef": (torch.float64, False, ("undef",)),
    "shapes": (torch.float64, True, ("shapes",)),
    "needs_grad": (torch.float64, True, ("needs_grad",)),
    "shapes_ac": (torch.float32, True, ("shapes_ac",)),
    "saved": (torch.float64, True, ("saved",)),
    "native64": (torch.float64, True, ("values", "grad", "fwd_ad")),
    "native32": (torch.float32, True, ("values", "grad", "fwd_ad")),
}

# ---------------------------------------------------------------------------------------------
# the table
# ---------------------------------------------------------------------------------------------


def _randn(shape, dtype, device, gen, *, grad=True, away_from_zero=False, view=None):
    x = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype=dtype, device=device)
    if away_from_zero:
        # NOTE: keep |x| ≥ 0.2 so that finite differences never straddle ReLU's kink at 0.
        x = x.sign() * (x.abs() + 0.2)
        x = torch.where(x == 0, torch.full_like(x, 0.5), x)
    if view == "t":
        x = x.t()
    elif view == "strided":
        x = x[..., ::2]
    return x.detach().requires_grad_(grad)


@dataclass(frozen=True)
class Case:
    """One row: an op, a label, and how to build its inputs and call it.

    ``make(dtype, device, gen)`` returns the inputs (tensors to differentiate, numbers, integer
    targets). ``call(ops, *inputs)`` calls the op from an ops namespace (default: the op's name).
    """

    op: str
    label: str
    make: Callable[[torch.dtype, str, torch.Generator], tuple]
    call: Callable | None = None
    skip: tuple[tuple[str, str], ...] = ()  # (column, why) for each column that does not apply to this row
    extreme_upstream: bool = False  # parity feeds backward an upstream gradient with inf and NaN in it
    tolerance: tuple[float, float] | None = None  # (rtol, atol) for the native comparison, if not the dtype's

    @property
    def name(self) -> str:
        return f"{self.op}[{self.label}]"

    def run(self, ops, *inputs):
        if self.call is not None:
            return self.call(ops, *inputs)
        return getattr(ops, self.op)(*inputs)

    def function(self) -> type[torch.autograd.Function]:
        """The op's Function (from its declaration), whose own declarations (jvp, vmap rule) decide which checks run."""
        return registry.spec_of(self.op).function

    def skip_reason(self, check: str) -> str | None:
        """Why ``check`` does not apply to this row, or None when it does."""
        return dict(self.skip).get(check)


#: the checks that need finite inputs (finite differences, or the numerical Jacobian they compare with)
NUMERICAL = ("grad", "gradgrad", "fwd_ad", "batched", "undef")
_EXTREMAL_REASON = "NaN/inf inputs: finite differences mean nothing there; compared with the native op instead"


def _extremal(op: str, label: str, make, **kw) -> Case:
    """A row of NaN, ±inf and huge finite inputs: checked against the native op (and shapes) only."""
    return Case(op, label, make, skip=tuple((k, _EXTREMAL_REASON) for k in NUMERICAL), **kw)


_PARITY = ("native64", "native32")
#: rows whose native comparison with an inf/NaN upstream gradient is a documented difference, and why
_UPSTREAM_DIFFERENCES = {
    "relu": "documented difference: with inf/NaN in the upstream gradient where relu's output is 0, "
            "grad·mask gives NaN where torch's select gives 0 (a select costs 2-50x the multiply on CPU)",
}


_MIXED_REASON = "mixed dtypes: finite differences need every input in float64; compared with the native op instead"


def _mixed(op: str, label: str, make, **kw) -> Case:
    """A row whose inputs have different float dtypes: checked against the native op and shapes only."""
    return Case(op, label, make, skip=tuple((k, _MIXED_REASON) for k in NUMERICAL), **kw)


def _other_dtype(d: torch.dtype) -> torch.dtype:
    return torch.float32 if d == torch.float64 else torch.float64


def _mixed_inputs(*shapes, second=None):
    """``make`` for inputs in two dtypes: the first in the row's dtype, the others in ``second``
    (default: float32 for a float64 row and float64 otherwise)."""

    def make(d, dev, g):
        other = second or _other_dtype(d)
        return tuple(_randn(s, d if i == 0 else other, dev, g) for i, s in enumerate(shapes))

    return make


def _with_extreme_upstream(case: Case) -> Case:
    """The same row, with inf and NaN in the gradient that flows into backward."""
    reason = _UPSTREAM_DIFFERENCES.get(case.op)
    skip = case.skip + tuple((k, reason) for k in _PARITY if reason)
    return replace(case, label=f"{case.label}, inf/NaN upstream", extreme_upstream=True, skip=skip)


def _pair(sa, sb, **kw):
    return lambda d, dev, g: (_randn(sa, d, dev, g, **kw), _randn(sb, d, dev, g, **kw))


def _max_pair(sa, sb, view=None):
    def make(d, dev, g):
        # NOTE: a on the grid k/2 and b on k/2 + 1/4, so |a - b| ≥ 1/4 everywhere: no tie for
        # finite differences to straddle (ties get their own exact test).
        a = torch.randint(-8, 8, sa, generator=g) * 0.5
        b = torch.randint(-8, 8, sb, generator=g) * 0.5 + 0.25
        if view == "t":
            a = a.t().contiguous().t()
        return (a.to(dtype=d, device=dev).requires_grad_(), b.to(dtype=d, device=dev).requires_grad_())

    return make


def _number_and(shape, number, first=False):
    def make(d, dev, g):
        x = _randn(shape, d, dev, g)
        return (number, x) if first else (x, number)

    return make


def _single(shape, **kw):
    return lambda d, dev, g: (_randn(shape, d, dev, g, **kw),)


def _affine(x_shape, out, bias=True, view=None):
    def make(d, dev, g):
        x = _randn(x_shape, d, dev, g, view=view)
        w = _randn((out, x.shape[-1]), d, dev, g)
        return (x, w, _randn((out,), d, dev, g)) if bias else (x, w)

    return make


def _ce(n, c):
    def make(d, dev, g):
        logits = _randn((n, c) if n is not None else (c,), d, dev, g)
        count = () if n is None else (n,)
        target = torch.randint(0, max(c, 1), count, generator=g).to(device=dev)  # c = 0 only with n = 0
        return logits, target

    return make


def _fixed(values, d, dev, shape=None):
    """A tensor of ``values`` (floats, or "huge" / "-huge" for ± half the dtype's largest finite value)."""
    big = torch.finfo(d).max / 2
    floats = [big if v == "huge" else -big if v == "-huge" else v for v in values]
    x = torch.tensor(floats, dtype=d, device=dev)
    return (x if shape is None else x.reshape(shape)).requires_grad_()


def _fixed_inputs(*columns, shapes=None):
    """``make`` for fixed inputs: one tensor per column of values (None keeps a number as it is)."""

    def make(d, dev, g):
        shapes_ = shapes or [None] * len(columns)
        return tuple(c if not isinstance(c, list) else _fixed(c, d, dev, s) for c, s in zip(columns, shapes_))

    return make


_NAN, _INF = float("nan"), float("inf")
# NOTE: each row pairs every kind of extreme with each other and with ordinary values, both ways round.
_EXTREME_A = [_NAN, 1.0, _NAN, _INF, -_INF, _INF, 1.0, "huge", "-huge", 0.0, _INF]
_EXTREME_B = [1.0, _NAN, _NAN, _INF, -_INF, -_INF, _INF, "huge", 2.0, -0.0, 0.0]
_EXTREME_X = [_NAN, _INF, -_INF, "huge", "-huge", 0.0, -0.0, 1.0, -1.0]


def _l2(*shapes):
    return lambda d, dev, g: tuple(_randn(s, d, dev, g) for s in shapes)


_L2_LAM = 0.3


def _l2_call(ops, *ws):
    return ops.l2_penalty(list(ws), _L2_LAM)


_BINARY_SHAPES = [
    ("0-d", (), ()),
    ("empty", (0,), (0,)),
    ("vector", (5,), (5,)),
    ("matrix", (3, 4), (3, 4)),
    ("3-d", (2, 3, 4), (2, 3, 4)),
    ("(2,1)x(2,)", (2, 1), (2,)),
    ("(1,3,2)x(3,2)", (1, 3, 2), (3, 2)),
    ("(3,1,2)x(1,3,2)", (3, 1, 2), (1, 3, 2)),
    ("0-d x matrix", (), (3, 4)),
    ("(0,1)x(3,)", (0, 1), (3,)),
    ("(1,)x(0,)", (1,), (0,)),
    ("0-d x empty", (), (0, 2)),
]


def _build_cases() -> list[Case]:
    cases: list[Case] = []
    for op in ("add", "mul"):
        for label, sa, sb in _BINARY_SHAPES:
            cases.append(Case(op, label, _pair(sa, sb)))
        cases.append(Case(op, "tensor x number", _number_and((3, 4), 2.5)))
        cases.append(Case(op, "number x tensor", _number_and((3, 4), -1.5, first=True)))
        cases.append(Case(op, "transposed", lambda d, dev, g: (
            _randn((4, 3), d, dev, g, view="t"), _randn((3, 4), d, dev, g))))
        cases.append(Case(op, "strided x broadcast", lambda d, dev, g: (
            _randn((3, 8), d, dev, g, view="strided"), _randn((1, 4), d, dev, g))))
    for label, sa, sb in _BINARY_SHAPES:
        cases.append(Case("maximum", label, _max_pair(sa, sb)))
    cases.append(Case("maximum", "transposed", _max_pair((3, 4), (3, 4), view="t")))
    cases += _tie_cases()
    for op in ("relu", "sigmoid"):
        kw = {"away_from_zero": op == "relu"}
        for label, shape in [("0-d", ()), ("empty", (0, 3)), ("empty (3,0)", (3, 0)), ("vector", (6,)),
                             ("matrix", (3, 4)), ("3-d", (2, 3, 4))]:
            cases.append(Case(op, label, _single(shape, **kw)))
        cases.append(Case(op, "transposed", _single((4, 3), view="t", **kw)))
        cases.append(Case(op, "strided", _single((3, 8), view="strided", **kw)))
    cases.append(Case("sigmoid", "large |x|", lambda d, dev, g: (
        (torch.tensor([-30.0, -8.0, 0.0, 8.0, 30.0], dtype=d, device=dev)).requires_grad_(),)))
    cases.append(Case("sigmoid", "±100, ±1e4", _fixed_inputs([-1e4, -100.0, 100.0, 1e4])))
    cases.append(_float16_tails())
    cases += _extremal_cases()
    cases += _mixed_dtype_cases()
    cases += [
        Case("affine", "matrix + bias", _affine((4, 3), 5)),
        Case("affine", "matrix, no bias", _affine((4, 3), 5, bias=False)),
        Case("affine", "vector x", _affine((3,), 2)),
        Case("affine", "3-d batch", _affine((2, 3, 4), 5)),
        Case("affine", "3-d batch, no bias", _affine((2, 3, 4), 5, bias=False)),
        Case("affine", "empty batch", _affine((0, 3), 2)),
        Case("affine", "3-d, 0 rows", _affine((2, 0, 3), 2)),
        Case("affine", "0 features", _affine((4, 0), 3)),
        Case("affine", "0 features, no bias", _affine((4, 0), 3, bias=False)),
        Case("affine", "vector x, 0 features", _affine((0,), 3)),
        Case("affine", "0 outputs", _affine((4, 2), 0)),
        Case("affine", "all sizes 0", _affine((0, 0), 0)),
        Case("affine", "transposed x", _affine((4, 3), 2, view="t")),
        Case("affine", "strided x", _affine((3, 8), 2, view="strided")),
        Case("l2_penalty", "one matrix", _l2((3, 4)), _l2_call),
        Case("l2_penalty", "three tensors", _l2((3, 4), (5,), ()), _l2_call),
        Case("l2_penalty", "empty + 3-d", _l2((0, 2), (2, 2, 3)), _l2_call),
        Case("l2_penalty", "one empty", _l2((0,)), _l2_call),
        Case("cross_entropy", "batch", _ce(5, 4)),
        Case("cross_entropy", "one sample", _ce(1, 3)),
        Case("cross_entropy", "unbatched (C,)", _ce(None, 4)),
        Case("cross_entropy", "0 samples", _ce(0, 4)),
        Case("cross_entropy", "0 samples, 0 classes", _ce(0, 0)),
        Case("cross_entropy", "large logits", lambda d, dev, g: (
            (_randn((3, 4), d, dev, g).detach() * 1e3).requires_grad_(), torch.tensor([0, 3, 1], device=dev))),
        Case("mse_loss", "0-d", _pair((), ())),
        Case("mse_loss", "vector", _pair((6,), (6,))),
        Case("mse_loss", "matrix", _pair((3, 4), (3, 4))),
        Case("mse_loss", "3-d", _pair((2, 3, 2), (2, 3, 2))),
        Case("mse_loss", "empty", _pair((0,), (0,))),
        Case("mse_loss", "empty (3,0)", _pair((3, 0), (3, 0))),
        Case("mse_loss", "transposed pred", lambda d, dev, g: (
            _randn((4, 3), d, dev, g, view="t"), _randn((3, 4), d, dev, g))),
    ]
    return cases


def _tie_cases() -> list[Case]:
    """Ties in maximum: not differentiable there, so compared with torch's tie rule only, exactly."""
    reason = "ties: maximum has no derivative there; torch's half-and-half share is compared with the native op's instead"
    skip = tuple((k, reason) for k in NUMERICAL)
    a = [1.5, 0.0, -2.0, 3.0, 0.5, -0.0, 7.0, -1.0]
    b = [1.5, 0.0, -2.0, 1.0, 0.5, 0.0, 8.0, -1.0]
    # NOTE: a named exception (docs/compatibility.md): torch 2.13 and earlier round a tie's tangent
    # as ḃ + ½(ȧ - ḃ), handgrad and torch 2.14+ as ½ȧ + ½ḃ, up to an ulp apart; against such a torch
    # the rows allow 5e-7 (a few float32 ulps of these order-1 tangents), where a wrong share is off by ~½.
    from .compat import maximum_tie_jvp_rule

    tolerance = (0.0, 0.0) if maximum_tie_jvp_rule() == "weighted" else (0.0, 5e-7)
    return [
        Case("maximum", "ties", _fixed_inputs(a, b), skip=skip, tolerance=tolerance),
        Case("maximum", "ties, broadcast (2,4)x(4,)", _fixed_inputs(a, b[:4], shapes=[(2, 4), (4,)]),
             skip=skip, tolerance=tolerance),
    ]


def _float16_tails() -> Case:
    """Sigmoid's left tail in float16, where e^x nears float16's smallest numbers: native by relative error."""
    reason = "float16 row: finite differences need float64; compared with the native op by relative error"

    def make(d, dev, g):
        return (torch.linspace(-17, -11, 25, dtype=torch.float16, device=dev).requires_grad_(),)

    # NOTE: one row in float16 whatever the column's dtype, so native64 and native32 run the same
    # comparison; rtol 1e-2 is ten float16 ulps and atol 0 makes an underflow to 0 a failure.
    return Case("sigmoid", "float16 tail [-17,-11]", make, skip=tuple((k, reason) for k in NUMERICAL),
                tolerance=(1e-2, 0.0))


def _extremal_cases() -> list[Case]:
    """NaN, ±inf and huge finite inputs for every op: values and gradients must equal the native op's."""
    cases = [_extremal(op, "NaN/inf", _fixed_inputs(_EXTREME_A, _EXTREME_B)) for op in ("add", "mul", "maximum")]
    cases += [_extremal(op, "NaN/inf x inf", _fixed_inputs(_EXTREME_X, _INF)) for op in ("add", "mul")]
    cases += [_extremal(op, "NaN/inf", _fixed_inputs(_EXTREME_X)) for op in ("relu", "sigmoid")]
    cases += [
        _extremal("affine", "NaN/inf", _fixed_inputs(
            [_NAN, 1.0, 2.0, -1.0, _INF, 0.0, 1.0, 1.0, "huge", "huge", 1.0, 2.0],
            [1.0, -1.0, 0.5, 2.0, 0.0, 1.0, _INF, 1.0], [1.0, -_INF], shapes=[(3, 4), (2, 4), None])),
        _extremal("l2_penalty", "NaN/inf", _fixed_inputs([_NAN, 1.0], [_INF, -2.0], ["huge", 0.0]),
                  call=_l2_call),
        _extremal("l2_penalty", "inf, no NaN", _fixed_inputs([_INF, 1.0], ["huge", -0.5]),
                  call=_l2_call),
        _extremal("cross_entropy", "NaN/inf", lambda d, dev, g: (
            _fixed([_INF, 0, 0, -_INF, 0, 1, _NAN, 0, 0, "huge", "-huge", 0, -_INF, -_INF, -_INF], d, dev, (5, 3)),
            torch.tensor([0, 0, 1, 1, 2], device=dev))),
        _extremal("cross_entropy", "inf, no NaN", lambda d, dev, g: (
            _fixed([-_INF, 0, 1, "huge", "-huge", 0, -_INF, 2, 3], d, dev, (3, 3)), torch.tensor([0, 1, 2], device=dev))),
        _extremal("mse_loss", "NaN/inf", _fixed_inputs([_NAN, _INF, _INF, "huge", "-huge", 1.0],
                                                        [0.0, _INF, 1.0, "-huge", "-huge", -_INF])),
        _extremal("mse_loss", "inf, no NaN", _fixed_inputs([_INF, "huge", 1.0], [1.0, "-huge", 2.0])),
    ]
    return cases + [_with_extreme_upstream(c) for c in cases if c.label == "NaN/inf"]


def _mixed_dtype_cases() -> list[Case]:
    """Inputs of different float dtypes: torch promotes, and each gradient keeps its own input's dtype."""
    cases = []
    for op in ("add", "mul", "maximum"):
        cases.append(_mixed(op, "mixed dtypes (2,1)x(2,)", _mixed_inputs((2, 1), (2,))))
        cases.append(_mixed(op, "mixed dtypes x float16", _mixed_inputs((3, 4), (3, 4), second=torch.float16)))
    cases += [
        _mixed("mse_loss", "mixed dtypes", _mixed_inputs((3, 4), (3, 4))),
        _mixed("l2_penalty", "mixed dtypes", _mixed_inputs((3, 4), (5,)), call=_l2_call),
        # NOTE: F.linear refuses mixed dtypes (so does affine), except under autocast, which casts
        # float16/bfloat16/float32 to one dtype: this row runs only in the autocast shape check.
        Case("affine", "x bfloat16, weight float32", _mixed_inputs((4, 3), (2, 3), (2,), second=torch.bfloat16),
             skip=tuple((k, "torch refuses mixed dtypes outside autocast; checked under autocast only")
                        for k in COLUMNS if k != "shapes_ac")),
    ]
    return cases


CASES: list[Case] = _build_cases()


def cases_of(op: str) -> list[Case]:
    """The rows for ``op``: its rows in :data:`CASES`, or for an op the table does not know, one row of its declared sample."""
    return [c for c in CASES if c.op == op] or [Case(op, "sample", registry.spec_of(op).sample)]
