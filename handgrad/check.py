"""The gradient-check matrix: one table of cases, every check run over every row.

``python -m handgrad.check [--device cpu|cuda] [--op NAME ...]`` prints the matrix (op by check,
pass/fail and the largest error found) and exits 1 if anything fails. An op that raises is an
ERROR cell with the exception's first line under the table, never a crash of the report; a
device torch cannot use here is one sentence and exit 2. The test suite imports the
same table and the same check functions, so a new op is one row here and is then checked
everywhere.

The checks call the ops through an ops namespace (the lowercase API), so in eager code they check
the fast twin that training runs; under ``vmap`` the API runs the op itself, which the ``batched``
check covers. ``shapes`` calls the op's ``backward`` directly (the twins share it).

Checks (all in float64 unless the name says otherwise):

* ``grad``      torch.autograd.gradcheck; error = max |J_backward - J_numerical|
* ``gradgrad``  torch.autograd.gradgradcheck (backward is itself differentiable)
* ``fwd_ad``    gradcheck(check_forward_ad=True); error = max |jvp - J v|
* ``batched``   gradcheck(check_batched_grad=True) and torch.func.vmap over the op
* ``undef``     gradcheck(check_undefined_grad=True)
* ``shapes``    calls backward directly and checks each gradient's shape, dtype and device
                (autograd silently sums a wrong-shaped gradient, so gradcheck alone misses it)
* ``shapes_ac`` the same in float32 under torch.autocast (bfloat16 on CPU, float16 on CUDA): each
                gradient is cast back to its own input's dtype
* ``native64``  values, gradients and jvps equal get_ops("native") in float64 (tight), NaN in the
                same places
* ``native32``  the same in float32

Rows of NaN, ±inf and huge finite inputs ("extremal") are compared with the native op only: a row
lists the checks that do not apply to it and why (``Case.skip``), and the report shows those cells
as skipped and counts them apart from the passes.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
from torch.autograd import gradcheck, gradgradcheck
from torch.autograd.gradcheck import GradcheckError

from . import functions as fn
from .functional import get_ops

__all__ = [
    "Case",
    "CASES",
    "CHECKS",
    "CheckResult",
    "run_check",
    "check_gradients",
    "check_backward_shapes",
    "check_parity",
    "main",
]

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
    targets). ``call(ops, *inputs)`` calls the op from an ops namespace; ``apply_args(*inputs)``
    gives the arguments of the ``autograd.Function`` itself (for the direct backward check).
    """

    op: str
    label: str
    make: Callable[[torch.dtype, str, torch.Generator], tuple]
    call: Callable | None = None
    apply_args: Callable | None = None
    skip: tuple[tuple[str, str], ...] = ()  # (check, why) for each check that does not apply to this row
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
        return _FUNCTION_OF[self.op]

    def function_args(self, *inputs) -> tuple:
        return self.apply_args(*inputs) if self.apply_args else inputs

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


_FUNCTION_OF = {
    "add": fn.Add, "mul": fn.Mul, "maximum": fn.Maximum, "relu": fn.ReLU, "sigmoid": fn.Sigmoid,
    "affine": fn.Affine, "l2_penalty": fn.L2Penalty, "cross_entropy": fn.CrossEntropy,
    "mse_loss": fn.MSELoss,
}


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


