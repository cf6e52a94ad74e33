"""train.py end to end: accuracy, hand vs native, checkpoints, resume rules, errors, Ctrl-C."""

import errno
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import train
from handgrad import checkpoint as ckpt_module
from handgrad import files as files_module
from handgrad import functions as fn
from handgrad import twins
from handgrad.checkpoint import CheckpointError
from handgrad.data import load_mnist
from handgrad.functional import get_ops
from models.mlp import MLP

ROOT = Path(__file__).resolve().parents[1]


def run(args, data_dir, tmp_path):
    return train.main([*args, "--data-dir", data_dir, "--no-download", "--no-log", "--quiet"])


def test_short_training_reaches_a_sensible_accuracy(mnist_dir, tmp_path):
    out = run(["--epochs", "2", "--limit-train", "6000"], mnist_dir, tmp_path)
    assert out["source"] == "mnist"
    assert out["test_acc"] > 90.0
    assert out["epoch"] == 2 and len(out["history"]) == 2
    assert out["history"][1]["test_loss"] < out["history"][0]["test_loss"]


def test_command_line_run(mnist_dir, tmp_path):
    logdir = tmp_path / "logs"
    proc = subprocess.run(
        [sys.executable, "train.py", "--epochs", "1", "--limit-train", "3000", "--data-dir", mnist_dir,
         "--no-download", "--logdir", str(logdir)],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "epoch 1/1" in proc.stdout and "test_acc" in proc.stdout and "samples/s" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1].startswith("done:")
    assert any(logdir.iterdir())


@pytest.mark.parametrize("activation, loss, lr, floor", [("sigmoid", "mse", "0.5", 40.0), ("sigmoid", "ce", "0.1", 85.0)])
def test_other_activations_and_losses_learn(mnist_dir, tmp_path, activation, loss, lr, floor):
    # NOTE: squared error on sigmoid outputs learns slowly (saturation); chance is 10%
    out = run(["--epochs", "2", "--limit-train", "6000", "--batch-size", "64", "--activation", activation,
               "--loss", loss, "--hidden", "64", "--lr", lr], mnist_dir, tmp_path)
    assert out["test_acc"] > floor


def _lockstep(dtype, steps=50):
    data = load_mnist(os.environ.get("HANDGRAD_DATA"), download=False, fallback=True, dtype=dtype, limit_train=steps * 64)
    losses, models = {}, {}
    for kind in ("hand", "native"):
        torch.manual_seed(0)
        model = MLP(get_ops(kind), weight_decay=5e-4, dtype=dtype)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
        seq = []
        for x, y in data.batches(64, epoch=0, seed=0):
            total, _, _ = model.objective(x, y)
            opt.zero_grad()
            total.backward()
            opt.step()
            seq.append(total.detach())
        losses[kind], models[kind] = torch.stack(seq), model
    return losses, models


def test_hand_and_native_train_in_lockstep_float32():
    losses, models = _lockstep(torch.float32)
    rel = ((losses["hand"] - losses["native"]).abs() / losses["native"].abs()).max().item()
    assert rel < 1e-5
    for (n, a), (_, b) in zip(models["hand"].named_parameters(), models["native"].named_parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=n)


