"""handgrad: neural-network ops with hand-written backward passes, proven by gradcheck.

>>> import torch, handgrad as hg
>>> x = torch.randn(4, 3, requires_grad=True)
>>> w = torch.randn(2, 3, requires_grad=True)
>>> hg.relu(hg.affine(x, w)).sum().backward()
>>> layer = hg.nn.Affine(3, 2)                      # modules: nn.Linear's arguments, ops="hand"
"""

from . import functions, nn
from .functional import (
    OP_NAMES,
    add,
    affine,
    cross_entropy,
    get_ops,
    l2_penalty,
    maximum,
    mse_loss,
    mul,
    relu,
    sigmoid,
)

__version__ = "0.1.0"

__all__ = [
    "OP_NAMES",
    "add",
    "affine",
    "cross_entropy",
    "functions",
    "get_ops",
    "l2_penalty",
    "maximum",
    "mse_loss",
    "mul",
    "nn",
    "relu",
    "sigmoid",
]
