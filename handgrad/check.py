"""The gradient-check matrix: handgrad's own table of cases, checked by the public engine.

``python -m handgrad.check [--device cpu|cuda] [--op NAME ...]`` prints the matrix (op by column,
pass/fail and the largest error found) and exits 1 if anything fails. An op that raises is an
ERROR cell with the exception's first line under the table, never a crash of the report; a
device torch cannot use here is one sentence and exit 2. ``python -m handgrad.check --function
file.py:Name --reference torch.nn.functional.gelu --shape 4,3 [--elementwise]`` runs the same
engine on a Function of your own (:func:`handgrad.testing.cli_function`).

The cases (ops × inputs, each with the columns that do not apply to it and why, and its own
tolerance where the dtype's is not the one to use) are in ``handgrad/check_cases.py``; this module
runs them and prints the report. Every check is :func:`handgrad.testing.check_function`'s, the one
users get. Each row is run through the
lowercase API, so in eager code the checks see the fast twin that training runs and under
``vmap`` the op itself. A column gathers engine cells on one row made from the case:

* ``grad`` ... ``undef``  the engine's numerical checks on the float64 row, with finite differences as
                          the truth (no reference): gradcheck, gradgradcheck, forward AD, batched
                          gradients and vmap, undefined incoming gradients
* ``shapes``              the float64 row's backward called directly: each gradient's shape, dtype and device
* ``needs_grad``          with one input needing a gradient at a time, None for the others
* ``shapes_ac``           ``shapes`` on the float32 row under torch.autocast (bfloat16 on CPU, float16 on CUDA)
* ``saved``               bytes kept for backward at most the native op's
* ``native64``            values, gradients and jvps equal get_ops("native") in float64 (tight), NaN in the
                          same places; the engine's values, grad and fwd_ad compared with the reference
* ``native32``            the same in float32

Rows of NaN, ±inf and huge finite inputs ("extremal") are compared with the native op only: a row
lists the columns that do not apply to it and why (``Case.skip``), and the report shows those cells
as skipped and counts them apart from the passes.
"""

from __future__ import annotations

import sys

if __name__ == "__main__":
    # NOTE: `python -m handgrad.check` reads its arguments before torch is imported (--help and a
    # mistyped flag answer at once); check_cli.main then runs this module as handgrad.check.
    from handgrad.check_cli import main as _cli_main

    sys.exit(_cli_main())

import warnings
from collections.abc import Sequence

import torch

from . import registry
from .check_cases import CASES, COLUMNS, Case, cases_of
from .check_cli import build_parser, run_function, wants_function
from .functional import get_ops
from .testing import TOLERANCES, Result, UsageError, check_function, first_line, parse_device, table

__all__ = ["Case", "CASES", "COLUMNS", "cases_of", "run_case", "run_check", "main"]

_NATIVE = get_ops("native")  # NOTE: one live namespace: it holds ops declared after this import too


# ---------------------------------------------------------------------------------------------
# the checks: the engine's, one call per (dtype, reference) a case needs
# ---------------------------------------------------------------------------------------------


def _inputs(case: Case, dtype=torch.float64, device="cpu", seed=0) -> tuple:
    gen = torch.Generator().manual_seed(seed)
    return case.make(dtype, device, gen)


def _engine_results(case, dtype, native, checks, device, hand, inputs) -> list[Result]:
    """The engine's results for ``checks`` on the row made from ``case`` in ``dtype`` (or ``inputs``)."""
    try:
        inputs = inputs if inputs is not None else _inputs(case, dtype, device)
    except Exception as exc:  # noqa: BLE001 - a case that cannot be made is an ERROR cell, and the report goes on
        return [Result(case.name, k, "ERROR", message=first_line(exc)) for k in checks]
    tolerances = None if case.tolerance is None else dict.fromkeys(TOLERANCES, case.tolerance)
    report = check_function(
        lambda *a: case.run(hand, *a), {case.name: inputs}, (lambda *a: case.run(_NATIVE, *a)) if native else None,
        # NOTE: no reference for the numerical columns, so that grad is gradcheck alone; against the
        # native op, numerical=False makes every comparison one with the native op.
        function=case.function(), as_given=True, numerical=not native, checks=checks, tolerances=tolerances,
        extreme_upstream=case.extreme_upstream, device=device, dtypes=(), variants=(),
    )
    return report.results


