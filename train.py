"""Train an MLP on MNIST with handgrad's hand-written ops, or PyTorch's native ones.

    python train.py                                   # 784-256-128-10, 5 epochs, hand ops
    python train.py --ops native                      # the same with PyTorch's ops
    python train.py --ops compare --epochs 1          # hand ops, native gradients checked every step
    python train.py --data-dir ../shared/data --save ckpt.pt --resume ckpt.pt   # starts, or goes on (same flags)
    python train.py --resume ckpt.pt --epochs 20      # a finished run, 20 epochs in all (a new schedule for the rest)
    python train.py --sample --epochs 1               # the 10,000-digit sample shipped with handgrad
    torchrun --standalone --nproc-per-node 2 train.py # two processes, DDP; --batch-size is the global batch
    python train.py --preset seed001                  # the notes' sigmoid + squared-error network
    python train.py --preset seed004 --epochs 3       # a preset, one value overridden
    tensorboard --logdir runs                         # look at the gradients

Data: the four MNIST files in --data-dir, else in $HANDGRAD_DATA (a given folder without them is
an error), else in ./data; downloaded when missing (unless --no-download); with no folder given
and nothing found, the MNIST sample shipped with handgrad (unless --no-fallback).

Checkpoints: --save writes a new file, or replaces a checkpoint of the same run (same flags and
data); anything else is refused before training unless --overwrite is given. A lock beside the
file (.NAME.lock) keeps a second run off the same path. --resume without --save saves back to the
resumed file; --resume P --save P with no P yet starts the run that later calls resume.

Stages: the flags are parsed first (so --help and a typo answer before torch is imported), then
seed and device, data, model and optimizer, resume, monitor, the epoch loop and the summary.
Expected mistakes print one sentence and exit nonzero: 2 for bad arguments, data or checkpoints,
3 for a non-finite loss or gradient, 4 for a failed --ops compare, 130 for Ctrl-C and 143 for
SIGTERM (at any moment; a checkpoint is never half-written, and one is written at the step).
"""

from __future__ import annotations

import os
import signal
import sys


def _quit_during_startup(signum, frame) -> None:
    os.write(2, b"interrupted during start-up; nothing was written.\n")
    os._exit(128 + signum)


if __name__ == "__main__":
    # NOTE: installed before torch is imported (seconds): Ctrl-C or SIGTERM during start-up is one
    # line, not a 70-line traceback. cli() replaces it once the imports are done.
    signal.signal(signal.SIGINT, _quit_during_startup)
    signal.signal(signal.SIGTERM, _quit_during_startup)

import argparse
import math
from dataclasses import dataclass

from models.presets import PRESETS, as_flags

# the flags shown beside the final metrics in TensorBoard's HPARAMS tab
HPARAMS = ("ops", "lr", "momentum", "weight_decay", "batch_size", "epochs", "activation", "loss", "seed", "dtype", "hidden",
           "preset", "bias")
# NOTE: bounds checked at parse time, before anything is built from them
MAX_EPOCHS = 100_000
MAX_LAYER = 65_536
MAX_HISTOGRAMS = 10_000
MAX_SEED = 2**64 - 1  # what torch.manual_seed accepts


# ---------------------------------------------------------------------------------------------
# flags (no torch here: --help and a typo answer at once)
# ---------------------------------------------------------------------------------------------


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


if __name__ == "__main__":
    parse_args()  # NOTE: --help and a flag typo answer here, before torch is imported (seconds)

import copy  # noqa: I001 - NOTE: the heavy imports come after the parse above, on purpose
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import field
from datetime import datetime
from pathlib import Path

import torch

from handgrad import compat, distributed
from handgrad.checkpoint import CheckpointError, check_save_path, save_checkpoint, save_lock
from handgrad.compare import CompareResult, Comparison, GradientMismatch, Objective
from handgrad.data import DataError, MNISTData, load_mnist
from handgrad.devices import parse_device
from handgrad.functional import get_ops
from handgrad.monitor import LogSchedule, Monitor
from handgrad.resume import (CHECKPOINT_VERSION, SCHEDULE_NAMES, NothingToDo, TrainError, check_resume,
                             check_save_data, check_save_target, is_finished, load_checkpoint, resumed_line, same_file)
from models.mlp import MLP

# ---------------------------------------------------------------------------------------------
# Ctrl-C and SIGTERM
# ---------------------------------------------------------------------------------------------


