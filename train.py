"""Train an MLP on MNIST with handgrad's hand-written ops, or PyTorch's native ones.

    python train.py                                   # 784-256-128-10, 5 epochs, hand ops
    python train.py --ops native                      # the same with PyTorch's ops
    python train.py --ops compare --epochs 1          # hand ops, native gradients checked every step
    python train.py --data-dir ../shared/data --save ckpt.pt
    python train.py --data-dir ../shared/data --save ckpt.pt --resume ckpt.pt   # go on (same flags)
    python train.py --sample --epochs 1               # the 10,000-digit sample shipped with handgrad
    torchrun --standalone --nproc-per-node 2 train.py # two processes, DDP; --batch-size is the global batch
    python train.py --preset seed001                  # the notes' sigmoid + squared-error network
    python train.py --preset seed004 --epochs 3       # a preset, one value overridden
    tensorboard --logdir runs                         # look at the gradients

Data: the four MNIST files in --data-dir, else in $HANDGRAD_DATA (a given folder without them is
an error), else in ./data; downloaded when missing (unless --no-download); with no folder given
and nothing found, the MNIST sample shipped with handgrad (unless --no-fallback). Expected
mistakes print one sentence and exit nonzero: 2 for bad arguments, data or checkpoints, 3 for a
non-finite loss or gradient, 130 for Ctrl-C (at any moment; a checkpoint is never half-written).
"""

from __future__ import annotations

import os
import signal
import sys


def _quit_during_startup(signum, frame) -> None:
    os.write(2, b"interrupted during start-up; nothing was written.\n")
    os._exit(130)


if __name__ == "__main__":
    # NOTE: installed before torch is imported (seconds): Ctrl-C during start-up is one line, not a
    # 70-line traceback. cli() replaces it once the imports are done.
    signal.signal(signal.SIGINT, _quit_during_startup)

import argparse
import math
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import torch

from handgrad import distributed
from handgrad.checkpoint import CheckpointError, check_save_path, save_checkpoint
from handgrad.checkpoint import load_checkpoint as _load_file
from handgrad.compare import DEFAULT_TOL, Comparison, GradientMismatch, Objective
from handgrad.data import DataError, MNISTData, load_mnist
from handgrad.functional import get_ops
from handgrad.monitor import LogSchedule, Monitor
from models.mlp import MLP
from models.presets import PRESETS, as_flags

CHECKPOINT_VERSION = 2  # 2: records its data; version 1 files still resume (without the data check)
# the flags that fix the model's shape and math: a checkpoint only resumes under the same ones
MODEL_KEYS = ("hidden", "activation", "loss", "dtype", "bias")
#: what a checkpoint written before a flag existed implies for it
IMPLIED = {"bias": True}
# ...and the flags that fix the sequence of updates; the data is compared as well (see check_resume)
TRAINING_KEYS = ("epochs", "batch_size", "lr", "momentum", "weight_decay", "schedule", "seed", "limit_train")
# the flags shown beside the final metrics in TensorBoard's HPARAMS tab
HPARAMS = ("ops", "lr", "momentum", "weight_decay", "batch_size", "epochs", "activation", "loss", "seed", "dtype", "hidden",
           "preset", "bias")


class TrainError(Exception):
    """An expected failure: one sentence for the user and an exit status."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


# ---------------------------------------------------------------------------------------------
# flags
# ---------------------------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
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
    if any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"layer sizes must be positive, got {text!r}")
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
    p.add_argument("--epochs", type=_positive_int, default=5, help="epochs in the schedule")
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
    p.add_argument("--seed", type=int, default=0, help="seed for weights and batch order")
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
    p.add_argument("--histograms", type=_non_negative_int, default=10,
                   help="weight and gradient histogram snapshots per run, spread evenly over full batches (0: none)")
    p.add_argument("--save", default=None, help="checkpoint path, written atomically after every epoch")
    p.add_argument("--resume", default=None, help="checkpoint to continue from")
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
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------------------------


def load_checkpoint(path: str | os.PathLike, device: torch.device) -> dict:
    state = _load_file(path, device)
    if state.get("version") not in (1, CHECKPOINT_VERSION):
        raise TrainError(f"checkpoint {path} is not a handgrad checkpoint of version {CHECKPOINT_VERSION}.")
    return state


def _shown(value) -> str:
    """A flag's value as one would type it: 256,128 for a list, none for None."""
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return "none" if value is None else str(value)


