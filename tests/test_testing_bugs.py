"""handgrad.testing against real-world bugs (issue 16): each item's Function that the old engine got wrong,
reported rightly now, next to a correct counterpart that passes; every hint triggered by one broken Function.

The old engine (handgrad/testing.py before the package) passed or misreported each "old:" case below;
what it said is quoted in the test's docstring.
"""

import subprocess
import sys

import pytest
import torch
from bug_corpus import CORPUS, BiasAdd, Mean, RowDot, RowDotSqueeze, Triple, TripleInPlace, X

from handgrad.testing import HINTS, FunctionCase, check_function, pytest_params
from handgrad.testing.nodes import function_name

ONE = [(X,)]
LEAN = dict(dtypes=(), variants=())

# ---------------------------------------------------------------------------------------------
# the corpus: each broken Function fails its check, with its hint; each correct one passes (pytest cases)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, bad, good, samples, reference, options, check, source", CORPUS, ids=[c[0] for c in CORPUS])
def test_each_realistic_bug_fails_its_check(name, bad, good, samples, reference, options, check, source):
    report = check_function(bad.apply, samples, reference, **options)
    assert check in report.failed_checks(), str(report)
    assert report.hints, "a failure without a likely cause:\n" + str(report)


CORRECT = [FunctionCase(name, good.apply, samples, reference, **options)
           for name, _, good, samples, reference, options, _, _ in CORPUS]


@pytest.mark.parametrize("case", pytest_params(CORRECT))
def test_each_correct_counterpart_passes(case):
    report = case.check()
    assert report.ok and not report.hints


def test_a_failing_pytest_case_carries_the_report_table():
    case = FunctionCase("mean without 1/n", CORPUS[7][1].apply, ONE, torch.mean, **LEAN)
    with pytest.raises(AssertionError) as exc:
        case.check()
    text = str(exc.value)
    assert "| row" in text and "FAIL  (4, 3) float64 | grad" in text and "likely cause: the gradient is 12 times" in text
    assert [p.id for p in pytest_params([case])] == ["mean without 1/n"]


# ---------------------------------------------------------------------------------------------
# 1. check names
# ---------------------------------------------------------------------------------------------


def test_a_misspelled_check_is_refused_before_anything_runs():
    """old: checks={"gradd"} reported "0 checks" and passed a wrong-sign Function."""
    with pytest.raises(ValueError, match=r"unknown check 'gradd'; the checks are grad, gradgrad, .*untouched"):
        check_function(CORPUS[7][1].apply, ONE, torch.mean, checks={"gradd"})


def test_a_check_name_as_a_string_is_that_check_alone():
    """old: checks="gradgrad" also ran grad (a substring test)."""
    report = check_function(Mean.apply, ONE, torch.mean, checks="gradgrad", **LEAN)
    assert report.checks == ["gradgrad"] and {r.check for r in report.results} == {"gradgrad"}


# ---------------------------------------------------------------------------------------------
# 2. the reference never shares an incoming gradient; grad_output untouched
# ---------------------------------------------------------------------------------------------


def test_an_in_place_grad_output_no_longer_corrupts_the_reference_and_is_named():
    """old: grad FAIL "gradients differ from the reference's: hand 3x, reference 9x" (the reference ran on
    the tripled incoming gradient): a factor-of-3 hunt instead of the in-place write."""
    report = check_function(TripleInPlace.apply, ONE, lambda x: 3 * x, dtypes=(torch.float32,), variants=())
    assert report.failed_checks() == {"untouched", "gradgrad"}, str(report)
    assert report[("(4, 3) float64", "grad")].status == "ok"
    assert report[("(4, 3) float32", "grad")].status == "ok"
    assert "writes into its incoming gradient (grad_output 0) in place" in report[("(4, 3) float64", "untouched")].message
    assert check_function(Triple.apply, ONE, lambda x: 3 * x, dtypes=(torch.float32,), variants=()).ok


