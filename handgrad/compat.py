"""Every private torch API handgrad uses, behind one small module.

Each name here wraps one private attribute or function of torch. The rest of handgrad calls these
wrappers and never touches a private torch name itself, so the day a torch release renames or
drops one, the failure is here, with a message that names the missing API and the running torch
version, instead of somewhere far from its cause. ``tests/test_compat.py`` exercises each wrapper.

Two kinds of wrapper:

- *optional*: handgrad has a fallback where torch lacks the API (a slower path, or a check that
  reports it cannot run); the wrapper returns the fallback.
- *required*: handgrad cannot do the job without it; the wrapper raises :class:`MissingTorchAPI`.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

__all__ = [
    "MissingTorchAPI",
    "transforms_active",
    "any_autocast_enabled",
    "undefined_grad",
    "forward_class",
    "is_custom_function_node",
    "input_metadata",
    "saved_attribute",
    "saved_attribute_names",
    "event_file_writer",
    "version_counter",
    "maximum_tie_jvp_rule",
    "compilable",
    "drop_forward_hooks",
    "norms",
    "add_scaled",
    "sub_",
]


class MissingTorchAPI(RuntimeError):
    """A private torch API handgrad needs is missing from the running torch."""

    def __init__(self, api: str, needed_for: str):
        super().__init__(
            f"handgrad needs {api} for {needed_for}, and torch {torch.__version__} does not have it; "
            "use a torch release in handgrad's supported range (see docs/compatibility.md)."
        )
        self.api = api


# ---------------------------------------------------------------------------------------------
# dispatch state (called on every op call: these must stay cheap)
# ---------------------------------------------------------------------------------------------

_transforms_active = getattr(torch._C, "_are_functorch_transforms_active", None)


def transforms_active() -> bool:
    """True inside a ``torch.func`` transform (vmap, grad, jvp, ...).

    Optional: without the private probe, handgrad assumes a transform may be active, which costs
    speed (the slower setup_context form of each op) but never correctness.
    """
    if _transforms_active is None:
        return True
    return _transforms_active()


_any_autocast = getattr(torch._C, "_is_any_autocast_enabled", None)


def any_autocast_enabled() -> bool:
    """True when autocast is on for any device type: one cheap call that lets the common case skip the rest.

    Optional: without it every op call takes the full per-device check (correct, a little slower).
    """
    if _any_autocast is None:
        return True
    return _any_autocast()


# ---------------------------------------------------------------------------------------------
# autograd graph internals (the checker and the graph pictures read them)
# ---------------------------------------------------------------------------------------------


def undefined_grad():
    """torch's ``UndefinedGrad`` Function (an undefined incoming gradient), or None where torch lacks it.

    Optional: the checker's ``undef`` column reports that it cannot run instead of failing.
    """
    functions = getattr(torch._C, "_functions", None)
    return getattr(functions, "UndefinedGrad", None)


def forward_class(node) -> type | None:
    """The ``autograd.Function`` class whose backward ``node`` is, or None for a built-in node."""
    return getattr(node, "_forward_cls", None)


def is_custom_function_node(node) -> bool:
    """True when ``node`` is the backward node of a Python ``autograd.Function``."""
    return forward_class(node) is not None


def input_metadata(node) -> list | None:
    """Shape, dtype and device of each input of a backward node (its forward's outputs), or None.

    Optional: where torch lacks it, callers fall back to the outputs they hold themselves.
    """
    return getattr(node, "_input_metadata", None)


_SAVED_PREFIX = "_saved_"


def saved_attribute_names(node) -> list[str]:
    """The names (without torch's ``_saved_`` prefix) of what a built-in backward node saved."""
    return [a[len(_SAVED_PREFIX):] for a in dir(node) if a.startswith(_SAVED_PREFIX)]


def saved_attribute(node, name: str) -> Any:
    """What a built-in backward node saved under ``name`` (``self``, ``other``, ``dim``, ...).

    None where the node has no such attribute or an earlier backward freed it.
    """
    try:
        return getattr(node, _SAVED_PREFIX + name, None)
    except (RuntimeError, ValueError):  # NOTE: freed by an earlier backward
        return None


# ---------------------------------------------------------------------------------------------
# TensorBoard
# ---------------------------------------------------------------------------------------------


def event_file_writer(writer):
    """The event-file writer behind a ``torch.utils.tensorboard.SummaryWriter``.

    Required by the monitor's one-event-per-step writing (``add_summary`` with many values): about
    7 µs a value instead of about 150 µs for one ``add_scalar`` call each.
    """
    get = getattr(writer, "_get_file_writer", None)
    if get is None:
        raise MissingTorchAPI("SummaryWriter._get_file_writer", "writing a step's statistics as one event")
    return get()


# ---------------------------------------------------------------------------------------------
# tensors
# ---------------------------------------------------------------------------------------------


def version_counter(tensor) -> int | None:
    """How many in-place writes ``tensor`` (and every view of its storage) has seen: torch's ``_version``.

    Optional: None where torch lacks it; the checker's ``untouched`` column then compares values only.
    """
    return getattr(tensor, "_version", None)


# torch's own behaviour where releases differ (probed once, never read from the version number)
# ---------------------------------------------------------------------------------------------


@functools.cache
def maximum_tie_jvp_rule() -> str:
    """How the running torch's forward-mode rule for ``torch.maximum`` rounds at a tie a = b.

    ``"weighted"`` (torch 2.14 and later): ż = s ȧ + (1 - s) ḃ; ``"difference"`` (torch 2.13 and
    earlier): ż = ḃ + s (ȧ - ḃ); s = ½ at a tie. Equal in exact arithmetic, they round apart by up
    to about an ulp of the tangents. handgrad's ``Maximum.jvp`` is always the weighted rule; the
    check matrix compares its tie rows with the running torch exactly only where torch's is too.
    """
    import torch.autograd.forward_ad as fwAD

    zero = torch.zeros((), dtype=torch.float64)
    # NOTE: tangents 0.3 and -0.1 tell the two apart: ½·0.3 + ½·(-0.1) rounds to 0.09999999999999999,
    # -0.1 + ½·(0.3 + 0.1) to 0.1 (float64).
    with fwAD.dual_level():
        a = fwAD.make_dual(zero, torch.tensor(0.3, dtype=torch.float64))
        b = fwAD.make_dual(zero.clone(), torch.tensor(-0.1, dtype=torch.float64))
        tangent = fwAD.unpack_dual(torch.maximum(a, b)).tangent
    return "weighted" if tangent.item() == 0.3 * 0.5 + -0.1 * 0.5 else "difference"


def compilable(fn):
    """``fn`` in a form ``torch.compile`` caches apart from every other callable, for a compile check.

    A bound classmethod such as ``MyFunction.apply`` comes back as a closure over its class; any
    other callable comes back as it is. NOTE: Dynamo caches compiled code on the code object, and
    every Function subclass shares ``Function.apply``'s; torch 2.10 to 2.13 did not guard on the
    class, so compiling ``Parent.apply`` after ``Child.apply`` reused the child's graph (a parent
    with ``jvp``, which Dynamo refuses, passed). A closure's class is guarded on every release.
    """
    owner, name = getattr(fn, "__self__", None), getattr(fn, "__name__", None)
    if isinstance(owner, type) and name:
        return lambda *args, **kwargs: getattr(owner, name)(*args, **kwargs)
    return fn


# ---------------------------------------------------------------------------------------------
# modules
# ---------------------------------------------------------------------------------------------


def drop_forward_hooks(module) -> None:
    """Remove every forward hook from ``module`` and its children (a copy must not report into a monitor).

    Required: ``nn.Module`` has no public way to remove a hook without its handle, and a deep copy
    of a monitored model carries the monitor's hooks but not their handles.
    """
    for child in module.modules():
        hooks = getattr(child, "_forward_hooks", None)
        if hooks is None:
            raise MissingTorchAPI("nn.Module._forward_hooks", "reading a model's graph without its monitor's hooks")
        hooks.clear()


# ---------------------------------------------------------------------------------------------
# fused list ops (the monitor's per-step statistics: one kernel for all parameters)
# ---------------------------------------------------------------------------------------------

_foreach_norm = getattr(torch, "_foreach_norm", None)
_foreach_add = getattr(torch, "_foreach_add", None)
_foreach_sub_ = getattr(torch, "_foreach_sub_", None)
_foreach_add_ = getattr(torch, "_foreach_add_", None)
_foreach_copy_ = getattr(torch, "_foreach_copy_", None)


def norms(tensors) -> list:
    """The L2 norm of each tensor (0-d tensors), in one fused call where torch has ``_foreach_norm``.

    Optional: a loop of ``Tensor.norm`` otherwise (the same values, more kernel launches).
    """
    tensors = list(tensors)
    if not tensors:
        return []
    if _foreach_norm is None:
        return [t.norm() for t in tensors]
    return list(_foreach_norm(tensors))


def add_scaled(tensors, others, alpha: float) -> list:
    """``t + alpha * o`` for each pair, new tensors (torch's ``_foreach_add``; optional: a loop otherwise)."""
    tensors, others = list(tensors), list(others)
    if not tensors:
        return []
    if _foreach_add is None:
        return [t + alpha * o for t, o in zip(tensors, others)]
    return list(_foreach_add(tensors, others, alpha=alpha))


def add_scaled_(tensors, others, alpha: float) -> None:
    """``t += alpha * o`` for each pair, in place (torch's ``_foreach_add_``; optional: a loop otherwise)."""
    tensors, others = list(tensors), list(others)
    if _foreach_add_ is None:
        for t, o in zip(tensors, others):
            t.add_(o, alpha=alpha)
        return
    if tensors:
        _foreach_add_(tensors, others, alpha=alpha)


def copy_(tensors, others) -> None:
    """``t.copy_(o)`` for each pair (torch's ``_foreach_copy_``; optional: a loop otherwise)."""
    tensors, others = list(tensors), list(others)
    if _foreach_copy_ is None:
        for t, o in zip(tensors, others):
            t.copy_(o)
        return
    if tensors:
        _foreach_copy_(tensors, others)


def sub_(tensors, others) -> None:
    """``t -= o`` for each pair, in place (torch's ``_foreach_sub_``; optional: a loop otherwise)."""
    tensors, others = list(tensors), list(others)
    if not tensors:
        return
    if _foreach_sub_ is None:
        for t, o in zip(tensors, others):
            t.sub_(o)
        return
    _foreach_sub_(tensors, others)
