"""``python -m handgrad.testing --function file.py:Name --shape 4,3``: the checks on your own Function from a shell.

Every mistake in the arguments is one sentence on stderr and exit status 2 (a Module or a plain class
instead of a Function, a file without ``:Name``, fewer ``--shape`` values than the Function takes).
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
from collections.abc import Sequence

from .loading import UsageError, load, parse_device, parse_dtypes

__all__ = ["cli_function", "main"]


def _shape(text: str) -> tuple[int, ...]:
    """'4,3' or '4x3' -> (4, 3); '()' or '' -> () (a 0-d tensor)."""
    inner = text.strip().strip("()").replace(" ", "").rstrip(",")
    if inner and not re.fullmatch(r"\d+([,x]\d+)*", inner):
        raise UsageError(f"--shape {text!r} is not a shape; write sizes separated by commas, e.g. 4,3 (or () for 0-d).")
    return tuple(int(n) for n in re.split("[,x]", inner)) if inner else ()


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Run handgrad's whole gradient-check matrix on your own autograd.Function and print the report.",
    )
    parser.add_argument("--function", required=True, metavar="FILE.py:NAME|MODULE:NAME",
                        help="the autograd.Function class (or any callable built on one) to check")
    parser.add_argument("--reference", metavar="DOTTED.NAME",
                        help="what values and gradients must equal, e.g. torch.nn.functional.gelu (default: none)")
    parser.add_argument("--shape", action="append", nargs="+", required=True, metavar="SHAPE",
                        help="one sample: the shape of each tensor argument, e.g. --shape 4,3 3; repeat for more samples")
    parser.add_argument("--elementwise", action="store_true", help="also check 0-d and empty inputs")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cpu, and cuda when present)")
    parser.add_argument("--dtypes", default="float32,bfloat16,float16",
                        help="lower precisions to check against the reference (default: float32,bfloat16,float16)")
    parser.add_argument("--compile", nargs="?", const="inductor", default=None, metavar="BACKEND",
                        help="also check torch.compile(fullgraph=True) (default backend: inductor)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default: 0)")
    return parser


def _target(spec: str):
    """(callable to check, its Function class or None) from ``--function``; UsageError for a Module or a plain class."""
    import torch

    target = load(spec, "--function")
    if isinstance(target, type) and issubclass(target, torch.autograd.Function):
        return target.apply, target
    if isinstance(target, type):
        kind = "a torch.nn.Module" if issubclass(target, torch.nn.Module) else "a class"
        raise UsageError(f"--function {spec} is {kind}, not an autograd.Function or a function; name a Function "
                         "class or a function that calls it.")
    return target, None


def _arity(fn, function) -> tuple[int, int | None] | None:
    """(required, most) positional arguments of the Function's forward (or of fn), None when unknown."""
    try:
        forward = function.forward if function is not None else fn
        params = list(inspect.signature(forward).parameters.values())
    except (TypeError, ValueError):
        return None
    if function is not None and "setup_context" not in vars(function) and params:
        params = params[1:]  # NOTE: the old style's forward(ctx, ...)
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return sum(p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params), None
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return sum(p.default is p.empty for p in positional), len(positional)


def cli_function(argv: Sequence[str] | None = None, prog: str = "python -m handgrad.testing") -> int:
    """``--function ... --shape ...``: check a user's Function from the command line; 0 when all passes, 1 if not.

    Bad arguments: one sentence on stderr and exit status 2 (``SystemExit``).
    """
    parser = _parser(prog)
    args = parser.parse_args(argv)
    try:
        fn, function = _target(args.function)
        reference = load(args.reference, "--reference") if args.reference else None
        shapes = [[_shape(s) for s in sample] for sample in args.shape]
        arity = _arity(fn, function)
        for sample in shapes:
            if arity and (len(sample) < arity[0] or (arity[1] is not None and len(sample) > arity[1])):
                want = f"{arity[0]}" if arity[1] in (arity[0], None) else f"{arity[0]} to {arity[1]}"
                raise UsageError(f"--function {args.function} takes {want} tensor argument(s) and --shape gave "
                                 f"{len(sample)}; give one shape per argument, e.g. --shape {' '.join(['4,3'] * arity[0])}.")
        options = dict(elementwise=args.elementwise, dtypes=parse_dtypes(args.dtypes), device=parse_device(args.device),
                       compile=args.compile or False, seed=args.seed)
    except UsageError as exc:
        parser.exit(2, f"error: {exc}\n")
    from .api import check_function

    report = check_function(fn, _random_samples(shapes, args.seed), reference, function=function, **options)
    print(report)
    return 0 if report.ok else 1


def _random_samples(shapes: list[list[tuple]], seed: int) -> list[tuple]:
    import torch

    gen = torch.Generator().manual_seed(seed)
    return [tuple(torch.randn(s, generator=gen, dtype=torch.float64) for s in sample) for sample in shapes]


def main(argv: Sequence[str] | None = None) -> int:
    return cli_function(argv)


if __name__ == "__main__":
    sys.exit(main())
