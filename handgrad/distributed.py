"""More than one process: train.py under torchrun, with DistributedDataParallel.

    torchrun --standalone --nproc-per-node 2 train.py --batch-size 128

torchrun starts the processes and tells each one its place through the environment (WORLD_SIZE,
RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT). :func:`start` reads it and joins the process group:
gloo on the CPU, NCCL on CUDA with one GPU per process (``cuda:LOCAL_RANK``). Without torchrun it
returns a :class:`Processes` of one that changes nothing, and no process group exists.

What is global and what belongs to one process:

* ``--batch-size`` is the global batch B. Every process draws the same global batch from the
  epoch's permutation and keeps its own contiguous rows (:func:`rows_of`), b_r of them.
* Process r minimizes J_r = w_r L_r + s, where L_r is the mean loss over its rows, s the L2
  penalty and w_r = N b_r / B. DDP averages gradients over the N processes, so
  (1/N) Σ_r ∇J_r = (1/B) Σ_i ∇l_i + ∇s: the gradient one process takes on the whole batch, also
  for a last batch that does not split evenly.
* A process with no rows (a last batch smaller than N) runs one borrowed row with w_r = 0, so
  that every process runs the same forward and backward, which DDP's all-reduce needs.
* Process 0 alone prints, writes TensorBoard events and checkpoints; every process reads
  ``--resume``. Evaluation is sharded: each process scores its slice of the test set, and the
  sums are all-reduced.
* One all-reduce per step carries the finiteness check, the global loss and a Ctrl-C flag, so a
  non-finite loss or a Ctrl-C on any process stops every process at the same step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator

import torch
import torch.distributed as dist
from torch import nn

from handgrad.devices import parse_device

__all__ = ["DistributedError", "Processes", "finish", "report", "rows_of", "start", "stop_signal",
           "under_torchrun"]

#: exit statuses that every process reaches together (non-finite loss, Ctrl-C): reported once
SHARED_STATUSES = (3, 130, 143)
_ENV = ("WORLD_SIZE", "RANK", "LOCAL_RANK")


class DistributedError(Exception):
    """A launch that cannot work: one sentence for the user, exit status 2."""

    status = 2


def under_torchrun() -> bool:
    """Whether torchrun (or torch.distributed.run) started this process."""
    return all(k in os.environ for k in _ENV)


def rows_of(n: int, rank: int, world: int) -> tuple[int, int]:
    """[start, stop) of process ``rank``'s rows among ``n``: contiguous, ⌈n/N⌉ or ⌊n/N⌋ rows, larger first."""
    base, extra = divmod(n, world)
    first = rank * base + min(rank, extra)
    return first, first + base + (rank < extra)


class _Share(nn.Module):
    """forward(x, y, w) = the objective with total J + (w - 1) L = w L + s: one process's part of J."""

    def __init__(self, objective: nn.Module) -> None:
        super().__init__()
        self.objective = objective

    def forward(self, x: torch.Tensor, y: torch.Tensor, weight: float):
        value = self.objective(x, y)  # NOTE: models.mlp.ObjectiveValue (total, loss, logits)
        if weight != 1.0:
            # NOTE: J - L is the penalty s; this weighs L alone without taking the model's objective apart
            value = value._replace(total=value.total + (weight - 1.0) * value.loss)
        return value


