"""``python -m handgrad.graph``: see :mod:`handgrad.graph.cli`."""

import sys

from .cli import main

sys.exit(main())
