"""Bad input gets one clear exception naming the op, the argument and the shapes or dtypes."""

import pytest
import torch

import handgrad as hg

f64 = dict(dtype=torch.float64)


@pytest.mark.parametrize(
    "call, exc, words",
    [
        (lambda: hg.affine(torch.randn(4, 3), torch.randn(5, 2)), ValueError,
         ["affine", "3 features", "(4, 3)", "expects 2", "(5, 2)"]),
        (lambda: hg.affine(torch.randn(4, 3), torch.randn(5, 3), torch.randn(4)), ValueError,
         ["affine", "bias", "(5,)", "(4,)"]),
        (lambda: hg.affine(torch.randn(4, 3), torch.randn(5, 3, 1)), ValueError, ["affine", "2-d"]),
        (lambda: hg.affine(torch.ones(4, 3, dtype=torch.int64), torch.randn(5, 3)), TypeError,
         ["affine", "x", "torch.int64", "floating-point"]),
        (lambda: hg.affine(torch.randn(4, 3), torch.randn(5, 3, dtype=torch.float64)), TypeError,
         ["affine", "one dtype", "x torch.float32", "weight torch.float64"]),
        (lambda: hg.affine(torch.randn(4, 3), torch.randn(5, 3), torch.randn(5, dtype=torch.float64)), TypeError,
         ["affine", "one dtype", "bias torch.float64"]),
        (lambda: hg.relu(torch.tensor([True, False])), TypeError, ["relu", "x", "torch.bool"]),
        (lambda: hg.sigmoid(torch.arange(3)), TypeError, ["sigmoid", "torch.int64"]),
        (lambda: hg.sigmoid([1.0, 2.0]), TypeError, ["sigmoid", "torch.Tensor", "list"]),
        (lambda: hg.add(torch.randn(2, 3), torch.randn(4)), ValueError,
         ["add", "(2, 3)", "(4,)", "do not broadcast"]),
        (lambda: hg.mul(torch.randn(3, 1, 2), torch.randn(2, 3)), ValueError,
         ["mul", "(3, 1, 2)", "(2, 3)", "do not broadcast"]),
        (lambda: hg.maximum(torch.randn(2, 3), torch.randn(3, 2)), ValueError, ["maximum", "do not broadcast"]),
        (lambda: hg.mul(2, 3), TypeError, ["mul", "at least one"]),
        (lambda: hg.add(torch.randn(2), "1"), TypeError, ["add", "b", "str"]),
        (lambda: hg.add(torch.randn(2), torch.ones(2, dtype=torch.int32)), TypeError, ["add", "b", "torch.int32"]),
        (lambda: hg.cross_entropy(torch.randn(3, 4), torch.tensor([0, 4, 1])), ValueError,
         ["cross_entropy", "[0, 3]", "4 classes", "from 0 to 4"]),
        (lambda: hg.cross_entropy(torch.randn(3, 4), torch.tensor([0, -1, 1])), ValueError,
         ["cross_entropy", "from -1 to 1"]),
        (lambda: hg.cross_entropy(torch.randn(3, 0), torch.tensor([0, 0, 0])), ValueError,
         ["cross_entropy", "0 classes", "3 targets"]),
        (lambda: hg.cross_entropy(torch.randn(3, 4), torch.tensor([0, 1])), ValueError,
         ["cross_entropy", "(3, 4)", "(2,)"]),
        (lambda: hg.cross_entropy(torch.randn(3, 4), torch.zeros(3, 4)), TypeError,
         ["cross_entropy", "integer class indices", "torch.float32"]),
        (lambda: hg.cross_entropy(torch.randn(2, 3, 4), torch.zeros(2, 3, dtype=torch.long)), ValueError,
         ["cross_entropy", "(N, C)"]),
        (lambda: hg.mse_loss(torch.randn(3, 10), torch.tensor([1, 2, 3]).float()), ValueError,
         ["mse_loss", "(3, 10)", "(3,)", "same shape"]),
        (lambda: hg.l2_penalty([], 0.1), ValueError, ["l2_penalty", "empty"]),
        (lambda: hg.l2_penalty([torch.randn(2)], torch.tensor(0.1)), TypeError, ["l2_penalty", "lam"]),
        (lambda: hg.l2_penalty([torch.randn(2), torch.arange(2)], 0.1), TypeError,
         ["l2_penalty", "weights[1]", "torch.int64"]),
        (lambda: hg.get_ops("numpy"), ValueError, ["get_ops", "'hand' or 'native'"]),
    ],
)
def test_bad_input_is_one_clear_exception(call, exc, words):
    with pytest.raises(exc) as info:
        call()
    message = str(info.value)
    for word in words:
        assert word in message, f"{word!r} missing from: {message}"
    assert "\n" not in message


def _other_device():
    if torch.cuda.is_available():
        return "cuda"
    return "meta"  # a second device that exists everywhere


@pytest.mark.parametrize("op", ["add", "mul", "maximum", "affine", "mse_loss", "cross_entropy", "l2_penalty"])
def test_tensors_on_different_devices(op):
    other = _other_device()
    a = torch.randn(3, 3)
    b = torch.randn(3, 3, device=other)
    calls = {
        "add": lambda: hg.add(a, b), "mul": lambda: hg.mul(a, b), "maximum": lambda: hg.maximum(a, b),
        "affine": lambda: hg.affine(a, b), "mse_loss": lambda: hg.mse_loss(a, b),
        "cross_entropy": lambda: hg.cross_entropy(a, torch.zeros(3, dtype=torch.long, device=other)),
        "l2_penalty": lambda: hg.l2_penalty([a, b], 0.1),
    }
    with pytest.raises(ValueError) as info:
        calls[op]()
    assert op in str(info.value) and "one device" in str(info.value) and other in str(info.value)