@dataclasses.dataclass
class Processes:
    """This process's place among the others; ``Processes()`` is the single process of a plain run."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    launched: bool = False  # under torchrun, with a process group
    device: torch.device | None = None
    share: float = 1.0  # b_r / B of the last batch that went through :meth:`objective`

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def writes(self) -> bool:
        """Whether this process prints, logs and checkpoints: process 0 only."""
        return self.rank == 0

    def objective(self, module: nn.Module, compile: bool = False) -> Callable:
        """``module(x, y) -> (J, L, logits)`` wrapped in DDP: called with a global batch, it runs this process's rows.

        ``compile``: torch.compile ``module`` inside DDP (DDP then all-reduces once the compiled backward is done).
        """
        cuda = self.device is not None and self.device.type == "cuda"
        inner = torch.compile(module) if compile else module
        ddp = nn.parallel.DistributedDataParallel(_Share(inner), device_ids=[self.device.index] if cuda else None)

        def run(x: torch.Tensor, y: torch.Tensor):
            return ddp(*self.rows(x, y))

        return run

    def rows(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        """This process's rows of a global batch and their weight w_r = N b_r / B (see the module docstring)."""
        n = y.shape[0]
        first, stop = rows_of(n, self.rank, self.world)
        self.share = (stop - first) / n
        mine = self._mine(n)
        return x[mine], y[mine], self.world * self.share

    def local_targets(self, y: torch.Tensor) -> torch.Tensor:
        """The targets of this process's rows of a global batch: what its logits (from :meth:`objective`) belong to."""
        return y[self._mine(y.shape[0])] if self.launched else y

    def _mine(self, n: int) -> slice:
        """The rows this process runs of a global batch of ``n``: its own, or one borrowed row when it has none."""
        first, stop = rows_of(n, self.rank, self.world)
        # NOTE: every process must run forward and backward for DDP's all-reduce; a borrowed row
        # gets weight share = 0 in :meth:`rows`, so it adds nothing
        return slice(first, stop) if stop > first else slice(0, 1)

    def agree(self, check: torch.Tensor, loss: torch.Tensor) -> tuple[bool, torch.Tensor]:
        """(is ``check`` finite on every process, the global batch's loss Σ_r (b_r/B) L_r), in one all-reduce.

        Raises KeyboardInterrupt on every process when any of them got Ctrl-C (SIGINT) or SIGTERM.
        """
        if not self.launched:
            return bool(torch.isfinite(check)), loss
        flag = torch.tensor(float(bool(_signal.received)), dtype=torch.float64, device=check.device)
        sums = torch.stack([check.detach().double(), loss.detach().double() * self.share, flag])
        dist.all_reduce(sums)
        check_sum, total, stop = sums.tolist()  # NOTE: the step's one host sync
        if stop:
            raise KeyboardInterrupt
        return math.isfinite(check_sum), loss.new_tensor(total)

    def evaluate(self, score: Callable, model: nn.Module, data) -> tuple[float, float]:
        """``score(model, data) -> (mean loss, accuracy %)`` on the test set, each process scoring its own slice."""
        if not self.launched:
            return score(model, data)
        first, stop = rows_of(data.test_y.numel(), self.rank, self.world)
        mine = dataclasses.replace(data, test_x=data.test_x[first:stop], test_y=data.test_y[first:stop])
        loss, accuracy = score(model, mine)
        n = stop - first
        sums = torch.tensor([loss * n, round(accuracy * n / 100), n], dtype=torch.float64, device=data.test_y.device)
        dist.all_reduce(sums)
        loss_sum, correct, total = sums.tolist()
        total = max(total, 1.0)
        return loss_sum / total, 100.0 * correct / total

    @contextlib.contextmanager
    def first_on_each_machine(self) -> Iterator[None]:
        """Process 0 of each machine runs the block first (a download happens once), then the others."""
        if not self.launched:
            yield
            return
        if self.local_rank == 0:
            yield
            _barrier(self.device)
        else:
            _barrier(self.device)
            yield


def _barrier(device: torch.device) -> None:
    dist.barrier(device_ids=[device.index] if device.type == "cuda" else None)


# ---------------------------------------------------------------------------------------------
# joining and leaving
# ---------------------------------------------------------------------------------------------


def _gpu_for(name: str, local_rank: int, per_machine: int) -> torch.device | None:
    """The GPU cuda:LOCAL_RANK when ``--device`` asks for CUDA (auto: when there is one), else None."""
    if not (name.startswith("cuda") or (name == "auto" and torch.cuda.is_available())):
        return None
    if name not in ("auto", "cuda"):
        raise DistributedError(f"under torchrun each process uses the GPU cuda:LOCAL_RANK; pass --device cuda, not {name}.")
    try:
        parse_device(name)
    except ValueError as exc:
        raise DistributedError(str(exc)) from None
    if local_rank >= torch.cuda.device_count():
        raise DistributedError(f"torchrun started {per_machine} processes on a machine with {torch.cuda.device_count()} "
                               f"GPU(s); use --nproc-per-node {torch.cuda.device_count()}.")
    return torch.device("cuda", local_rank)


