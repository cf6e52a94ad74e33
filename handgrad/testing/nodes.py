"""The autograd.Functions behind a callable: its outputs, their graph's custom nodes, and what each
Function declares (jvp, a vmap rule, ``@once_differentiable``), which decides the checks that run.

NOTE: on torch < 2.13 a node's Python object holds its C++ node weakly: a node read after the
outputs holding the graph went out of scope fails ("legacy access pattern"). Every caller here
keeps the outputs alive for as long as it reads their nodes (:class:`Graph`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.autograd.function import once_differentiable

from .. import compat

__all__ = ["Graph", "tensor_outputs", "diff_outputs", "custom_nodes", "has_jvp", "has_vmap", "function_name"]

ONCE_CODE = once_differentiable(lambda ctx, *grads: grads).__code__


@dataclass
class Graph:
    """The differentiable outputs of one call and the custom nodes in their graph, held together."""

    outputs: tuple
    nodes: list

    @classmethod
    def of(cls, result) -> Graph:
        outputs = diff_outputs(result)
        return cls(outputs, custom_nodes(outputs))


def tensor_outputs(result) -> tuple[torch.Tensor, ...]:
    if isinstance(result, torch.Tensor):
        return (result,)
    if isinstance(result, (tuple, list)):
        return tuple(r for r in result if isinstance(r, torch.Tensor))
    raise TypeError(f"the function returned {type(result).__name__}, not a tensor or a tuple of tensors")


def diff_outputs(result) -> tuple[torch.Tensor, ...]:
    return tuple(o for o in tensor_outputs(result) if o.requires_grad)


def custom_nodes(outputs) -> list:
    """The backward nodes of custom autograd.Functions in the graph of ``outputs``."""
    stack = [o.grad_fn for o in outputs if o.grad_fn is not None]
    seen, found = set(), []
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if compat.is_custom_function_node(node):
            found.append(node)
        stack.extend(n for n, _ in node.next_functions)
    return found


def overrides(cls, name) -> bool:
    return getattr(cls, name, None) is not getattr(torch.autograd.Function, name, None)


def has_jvp(cls) -> bool:
    return overrides(cls, "jvp")


def has_vmap(cls) -> bool:
    return bool(getattr(cls, "generate_vmap_rule", False)) or overrides(cls, "vmap")


def once_differentiable_cls(cls) -> bool:
    user = cls.vjp if overrides(cls, "vjp") else cls.backward
    return getattr(user, "__code__", None) is ONCE_CODE


def names(classes) -> str:
    return ", ".join(c.__name__ for c in classes)


def function_name(fn) -> str:
    """A readable name for ``fn``: ``MyFn.apply`` for a Function's apply, ``sin`` for ``torch.sin``.

    NOTE: ``Function.apply.__qualname__`` is ``Function.apply`` before torch 2.14 and ``MyFn.apply``
    from 2.14 on, so the class is read from the bound method instead.
    """
    owner = getattr(fn, "__self__", None)
    if isinstance(owner, type) and issubclass(owner, torch.autograd.Function):
        return f"{owner.__name__}.{getattr(fn, '__name__', 'apply')}"
    qualified = getattr(fn, "__qualname__", None) or ""
    # NOTE: torch's builtins have qualified names such as _VariableFunctionsClass.sin; say sin
    return qualified if qualified and not qualified.startswith("_") else getattr(fn, "__name__", None) or repr(fn)
