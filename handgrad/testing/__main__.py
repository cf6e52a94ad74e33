"""``python -m handgrad.testing --function file.py:Name --shape 4,3``."""

import sys

from .cli import main

sys.exit(main())
