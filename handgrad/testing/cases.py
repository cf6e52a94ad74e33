"""pytest integration: a list of Functions to check, as parametrized test cases with the report as the failure.

>>> from handgrad.testing import FunctionCase, pytest_params
>>> CASES = [FunctionCase("softplus", MySoftplus.apply, [(x,)], torch.nn.functional.softplus, elementwise=True)]
>>> @pytest.mark.parametrize("case", pytest_params(CASES))
... def test_function(case):
...     case.check()          # AssertionError carrying the whole report table when anything fails
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

__all__ = ["FunctionCase", "pytest_params"]


class FunctionCase:
    """One Function to check: an id for the test, and :func:`check_function`'s arguments."""

    def __init__(self, id: str, fn: Callable, samples, reference: Callable | str | None = None, **options):  # noqa: A002
        self.id, self.fn, self.samples, self.reference, self.options = id, fn, samples, reference, options

    def check(self):
        """:func:`assert_function` on this case: the report, or ``AssertionError`` with the report's table."""
        from .api import assert_function

        return assert_function(self.fn, self.samples, self.reference, **self.options)

    def __repr__(self) -> str:
        return f"FunctionCase({self.id!r})"


def pytest_params(cases: Iterable[FunctionCase], marks=()) -> list:
    """``pytest.param(case, id=case.id)`` for each case (``marks`` on every one), for ``@pytest.mark.parametrize``."""
    import pytest

    return [pytest.param(c, id=c.id, marks=marks) for c in cases]
