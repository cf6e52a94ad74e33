"""The ops registry: each op is declared once, and everything that knows about ops reads it from here.

A declaration names the op's ``autograd.Function``, its lowercase name, its argument checks, its
native PyTorch counterpart and its label in graph pictures (and, where the defaults do not fit, how
a graph picture recomputes its output and which small sample inputs ``python -m handgrad.check
--op NAME`` uses when the check table has no rows for it)::

    @op(functions.Sigmoid, native=torch.sigmoid)
    def sigmoid(x: Tensor) -> ApplyArgs:
        \"\"\"1 / (1 + e^-x).\"\"\"
        check_float("sigmoid", "x", x)
        return (x,)                      # the arguments of Sigmoid.apply

or, with the default checks (every tensor argument floating point, all on one device)::

    declare("tanh", Tanh, native=torch.tanh, label="Tanh")

From the declarations come: the lowercase op itself (the checks, then :func:`handgrad.twins.apply`),
``get_ops("hand")`` and ``get_ops("native")``, :data:`OP_NAMES`, the ``__all__`` of
:mod:`handgrad.functional` and :mod:`handgrad` (:func:`publish`), the eager and compile twins,
graph labels and recomputation (:func:`spec_of_node`), and the check matrix's Function and native
reference for each op. Namespaces and tables are updated in place, so one built before a later
declaration (a model holding ``get_ops("hand")``) sees the new op too; :func:`undeclare` takes an
op out again (tests declare scratch ops).
"""

from __future__ import annotations

import inspect
import keyword
from collections.abc import Callable, Iterator, MutableMapping, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Optional

import torch

from . import twins
from .arguments import default_check
from .compat import forward_class

__all__ = [
    "OpSpec", "ApplyArgs", "declare", "op", "undeclare", "spec_of", "spec_of_function", "spec_of_node",
    "specs", "get_ops", "OP_NAMES", "publish",
]

#: what an op's argument check returns: the arguments of its Function's ``apply``, in order
ApplyArgs = tuple
#: recompute(node, inputs): the op's output from the values on its input edges (None where unknown), or None
Recompute = Callable[[Any, list], Optional[torch.Tensor]]
#: sample(dtype, device, generator): inputs for the lowercase op, the tensors requiring grad
Sample = Callable[[torch.dtype, str, torch.Generator], tuple]


@dataclass(frozen=True)
class OpSpec:
    """One op as declared: everything per-op that the rest of handgrad reads."""

    name: str  #: the lowercase name: ``get_ops(...).<name>``, ``handgrad.<name>``
    function: type[torch.autograd.Function]  #: the op's Function (setup_context style)
    native: Callable  #: PyTorch's counterpart, called like the lowercase op
    label: str  #: the node's label in graph pictures
    check: Callable[..., ApplyArgs]  #: checks a call's arguments, returns the Function's apply arguments
    recompute: Recompute  #: the op's output in a graph picture, from its inputs' values
    sample: Sample  #: small inputs for a check row when the check table has none for this op
    api: Callable  #: the lowercase op: ``check``, then the Function (or a twin) applied

    @property
    def key(self) -> str:
        """The name of the op in the twin tables: its Function's class name."""
        return self.function.__name__


_SPECS: dict[str, OpSpec] = {}
_HAND = SimpleNamespace(kind="hand")
_NATIVE = SimpleNamespace(kind="native")
_PUBLISHED: list[MutableMapping[str, Any]] = []  # module namespaces that export every op (publish)


# ---------------------------------------------------------------------------------------------
# declaring
# ---------------------------------------------------------------------------------------------


def declare(name: str, function: type[torch.autograd.Function], *, native: Callable, label: str | None = None,
            check: Callable[..., ApplyArgs] | None = None, recompute: Recompute | None = None,
            sample: Sample | None = None) -> OpSpec:
    """Declare op ``name``: its Function, native counterpart and, optionally, the rest (defaults below).

    ``label`` defaults to the Function's class name; ``check`` to
    :func:`handgrad.arguments.default_check` (float tensors on one device, arguments bound to
    ``forward``'s signature); ``recompute`` to the native op on the node's inputs; ``sample`` to one
    (3, 4) tensor for each argument of the lowercase op without a default. Returns the op's
    :class:`OpSpec`; the lowercase op is its ``api``.
    """
    _check_declaration(name, function, native)
    check = check if check is not None else default_check(name, function)
    twins.add_twins(function)
    spec = OpSpec(name, function, native, label or function.__name__, check,
                  recompute or _native_recompute(native), sample or _default_sample(check),
                  _lowercase(name, function.__name__, check))
    _SPECS[name] = spec
    setattr(_HAND, name, spec.api)
    setattr(_NATIVE, name, native)
    for namespace in _PUBLISHED:
        _export(namespace, spec)
    return spec


def op(function: type[torch.autograd.Function], *, native: Callable, label: str | None = None,
       recompute: Recompute | None = None, sample: Sample | None = None) -> Callable[[Callable[..., ApplyArgs]], Callable]:
    """Declare an op by decorating its argument check: the function's name is the op's, and it returns the lowercase op.

    The decorated function takes the lowercase op's arguments, raises on a bad one, and returns the
    arguments of ``function.apply``; its docstring and signature become the op's.
    """

    def decorate(check: Callable[..., ApplyArgs]) -> Callable:
        return declare(check.__name__, function, native=native, label=label, check=check, recompute=recompute,
                       sample=sample).api

    return decorate