class _CtrlC:
    """Ctrl-C (and SIGTERM) raise KeyboardInterrupt, except inside ``held()``, which delivers it when the block ends.

    NOTE: an update (optimizer step, schedule step, counters) is applied whole or not at all, so
    the checkpoint written on Ctrl-C never records half of one. Installed by cli() only. SIGTERM
    (what a scheduler, ``timeout`` or a container stop sends) is handled the same way; ``signum``
    says which one arrived.
    """

    def __init__(self) -> None:
        self.depth, self.pending, self.signum = 0, False, signal.SIGINT

    def install(self) -> None:
        self.signum = signal.SIGINT
        signal.signal(signal.SIGINT, self._handler)
        signal.signal(signal.SIGTERM, self._handler)

    def _handler(self, signum, frame) -> None:
        self.signum = signum
        if self.depth:
            self.pending = True
        else:
            raise KeyboardInterrupt

    @contextmanager
    def held(self):
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
            if not self.depth and self.pending:
                self.pending = False
                raise KeyboardInterrupt


CTRL_C = _CtrlC()


# ---------------------------------------------------------------------------------------------
# the pieces of a step
# ---------------------------------------------------------------------------------------------


def first_non_finite(model: torch.nn.Module) -> str | None:
    for name, p in model.named_parameters():
        if p.grad is not None and not torch.isfinite(p.grad).all():
            return name
    return None


def evaluate(model: MLP, data, batch_size: int = 1000) -> tuple[float, float]:
    """(mean data loss, accuracy in %) on the test set."""
    model.eval()
    total_loss = torch.zeros((), dtype=torch.float64, device=data.test_x.device)
    correct = torch.zeros((), dtype=torch.int64, device=data.test_x.device)
    with torch.no_grad():
        for x, y in data.test_batches(batch_size):
            logits = model(x)
            total_loss += model.data_loss(logits, y).double() * y.numel()
            correct += (logits.argmax(dim=-1) == y).sum()
    model.train()
    n = max(data.test_y.numel(), 1)
    return total_loss.item() / n, 100.0 * correct.item() / n


def _log_graph(monitor: Monitor, model: MLP, data, batch_size: int) -> None:
    """The objective's autograd graph on one test batch: Graphs-tab data, the picture in Images, mermaid in Text.

    Read and drawn on the monitor's picture thread (about a second) from a copy of the model at step 0,
    so training starts at once and the graph shows the weights before the first update.
    """
    if monitor.writer is None:
        return
    from handgrad.graph import write_model_graph

    twin = copy.deepcopy(model)
    compat.drop_forward_hooks(twin)  # NOTE: the monitor's hooks must not see the copy's forward pass
    x, y = data.test_x[:batch_size].clone(), data.test_y[:batch_size].clone()
    monitor.graph_later(lambda writer: write_model_graph(writer, twin, x, y, step=0))


# ---------------------------------------------------------------------------------------------
# the stages before the loop: outputs, seed and device, data, model and optimizer, resume, monitor
# ---------------------------------------------------------------------------------------------


def _default_logdir(args, ops: OpsChoice) -> str:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    hidden = "x".join(map(str, args.hidden))
    return str(Path("runs") / f"{stamp}-{ops.label}-{args.activation}-{args.loss}-h{hidden}-s{args.seed}")


def _check_writable(path: Path, what: str) -> list[Path]:
    """A folder (created if missing) that takes a new file; returns the folders it created, deepest first.

    NOTE: --logdir only (--save: check_save_path). The caller removes the created folders again
    if the run stops before writing anything into them (a refused resume, a data error).
    """
    created = [p for p in (path, *path.parents) if not p.exists()]
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        _remove_empty(created)
        raise TrainError(f"{what} {path} is not writable ({exc.strerror or exc}); choose another path.") from None
    return created


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:  # deepest first; a folder with anything in it stays
        with suppress(OSError):
            folder.rmdir()


@dataclass
class Outputs:
    """Where this process writes: the checkpoint path (under its lock), TensorBoard's folder, the progress bar."""

    save: str | None
    logdir: str | None
    show_bar: bool
    created: list = field(default_factory=list)  # folders made for logdir, removed if left empty


