"""handgrad: neural-network ops with hand-written backward passes, proven by gradcheck.

>>> import torch, handgrad as hg
>>> x = torch.randn(4, 3, requires_grad=True)
>>> w = torch.randn(2, 3, requires_grad=True)
>>> hg.relu(hg.affine(x, w)).sum().backward()
>>> layer = hg.nn.Affine(3, 2)                      # modules: nn.Linear's arguments, ops="hand"

Every op (``hg.add``, ``hg.relu``, ...) is declared once in :mod:`handgrad.functional` and
exported here by the ops registry (:mod:`handgrad.registry`), which also exports ops declared later.

``import handgrad`` alone does not import torch: the ops, ``nn``, ``get_ops`` and ``OP_NAMES`` load
on first use (PEP 562), so that ``python -m handgrad.check --help`` and a mistyped flag answer at once.
"""

from __future__ import annotations

import importlib
import importlib.util

__version__ = "0.1.0"

# NOTE: what loading adds to the namespace; every declared op joins __all__ as well (registry.publish).
_NAMES = ("OP_NAMES", "functions", "get_ops", "nn", "registry")
_loading = False


def _load() -> None:
    """Import the ops (torch with them) and publish them here: every op, now and declared later."""
    namespace = globals()
    if "__all__" in namespace or _loading:
        return  # NOTE: a name asked for while the ops import is simply not there yet (AttributeError)
    namespace["_loading"] = True
    try:
        importlib.import_module(".functional", __name__)  # NOTE: importing it declares the ops
        registry = importlib.import_module(".registry", __name__)
        for module in ("functions", "nn"):
            importlib.import_module(f".{module}", __name__)
        namespace.update(OP_NAMES=registry.OP_NAMES, get_ops=registry.get_ops)
        namespace["__all__"] = list(_NAMES)
        registry.publish(namespace)
    finally:
        namespace["_loading"] = False


def __getattr__(name: str):
    if name.startswith("__") and name != "__all__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if importlib.util.find_spec(f"{__name__}.{name}") is not None:
        # NOTE: `from handgrad import graph` asks here first: a submodule is imported alone, not the ops
        return importlib.import_module(f".{name}", __name__)
    _load()
    try:
        return globals()[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


def __dir__():
    _load()
    return sorted(globals())
