"""The worked examples of ../shared/seeds, reproduced exactly with handgrad ops.

Every expected number below is worked out by hand in the notes (or follows from their formulas
by arithmetic written out here), not computed by the code under test.
"""

import math

import pytest
import torch

import handgrad as hg
from handgrad.functional import get_ops


def leaf(value):
    return torch.tensor(float(value), dtype=torch.float64, requires_grad=True)


def test_seed000_shopping_graph_forward_and_every_edge():
    apple, apple_num, orange, orange_num, tax = (leaf(v) for v in (100, 2, 150, 3, 1.1))
    apple_price = hg.mul(apple, apple_num)
    orange_price = hg.mul(orange, orange_num)
    apple_price.retain_grad()
    orange_price.retain_grad()
    total = hg.add(apple_price, orange_price)
    total.retain_grad()
    price = hg.mul(total, tax)

    assert apple_price.item() == 200
    assert orange_price.item() == 450
    assert total.item() == 650
    assert price.item() == pytest.approx(715)

    price.backward()
    assert total.grad.item() == pytest.approx(1.1)  # into the add node
    assert apple_price.grad.item() == pytest.approx(1.1)  # the add gate passes it on unchanged
    assert orange_price.grad.item() == pytest.approx(1.1)
    assert tax.grad.item() == pytest.approx(650)
    assert apple.grad.item() == pytest.approx(2.2)
    assert apple_num.grad.item() == pytest.approx(110)
    assert orange.grad.item() == pytest.approx(3.3)
    assert orange_num.grad.item() == pytest.approx(165)


def test_seed002_003_add_then_multiply():
    x, y, z = leaf(-2), leaf(5), leaf(-4)
    q = hg.add(x, y)
    f = hg.mul(q, z)
    assert q.item() == 3 and f.item() == -12
    f.backward()
    assert (x.grad.item(), y.grad.item(), z.grad.item()) == (-4, -4, 3)


def test_seed002_003_two_input_sigmoid_neuron():
    w = torch.tensor([2.0, -3.0, -3.0], dtype=torch.float64, requires_grad=True)
    x = torch.tensor([-1.0, -2.0], dtype=torch.float64, requires_grad=True)
    dot = hg.add(hg.add(hg.mul(w[0], x[0]), hg.mul(w[1], x[1])), w[2])
    f = hg.sigmoid(dot)
    assert dot.item() == 1.0
    assert f.item() == pytest.approx(0.73, abs=5e-3)  # the notes' 0.73
    f.backward()
    ddot = (1 - f.item()) * f.item()  # the notes' local gradient, y (1 - y)
    assert ddot == pytest.approx(0.1966, abs=1e-4)
    assert x.grad.tolist() == pytest.approx([2 * ddot, -3 * ddot])  # dx = [w0, w1] * ddot
    assert w.grad.tolist() == pytest.approx([-1 * ddot, -2 * ddot, ddot])  # dw = [x0, x1, 1] * ddot
    # the rounded values of the notes' figure
    assert [round(v, 2) for v in x.grad.tolist()] == [0.39, -0.59]
    assert [round(v, 2) for v in w.grad.tolist()] == [-0.2, -0.39, 0.2]


def test_seed003_sigmoid_gate_decomposition_agrees():
    # 1/q at q = 1 + e^{-1} = 1.37 gives 0.73, and d(1/q)/dq = -1/q² = -0.53
    q = 1 + math.exp(-1.0)
    assert round(q, 2) == 1.37 and round(1 / q, 2) == 0.73 and round(-1 / q**2, 2) == -0.53
    x = leaf(1.0)
    y = hg.sigmoid(x)
    y.backward()
    assert y.item() == pytest.approx(1 / q)
    assert x.grad.item() == pytest.approx(math.exp(-1.0) / q**2)  # (-1/q²)·1·e^{-x}·(-1)