def test_hand_and_native_train_in_lockstep_float64():
    losses, models = _lockstep(torch.float64)
    rel = ((losses["hand"] - losses["native"]).abs() / losses["native"].abs()).max().item()
    assert rel < 1e-12
    for a, b in zip(models["hand"].parameters(), models["native"].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_same_seed_same_weights_and_names_with_either_ops():
    torch.manual_seed(3)
    hand = MLP(get_ops("hand")).state_dict()
    torch.manual_seed(3)
    native = MLP(get_ops("native")).state_dict()
    assert list(hand) == list(native)
    assert all(torch.equal(hand[k], native[k]) for k in hand)


def _params(path):
    return torch.load(path, weights_only=True)["model"]


def test_resume_equals_straight_training(mnist_dir, tmp_path):
    common = ["--epochs", "2", "--limit-train", "1280"]
    straight, resumed = tmp_path / "straight.pt", tmp_path / "resumed.pt"
    run([*common, "--save", str(straight)], mnist_dir, tmp_path)
    first = run([*common, "--save", str(resumed), "--stop-after", "1"], mnist_dir, tmp_path)
    assert first["epoch"] == 1
    second = run([*common, "--save", str(resumed), "--resume", str(resumed)], mnist_dir, tmp_path)
    assert second["epoch"] == 2
    a, b = _params(straight), _params(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_ctrl_c_saves_a_mid_epoch_checkpoint_that_resumes_exactly(mnist_dir, tmp_path, monkeypatch):
    common = ["--epochs", "1", "--limit-train", "1280", "--batch-size", "128"]
    straight, interrupted = tmp_path / "straight.pt", tmp_path / "interrupted.pt"
    run([*common, "--save", str(straight)], mnist_dir, tmp_path)

    real_step = torch.optim.SGD.step
    calls = {"n": 0}

    def flaky_step(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.SGD, "step", flaky_step)
    with pytest.raises(train.TrainError) as info:
        run([*common, "--save", str(interrupted)], mnist_dir, tmp_path)
    assert info.value.status == 130
    monkeypatch.setattr(torch.optim.SGD, "step", real_step)
    state = torch.load(interrupted, weights_only=True)
    assert (state["epoch"], state["step_in_epoch"], state["step"]) == (0, 3, 3)
    run([*common, "--save", str(interrupted), "--resume", str(interrupted)], mnist_dir, tmp_path)
    a, b = _params(straight), _params(interrupted)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_non_finite_loss_stops_and_keeps_the_good_checkpoint(mnist_dir, tmp_path):
    ckpt = tmp_path / "good.pt"
    run(["--epochs", "1", "--limit-train", "640", "--save", str(ckpt)], mnist_dir, tmp_path)
    before = ckpt.read_bytes()
    with pytest.raises(train.TrainError) as info:
        run(["--epochs", "1", "--limit-train", "640", "--save", str(ckpt), "--lr", "1e12", "--schedule", "constant",
             "--overwrite"], mnist_dir, tmp_path)
    assert info.value.status == 3
    message = str(info.value)
    assert "not finite at step" in message and f"{ckpt} keeps the last good checkpoint" in message
    assert ckpt.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_non_finite_loss_without_save_mentions_no_checkpoint():
    with pytest.raises(train.TrainError) as info:
        train.main(["--sample", "--epochs", "1", "--limit-train", "256", "--lr", "1e12", "--schedule", "constant",
                    "--no-log", "--quiet"])
    assert info.value.status == 3 and "not finite" in str(info.value) and "checkpoint" not in str(info.value)


class BrokenReLU(fn.ReLU):
    @staticmethod
    def backward(ctx, grad):
        return fn.ReLU.backward(ctx, grad) * 1.5


def test_compare_mode_passes_with_correct_ops_and_fails_with_a_broken_one(mnist_dir, tmp_path, monkeypatch):
    out = run(["--ops", "compare", "--epochs", "1", "--limit-train", "640"], mnist_dir, tmp_path)
    assert max(out["compare_worst"].values()) < 1e-4
    monkeypatch.setitem(twins.FAST, "ReLU", twins.fast_twin(BrokenReLU))
    with pytest.raises(train.TrainError) as info:
        run(["--ops", "compare", "--epochs", "1", "--limit-train", "640"], mnist_dir, tmp_path)
    assert info.value.status == 4 and "disagree at step 1" in str(info.value)


def test_the_shipped_sample_trains_when_no_location_was_given_and_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("HANDGRAD_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    out = train.main(["--epochs", "1", "--no-download", "--no-log", "--quiet"])
    assert out["source"] == "sample"
    assert out["test_acc"] > 85.0
    err = capsys.readouterr().err
    assert "training on the 10,000-digit MNIST sample shipped with handgrad" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("given", ["typo", "empty"])
def test_a_given_data_dir_without_mnist_is_refused_not_replaced_by_the_sample(tmp_path, given):
    folder = tmp_path / given
    if given == "empty":
        folder.mkdir()
    proc = cli("--data-dir", str(folder), "--no-download", "--no-log", "--epochs", "1")
    assert proc.returncode == 2, proc.stdout
    assert f"the data folder {folder}" in proc.stderr and "train-images-idx3-ubyte" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "epoch 1/1" not in proc.stdout
    assert sorted(p.name for p in tmp_path.rglob("*")) == ([] if given == "typo" else ["empty"])


def test_float64_and_native_ops(mnist_dir, tmp_path):
    out = run(["--epochs", "1", "--limit-train", "4000", "--dtype", "float64", "--ops", "native"], mnist_dir, tmp_path)
    assert out["test_acc"] > 80.0


def cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "train.py", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args, words", [
    (["--device", "cuda", "--no-log"], "CUDA is not available"),
    (["--device", "tpu", "--no-log"], "is not a device"),
    (["--device", "meta", "--no-log"], "not supported"),
    (["--epochs", "0"], "positive integer"),
    (["--lr", "fast"], "expected a number"),
    (["--device", "cuda:0", "--no-log"], "--device cuda:0 was given"),
    (["--hidden", "256,x"], "layer sizes"),
    (["--hidden", ""], "at least one hidden layer"),
    (["--hidden", ","], "at least one hidden layer"),
    (["--no-download", "--no-fallback", "--data-dir", "/nonexistent/mnist", "--no-log"], "/nonexistent/mnist does not exist"),
    (["--sample", "--data-dir", "/somewhere", "--no-log"], "not allowed with"),
    (["--logdir", "/proc/forbidden/logs", "--limit-train", "10"], "--logdir /proc/forbidden/logs is not writable"),
    (["--save", "/proc/forbidden/c.pt", "--no-log"], "--save /proc/forbidden/c.pt: the folder /proc/forbidden does not exist"),
])
def test_expected_mistakes_are_one_sentence_and_nonzero(args, words):
    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = cli(*args)
    assert proc.returncode == 2
    assert words in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_a_corrupt_checkpoint_is_one_sentence(mnist_dir, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    proc = cli("--resume", str(bad), "--data-dir", mnist_dir, "--no-log", "--limit-train", "100")
    assert proc.returncode == 2
    assert "corrupt or not a handgrad checkpoint" in proc.stderr and "Traceback" not in proc.stderr


def test_a_checkpoint_of_another_model_is_refused(mnist_dir, tmp_path):
    ckpt = tmp_path / "c.pt"
    run(["--epochs", "1", "--limit-train", "256", "--save", str(ckpt)], mnist_dir, tmp_path)
    with pytest.raises(train.TrainError) as info:
        run(["--epochs", "1", "--limit-train", "256", "--resume", str(ckpt), "--hidden", "32"], mnist_dir, tmp_path)
    assert "--hidden 256,128 (checkpoint) vs 32 (now)" in str(info.value)


# ---------------------------------------------------------------------------------------------
# resume: only under the flags and data that wrote the checkpoint, and it says where it resumed
# ---------------------------------------------------------------------------------------------

SMALL = ["--sample", "--epochs", "2", "--limit-train", "256", "--batch-size", "64", "--hidden", "16", "--no-log", "--quiet"]


@pytest.fixture(scope="module")
def one_epoch_of_two(tmp_path_factory):
    path = tmp_path_factory.mktemp("resume") / "a.pt"
    train.main([*SMALL, "--save", str(path), "--stop-after", "1"])
    return path


def _with(args, flag, value):
    """``args`` with ``flag`` set to ``value`` (replaced where present, appended otherwise)."""
    args = list(args)
    if flag in args:
        args[args.index(flag) + 1] = value
    else:
        args += [flag, value]
    return args


@pytest.mark.parametrize("flag, saved, now", [
    ("--lr", "0.1", "0.001"),
    ("--momentum", "0.9", "0.0"),
    ("--weight-decay", "0.0005", "0.0"),
    ("--schedule", "onecycle", "constant"),
    ("--batch-size", "64", "32"),
    ("--seed", "0", "1"),
    ("--epochs", "2", "3"),
    ("--limit-train", "256", "512"),
    ("--hidden", "16", "32"),
    ("--activation", "relu", "sigmoid"),
    ("--loss", "ce", "mse"),
    ("--dtype", "float32", "float64"),
])
def test_resume_under_other_flags_is_refused_naming_each(one_epoch_of_two, flag, saved, now):
    before = one_epoch_of_two.read_bytes()
    with pytest.raises(train.TrainError) as info:
        train.main(_with([*SMALL, "--save", str(one_epoch_of_two), "--resume", str(one_epoch_of_two)], flag, now))
    message = str(info.value)
    assert f"{flag} {saved} (checkpoint) vs {now} (now)" in message, message
    assert message.count("(checkpoint)") == 1 and "\n" not in message and str(one_epoch_of_two) in message
    assert one_epoch_of_two.read_bytes() == before


def test_every_differing_flag_is_named_in_one_sentence(one_epoch_of_two):
    proc = cli(*SMALL, "--resume", str(one_epoch_of_two), "--lr", "0.001", "--momentum", "0")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "--lr 0.1 (checkpoint) vs 0.001 (now), --momentum 0.9 (checkpoint) vs 0.0 (now)" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_resume_says_where_it_resumed(one_epoch_of_two, tmp_path, capsys):
    copy = tmp_path / "a.pt"
    copy.write_bytes(one_epoch_of_two.read_bytes())
    out = train.main([*SMALL, "--save", str(copy), "--resume", str(copy)])
    stdout = capsys.readouterr().out
    assert f"resumed from {copy}: epoch 1 of 2, step 4\n" in stdout
    assert out["epoch"] == 2 and out["history"][0]["train_steps"] == 4 and "only)" not in stdout


def test_a_resumed_epoch_says_its_train_loss_covers_only_the_remaining_steps(tmp_path, monkeypatch, capsys):
    path = tmp_path / "mid.pt"
    real_step = torch.optim.SGD.step
    calls = {"n": 0}

    def flaky_step(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.SGD, "step", flaky_step)
    with pytest.raises(train.TrainError):
        train.main([*SMALL, "--save", str(path)])
    monkeypatch.setattr(torch.optim.SGD, "step", real_step)
    capsys.readouterr()
    out = train.main([*SMALL, "--save", str(path), "--resume", str(path)])
    stdout = capsys.readouterr().out
    assert f"resumed from {path}: epoch 0 of 2, step 3 (mid-epoch: 3 of the 4 steps of epoch 1 done)" in stdout
    assert re.search(r"epoch 1/2  train_loss [0-9.]+ \(steps 4-4 only\)", stdout), stdout
    assert re.search(r"epoch 2/2  train_loss [0-9.]+  test_loss", stdout), stdout  # a whole epoch: no note
    assert [h["train_steps"] for h in out["history"]] == [1, 4]


def test_resume_on_other_data_is_refused_with_the_right_advice(one_epoch_of_two, mnist_dir, tmp_path):
    args = [a for a in SMALL if a != "--sample"]
    with pytest.raises(train.TrainError) as info:
        train.main([*args, "--data-dir", mnist_dir, "--resume", str(one_epoch_of_two)])
    message = str(info.value)
    assert "the data: the shipped sample of 8000 train / 2000 test images (checkpoint) vs full MNIST of 60000 train " \
           "/ 10000 test images (now)" in message
    assert "add --sample" in message
    on_mnist = tmp_path / "m.pt"
    train.main([*args, "--data-dir", mnist_dir, "--save", str(on_mnist), "--stop-after", "1"])
    with pytest.raises(train.TrainError) as info:
        train.main([*SMALL, "--resume", str(on_mnist)])
    assert "full MNIST of 60000 train / 10000 test images (checkpoint) vs the shipped sample" in str(info.value)
    assert "point --data-dir or $HANDGRAD_DATA at the MNIST files" in str(info.value)


def test_help_shows_each_default_once():
    text = train.build_parser().format_help()
    blocks = re.split(r"\n(?=  -)", text.split("options:", 1)[1])
    assert len(blocks) > 20
    for block in blocks:
        assert block.count("(default") + block.count("default:") <= 2 and block.count("(default:") <= 1, block
    assert "(default: None)" not in text and "(default: False)" not in text
    flat = " ".join(text.split())
    for shown in ("(default: 5)", "(default: 256,128)", "(default: $HANDGRAD_DATA, else ./data)", "(default: 0.0005)"):
        assert shown in flat


# ---------------------------------------------------------------------------------------------
# --save: checked before training; a failed write is one sentence and keeps the previous file
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case, words", [
    ("folder", "is a folder"),
    ("missing parent", "does not exist"),
    ("read-only file", "is read-only"),
])
def test_a_bad_save_path_is_refused_before_training(tmp_path, capsys, case, words):
    target = {"folder": tmp_path, "missing parent": tmp_path / "no" / "c.pt", "read-only file": tmp_path / "ro.pt"}[case]
    if case == "read-only file":
        target.write_bytes(b"keep me")
        target.chmod(0o444)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(CheckpointError) as info:
        train.main([*SMALL, "--save", str(target)])
    assert f"--save {target}" in str(info.value) and words in str(info.value) and "\n" not in str(info.value)
    assert "epoch 1/" not in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    if case == "read-only file":
        assert target.read_bytes() == b"keep me"


