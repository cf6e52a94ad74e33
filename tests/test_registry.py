"""The ops registry: an op declared in one place appears everywhere handgrad knows its ops.

A scratch op, tanh, is written here (a Function with a hand backward) and declared ONCE
(:func:`declared_tanh`); nothing else in handgrad is edited. Each test then finds it where a
built-in op is found: the namespaces and the package, the twins, ``python -m handgrad.check --op
tanh``, the graph pictures and compare mode. Each place is also shown to fail with a deliberately
wrong backward, or to lose the op once it is undeclared, so a missing derivation fails a test.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import pytest
import torch
from torch import nn

import handgrad as hg
from handgrad import check, registry, twins
from handgrad import functional as hf
from handgrad import graph as G
from handgrad.compare import Comparison

# ---------------------------------------------------------------------------------------------
# the scratch op and its one declaration
# ---------------------------------------------------------------------------------------------


class TanhFunction(torch.autograd.Function):
    """y = tanh(x); dy/dx = 1 - tanh(x)²."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        return torch.tanh(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        # NOTE: saves the input, not the output, so that a graph picture must recompute tanh's value
        # (nothing in the graph holds it): that is the declaration's recompute rule at work.
        (x,) = inputs
        ctx.save_for_backward(x)
        ctx.save_for_forward(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None
        return grad * (1 - torch.tanh(x).square())

    @staticmethod
    def jvp(ctx, tx):
        (x,) = ctx.saved_tensors
        return tx * (1 - torch.tanh(x).square())


class BrokenTanhFunction(TanhFunction):
    """tanh with a wrong backward, 1 - tanh(x) instead of 1 - tanh(x)²: every place that checks must say so."""

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (1 - torch.tanh(x))


@contextmanager
def declared_tanh(function=TanhFunction):
    """THE declaration: one call, and handgrad knows tanh everywhere until the block ends."""
    registry.declare("tanh", function, native=torch.tanh, label="Tanh")
    try:
        yield
    finally:
        registry.undeclare("tanh")


def _x(*values, grad=True):
    return torch.tensor(values, dtype=torch.float64, requires_grad=grad)


# ---------------------------------------------------------------------------------------------
# namespaces, the package, the twins
# ---------------------------------------------------------------------------------------------


def test_a_declared_op_is_in_both_namespaces_the_package_and_op_names_and_gone_after():
    hand, native = hg.get_ops("hand"), hg.get_ops("native")  # NOTE: taken before the declaration
    assert not hasattr(hand, "tanh") and "tanh" not in hg.OP_NAMES and not hasattr(hg, "tanh")
    with declared_tanh():
        assert hand.tanh is hg.tanh is hf.tanh is registry.spec_of("tanh").api
        assert native.tanh is torch.tanh
        assert hg.OP_NAMES[-1] == "tanh" and "tanh" in hf.OP_NAMES
        assert "tanh" in hg.__all__ and "tanh" in hf.__all__
        star: dict = {}
        exec("from handgrad import *", star)
        assert star["tanh"] is hg.tanh
        x = _x(-2.0, 0.0, 0.5, 3.0)
        y = hand.tanh(x)
        y.sum().backward()
        torch.testing.assert_close(y, torch.tanh(x), rtol=0, atol=0)
        expected = [1 - math.tanh(v) ** 2 for v in (-2.0, 0.0, 0.5, 3.0)]  # typed formula, math's tanh
        torch.testing.assert_close(x.grad, torch.tensor(expected, dtype=torch.float64), rtol=1e-15, atol=1e-15)
    assert not hasattr(hand, "tanh") and not hasattr(native, "tanh") and not hasattr(hg, "tanh")
    assert "tanh" not in hg.OP_NAMES and "tanh" not in hg.__all__ and "tanh" not in hf.__all__
    assert "TanhFunction" not in twins.FUNCTIONS and "TanhFunction" not in twins.FAST


def test_a_declared_op_gets_its_twins_and_each_is_recognised_as_the_op():
    with declared_tanh():
        spec = registry.spec_of("tanh")
        assert twins.FUNCTIONS["TanhFunction"] is TanhFunction
        for twin in (twins.FAST["TanhFunction"], twins.COMPILED["TanhFunction"], TanhFunction):
            assert registry.spec_of_function(twin) is spec
        assert "jvp" not in vars(twins.COMPILED["TanhFunction"])
        x = _x(0.5, -1.0)
        assert type(hg.tanh(x).grad_fn).__name__ == "TanhFunctionFastBackward"  # eager: the fast twin
        batched = torch.func.vmap(hg.tanh)(x.detach().reshape(2, 1))  # a transform: the op itself
        torch.testing.assert_close(batched.reshape(2), torch.tanh(x.detach()), rtol=0, atol=0)
        torch._dynamo.reset()
        compiled = torch.compile(lambda t: hg.tanh(t).sum(), fullgraph=True, backend="aot_eager")
        compiled(x).backward()  # fullgraph: a graph break (the jvp twin) would be an error
        torch.testing.assert_close(x.grad, 1 - torch.tanh(x.detach()).square(), rtol=1e-15, atol=1e-15)
    assert registry.spec_of_function(TanhFunction) is None


def test_a_declared_op_checks_its_arguments_in_one_sentence():
    with declared_tanh():
        with pytest.raises(TypeError, match=r"^tanh: x must be a floating-point tensor .* got dtype torch.int64"):
            hg.tanh(torch.arange(3))
        with pytest.raises(TypeError, match=r"^tanh\(x\): missing a required argument: 'x'"):
            hg.tanh()


# ---------------------------------------------------------------------------------------------
# python -m handgrad.check --op tanh
# ---------------------------------------------------------------------------------------------


def _row(out: str, op: str) -> list[str]:
    line = next(ln for ln in out.splitlines() if ln.startswith(f"| {op} "))
    return [c.strip() for c in line.strip("|").split("|")]


def test_a_declared_op_is_in_the_check_matrix(capsys):
    with declared_tanh():
        assert check.main(["--op", "tanh"]) == 0
        out = capsys.readouterr().out
    name, cases, *cells = _row(out, "tanh")
    assert cases == "1" and len(cells) == len(check.COLUMNS)
    assert all(c.startswith("ok") for c in cells), cells  # every column ran (none skipped) and passed
    assert "0 failed, 0 errors, 0 skipped" in out


def test_the_check_matrix_catches_a_wrong_backward_in_a_declared_op(capsys):
    with declared_tanh(BrokenTanhFunction):
        assert check.main(["--op", "tanh"]) == 1
        out = capsys.readouterr().out
    cells = dict(zip(check.COLUMNS, _row(out, "tanh")[2:]))
    for column in ("grad", "native64", "native32"):  # gradgrad and fwd_ad: the wrong backward is self-consistent, jvp right
        assert cells[column].startswith("FAIL"), (column, cells[column])


def test_a_declared_sample_is_the_row_of_an_op_without_rows_and_the_table_rows_win_for_the_others():
    def sample(dtype, device, gen):
        return (torch.tensor([-0.5, 2.0], dtype=dtype, device=device, requires_grad=True),)

    registry.declare("tanh", TanhFunction, native=torch.tanh, sample=sample)
    try:
        (row,) = check.cases_of("tanh")
        (x,) = row.make(torch.float32, "cpu", torch.Generator())
        assert row.label == "sample" and x.tolist() == [-0.5, 2.0] and x.dtype == torch.float32
        assert row.function() is TanhFunction and row.run(hg.get_ops("native"), x).tolist() == torch.tanh(x).tolist()
    finally:
        registry.undeclare("tanh")
    assert [c.label for c in check.cases_of("relu")] == [c.label for c in check.CASES if c.op == "relu"]


def test_an_undeclared_op_is_an_unknown_name_to_the_check_matrix(capsys):
    with pytest.raises(SystemExit) as info:
        check.main(["--op", "tanh"])
    assert info.value.code == 2 and "unknown op tanh" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# graph pictures
# ---------------------------------------------------------------------------------------------


def test_a_declared_op_is_labelled_and_its_value_recomputed_in_graph_pictures():
    a = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    with declared_tanh():
        out = hg.add(hg.tanh(a), a)  # NOTE: add saves nothing and tanh saves its input: the edge needs recompute
        graph = G.build(out)
        text = G.mermaid(out)
    (node,) = [n for n in graph.nodes if n.label == "Tanh"]  # the declared label, not the class name
    into_add = [e.value for e in graph.edges if e.src == node.id]
    assert into_add == ["0.4621"]  # tanh(0.5) = 0.46211715726...
    assert '["Tanh"]' in text or '(("Tanh"))' in text
    assert "0.4621" in text


# ---------------------------------------------------------------------------------------------
# compare mode
# ---------------------------------------------------------------------------------------------


class TinyModel(nn.Module):
    """J = mse(tanh(x Wᵀ + b), y), built only from an ops namespace, as models/mlp.py is."""

    def __init__(self, ops) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.ops = ops
        self.layer = hg.nn.Affine(4, 3, ops=ops, dtype=torch.float64)
        with torch.no_grad():
            self.layer.weight.copy_(torch.randn(3, 4, generator=g, dtype=torch.float64))

    def objective(self, x, y):
        out = self.ops.tanh(self.layer(x))
        loss = self.ops.mse_loss(out, y)
        return loss, loss, out


def _compare_one_step():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, 4, generator=g, dtype=torch.float64)
    y = torch.randn(5, 3, generator=g, dtype=torch.float64)
    model, native = TinyModel(hg.get_ops("hand")), TinyModel(hg.get_ops("native"))
    total, _, _ = model.objective(x, y)
    total.backward()
    return Comparison(model, native, tol=1e-10).step(x, y, 1, total)


