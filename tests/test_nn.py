"""handgrad.nn: the modules, in nn.Linear's argument order, reachable as hg.nn, usable in any model."""

import re
from pathlib import Path

import pytest
import torch

import handgrad as hg

ROOT = Path(__file__).resolve().parents[1]


def test_nn_is_reachable_from_the_package():
    import handgrad.nn

    assert hg.nn is handgrad.nn and "nn" in hg.__all__


@pytest.mark.parametrize("ops", ["hand", "native"])
def test_affine_takes_nn_linears_arguments_and_initializes_like_it(ops):
    torch.manual_seed(7)
    linear = torch.nn.Linear(784, 10)
    torch.manual_seed(7)
    affine = hg.nn.Affine(784, 10, ops=ops)
    assert affine.weight.shape == (10, 784) and affine.bias.shape == (10,) and affine.ops.kind == ops
    assert torch.equal(affine.weight, linear.weight) and torch.equal(affine.bias, linear.bias)
    x = torch.randn(3, 784)
    torch.testing.assert_close(affine(x), linear(x))
    assert hg.nn.Affine(784, 10, False).bias is None
    assert hg.nn.Affine(4, 2, bias=False, dtype=torch.float64).weight.dtype == torch.float64


@pytest.mark.parametrize("call, words", [
    (lambda: hg.nn.Affine(784, 10, 5), ["bias must be True or False", "got 5", "ops="]),
    (lambda: hg.nn.Affine("hand", 784, 10), ["in_features must be a non-negative int", "'hand'",
                                             "Affine(in_features, out_features, bias=True, *, ops='hand'"]),
    (lambda: hg.nn.Affine(784, -1), ["out_features", "-1"]),
    (lambda: hg.nn.Affine(784, True), ["out_features", "True"]),
])
def test_affine_refuses_arguments_in_the_old_order(call, words):
    with pytest.raises(TypeError) as info:
        call()
    for word in words:
        assert word in str(info.value), str(info.value)


def test_activations_take_ops_by_keyword():
    assert hg.nn.ReLU().ops.kind == "hand" and hg.nn.Sigmoid(ops="native").ops.kind == "native"
    x = torch.tensor([-1.0, 2.0])
    assert hg.nn.ReLU(ops=hg.get_ops("native"))(x).tolist() == [0.0, 2.0]
    with pytest.raises(TypeError):
        hg.nn.ReLU("native")  # keyword-only, like Affine's ops


def _readme_example() -> str:
    text = (ROOT / "docs" / "ops.md").read_text()
    section = text.split("## Modules in a model of your own", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_of_a_model_of_your_own_runs_and_learns(capsys):
    namespace: dict = {}
    exec(compile(_readme_example(), "docs/ops.md", "exec"), namespace)
    assert isinstance(namespace["model"].hidden, hg.nn.Affine)
    assert namespace["accuracy"] > 80.0  # one epoch on the 8,000 training digits of the shipped sample
    assert "test accuracy" in capsys.readouterr().out