def plan_outputs(args, ops: OpsChoice, procs: distributed.Processes, stack: ExitStack) -> Outputs:
    """Checked now, before minutes of loading and training: --save (path, what it holds, its lock) and --logdir.

    --resume without --save saves back to the resumed file. Only process 0 writes under torchrun.
    """
    if not procs.writes:
        return Outputs(None, None, False)
    save = args.save or args.resume
    if save:
        check_save_path(save)
        check_save_target(save, vars(args), args.overwrite, args.resume)
        stack.enter_context(save_lock(save))
    logdir = None if args.no_log else (args.logdir or _default_logdir(args, ops))
    out = Outputs(save, logdir, not args.quiet and sys.stderr.isatty())
    if logdir:
        out.created = _check_writable(Path(logdir), "--logdir")
        stack.callback(_remove_empty, out.created)
    return out


def read_resume(args) -> dict | None:
    """The --resume checkpoint, read before the data: a missing key, a newer version, an unreadable file fail fast.

    ``--resume P --save P`` with no P yet starts a new run that saves there, so one command both
    starts a run and continues it after an interruption.
    """
    if not args.resume:
        return None
    if args.save and same_file(args.save, args.resume) and not Path(args.resume).exists():
        print(f"{args.resume} does not exist yet: starting a new run that saves there (the same command resumes it)")
        return None
    return load_checkpoint(args.resume, "cpu")


def seed_and_device(args, procs: distributed.Processes) -> tuple[torch.device, torch.dtype]:
    """The device (torchrun's choice for this process, else --device), the dtype, the seed."""
    try:
        device = procs.device or parse_device(args.device)
    except ValueError as exc:
        raise TrainError(str(exc)) from None
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(args.seed)
    if args.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    torch.autograd.set_detect_anomaly(args.detect_anomaly)
    return device, dtype


def load_data(args, procs: distributed.Processes, device: torch.device, dtype: torch.dtype) -> MNISTData:
    with procs.first_on_each_machine():  # NOTE: under torchrun, a download happens once per machine
        return load_mnist(args.data_dir, device=device, dtype=dtype, download=not args.no_download,
                          fallback=not args.no_fallback, limit_train=args.limit_train, sample=args.sample)


def _scheduler(optimizer: torch.optim.Optimizer, args, total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    if args.schedule == "onecycle" and total_steps >= 4:
        # NOTE: warm up for a quarter of the run, but at least 2 steps: OneCycleLR divides by
        # zero when its warm-up phase is a single step.
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=args.lr, total_steps=total_steps, pct_start=max(0.25, 2 / total_steps),
            cycle_momentum=False)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


@dataclass
class Run:
    """What the stages hand on: the flags, the data, the model and its optimizer, and the counters a checkpoint records."""

    args: argparse.Namespace
    ops: OpsChoice
    out: Outputs
    procs: distributed.Processes
    config: dict
    device: torch.device
    data: MNISTData
    model: MLP
    model_kwargs: dict
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    objective: Callable
    steps_per_epoch: int
    total_steps: int  # of the schedule: (epochs - schedule_start) * steps_per_epoch
    schedule_start: int = 0  # the epoch the schedule starts at: > 0 in a finished run extended by more epochs
    epoch: int = 0
    step_in_epoch: int = 0  # NOTE: > 0 only in a run resumed mid-epoch
    step: int = 0
    saved_at: int = 0  # the step the file at --save (if any) holds; Ctrl-C saves only newer work
    monitor: Monitor | None = None
    comparison: Comparison | None = None
    history: list[dict] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)


def build(args, ops: OpsChoice, out: Outputs, procs: distributed.Processes, device: torch.device, dtype: torch.dtype,
          data: MNISTData, schedule_start: int = 0) -> Run:
    """The model, its SGD optimizer and learning-rate schedule, and the objective each step calls."""
    config = {**vars(args), "hidden": list(args.hidden), "processes": procs.world, "schedule_start": schedule_start}
    model_kwargs = dict(hidden=args.hidden, activation=args.activation, loss=args.loss,
                        weight_decay=args.weight_decay, bias=args.bias, device=device, dtype=dtype)
    namespace = get_ops(ops.model_ops)
    if args.inject_fault:  # NOTE: the hand ops only; native stays the reference
        from handgrad.faults import inject

        namespace = inject(get_ops("hand"), args.inject_fault)
    model = MLP(namespace, **model_kwargs)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum, nesterov=args.momentum > 0)
    steps_per_epoch = data.steps_per_epoch(args.batch_size)
    total_steps = (args.epochs - schedule_start) * steps_per_epoch
    scheduler = _scheduler(optimizer, args, total_steps)
    objective = torch.compile(model.objective) if args.compile else model.objective
    if procs.launched:
        objective = procs.objective(Objective(model), compile=args.compile)  # DDP: each process runs its rows of every batch
    return Run(args, ops, out, procs, config, device, data, model, model_kwargs, optimizer, scheduler, objective,
               steps_per_epoch, total_steps, schedule_start)