def _gather(name: str, column: str, results: list[Result], engine_checks: tuple[str, ...]) -> Result:
    """One column's cell from the engine's cells: the worst status, the largest error, each failure said."""
    results = [r for r in results if r.check in engine_checks] or [r for r in results if not r.ok][:1]
    ran = [r for r in results if r.status != "skip"]
    if not ran:
        reason = results[0].message if results else "the engine ran none of " + ", ".join(engine_checks)
        return Result(name, column, "skip" if results else "ERROR", message=reason)
    status = next((s for s in ("ERROR", "FAIL") if any(r.status == s for r in ran)), "ok")
    errors = [r.error for r in ran if r.error is not None]
    single = len(engine_checks) == 1
    message = "; ".join(r.message if single else f"{r.check}: {r.message}" for r in ran if not r.ok)
    return Result(name, column, status, max(errors) if errors else None, message)


def run_case(case: Case, device="cpu", columns: Sequence[str] = tuple(COLUMNS), *, hand=None, inputs=None) -> dict[str, Result]:
    """Every column of :data:`COLUMNS` (or ``columns``) on one case: a skip with its reason where the case opts out.

    ``hand``: the ops namespace to check (default ``get_ops("hand")``); ``inputs``: the row's
    inputs instead of ``case.make`` (then every column runs on them, whatever its dtype).
    """
    hand = hand if hand is not None else get_ops("hand")
    reasons = {c: case.skip_reason(c) for c in columns}
    cells = {c: Result(case.name, c, "skip", message=why) for c, why in reasons.items() if why}
    groups: dict[tuple, list[str]] = {}
    for c in columns:
        if c not in cells:
            groups.setdefault(COLUMNS[c][:2], []).append(c)
    for (dtype, native), group in groups.items():
        checks = {k for c in group for k in COLUMNS[c][2]}
        results = _engine_results(case, dtype, native, checks, device, hand, inputs)
        for c in group:
            cells[c] = _gather(case.name, c, results, COLUMNS[c][2])
    return {c: cells[c] for c in columns}


def run_check(case: Case, check: str, device="cpu", *, hand=None, inputs=None) -> Result:
    """One column of :data:`COLUMNS` on one case (a skipped result where the case opts out)."""
    return run_case(case, device, [check], hand=hand, inputs=inputs)[check]


# ---------------------------------------------------------------------------------------------
# the report
# ---------------------------------------------------------------------------------------------


def _format(results: list[Result]) -> str:
    """One cell: ok and the largest error, FAIL k/n, and how many of the column's rows were skipped."""
    ran = [r for r in results if r.status != "skip"]
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
    parser = build_parser()
    args = parser.parse_args(argv)
    names = list(registry.OP_NAMES)
    if args.op:
        unknown = [n for n in args.op if n not in names]
        if unknown:
            parser.exit(2, f"error: unknown op {', '.join(unknown)}; choose from {', '.join(names)}.\n")
        names = [n for n in names if n in args.op]
    try:
        device = parse_device(args.device)
    except UsageError as exc:
        parser.exit(2, f"error: {exc}\n")
    return args, names, device


def main(argv: Sequence[str] | None = None) -> int:
    warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
    argv = list(sys.argv[1:] if argv is None else argv)
    if wants_function(argv):
        return run_function(argv)
    args, names, device = _parse(argv)
    rows, results = [], []  # results: (case, Result) for every cell
    for name in names:
        cases = cases_of(name)
        column: dict[str, list[Result]] = {k: [] for k in COLUMNS}
        for case in cases:
            for k, res in run_case(case, str(device)).items():
                column[k].append(res)
                results.append((case, res))
                if args.verbose:
                    print(f"{case.name:40s} {k:10s} {res.status} {res.error if res.error is not None else ''}")
        rows.append([name, str(len(cases)), *(_format(column[k]) for k in COLUMNS)])

    print(f"handgrad gradient-check matrix on {device} (torch {torch.__version__}, checks by handgrad.testing); ok = "
          "passed, number = largest error found, FAIL = wrong result, ERROR = the op raised, +k skip = k rows where "
          "the check does not apply")
    print(table(["op", "cases", *COLUMNS], rows))
    count = {s: sum(r.status == s for _, r in results) for s in ("ok", "FAIL", "ERROR", "skip")}
    print(f"{count['ok']} passed, {count['FAIL']} failed, {count['ERROR']} errors, {count['skip']} skipped")
    for reason in dict.fromkeys(r.message for _, r in results if r.status == "skip"):
        print(f"  skipped: {reason}")
    for case, r in results:
        if r.status in ("FAIL", "ERROR"):
            print(f"  {r.status} {case.name} {r.check}: {r.message}")
    return 1 if count["FAIL"] or count["ERROR"] else 0

