"""handgrad: neural-network ops with hand-written backward passes, proven by gradcheck.

>>> import torch, handgrad as hg
>>> x = torch.randn(4, 3, requires_grad=True)
>>> w = torch.randn(2, 3, requires_grad=True)
>>> hg.relu(hg.affine(x, w)).sum().backward()
>>> layer = hg.nn.Affine(3, 2)                      # modules: nn.Linear's arguments, ops="hand"

Every op (``hg.add``, ``hg.relu``, ...) is declared once in :mod:`handgrad.functional` and
exported here by the ops registry (:mod:`handgrad.registry`), which also exports ops declared later.
"""

from . import functional, functions, nn, registry  # noqa: F401 - functional: importing it declares the ops
from .registry import OP_NAMES, get_ops

__version__ = "0.1.0"

# NOTE: every declared op joins __all__ (registry.publish below), so declaring one is one place.
__all__ = ["OP_NAMES", "functions", "get_ops", "nn", "registry"]

registry.publish(globals())
