"""handgrad.testing: correct Functions pass every check, and each broken one fails exactly its own.

The Functions are written here, not taken from handgrad: a softplus (one input, jvp, vmap rule)
and z = x * w + b with broadcasting (three inputs). Each broken one differs from its correct
parent in one deliberate mistake, and the test names the single check that must catch it.
"""

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from handgrad import functions as hfn
from handgrad.functional import cross_entropy, maximum, relu
from handgrad.testing import CHECKS, TOLERANCES, assert_function, check_function, cli_function

# ---------------------------------------------------------------------------------------------
# correct Functions
# ---------------------------------------------------------------------------------------------


class Softplus(torch.autograd.Function):
    """y = log(1 + e^x) = max(x, 0) + log1p(e^-|x|); dy/dx = sigmoid(x)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        return x.clamp_min(0) + torch.log1p(torch.exp(-x.abs()))

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])
        ctx.save_for_forward(inputs[0])

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * torch.sigmoid(x)

    @staticmethod
    def jvp(ctx, tx):
        (x,) = ctx.saved_tensors
        return tx * torch.sigmoid(x)


def _sum_to(grad, shape):
    return grad if grad.shape == shape else grad.sum_to_size(shape)


class Bilinear(torch.autograd.Function):
    """z = x * w + b with broadcasting; dz/dx = w, dz/dw = x, dz/db = 1, each summed to its input's shape."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, w, b):
        return x * w + b

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, w, b = inputs
        ctx.save_for_backward(x, w)
        ctx.save_for_forward(x, w)
        ctx.shapes = (x.shape, w.shape, b.shape)
        ctx.out_shape = output.shape

    @staticmethod
    def _grads(ctx, grad):
        x, w = ctx.saved_tensors
        return grad * w, grad * x, grad

    @staticmethod
    def backward(ctx, grad):
        full = Bilinear._grads(ctx, grad)
        return tuple(_sum_to(g, s) if need else None for g, s, need in zip(full, ctx.shapes, ctx.needs_input_grad))

    @staticmethod
    def jvp(ctx, tx, tw, tb):
        x, w = ctx.saved_tensors
        out = torch.zeros(ctx.out_shape, dtype=x.dtype, device=x.device)
        for term in (None if tx is None else tx * w, None if tw is None else x * tw, tb):
            if term is not None:
                out = out + term
        return out


def bilinear(x, w, b):
    return x * w + b


# ---------------------------------------------------------------------------------------------
# broken ones: one mistake each
# ---------------------------------------------------------------------------------------------


class WrongSign(Softplus):
    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return -grad * torch.sigmoid(x)


class Unreduced(Bilinear):
    @staticmethod
    def backward(ctx, grad):
        # the mistake: w's and b's gradients are returned at the output's shape, not summed back
        return tuple(g if need else None for g, need in zip(Bilinear._grads(ctx, grad), ctx.needs_input_grad))


class Detached(Softplus):
    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * torch.sigmoid(x.detach())  # the mistake: first order right, second order lost


class WrongJvp(Softplus):
    @staticmethod
    def jvp(ctx, tx):
        (x,) = ctx.saved_tensors
        return tx * torch.sigmoid(-x)


class Greedy(Bilinear):
    @staticmethod
    def backward(ctx, grad):
        # the mistake: ctx.needs_input_grad ignored, every gradient computed
        return tuple(_sum_to(g, s) for g, s in zip(Bilinear._grads(ctx, grad), ctx.shapes))


class Upcast(Softplus):
    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad.double() * torch.sigmoid(x.double())  # the mistake: never cast back to x's dtype


class NanEater(Softplus):
    @staticmethod
    def forward(x):
        # the mistake: a shortcut to 0 for x < -30, written so that NaN (x >= -30 is False) becomes 0
        return torch.where(x >= -30, x.clamp_min(0) + torch.log1p(torch.exp(-x.abs())), 0.0)


class Hoarder(Softplus):
    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0], output)  # the mistake: the output is saved and never used
        ctx.save_for_forward(inputs[0])

    @staticmethod
    def backward(ctx, grad):
        x, _ = ctx.saved_tensors
        return grad * torch.sigmoid(x)

    @staticmethod
    def jvp(ctx, tx):
        (x,) = ctx.saved_for_forward
        return tx * torch.sigmoid(x)