def resume(run: Run, state: dict | None, extended: bool) -> None:
    """With --resume: the checkpoint's weights, optimizer, schedule, counters and random state (checked already)."""
    path = run.args.resume
    if state is not None:
        try:
            run.model.load_state_dict(state["model"])
            run.optimizer.load_state_dict(state["optimizer"])
            if not extended:  # NOTE: an extended run starts its own schedule (and keeps the momentum)
                run.scheduler.load_state_dict(state["scheduler"])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise TrainError(f"checkpoint {path} does not fit this model ({str(exc).splitlines()[0]}).") from None
        if extended:
            for group in run.optimizer.param_groups:  # NOTE: the loaded state carries the old schedule's last lr
                group["lr"] = run.scheduler.get_last_lr()[0]
        run.epoch, run.step_in_epoch, run.step = state["epoch"], state["step_in_epoch"], state["step"]
        torch.set_rng_state(state["rng_cpu"].cpu())
        if run.device.type == "cuda" and state.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(state["rng_cuda"].cpu(), run.device)
        print(resumed_line(path, run.epoch, run.step_in_epoch, run.step, run.args.epochs, run.steps_per_epoch))
        if extended:
            print(f"extending a finished run: epochs {run.epoch + 1}-{run.args.epochs} follow a {SCHEDULE_NAMES[run.args.schedule]} "
                  f"schedule of their own ({run.total_steps} steps, peak --lr {run.args.lr:g})")
    run.saved_at = run.step


def checkpoint_state(run: Run) -> dict:
    return {
        "version": CHECKPOINT_VERSION,
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "epoch": run.epoch,
        "step_in_epoch": run.step_in_epoch,
        "step": run.step,
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state(run.device) if run.device.type == "cuda" else None,
        "config": {**run.config, "total_steps": run.total_steps},
        "data": run.data.identity(),
    }


def open_comparison(run: Run) -> Comparison | None:
    """With --ops compare: the native twin that checks every step's hand gradients; else None.

    NOTE: built after resume() on purpose: the twin's initial weights draw from the restored random state.
    """
    if not run.ops.compare:
        return None
    return Comparison(run.model, MLP(get_ops("native"), **run.model_kwargs), run.ops.compare_tol, run.ops.compare_dtype)


def compare_step(run: Run, x: torch.Tensor, y: torch.Tensor, step: int, total: torch.Tensor) -> CompareResult | None:
    """With --ops compare: this step's hand gradients against native ones, as a verdict the loop hands on; else None."""
    if run.comparison is None:
        return None
    return run.comparison.step(x, y, step, total)


def open_monitor(run: Run) -> None:
    """TensorBoard's monitor (and, with --ops compare, the comparison that reports into it)."""
    args, data = run.args, run.data
    schedule = LogSchedule(total_steps=args.epochs * run.steps_per_epoch, steps_per_epoch=run.steps_per_epoch,
                           full_batches=data.train_size // args.batch_size, log_every=args.log_every,
                           log_dense=args.log_dense, histograms=args.histograms)
    run.monitor = Monitor(run.out.logdir, run.model, schedule, compare_tol=run.ops.compare_tol)
    run.monitor.config({**run.config, "device": str(run.device), "data": data.source})
    run.comparison = open_comparison(run)


# ---------------------------------------------------------------------------------------------
# the step and the epoch
# ---------------------------------------------------------------------------------------------


def _not_finite(run: Run) -> TrainError:
    bad = first_non_finite(run.model)
    where = f"the gradient of {bad}" if bad else "the loss"
    save = run.out.save
    kept = f"; {save} keeps the last good checkpoint" if save and Path(save).exists() else ""
    return TrainError(f"{where} is not finite at step {run.step + 1} (epoch {run.epoch + 1}); "
                      f"lower --lr or check the data{kept}.", status=3)


