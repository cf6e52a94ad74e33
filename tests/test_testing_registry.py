"""Adding a check is one function: a toy check registered here is a column of every report, and can fail."""

import pytest
import torch

from handgrad.testing import CHECKS, Fail, check_function, check_names, register_check, unregister_check


class Double(torch.autograd.Function):
    """y = 2x; dy/dx = 2."""

    @staticmethod
    def forward(x):
        return 2 * x

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, grad):
        return 2 * grad


class Huge(Double):
    @staticmethod
    def forward(x):
        return 2e300 * x * 1e10  # overflows to inf


X = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def finite():
    @register_check(rows=("exact",))
    def finite(engine, row):
        """Every output is finite on the float64 rows."""
        outs = engine.parity(row)[0].outs
        worst = max(float(o.abs().max()) for o in outs)
        if not all(bool(o.isfinite().all()) for o in outs):
            raise Fail("an output is not finite")
        return worst

    yield "finite"
    unregister_check("finite")


def test_a_registered_check_is_a_column_of_the_report(finite):
    assert finite in check_names() and finite not in CHECKS
    report = check_function(Double.apply, [(X,)], dtypes=(torch.float32,), variants=())
    assert report.checks[-1] == "compile" or finite in report.checks
    assert finite in report.table().splitlines()[0]
    assert report.statuses(finite) == {"(3, 4) float64": "ok"}  # rows=("exact",): not on the float32 row
    assert report[("(3, 4) float32", "grad")].status == "ok"


def test_a_registered_check_can_fail_and_be_chosen_alone(finite):
    report = check_function(Huge.apply, [(X,)], checks=finite, dtypes=(), variants=())
    assert report.checks == [finite] and report.failed_checks() == {finite}
    assert "an output is not finite" in str(report)


def test_unregistered_checks_are_gone_and_unknown_row_kinds_refused():
    assert "finite" not in check_names()
    with pytest.raises(ValueError, match="unknown row kind"):
        register_check(rows=("exactly",))(lambda engine, row: None)
