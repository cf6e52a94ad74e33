"""Twins of each op: the same static methods, packaged for plain eager calls and for torch.compile.

Every lowercase op calls :func:`apply`, which picks one form per call: the op itself under
``torch.func`` transforms (``FUNCTIONS``), its ctx-first twin in plain eager code (``FAST``), and
its twin without ``jvp`` inside ``torch.compile`` (``COMPILED``). Twins are derived, never written
by hand, so a fix to an op's ``backward`` reaches every form. The three tables are filled by the
ops registry (:mod:`handgrad.registry`) when an op is declared, keyed by its Function's class name.
"""

from __future__ import annotations

import inspect

import torch

from .compat import transforms_active
from .functions import _Op

__all__ = ["fast_twin", "compile_twin", "FUNCTIONS", "FAST", "COMPILED", "add_twins", "remove_twins", "apply"]


def _twin(cls: type, suffix: str, base: type, body: dict) -> type[torch.autograd.Function]:
    """A class named ``<cls><suffix>`` on ``base`` with ``body``, documented and placed as ``cls``."""
    body = {**body, "__doc__": cls.__doc__, "__module__": cls.__module__, "__qualname__": f"{cls.__qualname__}{suffix}"}
    return type(f"{cls.__name__}{suffix}", (base,), body)


def fast_twin(cls: type[torch.autograd.Function]) -> type[torch.autograd.Function]:
    """The same op in the ctx-first style (``forward(ctx, *args)``), for plain eager calls.

    NOTE: on torch 2.14, ``apply`` of a setup_context-style Function binds its arguments through
    ``inspect.signature`` and its backward node costs more too: an identity Function measured 13 µs
    forward and 65 µs forward + backward, against 6 µs and 46 µs ctx-first (2-core CPU). The
    ctx-first style cannot run under ``torch.func`` transforms, so the lowercase API uses this twin
    only when no transform is active and Dynamo is not tracing. Its forward calls the op's own
    ``forward`` and ``setup_context``; ``backward`` and ``jvp`` are the op's own static methods.
    Unlike the op's own ``apply``, the twin's takes every argument (no defaults filled in).
    """
    forward, setup_context = cls.forward, cls.setup_context
    positional = sum(p.kind is p.POSITIONAL_OR_KEYWORD for p in inspect.signature(forward).parameters.values())

    def ctx_forward(ctx, *args):
        if len(args) < positional:
            # NOTE: nothing fills in defaults here, and backward returns one gradient per
            # argument; the lowercase API always passes every argument.
            raise TypeError(f"{cls.__name__}Fast.apply takes all {positional} arguments, got {len(args)}.")
        output = forward(*args)
        setup_context(ctx, args, output)
        return output

    body = {name: inspect.getattr_static(cls, name) for name in ("backward", "jvp")}
    return _twin(cls, "Fast", torch.autograd.Function, {**body, "forward": staticmethod(ctx_forward)})


def compile_twin(cls: type[torch.autograd.Function]) -> type[torch.autograd.Function]:
    """The same op without ``jvp``, for use inside ``torch.compile``.

    NOTE: Dynamo (torch 2.14) refuses an autograd.Function that defines ``jvp``, so compiled code
    traces this twin, built from the very same static methods; eager code keeps forward-mode AD.
    """
    body = {name: inspect.getattr_static(cls, name) for name in ("forward", "setup_context", "backward")}
    return _twin(cls, "Compiled", _Op, body)


#: name -> the op itself (setup_context style, with jvp): what runs under torch.func transforms.
FUNCTIONS: dict[str, type[torch.autograd.Function]] = {}
#: name -> its ctx-first twin: what the lowercase API runs in plain eager mode (the fast path).
FAST: dict[str, type[torch.autograd.Function]] = {}
#: name -> its jvp-free twin: what the lowercase API runs inside torch.compile.
COMPILED: dict[str, type[torch.autograd.Function]] = {}


def add_twins(cls: type[torch.autograd.Function]) -> str:
    """Put ``cls`` and its two twins in the tables, under its class name (returned)."""
    name = cls.__name__
    FUNCTIONS[name], FAST[name], COMPILED[name] = cls, fast_twin(cls), compile_twin(cls)
    return name


def remove_twins(name: str) -> None:
    """Take the op ``name`` (a class name) and its twins out of the tables."""
    for table in (FUNCTIONS, FAST, COMPILED):
        table.pop(name, None)


_is_compiling = torch.compiler.is_compiling


def apply(name: str, *args):
    """Call op ``name`` (a class name) in the form that suits the context: compiled, transformed or eager."""
    # NOTE: looked up by name at every call: Dynamo traces a constant-string dict lookup without a
    # break, and a test that swaps a table entry (a deliberately broken twin) is seen at once.
    if _is_compiling():
        return COMPILED[name].apply(*args)
    if transforms_active():
        return FUNCTIONS[name].apply(*args)
    return FAST[name].apply(*args)