def train_step(run: Run, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One update on one batch: forward, backward, checks, optimizer and schedule; returns the batch's loss."""
    step = run.step + 1
    run.monitor.before_forward(step)
    total, loss, logits = run.objective(x, y)
    run.optimizer.zero_grad(set_to_none=True)
    total.backward()
    # NOTE: one host sync per step: the loss and the gradient norms checked together.
    grads = [p.grad for p in run.model.parameters() if p.grad is not None]
    sq = torch.stack(torch._foreach_norm(grads)).square().sum() if grads else total.new_zeros(())
    # NOTE: under torchrun, every process's verdict and the global batch's loss, in one all-reduce
    finite, loss = run.procs.agree(total.detach() + sq, loss)
    if not finite:
        raise _not_finite(run)
    verdict = compare_step(run, x, y, step, total)
    run.monitor.compare(step, verdict)  # NOTE: the comparison returns its errors; the monitor draws them
    run.monitor.before_update(step, logits, run.procs.local_targets(y))
    if verdict is not None and not verdict.ok:
        raise GradientMismatch(verdict.message)
    with CTRL_C.held():
        run.optimizer.step()
        run.scheduler.step()
        run.step += 1
        run.step_in_epoch += 1
    return loss.detach()


def train_epoch(run: Run) -> None:
    """The rest of the current epoch's batches, then the test set, the line, the scalars and the checkpoint."""
    from tqdm.auto import tqdm

    args = run.args
    started = time.perf_counter()
    first_step = run.step_in_epoch  # NOTE: > 0 in a resumed epoch, whose train loss covers only the rest
    loss_sum = torch.zeros((), dtype=torch.float64, device=run.device)
    seen = 0
    bar = tqdm(total=run.steps_per_epoch, initial=first_step, desc=f"epoch {run.epoch + 1}/{args.epochs}",
               disable=not run.out.show_bar, leave=False, dynamic_ncols=True)
    for x, y in run.data.batches(args.batch_size, run.epoch, args.seed, start=first_step):
        loss = train_step(run, x, y)
        loss_sum += loss.double() * y.numel()
        seen += y.numel()
        run.monitor.after_update(run.step, {"train/loss": loss, "train/lr": run.optimizer.param_groups[0]["lr"]})
        bar.update(1)
    bar.close()
    seconds = time.perf_counter() - started
    with CTRL_C.held():
        run.epoch += 1
        run.step_in_epoch = 0
    end_epoch(run, loss_sum.item() / max(seen, 1), seen, seconds, first_step)


def end_epoch(run: Run, train_loss: float, seen: int, seconds: float, first_step: int) -> None:
    args, step = run.args, run.step
    test_loss, test_acc = run.procs.evaluate(evaluate, run.model, run.data)
    run.metrics = {"epoch": run.epoch, "train_loss": train_loss, "test_loss": test_loss, "test_acc": test_acc,
                   "seconds": seconds, "samples_per_s": seen / seconds if seconds else 0.0, "step": step,
                   "train_steps": run.steps_per_epoch - first_step}
    run.history.append(run.metrics)
    covers = f" (steps {first_step + 1}-{run.steps_per_epoch} only)" if first_step else ""
    print(f"epoch {run.epoch}/{args.epochs}  train_loss {train_loss:.4f}{covers}  test_loss {test_loss:.4f}  "
          f"test_acc {test_acc:.2f}%  {seconds:.1f}s  {run.metrics['samples_per_s']:.0f} samples/s")
    run.monitor.scalars(step, {"train/epoch_loss": train_loss, "test/loss": test_loss, "test/accuracy": test_acc,
                               "train/samples_per_s": run.metrics["samples_per_s"]})
    if run.out.save:
        save_checkpoint(run.out.save, checkpoint_state(run))
        run.saved_at = step


def _announce(run: Run) -> None:
    args, data = run.args, run.data
    if data.note:  # NOTE: only now, so that a refused resume stays one line
        print(data.note, file=sys.stderr)
    if run.out.save and not args.save:
        print(f"checkpoints go to {run.out.save}, the --resume file (give --save elsewhere to keep it as it is)")
    print(f"training {run.ops.label} ops on {run.device} ({args.dtype}), data: {data.source}, "
          f"{data.train_size} train / {data.test_y.numel()} test images, "
          f"{run.steps_per_epoch} steps per epoch" + (f", logs in {run.out.logdir}" if run.out.logdir else ""))


def _interrupted(run: Run) -> TrainError:
    """Ctrl-C or SIGTERM: newer work than the file at --save holds is saved; one sentence says where the run stopped."""
    save = run.out.save
    if save and run.step != run.saved_at:
        save_checkpoint(save, checkpoint_state(run))
    signum = distributed.stop_signal() or CTRL_C.signum
    what = "terminated (SIGTERM)" if signum == signal.SIGTERM else "interrupted"
    where = f"; {save} holds step {run.step}" if save and Path(save).exists() else ""
    when = f"epoch {run.epoch + 1}" if run.step_in_epoch or not run.epoch else f"end of epoch {run.epoch}"
    return TrainError(f"{what} at step {run.step} ({when} of {run.args.epochs}){where}.", status=128 + signum)


def train_epochs(run: Run) -> None:
    """Epochs until --epochs (or --stop-after more); the monitor is closed on any way out but the normal one."""
    args = run.args
    last_epoch = args.epochs if args.stop_after is None else min(args.epochs, run.epoch + args.stop_after)
    _announce(run)
    try:
        run.monitor.start(run.step, lambda: evaluate(run.model, run.data))
        _log_graph(run.monitor, run.model, run.data, args.batch_size)
        while run.epoch < last_epoch:
            train_epoch(run)
    except KeyboardInterrupt:
        run.monitor.close()
        raise _interrupted(run) from None
    except GradientMismatch as exc:
        run.monitor.close()
        raise TrainError(str(exc), status=4) from None
    except BaseException:
        run.monitor.close()  # NOTE: whatever went wrong, the events written so far reach the disk
        raise


def summarize(run: Run) -> dict:
    """The last epoch's metrics with the history and the run's facts; hparams to TensorBoard, one closing line."""
    metrics, comparison, save = run.metrics, run.comparison, run.out.save
    if comparison is not None:
        print(comparison.summary())
    summary = {**metrics, "history": run.history, "source": run.data.source, "logdir": run.out.logdir,
               "device": str(run.device), "model": run.model,
               "train_seconds": sum(h["seconds"] for h in run.history)}
    if comparison is not None:
        summary["compare_worst"] = comparison.worst
    if metrics:
        run.monitor.hparams({k: v for k, v in run.config.items() if k in HPARAMS},
                            {"test_acc": metrics["test_acc"], "test_loss": metrics["test_loss"]})
    run.monitor.close()
    if metrics:
        print(f"done: {run.epoch} epochs, test_acc {metrics['test_acc']:.2f}%, test_loss {metrics['test_loss']:.4f}, "
              f"{summary['train_seconds']:.1f}s training" + (f", checkpoint {save}" if save else ""))
    return summary


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict:
    """Train and return the final metrics; expected failures raise TrainError, DataError or CheckpointError."""
    args = parse_args(argv)
    ops = ops_choice(args)
    # under torchrun: this process's place and device; quiet unless it is process 0
    procs = distributed.start(device=args.device, batch_size=args.batch_size, compare=ops.compare)
    with ExitStack() as stack:
        out = plan_outputs(args, ops, procs, stack)
        state = read_resume(args)
        device, dtype = seed_and_device(args, procs)
        data = load_data(args, procs, device, dtype)
        spe = data.steps_per_epoch(args.batch_size)
        now = {**vars(args), "hidden": list(args.hidden)}
        try:
            start = check_resume(args.resume, state, now, data.identity(), spe,
                                 {name: p.values for name, p in PRESETS.items()}) if state is not None else 0
        except NothingToDo as done:
            print(done)
            return {"history": [], "source": data.source, "logdir": None, "device": str(device), "nothing_to_do": True}
        check_save_data(out.save, data.identity(), args.overwrite, args.resume)
        run = build(args, ops, out, procs, device, dtype, data, start)
        resume(run, state, extended=state is not None and is_finished(state))
        open_monitor(run)
        train_epochs(run)
        return summarize(run)


def cli(argv: list[str] | None = None) -> int:
    """``main`` for the command line: expected failures, Ctrl-C and SIGTERM are one line and an exit status."""
    CTRL_C.install()
    try:
        main(argv)
    except (TrainError, DataError, CheckpointError, distributed.DistributedError) as exc:
        status = getattr(exc, "status", 2)
        if status in (130, 143):
            # NOTE: a second Ctrl-C or SIGTERM must not turn into a traceback
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        # NOTE: under torchrun, printed once for what every process reached together
        distributed.report(exc, f"{'' if status in (130, 143) else 'error: '}{exc}")
        return status
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("interrupted; nothing more was written.", file=sys.stderr)
        return 128 + (distributed.stop_signal() or CTRL_C.signum)
    finally:
        distributed.finish()
    return 0


if __name__ == "__main__":
    sys.exit(cli())
