"""Where torch's own behaviour differs between releases: handgrad keeps one behaviour, and the tests know.

Each named exception (docs/compatibility.md) has three tests here: handgrad's behaviour is the
documented one on every release; the probe in :mod:`handgrad.compat` names the running torch's
behaviour correctly; and the comparison that allows for it still catches a real mistake.
"""

import torch
import torch.autograd.forward_ad as fwAD

from handgrad import compat
from handgrad import functions as fn
from handgrad.check import CASES, run_check
from handgrad.functional import get_ops

HAND, NATIVE = get_ops("hand"), get_ops("native")


def _tie_inputs(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(-3, 4, (n,), generator=g).to(torch.float64)
    b = torch.where(torch.rand(n, generator=g, dtype=torch.float64) < 0.5, a, a + 1)  # about half ties
    ta, tb = torch.randn(n, generator=g, dtype=torch.float64), torch.randn(n, generator=g, dtype=torch.float64)
    return a, b, ta, tb


def _jvp(op, a, b, ta, tb):
    with fwAD.dual_level():
        return fwAD.unpack_dual(op(fwAD.make_dual(a, ta), fwAD.make_dual(b, tb))).tangent


def _share(a, b):
    return torch.where(a > b, 1.0, torch.where(a == b, 0.5, 0.0)).to(torch.float64)


def test_hand_maximum_jvp_at_ties_is_the_weighted_rule_on_every_release():
    a, b, ta, tb = _tie_inputs()
    s = _share(a, b)
    assert torch.equal(_jvp(HAND.maximum, a, b, ta, tb), s * ta + (1 - s) * tb)


def test_the_probe_names_the_rounding_of_the_running_torch():
    a, b, ta, tb = _tie_inputs()
    s = _share(a, b)
    native = _jvp(torch.maximum, a, b, ta, tb)
    weighted, difference = s * ta + (1 - s) * tb, tb + s * (ta - tb)
    assert not torch.equal(weighted, difference), "these inputs cannot tell the two rules apart"
    expected = {"weighted": weighted, "difference": difference}[compat.maximum_tie_jvp_rule()]
    assert torch.equal(native, expected)


def test_the_tie_rows_are_exact_where_torch_rounds_like_handgrad():
    ties = [c for c in CASES if c.op == "maximum" and c.label.startswith("ties")]
    assert len(ties) == 2
    exact = compat.maximum_tie_jvp_rule() == "weighted"
    for case in ties:
        assert (case.tolerance == (0.0, 0.0)) == exact
        assert run_check(case, "native64").ok and run_check(case, "native32").ok


class _WrongTieShare(fn.Maximum):
    """A jvp that gives a at a tie a share of 0.6 instead of ½: what the tie rows must still catch."""

    @staticmethod
    def _share_of_a(a, b, dtype):
        return (a > b).to(dtype) + 0.6 * (a == b).to(dtype)

    @staticmethod
    def jvp(ctx, ta, tb):
        a, b = ctx.saved_tensors
        s = _WrongTieShare._share_of_a(a, b, ta.dtype)
        return ta * s + tb * (1 - s)


def test_the_tie_rows_catch_a_wrong_share_whatever_their_tolerance():
    from types import SimpleNamespace

    ops = SimpleNamespace(**{**vars(HAND), "maximum": _WrongTieShare.apply})
    for case in (c for c in CASES if c.op == "maximum" and c.label.startswith("ties")):
        result = run_check(case, "native64", hand=ops)
        assert result.status == "FAIL" and "jvp" in result.message, result


# ---------------------------------------------------------------------------------------------
# torch.compile: Dynamo's cache must not carry one Function's verdict over to another
# ---------------------------------------------------------------------------------------------


class _WithJvp(torch.autograd.Function):
    @staticmethod
    def forward(x):
        return 2 * x

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, grad):
        return 2 * grad

    @staticmethod
    def jvp(ctx, tangent):
        return 2 * tangent


class _WithoutJvp(_WithJvp):
    jvp = torch.autograd.Function.jvp


def _compiles(fn, x):
    try:
        torch.compile(fn, fullgraph=True, backend="aot_eager")(x)
    except Exception as exc:  # noqa: BLE001 - Dynamo's refusal has a different class on each release
        return str(exc).splitlines()[0]
    return "ok"


def test_a_compiled_child_does_not_let_its_parent_with_jvp_pass():
    x = torch.randn(3, requires_grad=True)
    assert _compiles(compat.compilable(_WithoutJvp.apply), x) == "ok"
    # NOTE: torch.compile(_WithJvp.apply) here passed on torch 2.10-2.13 (the child's cached graph)
    assert "jvp" in _compiles(compat.compilable(_WithJvp.apply), x)


def test_compilable_leaves_other_callables_alone_and_keeps_the_result():
    def plain(x):
        return x * 3

    assert compat.compilable(plain) is plain
    x = torch.randn(3)
    torch.testing.assert_close(compat.compilable(_WithoutJvp.apply)(x), 2 * x, rtol=0, atol=0)
