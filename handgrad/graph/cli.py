"""``python -m handgrad.graph``: the notes' graphs from live tensors, as mermaid or DOT text or a PNG / SVG picture."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["build_parser", "main"]

#: the names of :data:`handgrad.graph.examples.EXAMPLES`, here so that --help and a typo answer before torch is imported
EXAMPLE_NAMES = ("shopping", "xyz", "neuron", "mlp")

_FORMATS = ("mermaid", "dot", "png", "svg")
_BY_SUFFIX = {".png": "png", ".svg": "svg", ".dot": "dot", ".gv": "dot", ".mmd": "mermaid", ".mermaid": "mermaid"}
#: suffixes of formats a user may expect but handgrad does not write (matplotlib's others need extra backends)
_NOT_WRITTEN = {".jpg": "JPEG", ".jpeg": "JPEG", ".pdf": "PDF", ".gif": "GIF", ".bmp": "BMP", ".tif": "TIFF",
                ".tiff": "TIFF", ".webp": "WebP", ".eps": "EPS", ".ps": "PostScript", ".html": "HTML"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m handgrad.graph",
        description="Draw the notes' computational graphs from live tensors: values on the edges, or gradients with --backward.",
    )
    p.add_argument("--example", choices=EXAMPLE_NAMES, default="shopping", help="which graph (default: shopping)")
    p.add_argument("--backward", action="store_true", help="draw the gradients instead of the forward values")
    p.add_argument("--format", choices=_FORMATS, default=None,
                   help="mermaid or dot text, png or svg picture (default: from --output's suffix, else mermaid)")
    p.add_argument("--output", default=None,
                   help="file to write: .png, .svg, .mmd or .dot (default: text to stdout, pictures to "
                        "graph-<example>[-backward].<format>)")
    return p


def _format_of(args, parser) -> str:
    """The format to write: --format, else the output's suffix, else mermaid; a suffix that cannot be honoured is refused."""
    if not args.output:
        return args.format or "mermaid"
    suffix = Path(args.output).suffix.lower()
    if suffix in _NOT_WRITTEN:
        parser.error(f"handgrad.graph writes PNG or SVG pictures, not {_NOT_WRITTEN[suffix]}: "
                     f"name the file {Path(args.output).with_suffix('.png').name!r} or "
                     f"{Path(args.output).with_suffix('.svg').name!r}")
    guessed = _BY_SUFFIX.get(suffix)
    if args.format and guessed and guessed != args.format:
        parser.error(f"--format {args.format} does not match the output file {args.output!r}")
    if args.format in ("png", "svg") and suffix != f".{args.format}":
        parser.error(f"--format {args.format} needs an output file ending in .{args.format}, got {args.output!r}")
    if not args.format and not guessed:
        parser.error(f"cannot tell the format of {args.output!r} from its suffix: use .png or .svg for a picture, "
                     ".mmd for mermaid or .dot for DOT text, or say --format")
    return args.format or guessed


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # NOTE: before the imports below (torch): --help and a typo answer at once

    from ..files import write_atomically
    from .draw import MatplotlibMissing, check_target, render
    from .examples import example
    from .text import dot, mermaid

    try:
        target = check_target(args.output, "python -m handgrad.graph") if args.output else None
    except ValueError as err:
        print(err, file=sys.stderr)
        return 1
    fmt = _format_of(args, parser)
    output, names = example(args.example)
    try:
        if fmt in ("png", "svg"):
            path = target or Path(f"graph-{args.example}{'-backward' if args.backward else ''}.{fmt}")
            print(f"wrote {render(output, path, names, backward=args.backward)}")
            return 0
        text = (mermaid if fmt == "mermaid" else dot)(output, names, backward=args.backward)
        if target:
            write_atomically(target, lambda f: f.write(text.encode("utf-8")))
            print(f"wrote {args.output}")
        else:
            sys.stdout.write(text)
    except MatplotlibMissing as err:
        print(err, file=sys.stderr)
        return 1
    except (OSError, ValueError) as err:
        print(f"python -m handgrad.graph: {err}", file=sys.stderr)
        return 1
    return 0