def _l2_apply(*ws):
    return (_L2_LAM, *ws)


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
        Case("l2_penalty", "one matrix", _l2((3, 4)), _l2_call, _l2_apply),
        Case("l2_penalty", "three tensors", _l2((3, 4), (5,), ()), _l2_call, _l2_apply),
        Case("l2_penalty", "empty + 3-d", _l2((0, 2), (2, 2, 3)), _l2_call, _l2_apply),
        Case("l2_penalty", "one empty", _l2((0,)), _l2_call, _l2_apply),
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
    reason = "ties: maximum has no derivative there; torch's half-and-half share is compared exactly instead"
    skip = tuple((k, reason) for k in NUMERICAL)
    a = [1.5, 0.0, -2.0, 3.0, 0.5, -0.0, 7.0, -1.0]
    b = [1.5, 0.0, -2.0, 1.0, 0.5, 0.0, 8.0, -1.0]
    return [
        Case("maximum", "ties", _fixed_inputs(a, b), skip=skip, tolerance=(0.0, 0.0)),
        Case("maximum", "ties, broadcast (2,4)x(4,)", _fixed_inputs(a, b[:4], shapes=[(2, 4), (4,)]),
             skip=skip, tolerance=(0.0, 0.0)),
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
                  call=_l2_call, apply_args=_l2_apply),
        _extremal("l2_penalty", "inf, no NaN", _fixed_inputs([_INF, 1.0], ["huge", -0.5]),
                  call=_l2_call, apply_args=_l2_apply),
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
        _mixed("l2_penalty", "mixed dtypes", _mixed_inputs((3, 4), (5,)), call=_l2_call, apply_args=_l2_apply),
        # NOTE: F.linear refuses mixed dtypes (so does affine), except under autocast, which casts
        # float16/bfloat16/float32 to one dtype: this row runs only in the autocast shape check.
        Case("affine", "x bfloat16, weight float32", _mixed_inputs((4, 3), (2, 3), (2,), second=torch.bfloat16),
             skip=tuple((k, "torch refuses mixed dtypes outside autocast; checked under autocast only")
                        for k in (*NUMERICAL, "shapes", *_PARITY))),
    ]
    return cases


CASES: list[Case] = _build_cases()

# ---------------------------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------------------------


@dataclass
class CheckResult:
    ok: bool  # nothing wrong was found (also true for a skipped check: see ``skipped``)
    error: float | None = None  # the largest error found, where the check measures one
    message: str = ""  # what went wrong, or why the check was skipped
    skipped: bool = False  # the check does not apply to this row and did not run
    crashed: bool = False  # the op (or the check) raised instead of giving an answer

    @property
    def status(self) -> str:
        return "skip" if self.skipped else "ok" if self.ok else "ERROR" if self.crashed else "FAIL"


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def _crashed(exc: BaseException) -> CheckResult:
    return CheckResult(False, None, _first_line(exc), crashed=True)


def _inputs(case: Case, dtype=torch.float64, device="cpu", seed=0) -> tuple:
    gen = torch.Generator().manual_seed(seed)
    return case.make(dtype, device, gen)


def _diff_positions(inputs) -> list[int]:
    return [i for i, x in enumerate(inputs) if isinstance(x, torch.Tensor) and x.requires_grad]


def _as_function(case: Case, ops, inputs):
    """A function of the differentiable inputs only, as gradcheck wants."""
    pos = _diff_positions(inputs)

    def f(*diff):
        full = list(inputs)
        for i, x in zip(pos, diff):
            full[i] = x
        return case.run(ops, *full)

    return f, tuple(inputs[i] for i in pos)


def _no_jacobian(f, diff) -> bool:
    """True when the Jacobian has no entries (no output elements or no input elements): no error to measure."""
    return f(*diff).numel() == 0 or sum(x.numel() for x in diff) == 0


def _jacobians(f, diff):
    out = f(*diff)
    if out.numel() == 0:  # NOTE: torch's jacobian cannot stack zero rows; the Jacobian is empty
        return tuple(out.new_zeros(out.shape + x.shape) for x in diff)
    return torch.autograd.functional.jacobian(f, diff, vectorize=False)


def _numerical_jacobians(f, diff, eps=1e-6):
    out = f(*diff).detach()
    jacs = []
    for x in diff:
        jac = torch.zeros(out.shape + x.shape, dtype=out.dtype, device=out.device)
        flat = jac.reshape(out.numel(), x.numel())
        for k in range(x.numel()):
            with torch.no_grad():
                base = x.detach().contiguous()
                plus, minus = base.clone(), base.clone()
                plus.view(-1)[k] += eps
                minus.view(-1)[k] -= eps
                others = [d.detach() for d in diff]
                idx = next(i for i, d in enumerate(diff) if d is x)
                others[idx] = plus
                hi = f(*others)
                others[idx] = minus
                lo = f(*others)
            flat[:, k] = ((hi - lo) / (2 * eps)).reshape(-1)
        jacs.append(jac)
    return jacs


