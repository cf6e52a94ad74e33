"""More than one process: the split of a batch, and train.py under torchrun on loopback (gloo).

The multi-process tests start their processes with the environment torchrun gives them (WORLD_SIZE,
RANK, LOCAL_RANK, MASTER_ADDR=127.0.0.1, a free MASTER_PORT), or with torchrun itself for Ctrl-C;
each bounds its own time and kills what it started.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import train
from handgrad.distributed import DistributedError, Processes, report, rows_of
from handgrad.functional import get_ops
from models.mlp import MLP

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 240  # seconds for one multi-process run on a loaded 2-core machine


# ---------------------------------------------------------------------------------------------
# the split of a global batch, in one process
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n, world", [(64, 2), (35, 2), (1, 2), (7, 3), (2, 4), (128, 8), (10, 1)])
def test_rows_of_splits_a_batch_into_contiguous_parts_once(n, world):
    parts = [rows_of(n, r, world) for r in range(world)]
    assert [i for a, b in parts for i in range(a, b)] == list(range(n))
    sizes = [b - a for a, b in parts]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def _gradient_of(model, x, y, weight=1.0):
    model.zero_grad(set_to_none=True)
    total, loss, _ = model.objective(x, y)
    (total + (weight - 1.0) * loss).backward()
    return [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("n, world", [(64, 2), (35, 2), (1, 2), (2, 3), (10, 4)])
@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_average_of_weighted_process_gradients_is_the_whole_batch_gradient(n, world, loss):
    # DDP averages the processes' gradients; with w_r = N b_r / B (and 0 for a borrowed row) that
    # average must be the gradient of one process on the whole batch, L2 penalty included.
    torch.manual_seed(0)
    model = MLP(get_ops("hand"), hidden=[8], loss=loss, weight_decay=0.1, dtype=torch.float64)
    x, y = torch.randn(n, 784, dtype=torch.float64), torch.randint(0, 10, (n,))
    whole = _gradient_of(model, x, y)
    parts = [_gradient_of(model, *Processes(rank=r, world=world).rows(x, y)) for r in range(world)]
    for i, g in enumerate(whole):
        average = sum(p[i] for p in parts) / world
        torch.testing.assert_close(average, g, rtol=1e-12, atol=1e-14)


def test_unweighted_process_gradients_would_not_match():
    # the check above can fail: an uneven split averaged without weights is not the batch gradient
    torch.manual_seed(0)
    model = MLP(get_ops("hand"), hidden=[8], weight_decay=0.1, dtype=torch.float64)
    x, y = torch.randn(35, 784, dtype=torch.float64), torch.randint(0, 10, (35,))
    whole = _gradient_of(model, x, y)
    parts = [_gradient_of(model, *Processes(rank=r, world=2).rows(x, y)[:2]) for r in range(2)]
    assert not torch.allclose((parts[0][0] + parts[1][0]) / 2, whole[0], rtol=1e-6, atol=0)


def _non_contiguous_gradients(model, x, y) -> list[str]:
    """Parameters whose raw gradient (before AccumulateGrad copies it into the parameter's layout) is strided."""
    params = dict(model.named_parameters())
    total, _, _ = model.objective(x, y)
    grads = torch.autograd.grad(total, list(params.values()))
    return [n for (n, p), g in zip(params.items(), grads) if g.stride() != p.stride()]


@pytest.mark.parametrize("activation, loss", [("relu", "ce"), ("sigmoid", "mse")])
def test_hand_backward_passes_return_gradients_in_the_parameters_layout(activation, loss):
    torch.manual_seed(0)
    model = MLP(get_ops("hand"), activation=activation, loss=loss, weight_decay=5e-4)
    assert _non_contiguous_gradients(model, torch.randn(16, 784), torch.randint(0, 10, (16,))) == []


def test_a_transposed_weight_gradient_is_caught():
    class Transposed(torch.autograd.Function):
        @staticmethod
        def forward(x, w):
            return x @ w.t()

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.save_for_backward(*inputs)

        @staticmethod
        def backward(ctx, grad):
            x, w = ctx.saved_tensors
            return grad @ w, (x.t() @ grad).t()  # right values, transposed layout

    ops = SimpleNamespace(**vars(get_ops("hand")))  # NOTE: a copy; get_ops returns the shared namespace
    ops.affine = lambda x, w, b=None: Transposed.apply(x, w) + (0 if b is None else b)
    model = MLP(ops, hidden=[8])
    assert "layers.0.weight" in _non_contiguous_gradients(model, torch.randn(4, 784), torch.randint(0, 10, (4,)))


@pytest.mark.parametrize("rank, error, printed", [
    (0, train.TrainError("the loss is not finite", status=3), "error: the loss is not finite"),
    (1, train.TrainError("the loss is not finite", status=3), ""),  # every process stopped together
    (1, train.TrainError("interrupted", status=130), ""),
    (1, DistributedError("--ops compare is refused"), ""),  # the same refusal on every process
    (1, train.TrainError("checkpoint c.pt does not exist"), "process 1: error: checkpoint c.pt does not exist"),
    (0, train.TrainError("checkpoint c.pt does not exist"), "error: checkpoint c.pt does not exist"),
])
def test_an_error_is_printed_once_unless_it_is_one_process_s_own(rank, error, printed, monkeypatch, capsys):
    for key, value in (("WORLD_SIZE", "2"), ("RANK", str(rank)), ("LOCAL_RANK", str(rank))):
        monkeypatch.setenv(key, value)
    report(error, f"error: {error}")
    assert capsys.readouterr().err.strip() == printed


# ---------------------------------------------------------------------------------------------
# several processes on loopback
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Ran:
    status: int
    out: str
    err: str


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(command: list[str], tmp_path: Path, world: int = 2, timeout: float = TIMEOUT) -> list[Ran]:
    """Run ``python *command`` as ``world`` processes with torchrun's environment; one Ran per rank."""
    port, procs, files = _free_port(), [], []
    for rank in range(world):
        env = {**os.environ, "WORLD_SIZE": str(world), "RANK": str(rank), "LOCAL_RANK": str(rank),
               "LOCAL_WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               "OMP_NUM_THREADS": "1"}
        out, err = tmp_path / f"rank{rank}.out", tmp_path / f"rank{rank}.err"
        files.append((out, err))
        with out.open("w") as o, err.open("w") as e:
            procs.append(subprocess.Popen([sys.executable, *command], cwd=ROOT, env=env, stdout=o, stderr=e,
                                          start_new_session=True))
    deadline = time.monotonic() + timeout
    try:
        for p in procs:
            p.wait(timeout=max(deadline - time.monotonic(), 0.1))
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    return [Ran(p.returncode, o.read_text(), e.read_text()) for p, (o, e) in zip(procs, files)]


def _train_args(mnist_dir: str, *extra: str) -> list[str]:
    return ["--data-dir", mnist_dir, "--no-download", "--quiet", "--batch-size", "64", "--hidden", "64,32", *extra]


def _params(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def _worst_relative_difference(a: dict, b: dict) -> float:
    return max(((a[k] - b[k]).norm() / b[k].norm()).item() for k in b)


def _last_epoch_metrics(text: str) -> list[float]:
    """train_loss, test_loss, test_acc of the last epoch line printed."""
    line = [ln for ln in text.splitlines() if ln.startswith("epoch ")][-1]
    return [float(re.search(rf"{key} ([\d.]+)", line).group(1)) for key in ("train_loss", "test_loss", "test_acc")]


def test_two_processes_resume_and_match_one_process_float32(mnist_dir, tmp_path, capsys):
    # 1219 images in batches of 64: 20 steps per epoch, the last batch 3 rows, split 2 / 1; a constant
    # learning rate, so that the last step counts
    common = _train_args(mnist_dir, "--limit-train", "1219", "--epochs", "2", "--weight-decay", "1e-3",
                         "--schedule", "constant", "--lr", "0.05")
    train.main([*common, "--no-log", "--save", str(tmp_path / "one.pt")])
    one_out = capsys.readouterr().out
    train.main([*common, "--no-log", "--stop-after", "1", "--save", str(tmp_path / "half.pt")])
    logs = tmp_path / "logs"
    ranks = launch(["train.py", *common, "--resume", str(tmp_path / "half.pt"), "--save", str(tmp_path / "two.pt"),
                    "--logdir", str(logs)], tmp_path)
    assert [r.status for r in ranks] == [0, 0], ranks[0].err + ranks[1].err
    # every process resumed from the checkpoint; 20 steps on two processes against one process
    rel = _worst_relative_difference(_params(tmp_path / "two.pt"), _params(tmp_path / "one.pt"))
    print(f"float32, 2 vs 1 process, 20 steps: worst relative parameter difference {rel:.2e}")
    assert rel < 1e-5
    # the global training loss and the sharded evaluation: what one process prints (to its 4 decimals)
    two, one = _last_epoch_metrics(ranks[0].out), _last_epoch_metrics(one_out)
    assert two == pytest.approx(one, rel=1e-3, abs=2e-4), (two, one)
    # process 0 alone prints, logs and saves
    assert ranks[0].out.count("done:") == 1 and ranks[1].out == "" and ranks[1].err == ""
    writers = {f.name.split(".")[-2] for f in logs.rglob("events.out.tfevents.*")}  # the writing process's pid
    assert len(writers) == 1, writers
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["half.pt", "one.pt", "two.pt"]
    assert not list(tmp_path.glob(".*.tmp"))
    assert "strides" not in ranks[0].err  # DDP's bucket warning about gradient layout


def test_two_processes_match_one_process_float64_with_a_one_row_last_batch(mnist_dir, tmp_path):
    # 1217 images in batches of 64: 20 steps, the last batch one row, so process 1 borrows a row at weight 0
    common = _train_args(mnist_dir, "--limit-train", "1217", "--epochs", "1", "--dtype", "float64", "--no-log",
                         "--schedule", "constant", "--lr", "0.05")
    train.main([*common, "--save", str(tmp_path / "one.pt")])
    ranks = launch(["train.py", *common, "--save", str(tmp_path / "two.pt")], tmp_path)
    assert [r.status for r in ranks] == [0, 0], ranks[0].err + ranks[1].err
    assert "done:" in ranks[0].out and ranks[1].out == ""  # two processes of one run, not two runs
    rel = _worst_relative_difference(_params(tmp_path / "two.pt"), _params(tmp_path / "one.pt"))
    print(f"float64, 2 vs 1 process, 20 steps: worst relative parameter difference {rel:.2e}")
    assert rel < 1e-12


def test_a_non_finite_loss_stops_every_process_with_one_message(mnist_dir, tmp_path):
    args = _train_args(mnist_dir, "--limit-train", "640", "--epochs", "1", "--lr", "1e6", "--schedule", "constant",
                       "--no-log", "--save", str(tmp_path / "ckpt.pt"))
    ranks = launch(["train.py", *args], tmp_path)
    assert [r.status for r in ranks] == [3, 3]
    messages = [ln for r in ranks for ln in r.err.splitlines() if "not finite" in ln]
    assert len(messages) == 1 and messages[0].startswith("error: "), [r.err for r in ranks]
    assert "Traceback" not in ranks[0].err + ranks[1].err


@pytest.mark.parametrize("flags, words", [(["--ops", "compare"], "run it without torchrun"),
                                          (["--batch-size", "1"], "global batch")])
def test_what_cannot_work_under_torchrun_is_refused_once(flags, words, tmp_path):
    ranks = launch(["train.py", "--no-download", "--no-log", *flags], tmp_path)
    assert [r.status for r in ranks] == [2, 2]
    errors = [ln for r in ranks for ln in (r.out + r.err).splitlines()]
    assert len(errors) == 1 and errors[0].startswith("error: ") and words in errors[0], errors


AGREE = """
import os, signal, sys, torch
from handgrad import distributed
out = sys.argv[1]
procs = distributed.start(device="cpu", batch_size=2)
nan_here = torch.tensor(float("nan") if procs.rank == 1 else 1.0)
finite, loss = procs.agree(nan_here, torch.tensor(2.0 * (procs.rank + 1)))
lines = [f"finite {finite} loss {loss.item()}"]
if procs.rank == 1:
    os.kill(os.getpid(), signal.SIGINT)  # a Ctrl-C that reaches this process alone
try:
    procs.agree(torch.tensor(0.0), torch.tensor(0.0))
    lines.append("went on")
except KeyboardInterrupt:
    lines.append("stopped")
open(os.path.join(out, f"{procs.rank}.txt"), "w").write("\\n".join(lines))
distributed.finish()
"""


def test_processes_agree_on_one_process_s_nan_and_ctrl_c(tmp_path):
    ranks = launch(["-c", AGREE, str(tmp_path)], tmp_path)
    assert [r.status for r in ranks] == [0, 0], ranks[0].err + ranks[1].err
    for rank in (0, 1):
        # process 0's number is finite, process 1's is NaN: both see "not finite"; the loss is the
        # global one, Σ_r (b_r / B) L_r with the default share 1 per process: 2 + 4
        assert (tmp_path / f"{rank}.txt").read_text().splitlines() == ["finite False loss 6.0", "stopped"]


def _descendants(pid: int) -> list[int]:
    kids = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return kids + [d for k in kids for d in _descendants(k)]


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds torchrun's workers through /proc")
def test_ctrl_c_to_torchrun_ends_every_process_cleanly(mnist_dir, tmp_path):
    logs = tmp_path / "torchrun"
    args = _train_args(mnist_dir, "--limit-train", "2000", "--epochs", "200", "--no-log", "--save", str(tmp_path / "c.pt"))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "--redirects", "3",
           "--log-dir", str(logs), "train.py", *args]
    launcher = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + TIMEOUT
        while not any("epoch 2/" in p.read_text() for p in logs.glob("*/attempt_0/0/stdout.log")):
            assert launcher.poll() is None and time.monotonic() < deadline, "training did not start"
            time.sleep(0.5)
        launcher.send_signal(signal.SIGINT)  # what Ctrl-C in a terminal does: torchrun passes it on
        launcher.communicate(timeout=60)  # torchrun returns once its workers have ended
    finally:
        if launcher.poll() is None:  # NOTE: torchrun's workers run in sessions of their own: kill them by id
            for pid in _descendants(launcher.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            launcher.kill()
        launcher.wait()
    out0, err0, out1, err1 = (next(logs.glob(f"*/attempt_0/{r}/{s}.log")).read_text()
                              for r in (0, 1) for s in ("stdout", "stderr"))
    assert err0.count("interrupted at step") == 1 and "error:" not in err0, err0  # one line, as a plain run
    assert "Traceback" not in err0 and out1 == "" and err1 == ""
    stopped_at = int(re.search(r"interrupted at step (\d+)", err0).group(1))
    assert torch.load(tmp_path / "c.pt", weights_only=True)["step"] == stopped_at  # process 0 saved where it stopped