def start(device: str = "auto", batch_size: int = 1, compare: bool = False) -> Processes:
    """Join torchrun's process group, if torchrun started this process; otherwise ``Processes()``.

    Takes the values it needs and returns this process's place: under torchrun, ``device`` is the
    process's own (its GPU cuda:LOCAL_RANK, or the CPU) and only process 0 has ``writes`` (prints,
    logs, checkpoints); the stdout and stderr of the others go to /dev/null (an error of that
    process's own still reaches the terminal through :func:`report`). ``compare``: whether the
    run checks hand gradients against native ones, which needs a single process. Refuses, with
    :class:`DistributedError`, what cannot work.
    """
    if not under_torchrun():
        return Processes()
    world, rank, local_rank = (int(os.environ[k]) for k in _ENV)
    if compare:
        raise DistributedError("--ops compare checks one process's gradients against native ones; run it without "
                               "torchrun (python train.py --ops compare).")
    if batch_size < world:
        raise DistributedError(f"--batch-size {batch_size} is the global batch and must be at least the number "
                               f"of processes ({world}).")
    gpu = _gpu_for(device, local_rank, int(os.environ.get("LOCAL_WORLD_SIZE", world)))
    if gpu is not None:
        torch.cuda.set_device(gpu)
        dist.init_process_group("nccl", device_id=gpu)
    else:
        dist.init_process_group("gloo")
    if rank != 0:
        _quiet.silence(rank)
    _signal.install()
    return Processes(rank=rank, world=world, local_rank=local_rank, launched=True, device=gpu or torch.device("cpu"))


def stop_signal() -> int:
    """The signal (SIGINT or SIGTERM) that asked this process to stop under torchrun; 0 for none."""
    return _signal.received


def report(exc: Exception, line: str) -> None:
    """Print ``line``, the one-line message for ``exc``: process 0 always; another only an error of its own.

    Errors every process reaches together (a refused launch, a non-finite loss, Ctrl-C) are printed
    once; another process's own error gets its rank in front.
    """
    rank = int(os.environ["RANK"]) if under_torchrun() else 0
    stderr = _quiet.streams[1] if _quiet.rank is not None else sys.stderr
    if rank == 0:
        print(line, file=stderr)
    elif getattr(exc, "status", 2) not in SHARED_STATUSES and not isinstance(exc, DistributedError):
        print(f"process {rank}: {line}", file=stderr)


def finish() -> None:
    """Leave the process group and give back the streams and signal handlers; harmless when alone."""
    _quiet.restore()
    _signal.restore()
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class _Quiet:
    """stdout and stderr of a process other than 0, sent to /dev/null until :func:`finish`."""

    rank: int | None = None
    streams: tuple = ()

    def silence(self, rank: int) -> None:
        self.rank, self.streams = rank, (sys.stdout, sys.stderr)
        sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - closed in restore()

    def restore(self) -> None:
        if self.rank is None:
            return
        sys.stdout.close()
        sys.stdout, sys.stderr = self.streams
        self.rank, self.streams = None, ()


class _Signal:
    """Ctrl-C (SIGINT) and SIGTERM, noted for the next :meth:`Processes.agree` rather than raised at once.

    NOTE: a KeyboardInterrupt raised at once leaves the other processes blocked in an all-reduce
    this one never joins; a flag in the step's all-reduce stops every process at the same step.
    A second signal raises at once (for a process stuck outside the step loop).
    """

    received = 0  # the signal's number, 0 for none
    previous: dict = {}

    def _on_signal(self, signum, frame) -> None:
        if self.received:
            raise KeyboardInterrupt
        self.received = signum

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        self.received, self.previous = 0, {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.previous[sig] = signal.signal(sig, self._on_signal)

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous = {}


_quiet = _Quiet()
_signal = _Signal()