_gen = torch.Generator().manual_seed(0)
X = torch.randn(3, 4, generator=_gen, dtype=torch.float64)
W = torch.randn(4, generator=_gen, dtype=torch.float64)
B = torch.randn(1, generator=_gen, dtype=torch.float64)
ONE = [(X,)]
THREE = [(X, W, B)]


def _softplus(cls, **kw):
    return check_function(cls.apply, ONE, F.softplus, elementwise=True, **kw)


def _bilinear(cls, **kw):
    return check_function(cls.apply, THREE, bilinear, elementwise=True, **kw)


# ---------------------------------------------------------------------------------------------
# correct: every check runs and passes
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("run, cls", [(_softplus, Softplus), (_bilinear, Bilinear)], ids=["softplus", "bilinear"])
def test_correct_functions_pass_every_check(run, cls, device):
    report = run(cls, device=device)
    assert report.ok, str(report)
    assert not [r for r in report.results if r.status == "skip"], str(report)
    ran = {r.check for r in report.results}
    assert ran == set(CHECKS) - {"compile"}
    rows = " | ".join(report.rows)
    for variant in ("float64", "transposed", "strided", "0-d", "empty", "float32", "bfloat16", "float16",
                    "extremal float64", "extremal float16"):
        assert variant in rows


# ---------------------------------------------------------------------------------------------
# broken: exactly the right check fails, with a message a person can act on
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "run, cls, check, words",
    [
        (_softplus, WrongSign, "grad", ["(3, 4) float64", "d out[0, 0] / d input 0[0, 0]", "hand -0.82", "numerical 0.82"]),
        (_bilinear, Unreduced, "shapes", ["Unreduced.backward gradient 1 has shape (3, 4), its input (4,)",
                                          "gradient 2 has shape (3, 4), its input (1,)", "sums it silently"]),
        (_softplus, Detached, "gradgrad", ["d grad of input 0[", "hand 0,", "once_differentiable"]),
        (_softplus, WrongJvp, "fwd_ad", ["jvp of out[", "hand", "numerical"]),
        (_bilinear, Greedy, "needs_grad", ["Greedy.backward returns a gradient where ctx.needs_input_grad is False",
                                           "inputs 0, 1, 2"]),
        (_softplus, Upcast, "shapes", ["float32", "gradient 0 has dtype torch.float64, its input torch.float32"]),
        (_softplus, NanEater, "values", ["extremal float64", "out[0, 0]: hand 0, reference nan where input 0 = nan"]),
        (_softplus, Hoarder, "saved", ["saves 192 bytes for backward in 2 storages, the reference 96 bytes in 1"]),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else None,
)
def test_a_broken_function_fails_exactly_its_check(run, cls, check, words):
    report = run(cls)
    assert report.failed_checks() == {check}, str(report)
    text = str(report)
    for word in words:
        assert word in text, f"{word!r} not in\n{text}"
    assert all(r.status == "FAIL" for r in report.failed()), "a broken Function is a FAIL, not an ERROR"


def test_a_missing_reduction_passes_gradcheck_everywhere_and_fails_only_the_shape_check():
    report = _bilinear(Unreduced)
    assert set(report.statuses("grad").values()) == {"ok"}
    assert report[("(3, 4) (4,) (1,) float64", "shapes")].status == "FAIL"


# ---------------------------------------------------------------------------------------------
# skips come from declarations, never from failures
# ---------------------------------------------------------------------------------------------


class OnceSoftplus(Softplus):
    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * torch.sigmoid(x)