def test_a_declared_op_is_compared_hand_against_native():
    with declared_tanh():
        result = _compare_one_step()
    assert set(result.errors) == {"layer.weight", "layer.bias"}
    assert max(result.errors.values()) < 1e-12 and result.ok


def test_compare_mode_catches_a_wrong_backward_in_a_declared_op():
    with declared_tanh(BrokenTanhFunction):
        result = _compare_one_step()
    assert not result.ok and "layer.weight" in result.failed
    assert result.errors["layer.weight"] > 1e-3 and "layer.weight" in result.message


# ---------------------------------------------------------------------------------------------
# the registry itself
# ---------------------------------------------------------------------------------------------


def test_the_builtin_ops_are_declared_in_order_with_their_native_counterparts():
    names = ("add", "mul", "maximum", "relu", "sigmoid", "affine", "l2_penalty", "cross_entropy", "mse_loss")
    assert tuple(hg.OP_NAMES) == names and hg.OP_NAMES == names
    natives = {"add": torch.add, "mul": torch.mul, "maximum": torch.maximum, "relu": torch.relu,
               "sigmoid": torch.sigmoid, "affine": torch.nn.functional.linear}
    for name, native in natives.items():
        assert registry.spec_of(name).native is native is getattr(hg.get_ops("native"), name)
    assert set(vars(hg.get_ops("hand"))) == set(vars(hg.get_ops("native"))) == {"kind", *names}


