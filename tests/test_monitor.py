"""TensorBoard output, read back with tensorboard's own reader and served by its own server."""

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import train
from handgrad.monitor import HIST_BINS

STEPS, LOG_EVERY = 10, 5


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory):
    from conftest import MNIST_DIR

    logdir = tmp_path_factory.mktemp("runs") / "run"
    args = ["--epochs", "1", "--limit-train", str(STEPS * 64), "--batch-size", "64", "--log-every", str(LOG_EVERY),
            "--logdir", str(logdir), "--quiet", "--no-download"]
    args += ["--data-dir", MNIST_DIR] if MNIST_DIR else ["--sample"]
    out = train.main(args)
    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "histograms": 0, "tensors": 0})
    acc.Reload()
    return out, acc, logdir


def test_scalar_tags_and_steps(logged_run):
    out, acc, _ = logged_run
    tags = set(acc.Tags()["scalars"])
    params = [n for n, _ in out["model"].named_parameters()]
    for name in params:
        for group in ("grad_norm", "weight_norm", "update_ratio"):
            assert f"{group}/{name}" in tags
            assert [e.step for e in acc.Scalars(f"{group}/{name}")] == [LOG_EVERY, 2 * LOG_EVERY]
    for tag in ("train/loss", "train/lr", "train/epoch_loss", "train/samples_per_s", "test/loss", "test/accuracy",
                "act/layers.1/dead_frac", "act/layers.3/dead_frac"):
        assert tag in tags, tag
    assert acc.Scalars("test/accuracy")[-1].value == pytest.approx(out["test_acc"], rel=1e-6)


def test_logged_gradient_norm_is_the_models_gradient_norm(logged_run):
    out, acc, _ = logged_run
    model = out["model"]  # its .grad is from the last step, which is a logging step
    for name, p in model.named_parameters():
        logged = acc.Scalars(f"grad_norm/{name}")[-1]
        assert logged.step == STEPS
        assert logged.value == pytest.approx(p.grad.norm().item(), rel=1e-5)
        assert acc.Scalars(f"weight_norm/{name}")[-1].value == pytest.approx(p.detach().norm().item(), rel=1e-5)
        ratio = acc.Scalars(f"update_ratio/{name}")[-1].value
        assert 0 < ratio < 1


def test_histograms_count_every_element_with_bounded_bins(logged_run):
    out, acc, _ = logged_run
    tags = set(acc.Tags()["histograms"])
    for name, p in out["model"].named_parameters():
        for group in ("grad_hist", "weight_hist"):
            events = acc.Histograms(f"{group}/{name}")
            assert f"{group}/{name}" in tags
            assert events[-1].step == STEPS
            assert events[-1].histogram_value.num == p.numel()
            assert len(events[-1].histogram_value.bucket) <= HIST_BINS + 2


def test_config_text_and_hparams(logged_run):
    _, acc, logdir = logged_run
    assert "config" in " ".join(acc.Tags()["tensors"])
    hparams = [p for p in Path(logdir).rglob("events.out.tfevents.*")]
    assert hparams, "no event files"
    blob = b"".join(p.read_bytes() for p in hparams)
    assert b"_hparams_/session_start_info" in blob and b"hparam/test_acc" in blob


def test_activation_statistics_are_fractions(logged_run):
    _, acc, _ = logged_run
    for tag in ("act/layers.1/dead_frac", "act/layers.3/dead_frac"):
        values = [e.value for e in acc.Scalars(tag)]
        assert values and all(0.0 <= v <= 1.0 for v in values)


def test_sigmoid_saturation_is_logged(tmp_path):
    logdir = tmp_path / "sig"
    train.main(["--epochs", "1", "--limit-train", "256", "--batch-size", "64", "--log-every", "2", "--activation",
                "sigmoid", "--logdir", str(logdir), "--quiet", "--sample"])
    acc = EventAccumulator(str(logdir))
    acc.Reload()
    assert [e.step for e in acc.Scalars("act/layers.1/saturated_frac")] == [2, 4]


def test_compare_tags(tmp_path):
    logdir = tmp_path / "cmp"
    train.main(["--ops", "compare", "--epochs", "1", "--limit-train", "256", "--batch-size", "64", "--logdir",
                str(logdir), "--quiet", "--sample"])
    acc = EventAccumulator(str(logdir))
    acc.Reload()
    errors = acc.Scalars("compare/grad_rel_err/layers.0.weight")
    assert [e.step for e in errors] == [1, 2, 3, 4]
    assert all(e.value < 1e-4 for e in errors)
    assert "compare/loss_diff" in acc.Tags()["scalars"]


def test_writer_is_closed_and_events_kept_when_training_fails(tmp_path):
    logdir = tmp_path / "fail"
    with pytest.raises(train.TrainError):
        train.main(["--epochs", "1", "--limit-train", "640", "--batch-size", "64", "--log-every", "1", "--lr", "1e12",
                    "--schedule", "constant", "--logdir", str(logdir), "--quiet", "--sample"])
    acc = EventAccumulator(str(logdir))
    acc.Reload()
    assert acc.Scalars("train/loss")  # what was logged before the failure reached the disk


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def test_tensorboard_server_serves_the_tags(logged_run):
    _, _, logdir = logged_run
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir.parent),
                             "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}/data/plugin"
        deadline = time.monotonic() + 90
        scalars = histograms = {}
        while time.monotonic() < deadline:
            try:
                scalars = _get(f"{base}/scalars/tags")
                histograms = _get(f"{base}/histograms/tags")
                if scalars.get("run") and histograms.get("run"):
                    break
            except OSError:
                pass
            time.sleep(0.5)
        assert "grad_norm/layers.0.weight" in scalars.get("run", {})
        assert "grad_hist/layers.0.weight" in histograms.get("run", {})
        series = _get(f"{base}/scalars/scalars?run=run&tag=grad_norm/layers.0.weight")
        assert [row[1] for row in series] == [LOG_EVERY, 2 * LOG_EVERY]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