def _data_shown(data: dict) -> str:
    kind = "full MNIST" if data.get("source") == "mnist" else "the shipped sample"
    return f"{kind} of {data.get('train')} train / {data.get('test')} test images"


def check_resume(path: str, state: dict, config: dict, data: dict, total_steps: int) -> None:
    """Refuse a checkpoint written under other flags or other data: one sentence naming each difference."""
    saved = {**IMPLIED, **state.get("config", {})}
    diffs = [f"--{k.replace('_', '-')} {_shown(saved.get(k))} (checkpoint) vs {_shown(config[k])} (now)"
             for k in (*MODEL_KEYS, *TRAINING_KEYS) if saved.get(k) != config[k]]
    fixes = ["use the checkpoint's values"] if diffs else []
    saved_data = state.get("data")  # NOTE: absent in version-1 checkpoints, which cannot be checked
    if saved_data is not None and saved_data != data:
        diffs.append(f"the data: {_data_shown(saved_data)} (checkpoint) vs {_data_shown(data)} (now)")
        fixes.append("add --sample (the data it was trained on)" if saved_data.get("source") == "sample" else
                     "point --data-dir or $HANDGRAD_DATA at the MNIST files it was trained on")
    if diffs:
        raise TrainError(f"checkpoint {path} was written under other settings: {', '.join(diffs)}; "
                         f"{' and '.join(fixes)}, or drop --resume to start a new run.")
    if saved.get("total_steps") != total_steps:
        raise TrainError(f"checkpoint {path} follows a schedule of {saved.get('total_steps')} steps but these flags "
                         f"give {total_steps}; use the flags of the run that wrote it.")


def resumed_line(path: str, epoch: int, step_in_epoch: int, step: int, epochs: int, steps_per_epoch: int) -> str:
    line = f"resumed from {path}: epoch {epoch} of {epochs}, step {step}"
    if step_in_epoch:
        line += f" (mid-epoch: {step_in_epoch} of the {steps_per_epoch} steps of epoch {epoch + 1} done)"
    return line


class _CtrlC:
    """Ctrl-C raises KeyboardInterrupt, except inside ``held()``, which delivers it when the block ends.

    NOTE: an update (optimizer step, schedule step, counters) is applied whole or not at all, so
    the checkpoint written on Ctrl-C never records half of one. Installed by cli() only.
    """

    def __init__(self) -> None:
        self.depth, self.pending = 0, False

    def install(self) -> None:
        signal.signal(signal.SIGINT, self._handler)

    def _handler(self, signum, frame) -> None:
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
    """The objective's autograd graph on one test batch (shapes and norms): picture to Images, mermaid to Text."""
    if monitor.writer is None:
        return
    try:
        from handgrad.graph import model_graph

        picture = model_graph(model, data.test_x[:batch_size], data.test_y[:batch_size])
    except ImportError:  # NOTE: optional (handgrad.graph, matplotlib): without them the run has no graph picture
        return
    monitor.graph(*picture)


# ---------------------------------------------------------------------------------------------
# the stages before the loop: seed and device, data, model and optimizer, resume, monitor
# ---------------------------------------------------------------------------------------------


def _pick_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise TrainError(f"--device {name!r} is not a device; use auto, cpu, cuda or cuda:N.") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise TrainError(f"--device {name} was given but CUDA is not available on this machine; use --device cpu.")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise TrainError(f"--device {name} does not exist: this machine has {torch.cuda.device_count()} GPU(s).")
        if device.index is None:  # NOTE: name the GPU actually used, as cuda:N
            device = torch.device("cuda", torch.cuda.current_device())
    elif device.type != "cpu":
        raise TrainError(f"--device {name!r} is not supported; use auto, cpu, cuda or cuda:N.")
    return device


def _default_logdir(args) -> str:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    hidden = "x".join(map(str, args.hidden))
    return str(Path("runs") / f"{stamp}-{args.ops}-{args.activation}-{args.loss}-h{hidden}-s{args.seed}")


