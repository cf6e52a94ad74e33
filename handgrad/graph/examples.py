"""The notes' examples as live tensors: seed 000's shopping bill, seeds 002/003's (x + y) z and neuron, seed 004's MLP."""

from __future__ import annotations

import torch

from .. import functional as hf

__all__ = ["EXAMPLES", "example", "shopping", "xyz", "neuron", "mlp"]


def _scalars(**values: float) -> dict[str, torch.Tensor]:
    return {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in values.items()}


def shopping():
    """Seed 000: 2 apples at 100 and 3 oranges ("pear") at 150, tax 1.1: price 715."""
    v = _scalars(apple=100.0, a_num=2.0, pear=150.0, p_num=3.0, tax=1.1)
    price = hf.mul(hf.add(hf.mul(v["apple"], v["a_num"]), hf.mul(v["pear"], v["p_num"])), v["tax"])
    return price, {**v, "price": price}


def xyz():
    """Seeds 002/003: f = (x + y) z at x = -2, y = 5, z = -4, with q = x + y: f = -12, df/dx = df/dy = -4, df/dz = 3."""
    v = _scalars(x=-2.0, y=5.0, z=-4.0)
    q = hf.add(v["x"], v["y"])
    f = hf.mul(q, v["z"])
    return f, {**v, "q": q, "f": f}


def neuron():
    """Seed 002: f = sigmoid(w0 x0 + w1 x1 + w2) with w = [2, -3, -3], x = [-1, -2]: f = 0.7311."""
    v = _scalars(w0=2.0, x0=-1.0, w1=-3.0, x1=-2.0, w2=-3.0)
    dot_ = hf.add(hf.add(hf.mul(v["w0"], v["x0"]), hf.mul(v["w1"], v["x1"])), v["w2"])
    f = hf.sigmoid(dot_)
    return f, {**v, "f": f}


def mlp():
    """Seed 004: z = W1 x, h = ReLU(z), o = W2 h, L = CE(o, y), s = λ/2 (‖W1‖² + ‖W2‖²), J = L + s."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, generator=gen, dtype=torch.float64)  # a batch of 2, d = 4 features
    y = torch.tensor([0, 2])
    w1 = torch.randn(3, 4, generator=gen, dtype=torch.float64).requires_grad_()  # h = 3 hidden units
    w2 = torch.randn(3, 3, generator=gen, dtype=torch.float64).requires_grad_()  # q = 3 classes
    z = hf.affine(x, w1)
    h = hf.relu(z)
    o = hf.affine(h, w2)
    loss = hf.cross_entropy(o, y)
    s = hf.l2_penalty([w1, w2], 0.1)
    j = hf.add(loss, s)
    return j, {"W1": w1, "W2": w2, "z": z, "h": h, "o": o, "L": loss, "s": s, "J": j}


#: name -> function returning (output, names)
EXAMPLES = {"shopping": shopping, "xyz": xyz, "neuron": neuron, "mlp": mlp}


def example(name: str):
    """(output, names) of one of the notes' examples: shopping, xyz, neuron or mlp."""
    if name not in EXAMPLES:
        raise ValueError(f"handgrad.graph: no example {name!r}; choose one of {', '.join(EXAMPLES)}.")
    return EXAMPLES[name]()