def _max_abs(pairs) -> float:
    """Largest |a - b| over the pairs, counting equal infinities and NaN facing NaN as equal, NaN facing a number as inf."""
    err = 0.0
    for a, b in pairs:
        differ = (a != b) & ~(a.isnan() & b.isnan())
        if differ.any():
            gap = (a - b)[differ].abs().nan_to_num(nan=float("inf"), posinf=float("inf"))
            err = max(err, gap.max().item())
    return err


def check_gradients(case: Case, ops=None, check: str = "grad", *, device="cpu", inputs=None) -> CheckResult:
    """The shared gradcheck helper: run one of torch's gradient checks on a case, in float64."""
    ops = ops if ops is not None else get_ops("hand")
    inputs = inputs if inputs is not None else _inputs(case, torch.float64, device)
    f, diff = _as_function(case, ops, inputs)
    try:
        if check == "grad":
            gradcheck(f, diff, eps=1e-6, atol=1e-5, rtol=1e-3)
            if _no_jacobian(f, diff):
                return CheckResult(True)
            analytic = _jacobians(f, diff)
            numeric = _numerical_jacobians(f, diff)
            return CheckResult(True, _max_abs(zip(analytic, numeric)))
        if check == "gradgrad":
            gradgradcheck(f, diff)
            return CheckResult(True)
        if check == "fwd_ad":
            gradcheck(f, diff, check_forward_ad=True, check_backward_ad=False, check_undefined_grad=False,
                      check_batched_grad=False)
            if _no_jacobian(f, diff):
                return CheckResult(True)
            gen = torch.Generator().manual_seed(3)  # seeded: the report shows the same error every run
            tangents = tuple(torch.randn(x.shape, generator=gen, dtype=torch.float64).to(x) for x in diff)
            with torch.no_grad():
                _, jvp = torch.func.jvp(f, tuple(x.detach() for x in diff), tangents)
            vjp_side = sum(
                (j.reshape(jvp.numel(), t.numel()) @ t.reshape(-1)).reshape(jvp.shape)
                for j, t in zip(_jacobians(f, diff), tangents)
            )
            return CheckResult(True, _max_abs([(jvp, vjp_side)]))
        if check == "batched":
            gradcheck(f, diff, check_batched_grad=True)
            return _check_vmap(f, diff)
        if check == "undef":
            gradcheck(f, diff, check_undefined_grad=True)
            return CheckResult(True)
    except GradcheckError as exc:  # the check ran and found wrong gradients
        return CheckResult(False, None, _first_line(exc))
    except Exception as exc:  # noqa: BLE001 - the op raised: an ERROR result, never a crash of the report
        return _crashed(exc)
    raise ValueError(f"check_gradients: unknown check {check!r}")


def _check_vmap(f, diff) -> CheckResult:
    """vmap the op over a batch of 3 stacked inputs and compare with a loop."""
    batched = tuple(torch.stack([x.detach() * (1 + 0.1 * k) for k in range(3)]) for x in diff)
    out = torch.func.vmap(f)(*batched)
    loop = torch.stack([f(*(b[k] for b in batched)) for k in range(3)])
    err = _max_abs([(out, loop)])
    ok = out.shape == loop.shape and err <= 1e-12
    return CheckResult(ok, err, "" if ok else "vmap result differs from a loop")


class _DirectCtx:
    """A stand-in for autograd's ctx, so that backward can be called and its outputs inspected."""

    def __init__(self, needs_input_grad):
        self.needs_input_grad = tuple(needs_input_grad)
        self.saved_tensors = ()

    def save_for_backward(self, *tensors):
        self.saved_tensors = tensors

    def save_for_forward(self, *tensors):
        self.saved_for_forward = tensors

    def mark_non_differentiable(self, *args):
        pass

    def set_materialize_grads(self, value):
        pass


