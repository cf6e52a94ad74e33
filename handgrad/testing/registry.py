"""The checks' registry: each check is one function, registered here with when it applies and why it skips.

Adding a check is one function::

    from handgrad.testing import register_check, Fail

    @register_check(rows=("exact",))          # float64 rows with finite differences
    def finite(engine, row):
        \"\"\"Every output is finite on the float64 rows.\"\"\"
        outs, _, _ = engine.forward(row)
        if not all(o.isfinite().all() for o in outs):
            raise Fail("an output is not finite")
        return 0.0                              # the error shown in the cell (or None)

It then is a column of every report (and a valid name for ``checks=``). The function returns the
cell's error (or ``(error, text shown)``), raises :class:`Fail` for a FAIL and :class:`Skip` for a
skip found while running; an exception is an ERROR cell.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

__all__ = ["Check", "register_check", "unregister_check", "check_names", "get_check", "REGISTRY"]

#: row kinds: "exact" (float64, finite differences), "parity" (compared with the reference only),
#: "dtype" (a lower precision made from the sample), "extremal" (NaN, inf, huge and tiny values)
KINDS = ("exact", "parity", "dtype", "extremal")


@dataclass(frozen=True)
class Check:
    """One registered check: its function and its declarations."""

    name: str
    run: Callable  # (engine, row) -> error | (error, shown) | None
    rows: tuple[str, ...] = KINDS  # the row kinds it runs on
    first: bool = False  # only on each sample's first row per device (costly checks, whole-call checks)
    applies_to: Callable | None = None  # (row) -> bool, beyond the row kinds
    skips: Callable | None = None  # (engine, row) -> the reason it does not apply, or None
    needs_diff: bool = True  # skipped on a row with no floating-point input to differentiate
    default: bool = True  # run unless ``checks=`` leaves it out (False: only when asked, like compile)
    doc: str = ""

    def applies(self, row) -> bool:
        """Whether the cell exists at all (a '-' in the table when not)."""
        return row.kind in self.rows and (row.first or not self.first) and (self.applies_to is None or self.applies_to(row))

    def skip_reason(self, engine, row) -> str | None:
        if not row.diff and self.needs_diff:
            return "no floating-point input to differentiate"
        return self.skips(engine, row) if self.skips is not None else None


#: name -> Check, in registration order (the report's column order)
REGISTRY: dict[str, Check] = {}


def register_check(fn: Callable | None = None, *, name: str | None = None, rows: Collection[str] = KINDS,
                   first: bool = False, applies: Callable | None = None, skips: Callable | None = None,
                   needs_diff: bool = True, default: bool = True):
    """Register ``fn(engine, row)`` as a check (a decorator, with or without arguments); returns ``fn``.

    ``rows``: the row kinds it runs on (:data:`KINDS`); ``first``: only on each sample's first row;
    ``applies(row)``: a further condition for the cell to exist; ``skips(engine, row)``: why it does
    not apply (None when it does); ``default=False``: run only when named in ``checks=``.
    """

    def register(f: Callable) -> Callable:
        key = name or f.__name__
        unknown = set(rows) - set(KINDS)
        if unknown:
            raise ValueError(f"register_check: unknown row kind {', '.join(sorted(unknown))}; use {', '.join(KINDS)}.")
        REGISTRY[key] = Check(key, f, tuple(rows), first, applies, skips, needs_diff, default,
                              (f.__doc__ or "").strip().split("\n")[0])
        return f

    return register(fn) if fn is not None else register


def unregister_check(name: str) -> None:
    """Remove a check registered with :func:`register_check` (tests that register a toy check clean up)."""
    REGISTRY.pop(name, None)


def check_names(default_only: bool = False) -> tuple[str, ...]:
    """The registered checks' names, in column order."""
    return tuple(k for k, c in REGISTRY.items() if c.default or not default_only)


def get_check(name: str) -> Check:
    return REGISTRY[name]