def _check_writable(path: Path, what: str) -> None:
    """A folder (created if missing) that takes a new file; --logdir only (--save: check_save_path)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise TrainError(f"{what} {path} is not writable ({exc.strerror or exc}); choose another path.") from None


@dataclass
class Run:
    """What the stages hand on: the flags, the data, the model and its optimizer, and the counters a checkpoint records."""

    args: argparse.Namespace
    procs: distributed.Processes
    config: dict
    device: torch.device
    logdir: str | None
    data: MNISTData
    model: MLP
    model_kwargs: dict
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    objective: Callable
    steps_per_epoch: int
    total_steps: int
    epoch: int = 0
    step_in_epoch: int = 0  # NOTE: > 0 only in a run resumed mid-epoch
    step: int = 0
    saved_at: int = 0  # the step the file at --save (if any) holds; Ctrl-C saves only newer work
    monitor: Monitor | None = None
    comparison: Comparison | None = None
    history: list[dict] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)


def seed_and_device(args) -> tuple[torch.device, torch.dtype, str | None]:
    """Seed, device and dtype; the output paths are checked now, before minutes of loading and training."""
    device = _pick_device(args.device)
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(args.seed)
    if args.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    torch.autograd.set_detect_anomaly(args.detect_anomaly)
    if args.save:
        check_save_path(args.save)
    logdir = None if args.no_log else (args.logdir or _default_logdir(args))
    if logdir:
        _check_writable(Path(logdir), "--logdir")
    return device, dtype, logdir


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


def build(args, procs: distributed.Processes, device: torch.device, dtype: torch.dtype, logdir: str | None,
          data: MNISTData) -> Run:
    """The model, its SGD optimizer and learning-rate schedule, and the objective each step calls."""
    config = {**vars(args), "hidden": list(args.hidden), "processes": procs.world}
    ops_kind = "hand" if args.ops == "compare" else args.ops
    model_kwargs = dict(hidden=args.hidden, activation=args.activation, loss=args.loss,
                        weight_decay=args.weight_decay, bias=args.bias, device=device, dtype=dtype)
    ops = get_ops(ops_kind)
    if args.inject_fault:  # NOTE: the hand ops only; native stays the reference
        from handgrad.faults import inject

        ops = inject(get_ops("hand"), args.inject_fault) if ops_kind == "hand" else ops
    model = MLP(ops, **model_kwargs)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum, nesterov=args.momentum > 0)
    steps_per_epoch = data.steps_per_epoch(args.batch_size)
    total_steps = args.epochs * steps_per_epoch
    scheduler = _scheduler(optimizer, args, total_steps)
    objective = torch.compile(model.objective) if args.compile else model.objective
    if procs.launched:
        objective = procs.objective(Objective(model), compile=args.compile)  # DDP: each process runs its rows of every batch
    return Run(args, procs, config, device, logdir, data, model, model_kwargs, optimizer, scheduler, objective,
               steps_per_epoch, total_steps)


def resume(run: Run) -> None:
    """With --resume: the checkpoint's weights, optimizer, schedule, counters and random state, once it is checked."""
    path = run.args.resume
    if path:
        state = load_checkpoint(path, run.device)
        check_resume(path, state, run.config, run.data.identity(), run.total_steps)
        try:
            run.model.load_state_dict(state["model"])
            run.optimizer.load_state_dict(state["optimizer"])
            run.scheduler.load_state_dict(state["scheduler"])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise TrainError(f"checkpoint {path} does not fit this model ({str(exc).splitlines()[0]}).") from None
        run.epoch, run.step_in_epoch, run.step = state["epoch"], state["step_in_epoch"], state["step"]
        torch.set_rng_state(state["rng_cpu"].cpu())
        if run.device.type == "cuda" and state.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(state["rng_cuda"].cpu(), run.device)
        print(resumed_line(path, run.epoch, run.step_in_epoch, run.step, run.args.epochs, run.steps_per_epoch))
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


def open_monitor(run: Run) -> None:
    """TensorBoard's monitor and, with --ops compare, the native twin that checks every step's gradients."""
    args, data = run.args, run.data
    schedule = LogSchedule(total_steps=run.total_steps, steps_per_epoch=run.steps_per_epoch,
                           full_batches=data.train_size // args.batch_size, log_every=args.log_every,
                           log_dense=args.log_dense, histograms=args.histograms)
    compare = args.ops == "compare"
    tol = (args.compare_tol if args.compare_tol is not None else DEFAULT_TOL[args.compare_dtype]) if compare else None
    run.monitor = Monitor(run.logdir, run.model, schedule, compare_tol=tol)
    run.monitor.config({**run.config, "device": str(run.device), "data": data.source})
    # NOTE: built after resume() on purpose: the twin's initial weights draw from the restored random state
    run.comparison = Comparison(run.model, MLP(get_ops("native"), **run.model_kwargs), args.compare_tol,
                                args.compare_dtype) if compare else None


