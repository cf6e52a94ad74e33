"""``python -m handgrad.check``'s arguments, read before torch is imported.

``--help`` and a mistyped flag answer from here in a fraction of a second; the checks themselves
(:func:`handgrad.check.main`) import torch and the ops only after the arguments parse. Op names are
checked there, against the ops registry (ops declared by others count too), with one sentence and
exit status 2 for an unknown one.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence

__all__ = ["build_parser", "wants_function", "run_function", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The matrix's command line (``--function`` runs :func:`handgrad.testing.cli_function` instead)."""
    parser = argparse.ArgumentParser(
        prog="python -m handgrad.check",
        description="Run handgrad's gradient-check matrix and print it, op by column "
                    "(or, with --function, the same checks on your own Function: see --function --help).",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument("--op", nargs="+", metavar="NAME", help="only these ops (default: all)")
    parser.add_argument("--verbose", action="store_true", help="one line per case as well")
    return parser


def wants_function(argv: Sequence[str]) -> bool:
    """Whether the command line checks a user's Function (``--function``) rather than handgrad's ops."""
    return any(a == "--function" or a.startswith("--function=") for a in argv)


def run_function(argv: list[str]) -> int:
    """``--function ...``: the engine's command line on a user's Function (--op has no place there)."""
    if any(a == "--op" or a.startswith("--op=") for a in argv):
        print("error: --op checks handgrad's own ops and --function a Function of yours; give one of them.",
              file=sys.stderr)
        return 2
    warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)  # NOTE: as check.main
    from .testing.cli import cli_function  # NOTE: it, too, parses before importing torch

    return cli_function(argv, prog="python -m handgrad.check")


def main(argv: Sequence[str] | None = None) -> int:
    """Parse (``--help``, usage mistakes: exit here, torch not imported), then run :func:`handgrad.check.main`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if wants_function(argv):
        return run_function(argv)
    build_parser().parse_args(argv)  # NOTE: only to answer --help and bad flags early; check.main parses again
    from . import check

    return check.main(argv)