def check_backward_shapes(case: Case, *, device="cpu", dtype=torch.float64, inputs=None,
                          function=None, autocast: bool = False) -> CheckResult:
    """Call the Function's backward directly; every gradient must match its input exactly.

    Checks, for each input that needs a gradient, shape, dtype and device; for each that does
    not (a number, an integer target, a tensor with requires_grad=False), that it gets None.
    Runs twice: once with every gradient requested, once with only the first differentiable
    input (the needs_input_grad path). With ``autocast``, forward, setup_context and backward run
    under torch.autocast (bfloat16 on CPU, float16 on CUDA), so the cast back to each input's dtype
    is checked too.
    """
    inputs = inputs if inputs is not None else _inputs(case, dtype, device)
    function = function if function is not None else case.function()
    bound = inspect.signature(function.forward).bind(*case.function_args(*inputs))
    bound.apply_defaults()  # as Function.apply does: setup_context sees every argument
    device_type = torch.device(device).type
    context = torch.autocast(device_type) if autocast else contextlib.nullcontext()  # torch's default dtype there
    with context:
        problems = _backward_problems(function, bound.args)
    return CheckResult(not problems, None, "; ".join(dict.fromkeys(problems)))


def _backward_problems(function, args) -> list[str]:
    with torch.no_grad():
        output = function.forward(*args)
    grad_out = torch.randn(output.shape, dtype=output.dtype, device=output.device)
    wanted_all = [isinstance(a, torch.Tensor) and a.requires_grad for a in args]
    first = next((i for i, w in enumerate(wanted_all) if w), None)
    problems = []
    for wanted in (wanted_all, [i == first for i in range(len(args))]):
        ctx = _DirectCtx(wanted)
        function.setup_context(ctx, args, output)
        grads = function.backward(ctx, grad_out)
        grads = grads if isinstance(grads, tuple) else (grads,)
        if len(grads) != len(args):
            problems.append(f"backward returned {len(grads)} gradients for {len(args)} inputs")
            continue
        for i, (a, g, w) in enumerate(zip(args, grads, wanted)):
            if not w:
                if g is not None:
                    problems.append(f"input {i} needs no gradient but got one")
                continue
            if g is None:
                problems.append(f"input {i} needs a gradient but got None")
            elif g.shape != a.shape:
                problems.append(f"input {i}: gradient shape {tuple(g.shape)} != input shape {tuple(a.shape)}")
            elif g.dtype != a.dtype:
                problems.append(f"input {i}: gradient dtype {g.dtype} != input dtype {a.dtype}")
            elif g.device != a.device:
                problems.append(f"input {i}: gradient on {g.device}, input on {a.device}")
    return problems


_PARITY_TOL = {torch.float64: (1e-12, 1e-10), torch.float32: (1e-5, 1e-5), torch.float16: (1e-3, 1e-3),
               torch.bfloat16: (1e-2, 1e-2)}


def _coarsest(inputs) -> torch.dtype:
    """The least precise float dtype among the inputs: the results are compared at its tolerance."""
    dtypes = [x.dtype for x in inputs if isinstance(x, torch.Tensor) and x.is_floating_point()]
    return max(dtypes, key=lambda d: torch.finfo(d).eps)


def _upstream(out: torch.Tensor, extreme: bool) -> torch.Tensor:
    """The gradient fed into backward: seeded normal values, or with inf and NaN among them."""
    gen = torch.Generator().manual_seed(1)
    grad = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    if extreme:
        flat = grad.view(-1)
        if flat.numel() <= 1:
            flat.fill_(float("inf"))
        flat[1::4] = float("inf")
        flat[3::4] = float("nan")
    return grad.to(out)


