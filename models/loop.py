"""train.py's loop: Ctrl-C and SIGTERM held off mid-update, the step, the epoch, the epochs, the summary.

A step is forward, backward, one host sync for the loss and the gradient norms, the --ops compare
verdict, then the update, applied whole or not at all (``CTRL_C.held``), so a checkpoint written on
Ctrl-C never records half of one.
"""

from __future__ import annotations

import signal
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from handgrad import compat, distributed
from handgrad.checkpoint import save_checkpoint
from handgrad.compare import CompareResult, GradientMismatch
from handgrad.resume import TrainError
from models.flags import HPARAMS
from models.mlp import MLP
from models.run import Run, checkpoint_state

__all__ = ["CTRL_C", "evaluate", "first_non_finite", "summarize", "train_epoch", "train_epochs", "train_step"]

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


# ---------------------------------------------------------------------------------------------
# the stages before the loop: outputs, seed and device, data, model and optimizer, resume, monitor
# ---------------------------------------------------------------------------------------------



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


def compare_step(run: Run, x: torch.Tensor, y: torch.Tensor, step: int, total: torch.Tensor) -> CompareResult | None:
    """With --ops compare: this step's hand gradients against native ones, as a verdict the loop hands on; else None."""
    if run.comparison is None:
        return None
    return run.comparison.step(x, y, step, total)


def train_step(run: Run, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One update on one batch: forward, backward, checks, optimizer and schedule; returns the batch's loss."""
    step = run.step + 1
    run.monitor.before_forward(step)
    total, loss, logits = run.objective(x, y)
    run.optimizer.zero_grad(set_to_none=True)
    total.backward()
    # NOTE: one host sync per step: the loss and the gradient norms checked together.
    with_grad = [p for p in run.model.parameters() if p.grad is not None]
    norms = compat.norms([p.grad for p in with_grad])
    sq = torch.stack(norms).square().sum() if norms else total.new_zeros(())
    # NOTE: under torchrun, every process's verdict and the global batch's loss, in one all-reduce
    finite, loss = run.procs.agree(total.detach() + sq, loss)
    if not finite:
        raise _not_finite(run)
    verdict = compare_step(run, x, y, step, total)
    run.monitor.compare(step, verdict)  # NOTE: the comparison returns its errors; the monitor draws them
    run.monitor.before_update(step, logits, run.procs.local_targets(y),
                              {"train/loss": loss, "train/lr": run.optimizer.param_groups[0]["lr"]},
                              grad_norms={id(p): n for p, n in zip(with_grad, norms)})
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
    if run.monitor.failure:
        kept = f"; {save} holds the trained model" if save and Path(save).exists() else ""
        raise TrainError(f"{run.monitor.failure}{kept}.", status=2)
    if metrics:
        print(f"done: {run.epoch} epochs, test_acc {metrics['test_acc']:.2f}%, test_loss {metrics['test_loss']:.4f}, "
              f"{summary['train_seconds']:.1f}s training" + (f", checkpoint {save}" if save else ""))
    return summary
