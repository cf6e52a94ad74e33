"""The gradient-check matrix: every column of handgrad.check over every row of its table, run by handgrad.testing."""

import subprocess
import sys

import pytest
import torch

from handgrad import functions as fn
from handgrad.check import CASES, COLUMNS, run_check
from handgrad.functional import OP_NAMES


@pytest.mark.parametrize("check", list(COLUMNS))
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_matrix(case, check, device):
    result = run_check(case, check, device)
    if result.status == "skip":
        pytest.skip(result.message)
    assert result.status == "ok", f"{case.name} {check}: {result.status} {result.message}"


def test_every_op_has_rows_for_every_kind_of_input():
    ops = {c.op for c in CASES}
    assert ops == set(OP_NAMES)
    labels = {c.label for c in CASES}
    for needed in ["0-d", "empty", "vector", "matrix", "3-d", "(2,1)x(2,)", "(1,3,2)x(3,2)",
                   "(3,1,2)x(1,3,2)", "tensor x number", "transposed", "strided x broadcast",
                   "matrix, no bias", "3-d batch", "(0,1)x(3,)", "(1,)x(0,)", "0-d x empty", "empty (3,0)",
                   "0 features", "0 features, no bias", "0 outputs", "3-d, 0 rows", "all sizes 0",
                   "0 samples", "0 samples, 0 classes", "one empty"]:
        assert needed in labels


def test_transposed_and_strided_rows_really_are_non_contiguous():
    for case in CASES:
        if "transposed" in case.label or "strided" in case.label:
            gen = torch.Generator().manual_seed(0)
            inputs = case.make(torch.float64, "cpu", gen)
            assert any(isinstance(x, torch.Tensor) and not x.is_contiguous() for x in inputs), case.name


def test_check_report_runs_and_exits_zero(capsys):
    from handgrad.check import main

    assert main(["--op", "relu", "affine"]) == 0
    out = capsys.readouterr().out
    assert "| relu" in out and "| affine" in out and "0 failed" in out


def test_check_report_rejects_unknown_op_and_missing_cuda(capsys):
    from handgrad.check import main

    with pytest.raises(SystemExit) as exc:
        main(["--op", "softmax"])
    assert exc.value.code == 2
    assert "unknown op softmax" in capsys.readouterr().err
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit) as exc:
            main(["--device", "cuda"])
        assert exc.value.code == 2
        assert "CUDA is not available" in capsys.readouterr().err


def test_check_report_shows_and_counts_skipped_cells_apart(capsys):
    import re

    from handgrad.check import main

    assert main(["--op", "relu"]) == 0
    out = capsys.readouterr().out
    rows = [c for c in CASES if c.op == "relu"]
    skipped = sum(c.skip_reason(k) is not None for c in rows for k in COLUMNS)
    ran = len(rows) * len(COLUMNS) - skipped
    assert skipped > 0 and f"{ran} passed, 0 failed, 0 errors, {skipped} skipped" in out
    assert re.search(rf"\| relu +\| {len(rows)} +\| ok [0-9.e+-]+ \+2 skip", out)
    assert "skipped: NaN/inf inputs" in out


class RaisingReLU(fn.ReLU):
    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("deliberately broken backward\nwith a second line")


def test_check_report_shows_an_error_cell_when_a_backward_raises_and_finishes_the_table(monkeypatch, capsys):
    import re

    from handgrad import check, twins

    monkeypatch.setitem(twins.FAST, "ReLU", twins.fast_twin(RaisingReLU))  # what eager calls run
    monkeypatch.setitem(twins.FUNCTIONS, "ReLU", RaisingReLU)  # what runs under torch.func
    assert check.main(["--op", "relu", "sigmoid"]) == 1
    out = capsys.readouterr().out
    assert re.search(r"\| relu +\| \d+ +\| ERROR \d+/\d+", out)
    assert re.search(r"\| sigmoid +\| \d+ +\| ok", out)  # the table goes on after the raising op
    assert "ERROR relu[matrix] grad: RuntimeError: deliberately broken backward" in out
    assert "ERROR relu[matrix] shapes: RuntimeError: deliberately broken backward" in out
    assert "second line" not in out
    assert re.search(r"\d+ passed, 0 failed, [1-9]\d* errors, \d+ skipped", out)


@pytest.mark.parametrize("device, words", [("mps", "is not supported"), ("xla", "is not supported"),
                                           ("meta", "is not supported"), ("tpu:0", "is not a device")])
def test_check_report_refuses_a_device_torch_cannot_use_here_in_one_sentence(device, words, capsys):
    from handgrad.check import main

    if device == "mps" and torch.backends.mps.is_available():
        pytest.skip("MPS is available here")
    with pytest.raises(SystemExit) as exc:
        main(["--device", device])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1 and "Traceback" not in err


def _check_cli(*args):
    command = [sys.executable, "-m", "handgrad.check", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def test_check_function_flag_runs_the_engine_on_a_function_from_a_file(user_ops_file):
    done = _check_cli("--function", f"{user_ops_file}:MySoftplus", "--reference", "torch.nn.functional.softplus",
                      "--shape", "4,3", "--elementwise", "--dtypes", "float32")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "handgrad.testing: MySoftplus.apply against softplus" in done.stdout
    assert "| (4, 3) float64" in done.stdout and "| (4, 3) 0-d" in done.stdout and "0 failed, 0 errors" in done.stdout
    assert "MySoftplus defines no jvp" in done.stdout

    done = _check_cli("--function", f"{user_ops_file}:MyAdd", "--reference", "torch.add", "--shape", "4,3", "3",
                      "--dtypes", "float32")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAIL  (4, 3) (3,) float64 | shapes: MyAdd.backward gradient 1 has shape (4, 3), its input (3,)" in done.stdout


@pytest.mark.parametrize("argv, words", [
    (["--function", "no/such/file.py:F", "--shape", "3"], "error: --function: no file 'no/such/file.py'.\n"),
    (["--function", "torch.sin", "--op", "relu", "--shape", "3"],
     "error: --op checks handgrad's own ops and --function a Function of yours; give one of them.\n"),
    (["--function", "torch.sin"], "python -m handgrad.check: error: the following arguments are required: --shape\n"),
])
def test_check_function_flag_refuses_bad_arguments_in_one_sentence(argv, words):
    done = _check_cli(*argv)
    assert done.returncode == 2
    assert done.stderr.endswith(words) and "Traceback" not in done.stderr, done.stderr