def _parity_results(case: Case, ops, inputs, extreme: bool) -> list[torch.Tensor]:
    """Value, gradients (reverse mode) and jvp (forward mode, seeded tangents) of one case under ``ops``."""
    fresh = tuple(x.detach().clone().requires_grad_(x.requires_grad) if isinstance(x, torch.Tensor)
                  else x for x in inputs)
    out = case.run(ops, *fresh)
    diff = [x for x in fresh if isinstance(x, torch.Tensor) and x.requires_grad]
    grads = torch.autograd.grad(out, diff, _upstream(out, extreme), allow_unused=False) if diff else ()
    f, primals = _as_function(case, ops, inputs)
    gen = torch.Generator().manual_seed(2)
    tangents = tuple(torch.randn(x.shape, generator=gen, dtype=torch.float64).to(x) for x in primals)
    with torch.no_grad():
        _, jvp = torch.func.jvp(f, tuple(x.detach() for x in primals), tangents)
    if ops.kind == "native":
        # NOTE: torch.func.jvp of float32 `t * 0.15` returns a float64 tangent (torch 2.14; the
        # native l2_penalty hits it), so the native jvp is taken in the output's dtype; handgrad's
        # own must have that dtype already.
        jvp = jvp.to(out.dtype)
    return [out.detach(), *grads, jvp]


def check_parity(case: Case, dtype=torch.float64, *, device="cpu", hand=None, native=None,
                 inputs=None) -> CheckResult:
    """The shared parity helper: values, gradients and jvps of hand ops equal native ops.

    Tolerances: float64 rtol 1e-12 / atol 1e-10, float32 rtol 1e-5 / atol 1e-5, those of the
    least precise input where dtypes are mixed; NaN must sit in the same places and infinities
    must be equal; every result must have the native one's dtype. Rows marked ``extreme_upstream`` feed backward
    an upstream gradient with inf and NaN in it (where torch's backward selects, a 0 stays 0).
    """
    hand = hand if hand is not None else get_ops("hand")
    native = native if native is not None else get_ops("native")
    inputs = inputs if inputs is not None else _inputs(case, dtype, device)
    rtol, atol = case.tolerance or _PARITY_TOL[_coarsest(inputs)]
    extreme = case.extreme_upstream
    pairs = list(zip(_parity_results(case, hand, inputs, extreme), _parity_results(case, native, inputs, extreme)))
    problems = [f"dtype {a.dtype} vs {b.dtype}" for a, b in pairs if a.dtype != b.dtype]
    problems += [f"shape {tuple(a.shape)} vs {tuple(b.shape)}" for a, b in pairs if a.shape != b.shape]
    if problems:
        return CheckResult(False, None, "; ".join(problems))
    err = _max_abs((a.double(), b.double()) for a, b in pairs)
    ok = all(torch.allclose(a, b, rtol=rtol, atol=atol, equal_nan=True) for a, b in pairs)
    return CheckResult(ok, err, "" if ok else f"differs from native by up to {err:.3g}")


CHECKS: dict[str, Callable[..., CheckResult]] = {
    "grad": lambda c, dev: check_gradients(c, check="grad", device=dev),
    "gradgrad": lambda c, dev: check_gradients(c, check="gradgrad", device=dev),
    "fwd_ad": lambda c, dev: check_gradients(c, check="fwd_ad", device=dev),
    "batched": lambda c, dev: check_gradients(c, check="batched", device=dev),
    "undef": lambda c, dev: check_gradients(c, check="undef", device=dev),
    "shapes": lambda c, dev: check_backward_shapes(c, device=dev),
    "shapes_ac": lambda c, dev: check_backward_shapes(c, device=dev, dtype=torch.float32, autocast=True),
    "native64": lambda c, dev: check_parity(c, torch.float64, device=dev),
    "native32": lambda c, dev: check_parity(c, torch.float32, device=dev),
}


def run_check(case: Case, check: str, device: str = "cpu") -> CheckResult:
    """Run one named check of :data:`CHECKS` on one case (a skipped result where the row opts out)."""
    reason = case.skip_reason(check)
    if reason is not None:
        return CheckResult(True, None, reason, skipped=True)
    try:
        return CHECKS[check](case, device)
    except Exception as exc:  # noqa: BLE001 - a raising op is an ERROR cell, and the report goes on
        return _crashed(exc)