@pytest.mark.parametrize("activation", ["relu", "sigmoid"])
def test_seed004_one_hidden_layer_mlp_with_l2_penalty(activation):
    """J = l(W2 φ(W1 x), y) + λ/2 (‖W1‖² + ‖W2‖²), no biases, one sample, as in the notes."""
    gen = torch.Generator().manual_seed(4)
    d, h, q, lam = 5, 4, 3, 0.1
    x = torch.randn(d, generator=gen, dtype=torch.float64)
    y = torch.tensor(2)
    W1_0 = torch.randn(h, d, generator=gen, dtype=torch.float64)
    W2_0 = torch.randn(q, h, generator=gen, dtype=torch.float64)

    def objective(ops, W1, W2):
        z = ops.affine(x, W1)
        hidden = getattr(ops, activation)(z)
        o = ops.affine(hidden, W2)
        return ops.add(ops.cross_entropy(o, y), ops.l2_penalty([W1, W2], lam)), z, hidden, o

    W1, W2 = W1_0.clone().requires_grad_(), W2_0.clone().requires_grad_()
    J, z, hidden, o = objective(hg.get_ops("hand"), W1, W2)
    J.backward()

    # the notes' formulas, written out with plain tensor algebra
    with torch.no_grad():
        p = torch.softmax(o, -1)
        dJ_do = p - torch.nn.functional.one_hot(y, q).double()  # ∂L/∂o for softmax-CE
        dJ_dW2 = torch.outer(dJ_do, hidden) + lam * W2  # ∂J/∂o hᵀ + λ W2
        dJ_dh = W2.t() @ dJ_do  # W2ᵀ ∂J/∂o
        phi_prime = (z > 0).double() if activation == "relu" else hidden * (1 - hidden)
        dJ_dz = dJ_dh * phi_prime  # ∂J/∂h ⊙ φ'(z)
        dJ_dW1 = torch.outer(dJ_dz, x) + lam * W1  # ∂J/∂z xᵀ + λ W1
    torch.testing.assert_close(W2.grad, dJ_dW2, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(W1.grad, dJ_dW1, rtol=1e-12, atol=1e-12)

    # and native autograd agrees
    N1, N2 = W1_0.clone().requires_grad_(), W2_0.clone().requires_grad_()
    J_native, *_ = objective(get_ops("native"), N1, N2)
    J_native.backward()
    torch.testing.assert_close(J, J_native, rtol=1e-13, atol=0)
    torch.testing.assert_close(W1.grad, N1.grad, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(W2.grad, N2.grad, rtol=1e-12, atol=1e-13)


def test_seed001_squared_error_derivative_is_2_a_minus_y_over_n():
    a = torch.tensor([0.2, 0.9, 0.4], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    loss = hg.mse_loss(a, y)
    assert loss.item() == pytest.approx((0.04 + 0.01 + 0.16) / 3)
    loss.backward()
    assert a.grad.tolist() == pytest.approx([2 * 0.2 / 3, 2 * -0.1 / 3, 2 * 0.4 / 3])


def test_seed002_max_gate_routes_the_gradient_to_the_larger_input():
    a = torch.tensor([3.0, -1.0, 2.0], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([1.0, 4.0, 2.0], dtype=torch.float64, requires_grad=True)
    out = hg.maximum(a, b)
    assert out.tolist() == [3.0, 4.0, 2.0]
    out.backward(torch.tensor([2.0, 2.0, 2.0], dtype=torch.float64))
    # larger input takes all of it; a tie splits it, as torch.maximum does
    assert a.grad.tolist() == [2.0, 0.0, 1.0]
    assert b.grad.tolist() == [0.0, 2.0, 1.0]
    a2, b2 = a.detach().clone().requires_grad_(), b.detach().clone().requires_grad_()
    torch.maximum(a2, b2).backward(torch.tensor([2.0, 2.0, 2.0], dtype=torch.float64))
    assert a2.grad.tolist() == a.grad.tolist() and b2.grad.tolist() == b.grad.tolist()
