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

from models.flags import HPARAMS, HelpFormatter, OpsChoice, build_parser, ops_choice, parse_args

if __name__ == "__main__":
    _args = parse_args()  # NOTE: --help and a flag typo answer here, before torch is imported (seconds)
    if not _args.no_log and os.environ.get("RANK", "0") == "0":
        from handgrad.monitor.writer import prestart

        prestart()  # NOTE: the TensorBoard writer process loads its libraries on the other core while torch loads

from contextlib import ExitStack  # noqa: I001 - NOTE: the heavy imports come after the parse above, on purpose

from handgrad import distributed
from handgrad.checkpoint import CheckpointError
from handgrad.data import DataError
from handgrad.resume import NothingToDo, TrainError, check_resume, check_save_data, is_finished
from models.loop import CTRL_C, evaluate, summarize, train_epoch, train_epochs, train_step
from models.presets import PRESETS
from models.run import (Outputs, Run, build, checkpoint_state, load_data, open_monitor, plan_outputs, read_resume,
                        resume, seed_and_device)

# NOTE: the pieces live in models/ (flags.py: the command line; run.py: the stages before the loop;
# loop.py: the step, the epoch, the summary); their names stay importable from here, as before.
__all__ = ["CTRL_C", "HPARAMS", "CheckpointError", "DataError", "HelpFormatter", "OpsChoice", "Outputs", "Run", "TrainError",
           "build", "build_parser", "checkpoint_state", "cli", "evaluate", "load_data", "main", "open_monitor", "ops_choice",
           "parse_args", "plan_outputs", "read_resume", "resume", "seed_and_device", "summarize", "train_epoch",
           "train_epochs", "train_step"]

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
        run = build(args, ops, out, procs, device, dtype, data, start, fresh=state is None)
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
