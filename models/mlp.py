"""The MLP, built only from an ops namespace: it never branches on hand or native."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from handgrad.nn import Affine, ReLU, Sigmoid, resolve_ops

__all__ = ["MLP", "ObjectiveValue"]


class ObjectiveValue(NamedTuple):
    """What :meth:`MLP.objective` returns; still unpacks as ``total, loss, logits = ...``."""

    total: torch.Tensor  # J = L + λ/2 Σ‖W‖², what training minimizes
    loss: torch.Tensor  # L, the data loss
    logits: torch.Tensor  # the last Affine's output

_ACTIVATIONS = {"relu": ReLU, "sigmoid": Sigmoid}
LOSSES = ("ce", "mse")


class MLP(nn.Module):
    """in -> [Affine -> activation] * len(hidden) -> Affine -> logits.

    ``objective(x, y)`` is the training objective J = L + s: the data loss L (softmax
    cross-entropy, or squared error between sigmoid outputs and one-hot targets) plus the
    penalty s = λ/2 Σ‖W‖² over the weight matrices (not the biases), through ``ops.l2_penalty``.
    ``bias=False`` builds every Affine without a bias (seed 004's network).
    """

    def __init__(self, ops="hand", in_features: int = 784, hidden: Sequence[int] = (256, 128),
                 classes: int = 10, activation: str = "relu", loss: str = "ce",
                 weight_decay: float = 0.0, bias: bool = True, device=None, dtype=None) -> None:
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"MLP: activation must be one of {', '.join(_ACTIVATIONS)}, got {activation!r}.")
        if loss not in LOSSES:
            raise ValueError(f"MLP: loss must be one of {', '.join(LOSSES)}, got {loss!r}.")
        self.ops = resolve_ops(ops)
        self.activation, self.loss_name, self.weight_decay = activation, loss, float(weight_decay)
        sizes = [in_features, *hidden, classes]
        layers: list[nn.Module] = []
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(Affine(fan_in, fan_out, bias=bias, ops=self.ops, device=device, dtype=dtype))
            if i < len(sizes) - 2:
                layers.append(_ACTIVATIONS[activation](ops=self.ops))
        self.layers = nn.Sequential(*layers)
        # NOTE: the squared-error model's output sigmoid is a module (so forward hooks see it) kept
        # outside ``layers``: it has no parameters, and state_dict names stay ``layers.N.*``.
        self.output_activation = Sigmoid(ops=self.ops) if loss == "mse" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)

    def weights(self) -> list[torch.Tensor]:
        return [m.weight for m in self.layers if isinstance(m, Affine)]

    def data_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.loss_name == "ce":
            return self.ops.cross_entropy(logits, target)
        onehot = (target[:, None] == torch.arange(logits.shape[-1], device=target.device)).to(logits.dtype)
        return self.ops.mse_loss(self.output_activation(logits), onehot)

    def objective(self, x: torch.Tensor, target: torch.Tensor) -> ObjectiveValue:
        """(total J, loss L, logits) for a batch: J = L + λ/2 Σ‖W‖² is what training minimizes."""
        logits = self(x)
        loss = self.data_loss(logits, target)
        total = self.ops.add(loss, self.ops.l2_penalty(self.weights(), self.weight_decay)) if self.weight_decay else loss
        return ObjectiveValue(total, loss, logits)