class PlainSoftplus(torch.autograd.Function):
    """The old ctx-first style, without jvp or a vmap rule."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return Softplus.forward(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * torch.sigmoid(x)


def test_once_differentiable_skips_gradgrad_and_says_why():
    report = _softplus(OnceSoftplus, dtypes=(), variants=())
    assert report.ok, str(report)
    assert set(report.statuses("gradgrad").values()) == {"skip"}
    assert "OnceSoftplus.backward is declared @once_differentiable" in str(report)


def test_no_jvp_and_no_vmap_rule_skip_those_checks_and_the_rest_runs_on_a_ctx_first_function():
    report = _softplus(PlainSoftplus, dtypes=(torch.float32,), variants=())
    assert report.ok, str(report)
    assert set(report.statuses("fwd_ad").values()) == {"skip"}
    assert set(report.statuses("batched").values()) == {"skip"}
    assert "PlainSoftplus defines no jvp" in str(report)
    assert "declares neither generate_vmap_rule nor vmap" in str(report)
    for check in ("grad", "gradgrad", "undef", "shapes", "needs_grad", "values", "saved"):
        assert "ok" in report.statuses(check).values(), check


def test_function_argument_overrides_what_the_graph_shows():
    report = check_function(PlainSoftplus.apply, ONE, F.softplus, function=Softplus, dtypes=(), variants=())
    # Softplus declares jvp and a vmap rule, so fwd_ad and batched run (not skip) on the ctx-first
    # PlainSoftplus, which supports neither: declarations decide what runs, results what passes
    assert report.failed_checks() == {"fwd_ad", "batched"}


# ---------------------------------------------------------------------------------------------
# rows, arguments, errors
# ---------------------------------------------------------------------------------------------


class Flat(Softplus):
    """Correct values, but ``view`` only works on contiguous memory."""

    @staticmethod
    def forward(x):
        return Softplus.forward(x.view(-1)).view(x.shape)


def test_transposed_and_strided_rows_are_really_non_contiguous():
    report = check_function(Flat.apply, [torch.randn(3, 4, dtype=torch.float64)], F.softplus, dtypes=(),
                            variants=("transposed", "strided"))
    failing = {r.row for r in report.failed()}
    assert failing == {"(3, 4) transposed", "(3, 4) strided"}, str(report)
    assert all(r.status == "ERROR" and "view" in r.message for r in report.failed())


class NeedsADimension(Softplus):
    @staticmethod
    def forward(x):
        if x.dim() == 0:
            raise ValueError("needs at least one dimension")
        return Softplus.forward(x)


def test_a_check_that_raises_is_an_error_cell_and_the_report_goes_on():
    report = _softplus(NeedsADimension, dtypes=())
    errors = report.failed()
    assert errors and {r.row for r in errors} == {"(3, 4) 0-d"}
    assert all(r.status == "ERROR" and r.message == "ValueError: needs at least one dimension" for r in errors)
    assert "ERROR" in report.table() and not report.ok
    assert report[("(3, 4) float64", "grad")].status == "ok"


class ScaledSoftplus(torch.autograd.Function):
    """y = softplus(beta x) / beta, beta a Python number; dy/dx = sigmoid(beta x)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, beta):
        return Softplus.forward(beta * x) / beta

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, ctx.beta = inputs
        ctx.save_for_backward(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * torch.sigmoid(ctx.beta * x), None


def test_numbers_and_integer_targets_pass_through_untouched():
    report = check_function(ScaledSoftplus.apply, [(X, 2.0)], lambda x, beta: F.softplus(x, beta=beta),
                            elementwise=True, dtypes=(torch.float32,))
    assert report.ok, str(report)
    assert "(3, 4) 2.0 float64" in report.rows

    gen = torch.Generator().manual_seed(1)
    logits, target = torch.randn(5, 4, generator=gen, dtype=torch.float64), torch.randint(0, 4, (5,), generator=gen)
    report = check_function(cross_entropy, [(logits, target)], F.cross_entropy, function=hfn.CrossEntropy,
                            dtypes=(torch.float32,), variants=())
    assert report.ok, str(report)
    assert "(5, 4) int64(5,) float64" in report.rows


def test_without_a_reference_the_lower_precisions_are_held_to_the_float64_result():
    report = check_function(Softplus.apply, ONE, elementwise=True)
    assert report.ok, str(report)
    assert not any("extremal" in row for row in report.rows)
    assert report[("(3, 4) bfloat16", "values")].status == "ok"
    assert report[("(3, 4) float64", "values")].message == "no reference to compare with"


def test_samples_must_be_a_list_of_argument_tuples():
    with pytest.raises(TypeError, match="wrap them in a list"):
        check_function(Softplus.apply, (X,))
    with pytest.raises(ValueError, match="no samples"):
        check_function(Softplus.apply, [])


def test_assert_function_raises_with_the_table():
    assert_function(Softplus.apply, ONE, F.softplus, dtypes=(), variants=())
    with pytest.raises(AssertionError) as exc:
        assert_function(WrongSign.apply, ONE, F.softplus, dtypes=(), variants=())
    assert "| row" in str(exc.value) and "FAIL  (3, 4) float64 | grad" in str(exc.value)


def test_compile_check_is_off_by_default_and_catches_what_dynamo_refuses():
    class NoJvp(Bilinear):
        jvp = torch.autograd.Function.jvp

    options = dict(dtypes=(), variants=(), compile="aot_eager")
    assert "compile" not in {r.check for r in _bilinear(Bilinear, dtypes=(), variants=()).results}
    report = _bilinear(NoJvp, **options)
    assert report.ok and report.statuses("compile") == {"(3, 4) (4,) (1,) float64": "ok"}, str(report)
    # NOTE: torch 2.14's Dynamo refuses a Function with jvp (see DESIGN.md): that is what users must hear
    report = _bilinear(Bilinear, **options)
    assert report.failed_checks() == {"compile"}
    assert "jvp" in report.failed()[0].message


# ---------------------------------------------------------------------------------------------
# the command line
# ---------------------------------------------------------------------------------------------

def test_cli_checks_a_function_from_a_file(user_ops_file, capsys):
    path = user_ops_file
    argv = ["--function", f"{path}:MySoftplus", "--reference", "torch.nn.functional.softplus", "--shape", "4,3",
            "--elementwise", "--dtypes", "float32"]
    assert cli_function(argv) == 0
    out = capsys.readouterr().out
    assert "MySoftplus.apply against softplus" in out and "0 failed, 0 errors" in out
    assert "MySoftplus defines no jvp" in out

    # the way people run it: a separate process, exit status 1 on a failure
    command = [sys.executable, "-m", "handgrad.testing", "--function", f"{path}:MyAdd", "--reference", "torch.add",
               "--shape", "4,3", "3", "--dtypes", "float32"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAIL  (4, 3) (3,) float64 | shapes: MyAdd.backward gradient 1 has shape (4, 3), its input (3,)" in done.stdout


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--function", "no/such/file.py:F", "--shape", "3"], ["no file 'no/such/file.py'"]),
        (["--function", "torch.nn.functional.nope", "--shape", "3"], ["torch.nn.functional has no attribute 'nope'"]),
        (["--function", "torch.sin", "--shape", "3,x"], ["--shape '3,x' is not a shape"]),
        (["--function", "torch.sin", "--shape", "3", "--dtypes", "int8"], ["int8 is not a floating-point torch dtype"]),
        (["--function", "torch:__version__", "--shape", "3"], ["not a callable"]),
    ],
)
def test_cli_bad_input_is_one_sentence_and_exit_2(argv, words, capsys):
    with pytest.raises(SystemExit) as exc:
        cli_function(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    for word in words:
        assert word in err


# ---------------------------------------------------------------------------------------------
# autocast, extreme incoming gradients, rows as given, no finite differences
# ---------------------------------------------------------------------------------------------


class MatMul(torch.autograd.Function):
    """z = x w; dz/dx = g wᵀ, dz/dw = xᵀ g, each in its input's dtype (under autocast g is bfloat16 or float16)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, w):
        return x @ w

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)
        ctx.save_for_forward(*inputs)

    @staticmethod
    def backward(ctx, grad):
        x, w = ctx.saved_tensors
        need = ctx.needs_input_grad
        return (grad @ w.t()).to(x.dtype) if need[0] else None, (x.t() @ grad).to(w.dtype) if need[1] else None

    @staticmethod
    def jvp(ctx, tx, tw):
        x, w = ctx.saved_tensors
        return (0 if tx is None else tx @ w) + (0 if tw is None else x @ tw)


class AmpMatMul(MatMul):
    @staticmethod
    def backward(ctx, grad):
        x, w = ctx.saved_tensors
        need = ctx.needs_input_grad
        # NOTE: under autocast grad arrives in the autocast dtype, and backward runs outside autocast
        # (as in a real mixed-precision step): compute in the saved inputs' dtype
        grad = grad.to(torch.promote_types(x.dtype, w.dtype))
        return (grad @ w.t()).to(x.dtype) if need[0] else None, (x.t() @ grad).to(w.dtype) if need[1] else None


def test_the_autocast_column_runs_forward_under_autocast_and_backward_outside_as_a_real_step_does():
    # NOTE: MatMul is the docs' LinearFunction pattern: right without autocast, and it raises in a real
    # mixed-precision step (forward under autocast, backward outside); the old column ran backward
    # inside autocast too and passed it
    sample = [(X, torch.randn(4, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64))]
    options = dict(dtypes=(torch.float32,), variants=())
    assert check_function(AmpMatMul.apply, sample, torch.matmul, **options).ok
    report = check_function(MatMul.apply, sample, torch.matmul, **options)
    assert report.failed_checks() == {"shapes_ac"}, str(report)
    message = report[("(3, 4) (4, 2) float32", "shapes_ac")].message
    assert "forward under autocast, backward outside it" in message and "same dtype" in message, message
    assert "(3, 4) (4, 2) float64" not in report.statuses("shapes_ac")  # NOTE: autocast leaves float64 alone
    assert any("autocast dtype" in h for h in report.hints)


def test_extreme_incoming_gradients_show_how_backward_passes_inf_and_nan_on():
    # NOTE: handgrad's own relu, whose documented difference this is: grad · mask, where torch selects
    away = [(X.sign() * (X.abs() + 0.2),)]  # |x| ≥ 0.2, away from the kink
    options = dict(function=hfn.ReLU, dtypes=(torch.float32,), variants=())
    assert check_function(relu, away, F.relu, **options).ok
    report = check_function(relu, away, F.relu, extreme_upstream=True, **options)
    # inf · 0 = NaN where x < 0; torch's relu backward selects, and gives 0 there
    assert report.failed_checks() == {"grad"}, str(report)
    assert "hand nan, reference 0" in report[("(3, 4) float64", "grad")].message


def test_samples_as_given_keep_their_dtypes_and_numerical_false_compares_with_the_reference_only():
    mixed = {"mixed": (X.float(), W.half(), B)}
    report = check_function(Bilinear.apply, mixed, bilinear, as_given=True)
    assert report.rows == ["mixed"]
    ran = {r.check for r in report.results}
    assert ran == {"grad", "fwd_ad", "shapes", "shapes_ac", "needs_grad", "untouched", "values", "saved"}, ran
    # Bilinear never casts its gradients back: on mixed dtypes x's gradient comes back in float64
    assert report.failed_checks() == {"shapes"}, str(report)
    assert "Bilinear.backward gradient 0 has dtype torch.float64, its input torch.float32" in str(report)

    report = check_function(Softplus.apply, {"x": (X,)}, F.softplus, as_given=True)
    assert report.ok and {"gradgrad", "batched", "undef"} <= {r.check for r in report.results}, str(report)

    report = check_function(WrongSign.apply, ONE, F.softplus, numerical=False, dtypes=(), variants=())
    assert report.failed_checks() == {"grad"} and "numerical" not in str(report), str(report)
    assert "grad of input 0[" in report[("(3, 4) float64", "grad")].message and ", reference -" in str(report)


class WinnerTakesAll(hfn.Maximum):
    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        need = ctx.needs_input_grad  # the mistake: a tie gives a the whole gradient, not half
        return grad * (a >= b).to(grad.dtype) if need[0] else None, grad * (a < b).to(grad.dtype) if need[1] else None


def test_a_zero_tolerance_is_exact_and_lower_precisions_are_judged_element_by_element():
    ties = [(torch.tensor([1.0, 2.0, -3.0], dtype=torch.float64), torch.tensor([1.0, 0.0, -3.0], dtype=torch.float64))]
    options = dict(numerical=False, dtypes=(torch.float32,), variants=(), tolerances=dict.fromkeys(TOLERANCES, (0.0, 0.0)))
    assert check_function(maximum, ties, torch.maximum, function=hfn.Maximum, **options).ok  # handgrad's own
    report = check_function(WinnerTakesAll.apply, ties, torch.maximum, **options)
    assert report.failed_checks() == {"grad"} and "off by infx the tolerance rtol=0, atol=0)" in str(report), str(report)

    class NaiveSigmoid(torch.autograd.Function):
        """1 / (1 + e^-x): e^-x overflows float16 below x = -11.1, so the left tail underflows to 0."""

        @staticmethod
        def forward(x):
            return 1 / (1 + torch.exp(-x))

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.save_for_backward(output)

        @staticmethod
        def backward(ctx, grad):
            (y,) = ctx.saved_tensors
            return grad * y * (1 - y)

    tail = [(torch.linspace(-17, -11, 25, dtype=torch.float64),)]
    options = dict(dtypes=(torch.float16,), variants=(), checks=("values",), tolerances={torch.float16: (1e-2, 0.0)})
    # NOTE: float16's own sigmoid is 44% off at -17 (a subnormal); one slack for the whole tensor
    # (4 x 44 = 176x the tolerance) would forgive the 0 at -15.25 too, 100x the tolerance off
    assert check_function(torch.sigmoid, tail, torch.sigmoid, **options).ok
    report = check_function(NaiveSigmoid.apply, tail, torch.sigmoid, **options)
    assert report.failed_checks() == {"values"}, str(report)
    message = report[("(25,) float16", "values")].message
    assert "out[7]: hand 0, reference 2.3823691e-07 (abs error 2.4e-07, rel error 1; off by 100x" in message
