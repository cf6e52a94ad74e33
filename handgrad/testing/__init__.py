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
* ``batch 1`` / ``batch 3``  the sample cut to its first sample along the batch dimension, or a batch of
                        one grown to three (not elementwise, when the first input has 2+ dimensions)
* ``extremal <dtype>``  NaN, ±inf, ±huge (max/4) and ±tiny (smallest normal) written into the
                        inputs; compared with the reference only (needs ``reference``)
* ``<dtype>``           float32, bfloat16, float16 (``dtypes``): parity at the dtype's tolerance

With ``as_given=True`` each sample is instead one row exactly as given (its own dtypes, mixed or
not, and strides); with ``numerical=False`` no row uses finite differences (inputs at a kink, a
tie or NaN): every row is compared with the reference.

Checks (columns; each one function in :mod:`handgrad.testing.checks`, registered with
:func:`register_check`: adding a check is one function):

* ``grad``        float64 rows: gradcheck's test (its tolerances; a reentrant backward) on Jacobians computed
                  once per row, error = max |J_backward - J_finite-differences|, and the
                  gradients equal the reference's; other rows: the gradients equal the reference's
                  (or, without one, the Function's own in float64) at the row's tolerance
* ``gradgrad``    gradgradcheck's test: backward is itself differentiable (float64 rows other than the
                  layout-only transposed and strided ones). Skipped only when a Function declares otherwise
                  with ``@once_differentiable`` on its backward: a backward that is silently not
                  differentiable (e.g. it detaches) fails here
* ``fwd_ad``      float64 rows: ``gradcheck(check_forward_ad=True)``'s test, forward AD's Jacobian against
                  grad's finite differences, error = max |jvp - finite
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
* ``shapes_ac``   rows in a lower precision, as a mixed-precision step runs them: forward under
                  ``torch.autocast`` (bfloat16 on CPU, float16 on CUDA), backward outside it; what
                  ``shapes`` finds there and not without it, or what backward raises there
* ``needs_grad``  with one input needing a gradient at a time: backward returns None for every input
                  whose ``ctx.needs_input_grad`` is False, and the same gradient as before for the other
* ``untouched``   forward leaves its inputs alone; backward leaves its incoming gradients (``grad_output``),
                  the inputs and the outputs alone (values and version counters): each in-place write named
* ``values``      outputs equal the reference's (NaN in the same places) at the row's tolerance: the
                  forward alone (a backward that raises does not touch this column)
* ``saved``       no tensor kept as a ctx attribute (leaks, escapes saved-tensor hooks); bytes saved for
                  backward (unique storages seen by ``saved_tensors_hooks``) at most the reference's
* ``compile``     ``torch.compile(fn, fullgraph=True)`` gives the same values and gradients (off unless
                  ``compile=True`` or a backend name)

Tolerances (rtol, atol) per dtype are :data:`TOLERANCES`; in a lower precision a Function also passes
where it is at most :data:`SLACK` times as far from the float64 truth as the reference itself is in
that dtype at the same element (some references compute internally in float32). Without a reference
the lower precisions are compared with the Function's own float64 result, allowing a few units in
the last place at each tensor's largest value (the report says so). Each failure names the row, the
worst element's index and both values with enough digits to differ, with the absolute and relative
error; under the table, ``likely cause:`` lines name the usual mistake behind each failure pattern
(:data:`HINTS`). A check that raises is an ERROR cell with the
exception's first line; the report never dies. ``python -m handgrad.testing --function file.py:Name
--shape 4,3`` (or ``python -m handgrad.check --function ...``) runs the same from the command line
(:func:`cli_function`). handgrad's own matrix (:mod:`handgrad.check`) is this engine on its cases.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # NOTE: the names as static tools see them (mkdocstrings' API page, type checkers); _WHERE below at run time
    from .api import assert_function, check_function
    from .cases import FunctionCase, pytest_params
    from .cli import cli_function, main
    from .hints import HINTS, Hint
    from .loading import UsageError, parse_device, parse_dtypes
    from .numerics import SLACK, TOLERANCES
    from .registry import Check, check_names, register_check, unregister_check
    from .report import Fail, Report, Result, Skip, first_line, table
    from .variants import DTYPES, VARIANTS

# NOTE: names are imported on first use, so that `python -m handgrad.testing --help` and a usage
# mistake answer without importing torch; any name but the command line's registers the checks first.
_WHERE = {
    "assert_function": "api", "check_function": "api", "FunctionCase": "cases", "pytest_params": "cases",
    "cli_function": "cli", "main": "cli", "HINTS": "hints", "Hint": "hints", "UsageError": "loading",
    "parse_device": "loading", "parse_dtypes": "loading", "SLACK": "numerics", "TOLERANCES": "numerics",
    "Check": "registry", "check_names": "registry", "register_check": "registry", "unregister_check": "registry",
    "Fail": "report", "Report": "report", "Result": "report", "Skip": "report", "first_line": "report",
    "table": "report", "DTYPES": "variants", "VARIANTS": "variants",
}


def __getattr__(name: str):
    if name == "CHECKS":
        #: the built-in checks' names, in column order (check_names() also lists checks registered later)
        importlib.import_module(".api", __name__)
        globals()["CHECKS"] = _builtin_checks()
        return globals()["CHECKS"]
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if _WHERE[name] != "cli":
        importlib.import_module(".api", __name__)
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value


def _builtin_checks() -> tuple[str, ...]:
    from .registry import REGISTRY

    return tuple(k for k, c in REGISTRY.items() if c.run.__module__.startswith(__name__))


def __dir__():
    return sorted(set(globals()) | set(_WHERE) | {"CHECKS"})


__all__ = [
    "CHECKS",
    "DTYPES",
    "HINTS",
    "SLACK",
    "TOLERANCES",
    "VARIANTS",
    "Check",
    "Fail",
    "FunctionCase",
    "Hint",
    "Report",
    "Result",
    "Skip",
    "UsageError",
    "assert_function",
    "check_function",
    "check_names",
    "cli_function",
    "first_line",
    "main",
    "parse_device",
    "parse_dtypes",
    "pytest_params",
    "register_check",
    "table",
    "unregister_check",
]