def _full_disk(kind, calls):
    """A save that fails with ENOSPC from its second call on, as a full disk does."""
    real_open, real_save = files_module._open_temp, torch.save

    def open_temp(*a, **k):
        calls.append("open_temp")
        fd, name = real_open(*a, **k)
        if len(calls) >= 2:
            os.close(fd)
            fd = os.open("/dev/full", os.O_WRONLY)  # NOTE: the kernel's own "No space left on device"
        return fd, name

    def save(obj, f, *a, **k):
        calls.append("save")
        if len(calls) >= 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *a, **k)

    return ("files._open_temp", open_temp) if kind == "dev-full" else ("torch.save", save)


@pytest.mark.parametrize("kind", ["dev-full", "torch.save"])
def test_a_failed_save_is_one_sentence_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch, capsys, kind,
                                                                         sigint_handler):
    path = tmp_path / "c.pt"
    calls = []
    target, fake = _full_disk(kind, calls)
    module, name = target.split(".")
    monkeypatch.setattr(files_module if module == "files" else ckpt_module.torch, name, fake)
    status = train.cli([*SMALL, "--save", str(path)])
    assert status == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: could not write checkpoint {path} (No space left on device); {path} still holds the "
                   "previous checkpoint."]
    monkeypatch.undo()
    state = torch.load(path, weights_only=True)
    assert (state["epoch"], state["step"]) == (1, 4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]  # no temp file left