class CtxStyle(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x

    @staticmethod
    def backward(ctx, grad):
        return grad


@pytest.mark.parametrize("name, function, native, message", [
    ("Tanh", TanhFunction, torch.tanh, "lowercase Python identifier"),
    ("my op", TanhFunction, torch.tanh, "lowercase Python identifier"),
    ("relu", TanhFunction, torch.tanh, "'relu' is taken"),
    ("kind", TanhFunction, torch.tanh, "'kind' is taken"),
    ("tanh", torch.tanh, torch.tanh, "must be a torch.autograd.Function subclass"),
    ("tanh", CtxStyle, torch.tanh, "setup_context"),
    ("tanh", TanhFunction, "torch.tanh", "must be callable"),
    ("tanh2", twins.FUNCTIONS["ReLU"], torch.relu, "already called ReLU"),
])
def test_a_bad_declaration_is_one_sentence_and_changes_nothing(name, function, native, message):
    before = (tuple(hg.OP_NAMES), dict(twins.FAST), list(hg.__all__))
    with pytest.raises((TypeError, ValueError), match=message):
        registry.declare(name, function, native=native)
    assert (tuple(hg.OP_NAMES), dict(twins.FAST), list(hg.__all__)) == before


def test_looking_up_an_op_that_is_not_declared():
    with pytest.raises(KeyError, match="no op named 'tanh' is declared; declared: add, mul"):
        registry.spec_of("tanh")
    with pytest.raises(KeyError, match="no op named 'tanh' is declared"):
        registry.undeclare("tanh")
    assert registry.spec_of_function(torch.autograd.Function) is None and registry.spec_of_function(None) is None