def undeclare(name: str) -> None:
    """Take op ``name`` out of the registry, the namespaces, the twin tables and every published module."""
    spec = _SPECS.pop(name, None)
    if spec is None:
        raise KeyError(f"undeclare: no op named {name!r} is declared.")
    delattr(_HAND, name)
    delattr(_NATIVE, name)
    twins.remove_twins(spec.key)
    for namespace in _PUBLISHED:
        if namespace.get(name) is spec.api:
            del namespace[name]
        if name in namespace.get("__all__", ()):
            namespace["__all__"].remove(name)


def _check_declaration(name, function, native) -> None:
    if not (isinstance(name, str) and name.isidentifier() and name == name.lower() and not keyword.iskeyword(name)):
        raise ValueError(f"declare: an op's name must be a lowercase Python identifier, got {name!r}.")
    if name in _SPECS or name == "kind":
        raise ValueError(f"declare: {name!r} is taken; undeclare it first or choose another name.")
    if not (isinstance(function, type) and issubclass(function, torch.autograd.Function)):
        raise TypeError(f"declare: {name}'s function must be a torch.autograd.Function subclass, got {function!r}.")
    if function.setup_context is torch.autograd.Function.setup_context:
        raise TypeError(f"declare: {function.__name__} must define forward(*inputs) and setup_context(ctx, inputs, output) "
                        "(the style torch.func needs), not forward(ctx, ...).")
    if function.__name__ in twins.FUNCTIONS:
        raise ValueError(f"declare: another op's Function is already called {function.__name__}; rename the class.")
    if not callable(native):
        raise TypeError(f"declare: {name}'s native counterpart must be callable, got {native!r}.")


def _lowercase(name: str, key: str, check: Callable[..., ApplyArgs]) -> Callable:
    """The lowercase op: the declared checks, then the Function in the form the context needs."""

    def lowercase(*args, **kwargs):
        return twins.apply(key, *check(*args, **kwargs))

    lowercase.__name__ = lowercase.__qualname__ = name
    lowercase.__doc__ = check.__doc__
    lowercase.__module__ = check.__module__
    lowercase.__signature__ = inspect.signature(check).replace(return_annotation="Tensor")
    lowercase.__wrapped__ = check  # NOTE: inspect.getsource(hg.relu) shows the declaration, not this wrapper
    return lowercase


def _native_recompute(native: Callable) -> Recompute:
    def recompute(node, inputs):
        return None if any(v is None for v in inputs) else native(*inputs)

    return recompute


def _default_sample(check: Callable) -> Sample:
    """One (3, 4) tensor for each argument of the lowercase op that has no default."""
    params = [p for p in inspect.signature(check).parameters.values()
              if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]

    def sample(dtype, device, generator):
        return tuple(torch.randn((3, 4), generator=generator, dtype=torch.float64).to(dtype=dtype, device=device)
                     .requires_grad_() for _ in params)

    return sample


# ---------------------------------------------------------------------------------------------
# looking up
# ---------------------------------------------------------------------------------------------


def specs() -> list[OpSpec]:
    """Every declared op, in the order of declaration."""
    return list(_SPECS.values())


def spec_of(name: str) -> OpSpec:
    """The declaration of op ``name``; a KeyError naming the declared ops if there is none."""
    try:
        return _SPECS[name]
    except KeyError:
        raise KeyError(f"no op named {name!r} is declared; declared: {', '.join(_SPECS)}.") from None


def spec_of_function(cls) -> OpSpec | None:
    """The op whose Function ``cls`` is, or is a twin of (``FAST``/``COMPILED``); None for any other class."""
    if cls is None:
        return None
    # NOTE: the live twin tables, not the classes made at declaration: a test that swaps in a
    # deliberately broken twin still sees it drawn and labelled as the op it stands for.
    for table in (twins.FUNCTIONS, twins.FAST, twins.COMPILED):
        for key, candidate in table.items():
            if candidate is cls:
                return next((s for s in _SPECS.values() if s.key == key), None)
    return None


def spec_of_node(node) -> OpSpec | None:
    """The op an autograd node is the backward of (any of its twins), or None for other nodes."""
    return spec_of_function(forward_class(node))


class _OpNames(Sequence):
    """The declared ops' names, in order of declaration: a live, read-only tuple."""

    def __getitem__(self, i):
        return tuple(_SPECS)[i]

    def __len__(self) -> int:
        return len(_SPECS)

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(_SPECS))

    def __contains__(self, name) -> bool:
        return name in _SPECS

    def __eq__(self, other) -> bool:
        return tuple(self) == (tuple(other) if isinstance(other, (tuple, _OpNames)) else other)

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return repr(tuple(self))


#: the names of the declared ops, in order (updated as ops are declared and undeclared)
OP_NAMES: Sequence[str] = _OpNames()


def get_ops(kind: str = "hand") -> SimpleNamespace:
    """The ops namespace: ``"hand"`` (handgrad's Functions) or ``"native"`` (PyTorch's own), the same names in both.

    The namespace is one object, kept up to date: an op declared later appears in it as well.
    """
    if kind == "hand":
        return _HAND
    if kind == "native":
        return _NATIVE
    raise ValueError(f"get_ops: kind must be 'hand' or 'native', got {kind!r}.")


def publish(namespace: MutableMapping[str, Any]) -> None:
    """Export every op, now and declared later, from the module whose ``globals()`` is ``namespace``.

    Each op's lowercase function becomes a module attribute and its name joins ``__all__``.
    """
    _PUBLISHED.append(namespace)
    namespace.setdefault("__all__", [])
    for spec in _SPECS.values():
        _export(namespace, spec)


def _export(namespace: MutableMapping[str, Any], spec: OpSpec) -> None:
    namespace[spec.name] = spec.api
    if spec.name not in namespace["__all__"]:
        namespace["__all__"].append(spec.name)