# ---------------------------------------------------------------------------------------------
# Ctrl-C at any moment: one line, exit 130, checkpoint intact
# ---------------------------------------------------------------------------------------------

# Runs train.py as `python train.py` would, after setting up a hook that sends this process SIGINT
# at a chosen moment: while torch is imported, while the data loads, or while a checkpoint is written.
_HOOKED = r"""
import os, runpy, signal, sys
moment, argv = sys.argv[1], sys.argv[2:]
ctrl_c = lambda: os.kill(os.getpid(), signal.SIGINT)
if moment == "import":
    class Hook:
        def find_spec(self, name, path=None, target=None):
            if name == "torch":
                ctrl_c()
            return None
    sys.meta_path.insert(0, Hook())
elif moment == "data":
    import time
    import handgrad.data
    real = handgrad.data.load_mnist
    def load_mnist(*a, **k):
        data = real(*a, **k)
        ctrl_c()
        time.sleep(30)
        return data
    handgrad.data.load_mnist = load_mnist
elif moment.startswith("save"):  # Ctrl-C while the second checkpoint file is written ("-always": and again)
    import stat
    real_fsync, files = os.fsync, []
    def fsync(fd):
        if stat.S_ISREG(os.fstat(fd).st_mode):
            files.append(fd)
            if len(files) == 2 or (len(files) > 2 and moment == "save-always"):
                ctrl_c()
        return real_fsync(fd)
    os.fsync = fsync
sys.argv = ["train.py", *argv]
runpy.run_path("train.py", run_name="__main__")
"""


