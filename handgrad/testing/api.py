"""check_function and assert_function: the arguments checked (each misuse one sentence), each sample tried
once, then every registered check on every row, and the likely causes of what failed."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping, Sequence

import torch

from .. import compat

# NOTE: importing the two check modules registers the checks, in column order
from . import checks as _checks  # noqa: F401
from . import checks_calls as _calls  # noqa: F401
from .engine import Engine, run_check
from .hints import likely_causes
from .loading import load, parse_dtypes
from .nodes import Graph, function_name, tensor_outputs
from .numerics import TOLERANCES, ULPS_WITHOUT_REFERENCE
from .registry import REGISTRY, check_names
from .report import Report, Result, first_line
from .variants import DTYPES, SHORT, VARIANTS, copy, describe, diff_positions, fresh, map_tensors, rows_of

__all__ = ["check_function", "assert_function"]


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
        label = label or describe(args, float_dtypes)
        while label in labels:
            label += "'"
        labels.add(label)
        out.append((label, args))
    return out


def _is_function_class(x) -> bool:
    return isinstance(x, type) and issubclass(x, torch.autograd.Function)


def _callable(fn, what: str):
    """``fn`` as a callable: a dotted name resolved, a Function class or a Module refused in one sentence."""
    if isinstance(fn, str):
        fn = load(fn, what)
    if _is_function_class(fn):
        raise TypeError(f"check_function: {what} is the class {fn.__name__}; pass {fn.__name__}.apply (a Function "
                        "is called through apply).")
    if isinstance(fn, type):
        raise TypeError(f"check_function: {what} is the class {fn.__name__}, not a function; pass a function or "
                        "an autograd.Function's apply (a Module is checked through a function that calls it).")
    if not callable(fn):
        raise TypeError(f"check_function: {what} is a {type(fn).__name__}, not a callable.")
    return fn


def _function_classes(function) -> list[type]:
    classes = list(function) if isinstance(function, (list, tuple)) else [function]
    bad = [c for c in classes if not _is_function_class(c)]
    if bad:
        shown = getattr(bad[0], "__name__", repr(bad[0]))
        raise TypeError(f"check_function: function= takes torch.autograd.Function classes; {shown} is not one.")
    return classes


def _wanted(checks, compile) -> list[str]:
    if isinstance(checks, str):
        checks = [checks]
    known = check_names()
    unknown = [c for c in (checks or ()) if c not in known]
    if unknown:
        raise ValueError(f"check_function: unknown check {', '.join(map(repr, unknown))}; the checks are "
                         f"{', '.join(known)}.")

    def include(c):
        if c == "compile":  # NOTE: compile=True (or a backend) turns it on; checks= can still leave it out
            return bool(compile) and (checks is None or c in checks)
        return c in checks if checks is not None else REGISTRY[c].default

    return [c for c in known if include(c)]


def _probe(fn, reference, label, args, device, classes) -> str | None:
    """Call fn (and the reference) once on the float64 sample: the one sentence that stops this sample, or None."""
    base = map_tensors(args, lambda t: copy(t, torch.float64 if t.is_floating_point() else None, device))
    if not any(isinstance(a, torch.Tensor) and a.is_floating_point() for a in base):
        return f"nothing to differentiate in sample {label!r}: no floating-point tensor among its arguments, nothing was checked"
    diff = diff_positions(base)
    try:
        result = fn(*fresh(base, diff))
        graph, mine = Graph.of(result), tensor_outputs(result)
    except Exception as exc:  # noqa: BLE001 - the user's function on the user's sample: one sentence
        return f"fn raised on sample {label!r} ({first_line(exc)}); check the sample's shapes against what fn expects"
    for node in graph.nodes:
        cls = compat.forward_class(node)
        if cls is not None and cls not in classes:
            classes.append(cls)
    if reference is None:
        return None
    try:
        theirs = tensor_outputs(reference(*fresh(base, ())))
    except Exception as exc:  # noqa: BLE001
        return f"the reference raised on sample {label!r} ({first_line(exc)})"
    shapes = [tuple(t.shape) for t in mine], [tuple(t.shape) for t in theirs]
    if shapes[0] != shapes[1]:
        return (f"the reference disagrees with fn on sample {label!r}: it returns shapes {shapes[1]}, fn {shapes[0]}; "
                "pass a reference computing the same thing")
    return None


def check_function(
    fn: Callable,
    samples: Sequence | Mapping[str, tuple],
    reference: Callable | str | None = None,
    *,
    elementwise: bool = False,
    function: type | Sequence[type] | None = None,
    dtypes: Sequence[torch.dtype | str] = DTYPES,
    device=None,
    compile: bool | str = False,
    checks: str | Collection[str] | None = None,
    variants: Collection[str] = VARIANTS,
    tolerances: Mapping[torch.dtype, tuple[float, float]] | None = None,
    skip: Mapping[str, str] | None = None,
    seed: int = 0,
    as_given: bool = False,
    numerical: bool = True,
    extreme_upstream: bool = False,
) -> Report:
    """Run the whole gradient-check matrix on ``fn`` and return the :class:`Report` (see :mod:`handgrad.testing`).

    ``samples``: a list of argument tuples (a lone tensor is a 1-tuple), or a dict label -> tuple.
    ``reference``: a callable (or its dotted name, ``"torch.exp"``) taking the same arguments whose
    values and gradients ``fn`` must equal. ``elementwise``: also check 0-d and empty inputs (and no
    batch sizes). ``function``: the autograd.Function class(es) whose declarations (jvp, vmap,
    once_differentiable) decide which checks run, when those found in the output's graph are not the
    ones to go by. ``dtypes``: the lower precisions (dtypes or their names). ``device``: a device or a
    list of them (default: CPU, and CUDA when present). ``compile``: True or a ``torch.compile``
    backend name adds the compile check. ``checks``: a check's name or a collection of names (exact;
    an unknown one is refused). ``variants``: a subset of :data:`VARIANTS`. ``tolerances``: dtype ->
    (rtol, atol) overriding :data:`TOLERANCES`. ``skip``: check -> reason, for checks that do not
    apply to ``fn``. ``as_given``: each sample is one row, in its own dtypes and strides.
    ``numerical=False``: no finite differences anywhere (inputs at a kink, a tie, NaN): every row is
    compared with the reference. ``extreme_upstream``: incoming gradients hold inf and NaN.
    """
    start = time.perf_counter()
    fn = _callable(fn, "fn")
    reference = _callable(reference, "reference") if reference is not None else None
    classes = _function_classes(function) if function is not None else []
    dtypes = parse_dtypes(dtypes)
    wanted = _wanted(checks, compile)
    devices = _devices(device)
    labelled = _samples(samples, float_dtypes=as_given)
    report = Report(_title(fn, reference, devices), [], wanted)
    runnable = []
    for label, args in labelled:
        stop = _probe(fn, reference, label, args, devices[0], classes if function is None else [])
        if stop is None:
            runnable.append((label, args))
        else:
            report.rows.append(label)
            report.results.append(Result(label, wanted[0] if wanted else "values", "ERROR", message=stop))
    engine = Engine(fn, reference, classes, "inductor" if compile is True else (compile or None),
                    {**TOLERANCES, **(tolerances or {})}, seed, dict(skip or {}), extreme_upstream)
    rows = []
    for dev in devices:
        for label, args in runnable:
            try:
                rows += rows_of(label, args, dev, elementwise=elementwise, dtypes=dtypes, variants=variants,
                                extremal=reference is not None, as_given=as_given, numerical=numerical)
            except Exception as exc:  # noqa: BLE001 - the report never dies: a sample it cannot vary is an ERROR row
                report.rows.append(f"{label} {dev.type}")
                report.results.append(Result(report.rows[-1], wanted[0], "ERROR", message=f"making the rows: {first_line(exc)}"))
    report.rows += [r.label for r in rows]
    for row in rows:
        for name in wanted:
            check = REGISTRY[name]
            if check.applies(row):
                report.results.append(run_check(engine, check, row))
    if reference is None and any(r.kind == "dtype" for r in rows):
        shown = ", ".join(SHORT.get(d, str(d)) for d in dtypes)
        report.notes.append(f"no reference: the {shown} rows are compared with the Function's own float64 result, allowing "
                            f"{ULPS_WITHOUT_REFERENCE} units in the last place of the dtype at each tensor's largest value")
    report.hints = likely_causes(report)
    report.seconds = time.perf_counter() - start
    return report


def assert_function(fn: Callable, samples, reference: Callable | None = None, **options) -> Report:
    """:func:`check_function`, raising ``AssertionError`` with the whole report when anything fails."""
    report = check_function(fn, samples, reference, **options)
    if not report.ok:
        raise AssertionError("\n" + str(report))
    return report


def _devices(device) -> list[torch.device]:
    if device is None:
        return [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    devices = device if isinstance(device, (list, tuple)) else [device]
    return [torch.device(d) for d in devices]


def _title(fn, reference, devices) -> str:
    against = f" against {function_name(reference)}" if reference is not None else ""
    where = ", ".join(str(d) for d in devices)
    return f"handgrad.testing: {function_name(fn)}{against} on {where} (torch {torch.__version__})"

