"""train.py's command line: flag types, the parser, presets under the flags, and --ops decoded.

No torch here: ``python train.py --help`` and a mistyped flag answer before torch is imported.
Expected mistakes are one line and exit status 2 (``_Parser.error``).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

from models.presets import PRESETS, as_flags

__all__ = ["HPARAMS", "MAX_EPOCHS", "MAX_HISTOGRAMS", "MAX_LAYER", "MAX_SEED", "HelpFormatter", "OpsChoice",
           "build_parser", "ops_choice", "parse_args"]

# the flags shown beside the final metrics in TensorBoard's HPARAMS tab
HPARAMS = ("ops", "lr", "momentum", "weight_decay", "batch_size", "epochs", "activation", "loss", "seed", "dtype", "hidden",
           "preset", "bias")
# NOTE: bounds checked at parse time, before anything is built from them
MAX_EPOCHS = 100_000
MAX_LAYER = 65_536
MAX_HISTOGRAMS = 10_000
MAX_SEED = 2**64 - 1  # what torch.manual_seed accepts


def _bounded_int(low: int, high: int | None = None, what: str = "a positive integer"):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {what}" + (f" up to {high:,}" if high is not None else "")
                                             + f", got {text}")
        return value

    parse.__name__ = "int"
    return parse


_positive_int = _bounded_int(1)
_non_negative_int = _bounded_int(0, what="an integer >= 0")


def _seed(text: str) -> int:
    """A whole number 0 .. 2**64 - 1 (torch's seed range); anything else is refused here, not deep in torch."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number from 0 to {MAX_SEED}, got {text!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"expected a whole number from 0 to {MAX_SEED}, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
    return value


def _fault(text: str) -> str:
    from handgrad.faults import FaultError, parse_fault

    try:
        return str(parse_fault(text))
    except FaultError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _hidden(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer sizes like 256,128, got {text!r}") from None
    if not sizes:
        raise argparse.ArgumentTypeError(f"expected at least one hidden layer size like 256,128, got {text!r}")
    if any(s < 1 or s > MAX_LAYER for s in sizes):
        raise argparse.ArgumentTypeError(f"layer sizes must be from 1 to {MAX_LAYER:,}, got {text!r}")
    return sizes


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line (no usage dump), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see python train.py --help)\n")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Adds "(default: X)" once: not where the help already names its default, nor for None or a switch."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default is None or action.default is False:
            return text
        return super()._get_help_string(action)


def _presets_epilog() -> str:
    lines = ["presets (--preset NAME sets these values; a flag given on the command line wins):"]
    for name, preset in PRESETS.items():
        lines += [f"  {name}: {preset.summary}", f"      {as_flags(preset.values)}"]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        description="Train an MLP on MNIST with hand-written (or native) autograd ops.",
        formatter_class=HelpFormatter,
        epilog=_presets_epilog(),
    )
    p.add_argument("--preset", choices=list(PRESETS), default="default",
                   help="named training setup (listed below); explicit flags override its values")
    p.add_argument("--epochs", type=_bounded_int(1, MAX_EPOCHS), default=5,
                   help="epochs in all; resuming a finished run with more adds a schedule of its own for the rest")
    p.add_argument("--batch-size", type=_positive_int, default=128, help="training batch size")
    p.add_argument("--lr", type=_non_negative_float, default=0.1, help="peak learning rate of the one-cycle schedule")
    p.add_argument("--momentum", type=_non_negative_float, default=0.9, help="SGD Nesterov momentum (0 turns it off)")
    p.add_argument("--weight-decay", type=_non_negative_float, default=5e-4,
                   help="λ of the L2 penalty λ/2 Σ‖W‖², applied by the l2_penalty op")
    p.add_argument("--schedule", choices=["onecycle", "constant"], default="onecycle", help="learning-rate schedule")
    p.add_argument("--hidden", type=_hidden, default="256,128", help="hidden layer sizes, comma-separated")
    p.add_argument("--activation", choices=["relu", "sigmoid"], default="relu", help="hidden activation")
    p.add_argument("--loss", choices=["ce", "mse"], default="ce", help="cross-entropy or squared error")
    p.add_argument("--bias", action=argparse.BooleanOptionalAction, default=True,
                   help="Affine layers with bias terms (--no-bias: x Wᵀ only, as in seed 004)")
    p.add_argument("--ops", choices=["hand", "native", "compare"], default="hand",
                   help="handgrad's ops, PyTorch's, or hand with native gradients checked every step")
    p.add_argument("--compare-tol", type=_non_negative_float, default=None,
                   help="with --ops compare: largest relative gradient error allowed "
                        "(default: 1e-8 in float64, 1e-4 in float32)")
    p.add_argument("--compare-dtype", choices=["float64", "float32"], default="float64",
                   help="with --ops compare: recompute both gradients in float64 at each step, or compare the "
                        "training gradients as they are")
    p.add_argument("--inject-fault", type=_fault, default=None, metavar="OP:scale=S",
                   help="swap a deliberately wrong backward into the hand ops, e.g. relu:scale=1.5 "
                        "(to see a bug on the dashboard and in the compare verdict)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32", help="parameter and data dtype")
    p.add_argument("--seed", type=_seed, default=0, help="seed for weights and batch order, 0 to 2**64-1")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--data-dir", default=None,
                       help="folder holding the four MNIST files, itself or in MNIST/raw or raw "
                            "(default: $HANDGRAD_DATA, else ./data)")
    where.add_argument("--sample", action="store_true",
                       help="train on the 10,000-digit MNIST sample shipped with handgrad (8,000 train / 2,000 test)")
    p.add_argument("--no-download", action="store_true", help="never download MNIST")
    p.add_argument("--no-fallback", action="store_true",
                   help="fail instead of training on the shipped sample when no folder was given and ./data has no MNIST")
    p.add_argument("--limit-train", type=_positive_int, default=None, help="use only the first N training images")
    p.add_argument("--logdir", default=None, help="TensorBoard folder (default: runs/<time>-<ops>-<activation>-...)")
    p.add_argument("--no-log", action="store_true", help="write no TensorBoard events")
    p.add_argument("--log-dense", type=_non_negative_int, default=100,
                   help="log gradient/weight statistics at every one of the first N steps")
    p.add_argument("--log-every", type=_positive_int, default=50,
                   help="after the first --log-dense steps, steps between statistics (and always each epoch's last)")
    p.add_argument("--histograms", type=_bounded_int(0, MAX_HISTOGRAMS, "an integer >= 0"), default=10,
                   help="weight and gradient histogram snapshots per run, spread evenly over full batches (0: none)")
    p.add_argument("--save", default=None,
                   help="checkpoint path, written atomically after every epoch (and at the step on Ctrl-C or SIGTERM); "
                        "a new file or a checkpoint of this same run")
    p.add_argument("--overwrite", action="store_true",
                   help="let --save replace a file that is not a checkpoint of this run")
    p.add_argument("--resume", default=None,
                   help="checkpoint to continue from (also where checkpoints go when --save is not given)")
    p.add_argument("--stop-after", type=_positive_int, default=None,
                   help="stop after this many epochs in this run (the schedule still spans --epochs)")
    p.add_argument("--deterministic", action="store_true", help="use deterministic algorithms only")
    p.add_argument("--detect-anomaly", action="store_true", help="autograd anomaly detection (2-3x slower)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model's objective")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Flags over the preset's values over the parser's defaults.

    The preset becomes the parser's defaults before the real parse, so a flag on the command
    line always wins and ``--preset NAME --help`` shows the values that preset would use.
    """
    first = _Parser(add_help=False)
    first.add_argument("--preset", choices=list(PRESETS), default="default")
    known, _ = first.parse_known_args(argv)
    parser = build_parser()
    # NOTE: a default given as text goes through the flag's own type, as typed flags do (and --help
    # shows it as the user would type it: 256,128)
    values = {k: ",".join(map(str, v)) if isinstance(v, (list, tuple)) else v for k, v in PRESETS[known.preset].values.items()}
    parser.set_defaults(**values)
    args = parser.parse_args(argv)
    if args.inject_fault and args.ops == "native":
        parser.error("--inject-fault swaps a wrong backward into the hand ops, and --ops native runs none; "
                     "use --ops hand or --ops compare")
    if args.ops != "compare" and (args.compare_tol is not None or args.compare_dtype != "float64"):
        parser.error("--compare-tol and --compare-dtype apply only with --ops compare")
    return args


@dataclass(frozen=True)
class OpsChoice:
    """--ops decoded in this one place: the ops the model is built from, and whether native gradients check it."""

    label: str  # --ops as typed: hand, native or compare (names the run in logs)
    model_ops: str  # "hand" or "native": what models.mlp.MLP is built from
    compare_tol: float | None  # with --ops compare: the largest relative gradient error allowed; else None
    compare_dtype: str | None = None  # with --ops compare: "float64" (recomputed) or "float32" (as trained)

    @property
    def compare(self) -> bool:
        return self.compare_tol is not None


def ops_choice(args: argparse.Namespace) -> OpsChoice:
    if args.ops == "compare":
        from handgrad.compare import DEFAULT_TOL

        tol = args.compare_tol if args.compare_tol is not None else DEFAULT_TOL[args.compare_dtype]
        return OpsChoice("compare", "hand", tol, args.compare_dtype)
    return OpsChoice(args.ops, args.ops, None)