def _interrupted(moment, *args):
    return subprocess.run([sys.executable, "-c", _HOOKED, moment, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("moment, words", [
    ("import", "interrupted during start-up; nothing was written."),
    ("data", "interrupted; nothing more was written."),
])
def test_ctrl_c_during_start_up_is_one_line(moment, words):
    proc = _interrupted(moment, "--sample", "--no-log", "--epochs", "1")
    assert proc.returncode == 130, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines() == [words]


@pytest.mark.parametrize("moment, message, saved", [
    # one Ctrl-C: the interrupted write is dropped, then the same state is written whole
    ("save-once", "interrupted at step 8 (end of epoch 2 of 2); {path} holds step 8.", (2, 8)),
    # Ctrl-C again during that second write: the file keeps the previous checkpoint
    ("save-always", "interrupted; nothing more was written.", (1, 4)),
])
def test_ctrl_c_while_a_checkpoint_is_written_keeps_a_whole_one(tmp_path, moment, message, saved):
    path = tmp_path / "c.pt"
    proc = _interrupted(moment, *SMALL, "--save", str(path))
    assert proc.returncode == 130, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines() == [message.format(path=path)]
    state = torch.load(path, weights_only=True)
    assert (state["epoch"], state["step"]) == saved
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]


def test_ctrl_c_during_training_is_one_line_and_saves_a_checkpoint(tmp_path):
    path = tmp_path / "c.pt"
    proc = subprocess.Popen([sys.executable, "-u", "train.py", "--sample", "--epochs", "200", "--hidden", "16",
                             "--no-log", "--save", str(path)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        for line in proc.stdout:
            if line.startswith("epoch 1/200"):
                break
        time.sleep(0.3)  # NOTE: somewhere inside epoch 2; any moment must do
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err[-3000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("interrupted at step ") and str(path) in lines[0], err
    step = int(re.search(r"holds step (\d+)", lines[0]).group(1))
    state = torch.load(path, weights_only=True)
    assert state["step"] == step >= 63 and state["step"] == state["epoch"] * 63 + state["step_in_epoch"]


@pytest.fixture
def sigint_handler():
    """cli() installs its own SIGINT handler; put pytest's back afterwards."""
    saved = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, saved)


def test_a_ctrl_c_during_an_update_waits_for_the_update_to_finish(tmp_path, monkeypatch, sigint_handler):
    # SIGINT arrives right after the optimizer has changed the weights but before the schedule and
    # the step counter move on: the checkpoint must still resume into exactly the straight run.
    common = ["--sample", "--epochs", "1", "--limit-train", "640", "--batch-size", "64", "--hidden", "16",
              "--no-log", "--quiet"]
    straight, interrupted = tmp_path / "straight.pt", tmp_path / "interrupted.pt"
    train.main([*common, "--save", str(straight)])
    real_step = torch.optim.SGD.step
    calls = {"n": 0}

    def step_then_ctrl_c(self, *a, **k):
        out = real_step(self, *a, **k)
        calls["n"] += 1
        if calls["n"] == 4:
            os.kill(os.getpid(), signal.SIGINT)
        return out

    monkeypatch.setattr(torch.optim.SGD, "step", step_then_ctrl_c)
    assert train.cli([*common, "--save", str(interrupted)]) == 130
    monkeypatch.setattr(torch.optim.SGD, "step", real_step)
    state = torch.load(interrupted, weights_only=True)
    assert (state["step"], state["step_in_epoch"]) == (4, 4)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    train.main([*common, "--save", str(interrupted), "--resume", str(interrupted)])
    a, b = _params(straight), _params(interrupted)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_cuda_training(mnist_dir, tmp_path):
    out = run(["--epochs", "1", "--limit-train", "6000", "--device", "cuda"], mnist_dir, tmp_path)
    assert out["device"].startswith("cuda") and out["test_acc"] > 85.0