def test_a_saved_input_written_by_backward_is_named():
    class SquareEatsInput(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * x

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            return x.mul_(2).mul_(grad)  # the bug: 2x computed in the saved input itself

    report = check_function(SquareEatsInput.apply, ONE, torch.square, checks="untouched", **LEAN)
    assert "backward writes into input 0 (saved for backward) in place" in report.failed()[0].message


def test_an_input_written_after_saving_is_named():
    class SaveThenScale(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x.mul_(2).clone()  # the bug: the saved input is changed after saving

        @staticmethod
        def backward(ctx, grad):
            return 2 * grad

    report = check_function(SaveThenScale.apply, ONE, lambda x: 2 * x, checks="untouched", **LEAN)
    assert "forward writes into input 0 in place after saving it for backward" in report.failed()[0].message


# ---------------------------------------------------------------------------------------------
# 3. lower precisions without a reference
# ---------------------------------------------------------------------------------------------


class Legendre4(torch.autograd.Function):
    """P4(x) = (35x⁴ - 30x² + 3) / 8; dP4/dx = (140x³ - 60x) / 8: cancellation near its roots."""

    @staticmethod
    def forward(x):
        x2 = x * x
        return (35 * x2 * x2 - 30 * x2 + 3) / 8

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (140 * x * x * x - 60 * x) / 8


class Legendre4Wrong(Legendre4):
    @staticmethod
    def forward(x):
        x2 = (x * x).to(torch.bfloat16).to(x.dtype) if x.dtype == torch.float16 else x * x
        return (35 * x2 * x2 - 30 * x2 + 3) / 8 + (0.05 if x.dtype == torch.float16 else 0.0)  # the bug: float16 off


ROOTS = [(torch.linspace(-0.99, 0.99, 24, dtype=torch.float64).reshape(4, 6),)]


def test_without_a_reference_lower_precisions_get_the_dtypes_allowance_and_say_so():
    """old: a correct Legendre polynomial failed "values: hand 0.109375, reference 0.0956" in bfloat16."""
    report = check_function(Legendre4.apply, ROOTS, elementwise=True)
    assert report.ok, str(report)
    assert any("compared with the Function's own float64 result" in n for n in report.notes)
    bad = check_function(Legendre4Wrong.apply, ROOTS, elementwise=True)
    assert bad.failed_checks() == {"values"} and set(bad.statuses("values").values()) >= {"FAIL"}, str(bad)
    assert all("float16" in r.row for r in bad.failed())


# ---------------------------------------------------------------------------------------------
# 5. digits, the forward alone, ctx attributes
# ---------------------------------------------------------------------------------------------


def test_float64_mismatches_show_enough_digits_and_both_errors():
    """old: "hand 0.58484126, reference 0.58484126 (off by 6.29x the tolerance)"."""

    class AlmostIdentity(Triple):
        @staticmethod
        def forward(x):
            return x * (1 + 1e-9)

        @staticmethod
        def backward(ctx, grad):
            return grad * (1 + 1e-9)

    report = check_function(AlmostIdentity.apply, ONE, lambda x: x.clone(), checks="values", **LEAN)
    message = report.failed()[0].message
    hand = message.split("hand ")[1].split(",")[0]
    reference = message.split("reference ")[1].split(" ")[0]
    assert hand != reference and "abs error" in message and "rel error" in message, message


def test_a_backward_that_raises_leaves_the_values_column_alone():
    """old: a backward failure also marked the forward's values column ERROR."""

    class BackwardRaises(Triple):
        @staticmethod
        def backward(ctx, grad):
            raise RuntimeError("deliberately broken backward")

    report = check_function(BackwardRaises.apply, ONE, lambda x: 3 * x, dtypes=(torch.float32,), variants=())
    assert set(report.statuses("values").values()) == {"ok"}, str(report)
    assert report[("(4, 3) float64", "grad")].status == "ERROR"


def test_tensors_kept_on_ctx_fail_the_saved_column_with_the_reason():
    """old: the saved column read "ok 0/48 B" for tensors kept as ctx attributes."""
    from bug_corpus import Exp, ExpCtxOutput

    report = check_function(ExpCtxOutput.apply, ONE, torch.exp, checks="saved", **LEAN)
    assert "keeps tensors as ctx attributes (ExpCtxOutput: ctx.y)" in report.failed()[0].message
    assert "escape saved-tensor hooks" in report.failed()[0].message
    assert check_function(Exp.apply, ONE, torch.exp, checks="saved", **LEAN).ok
    assert check_function(Exp.apply, ONE, checks="saved", **LEAN)[("(4, 3) float64", "saved")].cell() == "ok 96 B"


# ---------------------------------------------------------------------------------------------
# 6. batch sizes
# ---------------------------------------------------------------------------------------------


def test_a_batch_of_one_is_its_own_row_and_catches_the_squeeze_bug():
    """old: rows float64, transposed, strided only: the squeeze() bug passed every check."""
    options = dict(dtypes=(), variants=("batch",))
    report = check_function(RowDotSqueeze.apply, [(X, X[0])], torch.matmul, **options)
    assert {r.row for r in report.failed()} == {"(4, 3) (3,) batch 1"}, str(report)
    assert any("squeeze" in h for h in report.hints)
    assert check_function(RowDot.apply, [(X, X[0])], torch.matmul, **options).ok
    one = check_function(RowDot.apply, [(X[:1], X[0])], torch.matmul, **options)
    assert one.ok and "(1, 3) (3,) batch 3" in one.rows


def test_elementwise_functions_get_no_batch_rows():
    report = check_function(Triple.apply, ONE, lambda x: 3 * x, elementwise=True, dtypes=())
    assert not any("batch" in row for row in report.rows)


# ---------------------------------------------------------------------------------------------
# 7. hints: each one triggered by one broken Function
# ---------------------------------------------------------------------------------------------


def _corpus(name):
    entry = next(c for c in CORPUS if c[0] == name)
    return check_function(entry[1].apply, entry[3], entry[4], **entry[5])


def _report_with(check, status="FAIL", row="(4, 3) float64", message="", **facts):
    from handgrad.testing import Report, Result

    report = Report("t", [row], [check], [Result(row, check, status, message=message, facts=facts)])
    return report


class BadJvp(Triple):
    @staticmethod
    def jvp(ctx, tx):
        return 2 * tx  # the bug: 2, where backward (rightly) says 3


class NoneForUndefined(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.set_materialize_grads(False)
        return x * 2, x * 3

    @staticmethod
    def backward(ctx, ga, gb):
        return ga * 2 + gb * 3  # the bug: ga or gb may be None


class Greedy(BiasAdd):
    @staticmethod
    def backward(ctx, grad):
        return grad, grad.sum(0)  # the bug: both, whatever needs_input_grad says


class ViewForward(Triple):
    @staticmethod
    def forward(x):
        return (3 * x.view(-1)).view(x.shape)  # the bug: .view assumes contiguous memory


class Hoarder(Triple):
    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0], output)  # the bug: saved and never used


HINT_CASES = {
    "unsummed broadcast": lambda: _corpus("bias gradient unsummed"),
    "constant factor": lambda: _corpus("mean without 1/n"),
    "not differentiable": lambda: _corpus("detached backward"),
    "overflow at extremes": lambda: _corpus("sigmoid backward overflows"),
    "grad_output in place": lambda: _corpus("grad_output *= 3"),
    "input in place": lambda: _corpus("x *= 2 in forward"),
    "batch of one": lambda: check_function(RowDotSqueeze.apply, [(X, X[0])], torch.matmul, dtypes=(), variants=("batch",)),
    "memory layout": lambda: check_function(ViewForward.apply, ONE, lambda x: 3 * x, dtypes=(), variants=("transposed",)),
    "lower precision only": lambda: check_function(Legendre4Wrong.apply, ROOTS, elementwise=True),
    "needs_input_grad": lambda: check_function(Greedy.apply, [(X, X[0])], torch.add, **LEAN),
    "ctx attribute": lambda: _corpus("ctx.y output"),
    "saves more": lambda: check_function(Hoarder.apply, ONE, lambda x: 3 * x, **LEAN),
    "autocast": lambda: check_function(_amp_broken, [(X, X[0])], torch.matmul,
                                       dtypes=(torch.float32,), variants=()),
    "undefined gradient": lambda: check_function(NoneForUndefined.apply, ONE, lambda x: (2 * x, 3 * x), **LEAN),
    "jvp": lambda: check_function(BadJvp.apply, ONE, lambda x: 3 * x, **LEAN),
}


def _amp_broken(x, w):
    class NoCast(RowDot):
        @staticmethod
        def backward(ctx, grad):
            x, w = ctx.saved_tensors
            return grad.unsqueeze(-1) * w, grad @ x  # the bug: grad stays in the autocast dtype (matmul refuses)

    return NoCast.apply(x, w)


@pytest.mark.parametrize("hint", HINTS, ids=[h.name for h in HINTS])
def test_each_hint_is_triggered_by_one_broken_function(hint):
    report = HINT_CASES[hint.name]()
    assert hint.when(report), str(report)
    assert any(line.startswith("likely cause: " + hint.text.split("{")[0][:30]) for line in str(report).splitlines())


def test_every_hint_has_a_case():
    assert set(HINT_CASES) == {h.name for h in HINTS}


def test_a_correct_function_gets_no_hint():
    assert not check_function(Triple.apply, ONE, lambda x: 3 * x).hints


# ---------------------------------------------------------------------------------------------
# 8. misuse: one sentence each
# ---------------------------------------------------------------------------------------------


def test_the_class_instead_of_apply_is_one_sentence():
    """old: 51 identical lines."""
    with pytest.raises(TypeError, match=r"^check_function: fn is the class Triple; pass Triple.apply"):
        check_function(Triple, ONE)


def test_a_module_as_function_is_one_sentence():
    """old: a raw AttributeError."""
    with pytest.raises(TypeError, match=r"function= takes torch.autograd.Function classes; Linear is not one"):
        check_function(Triple.apply, ONE, function=torch.nn.Linear)


def test_a_dotted_reference_and_dtype_names_are_resolved():
    """old: reference="torch.exp" gave 21 x "'str' object is not callable"; dtypes=["float16"] "Invalid device string"."""
    from bug_corpus import Exp

    report = check_function(Exp.apply, ONE, "torch.exp", dtypes=["float16"], variants=())
    assert report.ok and "(4, 3) float16" in report.rows, str(report)
    with pytest.raises(ValueError, match="int8 is not a floating-point torch dtype"):
        check_function(Exp.apply, ONE, dtypes=["int8"])


def test_mismatched_sample_shapes_name_the_sample_once():
    """old: 52 identical torch errors."""
    report = check_function(torch.add, [(X, torch.ones(5, dtype=torch.float64))])
    assert len(report.results) == 1 and report.results[0].status == "ERROR"
    assert "fn raised on sample '(4, 3) (5,)'" in report.results[0].message


def test_a_reference_of_another_shape_is_said_once():
    """old: 20 x "Mismatch in shape"."""
    report = check_function(Triple.apply, ONE, lambda x: (3 * x).sum())
    assert len(report.results) == 1 and "the reference disagrees with fn" in report.results[0].message


def test_a_sample_with_nothing_to_differentiate_fails_and_says_so():
    """old: an integer-only sample reported ok with nothing checked."""
    report = check_function(lambda k: k * 2, [(torch.arange(3),)])
    assert not report.ok and "nothing was checked" in report.results[0].message


# ---------------------------------------------------------------------------------------------
# issue 19: titles do not depend on Function.apply.__qualname__
# ---------------------------------------------------------------------------------------------


def test_titles_name_the_function_class_whatever_apply_qualname_says():
    assert function_name(Triple.apply) == "Triple.apply"
    assert function_name(torch.sin) == "sin"
    assert "handgrad.testing: Triple.apply on cpu" in check_function(Triple.apply, ONE, **LEAN).title


# ---------------------------------------------------------------------------------------------
# issue 18: the command line refuses what is not a Function in one sentence, exit 2
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec, shapes, words", [
    ("torch.nn:Linear", ["3"], "is a torch.nn.Module, not an autograd.Function"),
    ("collections:OrderedDict", ["3"], "is a class, not an autograd.Function"),
    ("my_ops.py", ["3"], "names a file but not what to take from it; write my_ops.py:Name"),
    ("bug_corpus:RowDot", ["4,3"], "takes 2 tensor argument(s) and --shape gave 1"),
], ids=["module", "plain class", "file without :Name", "too few shapes"])
def test_cli_refuses_in_one_sentence_and_exit_2(spec, shapes, words, tmp_path):
    (tmp_path / "my_ops.py").write_text("")
    done = subprocess.run([sys.executable, "-m", "handgrad.check", "--function", spec, "--shape", *shapes],
                          capture_output=True, text=True, cwd=tmp_path,
                          env={**__import__("os").environ, "PYTHONPATH": ":".join(sys.path)})
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1 and words in done.stderr, done.stderr
    assert "ERROR" not in done.stdout
