"""A model's objective on one batch, read as a graph: for the TensorBoard dashboard."""

from __future__ import annotations

import torch

from .draw import image_of
from .reading import Graph, build
from .text import mermaid_of

__all__ = ["model_names", "model_graph", "read_model"]


def model_names(model: torch.nn.Module, **tensors: torch.Tensor) -> dict[str, torch.Tensor]:
    """Display names for a model's graph: its parameters by their state_dict names, plus ``tensors``.

    A tensor given twice keeps its first name (J and L are one tensor when there is no penalty).
    """
    names: dict[str, torch.Tensor] = {}
    for name, t in [*tensors.items(), *model.named_parameters()]:
        if t.requires_grad and not any(t is other for other in names.values()):
            names[name] = t
    return names


def _objective(model, x, target) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(J, L, logits) from ``model.objective``, whether it returns a triple or a named result."""
    result = model.objective(x, target)
    if all(hasattr(result, k) for k in ("total", "loss", "logits")):
        return result.total, result.loss, result.logits
    total, loss, logits = result
    return total, loss, logits


def read_model(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor, backward: bool = True,
               draw_input: bool = True) -> Graph:
    """The graph of ``model.objective(x, target)`` on one batch, parameters by their state_dict names.

    With ``draw_input`` the batch is drawn as the leaf ``x`` (a detached copy that requires grad,
    so that its value and ∂J/∂x are on its edge; the model's parameters are untouched). With
    ``backward`` every edge also carries its gradient, computed by one ``autograd.grad`` call that
    leaves every ``.grad`` as it was.
    """
    extra = {}
    if draw_input:
        x = x.detach().clone().requires_grad_(True)
        extra["x"] = x
    with torch.enable_grad():
        total, loss, logits = _objective(model, x, target)
    return build(total, model_names(model, **extra, J=total, L=loss, logits=logits), backward)


def model_graph(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor, backward: bool = False,
                dpi: float = 80) -> tuple:
    """``model.objective(x, target)`` on one batch, drawn: (image (H, W, 3) uint8, mermaid source).

    Parameters are named by their state_dict names; J, L and logits by theirs. The image goes to
    TensorBoard's Images tab (``add_image(tag, image, step, dataformats="HWC")``), the mermaid
    source to its Text tab. Runs one extra forward pass (module forward hooks see it) and, with
    ``backward``, one ``autograd.grad`` that leaves every ``.grad`` as it was (hooks registered on
    the parameters with ``Tensor.register_hook`` do see its gradients). For the dashboard's
    picture with values and gradients and the input drawn, see :func:`write_model_graph`.
    """
    graph = read_model(model, x, target, backward, draw_input=False)
    return image_of(graph, dpi), mermaid_of(graph)