# ---------------------------------------------------------------------------------------------
# the step and the epoch
# ---------------------------------------------------------------------------------------------


def _not_finite(run: Run) -> TrainError:
    bad = first_non_finite(run.model)
    where = f"the gradient of {bad}" if bad else "the loss"
    save = run.args.save
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
    verdict = run.comparison.step(x, y, step, total) if run.comparison is not None else None
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


def train_epoch(run: Run, show_bar: bool) -> None:
    """The rest of the current epoch's batches, then the test set, the line, the scalars and the checkpoint."""
    from tqdm.auto import tqdm

    args = run.args
    started = time.perf_counter()
    first_step = run.step_in_epoch  # NOTE: > 0 in a resumed epoch, whose train loss covers only the rest
    loss_sum = torch.zeros((), dtype=torch.float64, device=run.device)
    seen = 0
    bar = tqdm(total=run.steps_per_epoch, initial=first_step, desc=f"epoch {run.epoch + 1}/{args.epochs}",
               disable=not show_bar, leave=False, dynamic_ncols=True)
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
    if args.save:
        save_checkpoint(args.save, checkpoint_state(run))
        run.saved_at = step


def _announce(run: Run) -> None:
    args, data = run.args, run.data
    if data.note:  # NOTE: only now, so that a refused resume stays one line
        print(data.note, file=sys.stderr)
    print(f"training {args.ops} ops on {run.device} ({args.dtype}), data: {data.source}, "
          f"{data.train_size} train / {data.test_y.numel()} test images, "
          f"{run.steps_per_epoch} steps per epoch" + (f", logs in {run.logdir}" if run.logdir else ""))


def _interrupted(run: Run) -> TrainError:
    """Ctrl-C: newer work than the file at --save holds is saved; one sentence says where the run stopped."""
    save = run.args.save
    if save and run.step != run.saved_at:
        save_checkpoint(save, checkpoint_state(run))
    where = f"; {save} holds step {run.step}" if save and Path(save).exists() else ""
    when = f"epoch {run.epoch + 1}" if run.step_in_epoch or not run.epoch else f"end of epoch {run.epoch}"
    return TrainError(f"interrupted at step {run.step} ({when} of {run.args.epochs}){where}.", status=130)


def train_epochs(run: Run) -> None:
    """Epochs until --epochs (or --stop-after more); the monitor is closed on any way out but the normal one."""
    args = run.args
    show_bar = not args.quiet and sys.stderr.isatty()
    last_epoch = args.epochs if args.stop_after is None else min(args.epochs, run.epoch + args.stop_after)
    _announce(run)
    try:
        run.monitor.start(run.step, lambda: evaluate(run.model, run.data))
        _log_graph(run.monitor, run.model, run.data, args.batch_size)
        while run.epoch < last_epoch:
            train_epoch(run, show_bar)
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
    args, metrics, comparison = run.args, run.metrics, run.comparison
    if comparison is not None:
        print(comparison.summary())
    summary = {**metrics, "history": run.history, "source": run.data.source, "logdir": run.logdir,
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
              f"{summary['train_seconds']:.1f}s training" + (f", checkpoint {args.save}" if args.save else ""))
    return summary


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict:
    """Train and return the final metrics; expected failures raise TrainError or DataError."""
    args = parse_args(argv)
    procs = distributed.start(args)  # under torchrun: this process's place; quiet unless it is process 0
    device, dtype, logdir = seed_and_device(args)
    data = load_data(args, procs, device, dtype)
    run = build(args, procs, device, dtype, logdir, data)
    resume(run)
    open_monitor(run)
    train_epochs(run)
    return summarize(run)


def cli(argv: list[str] | None = None) -> int:
    """``main`` for the command line: expected failures and Ctrl-C are one line and an exit status."""
    CTRL_C.install()
    try:
        main(argv)
    except (TrainError, DataError, CheckpointError, distributed.DistributedError) as exc:
        status = getattr(exc, "status", 2)
        if status == 130:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # NOTE: a second Ctrl-C must not turn into a traceback
        # NOTE: under torchrun, printed once for what every process reached together
        distributed.report(exc, f"{'' if status == 130 else 'error: '}{exc}")
        return status
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        print("interrupted; nothing more was written.", file=sys.stderr)
        return 130
    finally:
        distributed.finish()
    return 0


if __name__ == "__main__":
    sys.exit(cli())