# ---------------------------------------------------------------------------------------------
# the report
# ---------------------------------------------------------------------------------------------


def _format(results: list[CheckResult]) -> str:
    """One cell: ok and the largest error, FAIL k/n, and how many of the column's rows were skipped."""
    ran = [r for r in results if not r.skipped]
    skipped = len(results) - len(ran)
    if not ran:
        return "skip" if skipped else ""
    bad = {s: sum(r.status == s for r in ran) for s in ("FAIL", "ERROR")}
    errors = [r.error for r in ran if r.error is not None]
    if any(bad.values()):
        cell = " ".join(f"{s} {n}" for s, n in bad.items() if n) + f"/{len(ran)}"
    else:
        cell = f"ok {max(errors):.1e}" if errors else "ok"
    return f"{cell} +{skipped} skip" if skipped else cell


def _parse(argv):
    parser = argparse.ArgumentParser(
        prog="python -m handgrad.check",
        description="Run handgrad's gradient-check matrix and print it, op by check.",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument("--op", nargs="+", metavar="NAME", help="only these ops (default: all)")
    parser.add_argument("--verbose", action="store_true", help="one line per case as well")
    args = parser.parse_args(argv)
    names = sorted({c.op for c in CASES}, key=[c.op for c in CASES].index)
    if args.op:
        unknown = [n for n in args.op if n not in names]
        if unknown:
            parser.exit(2, f"error: unknown op {', '.join(unknown)}; choose from {', '.join(names)}.\n")
        names = [n for n in names if n in args.op]
    try:
        device = torch.device(args.device)
    except RuntimeError:
        parser.exit(2, f"error: --device {args.device!r} is not a device; use cpu, cuda or cuda:N.\n")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.exit(2, "error: --device cuda was given but CUDA is not available here; use --device cpu.\n")
    if device.type == "meta":
        parser.exit(2, "error: --device meta holds no values to check; use --device cpu or cuda.\n")
    try:
        torch.empty(1, device=device)
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError, AssertionError... per backend
        reason = str(exc).strip().split(". ")[0].splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        parser.exit(2, f"error: --device {args.device} cannot be used here ({reason}); use --device cpu.\n")
    return args, names, device


def _print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    print(line(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(line(r))


def main(argv: Sequence[str] | None = None) -> int:
    warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
    args, names, device = _parse(argv)
    checks = list(CHECKS)
    rows, results = [], []  # results: (case, check, CheckResult) for every cell
    for name in names:
        cases = [c for c in CASES if c.op == name]
        column = {k: [] for k in checks}
        for case in cases:
            for k in checks:
                res = run_check(case, k, str(device))
                column[k].append(res)
                results.append((case, k, res))
                if args.verbose:
                    print(f"{case.name:40s} {k:9s} {res.status} {res.error if res.error is not None else ''}")
        rows.append([name, str(len(cases)), *(_format(column[k]) for k in checks)])

    print(f"handgrad gradient-check matrix on {device} (torch {torch.__version__}); ok = passed, number = largest "
          "error found, FAIL = wrong result, ERROR = the op raised, +k skip = k rows where the check does not apply")
    _print_table(["op", "cases", *checks], rows)
    count = {s: sum(r.status == s for _, _, r in results) for s in ("ok", "FAIL", "ERROR", "skip")}
    print(f"{count['ok']} passed, {count['FAIL']} failed, {count['ERROR']} errors, {count['skip']} skipped")
    for reason in dict.fromkeys(r.message for _, _, r in results if r.skipped):
        print(f"  skipped: {reason}")
    for case, k, r in results:
        if r.status in ("FAIL", "ERROR"):
            print(f"  {r.status} {case.name} {k}: {r.message}")
    return 1 if count["FAIL"] or count["ERROR"] else 0


if __name__ == "__main__":
    sys.exit(main())
