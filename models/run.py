"""train.py's stages before the loop: outputs, seed and device, data, model and optimizer, resume, monitor.

Each stage is one function that ``train.main`` calls in order; what they build is handed on in a
:class:`Run`, which the loop (``models/loop.py``) advances and a checkpoint records.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import torch

from handgrad import distributed
from handgrad.checkpoint import check_save_path, save_lock
from handgrad.compare import Comparison, Objective
from handgrad.data import MNISTData, load_mnist
from handgrad.devices import parse_device
from handgrad.functional import get_ops
from handgrad.monitor import LogSchedule, Monitor
from handgrad.resume import CHECKPOINT_VERSION, SCHEDULE_NAMES, TrainError, check_save_target, load_checkpoint, resumed_line, same_file
from models.flags import OpsChoice
from models.mlp import MLP

__all__ = ["Outputs", "Run", "build", "checkpoint_state", "load_data", "open_comparison", "open_monitor",
           "plan_outputs", "read_resume", "resume", "seed_and_device"]


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
          data: MNISTData, schedule_start: int = 0, fresh: bool = False) -> Run:
    """The model, its SGD optimizer and learning-rate schedule, and the objective each step calls.

    A ``fresh`` run (no checkpoint to load) opens its monitor as soon as the model exists and hands
    the model's graph at step 0 to the writer process, which draws it while the optimizer's first
    construction imports torch's compiler stack (about 1.5 s that the training process spends
    importing, not computing).
    """
    config = {**vars(args), "hidden": list(args.hidden), "processes": procs.world, "schedule_start": schedule_start}
    model_kwargs = dict(hidden=args.hidden, activation=args.activation, loss=args.loss,
                        weight_decay=args.weight_decay, bias=args.bias, device=device, dtype=dtype)
    namespace = get_ops(ops.model_ops)
    if args.inject_fault:  # NOTE: the hand ops only; native stays the reference
        from handgrad.faults import inject

        namespace = inject(get_ops("hand"), args.inject_fault)
    model = MLP(namespace, **model_kwargs)
    monitor = _monitor(args, ops, out, data, model, step=0) if fresh else None
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum, nesterov=args.momentum > 0)
    steps_per_epoch = data.steps_per_epoch(args.batch_size)
    total_steps = (args.epochs - schedule_start) * steps_per_epoch
    scheduler = _scheduler(optimizer, args, total_steps)
    objective = torch.compile(model.objective) if args.compile else model.objective
    if procs.launched:
        objective = procs.objective(Objective(model), compile=args.compile)  # DDP: each process runs its rows of every batch
    return Run(args, ops, out, procs, config, device, data, model, model_kwargs, optimizer, scheduler, objective,
               steps_per_epoch, total_steps, schedule_start, monitor=monitor)


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


def _monitor(args, ops: OpsChoice, out: Outputs, data: MNISTData, model: MLP, step: int) -> Monitor:
    """The run's monitor, handed the model's graph at ``step`` on the first test batch (a no-op with --no-log)."""
    spe = data.steps_per_epoch(args.batch_size)
    schedule = LogSchedule(total_steps=args.epochs * spe, steps_per_epoch=spe, full_batches=data.train_size // args.batch_size,
                           log_every=args.log_every, log_dense=args.log_dense, histograms=args.histograms)
    monitor = Monitor(out.logdir, model, schedule, compare_tol=ops.compare_tol)
    monitor.model_graph(model, data.test_x[:args.batch_size], data.test_y[:args.batch_size], step=step)
    return monitor


def open_monitor(run: Run) -> None:
    """TensorBoard's monitor (a resumed run's: a fresh one's is open since build) and, with --ops compare, the comparison."""
    if run.monitor is None:
        run.monitor = _monitor(run.args, run.ops, run.out, run.data, run.model, step=run.step)
    run.monitor.config({**run.config, "device": str(run.device), "data": run.data.source})
    run.comparison = open_comparison(run)
