"""handgrad.testing: correct Functions pass every check, and each broken one fails exactly its own.

The Functions are written here, not taken from handgrad: a softplus (one input, jvp, vmap rule)
and z = x * w + b with broadcasting (three inputs). Each broken one differs from its correct
parent in one deliberate mistake, and the test names the single check that must catch it.
"""

import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from handgrad import functions as hfn
from handgrad.functional import cross_entropy
from handgrad.testing import CHECKS, assert_function, check_function, cli_function

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

USER_FILE = textwrap.dedent('''
    import torch

    class MySoftplus(torch.autograd.Function):
        @staticmethod
        def forward(x):
            return x.clamp_min(0) + torch.log1p(torch.exp(-x.abs()))

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.save_for_backward(inputs[0])

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            return grad * torch.sigmoid(x)

    class MyAdd(torch.autograd.Function):
        @staticmethod
        def forward(a, b):
            return a + b

        @staticmethod
        def setup_context(ctx, inputs, output):
            pass

        @staticmethod
        def backward(ctx, grad):
            return grad, grad  # b's gradient is not summed back to b's shape
''')


def test_cli_checks_a_function_from_a_file(tmp_path, capsys):
    path = tmp_path / "user_ops.py"
    path.write_text(USER_FILE)
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
