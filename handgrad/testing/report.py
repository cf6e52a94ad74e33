"""The report: one :class:`Result` per (row, check) cell, the table, the details and the likely causes.

Also the one Markdown table renderer of handgrad (:func:`table`), which the benchmarks use too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Result", "Report", "Skip", "Fail", "table", "first_line"]


class Skip(Exception):
    """Raised by a check that found nothing to check: the cell is a skip, with this reason."""


class Fail(Exception):
    """Raised by a check that found a problem: a FAIL cell with this message and the error measured.

    ``facts`` are what the hints read (e.g. ``{"factor": 2.0}`` for a gradient off by a constant factor).
    """

    def __init__(self, message, error=None, **facts):
        super().__init__(message)
        self.error = error
        self.facts = facts


def first_line(exc: BaseException) -> str:
    """'TypeError: the first line of the message', for an ERROR cell or a one-sentence error."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".strip()


def table(header: list[str], body: list[list]) -> str:
    """A Markdown table, each column as wide as its widest cell (floats as 4 significant digits)."""
    show = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    header, body = [show(h) for h in header], [[show(v) for v in line] for line in body]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    fmt = lambda line: "| " + " | ".join(c.ljust(w) for c, w in zip(line, widths)) + " |"  # noqa: E731
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([fmt(header), rule, *(fmt(line) for line in body)])


@dataclass
class Result:
    """One cell: a check on one row. ``status`` is ok, FAIL, ERROR or skip."""

    row: str
    check: str
    status: str
    error: float | None = None  # the largest error found, where the check measures one
    message: str = ""
    shown: str | None = None  # what the cell shows after the status, when not the error
    facts: dict = field(default_factory=dict)  # what a failing check measured, for the hints

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
    """Every result of one :func:`check_function` call; ``str(report)`` is the table, the details and the hints."""

    title: str
    rows: list[str]
    checks: list[str]
    results: list[Result] = field(default_factory=list)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)  # how the rows were judged, where that is not obvious
    hints: list[str] = field(default_factory=list)  # the likely cause of each failure pattern found

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
        return table(["row", *self.checks], [[row, *(cells.get((row, c), "-") for c in self.checks)] for row in self.rows])

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
        notes = [f"note  {n}" for n in self.notes]
        hints = [f"likely cause: {h}" for h in self.hints]
        return "\n".join([self.title, self.table(), self.summary(), *self.details(), *notes, *hints])
