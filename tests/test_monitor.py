"""TensorBoard output, read back with tensorboard's own reader and served by its own server."""

import io
import json
import math
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2

import train
from handgrad.functional import get_ops
from handgrad.monitor import HIST_BINS, LogSchedule, Monitor
from handgrad.monitor.stats import output_stats, synced
from models.mlp import MLP

STEPS, LOG_EVERY, LOG_DENSE = 10, 3, 4
SHORT = 24  # steps in one epoch of --limit-train 3000 at the default batch of 128 (the last one partial)


def _data_args(tmp):
    from conftest import MNIST_DIR

    return ["--data-dir", MNIST_DIR] if MNIST_DIR else ["--sample"]


def read(logdir) -> EventAccumulator:
    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "histograms": 0, "tensors": 0, "images": 0})
    acc.Reload()
    return acc


def steps(acc, tag):
    return [e.step for e in acc.Scalars(tag)]


def value(acc, tag, step):
    (event,) = [e for e in acc.Scalars(tag) if e.step == step]
    return event.value


def layout_of(acc) -> layout_pb2.Layout:
    (event,) = acc.Tensors("custom_scalars__config__")
    layout = layout_pb2.Layout()
    layout.ParseFromString(event.tensor_proto.string_val[0])
    return layout


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory):
    """10 full batches with a short dense start (4) and a sparse rest (every 3)."""
    logdir = tmp_path_factory.mktemp("runs") / "run"
    args = ["--epochs", "1", "--limit-train", str(STEPS * 64), "--batch-size", "64", "--log-every", str(LOG_EVERY),
            "--log-dense", str(LOG_DENSE), "--logdir", str(logdir), "--quiet", "--no-download"]
    out = train.main(args + _data_args(logdir.parent))
    return out, read(logdir), logdir


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    """The issue's example: one epoch of 3000 images, every default, 24 steps."""
    logdir = tmp_path_factory.mktemp("short") / "run"
    out = train.main(["--epochs", "1", "--limit-train", "3000", "--logdir", str(logdir), "--quiet", "--no-download"]
                     + _data_args(logdir.parent))
    return out, read(logdir)


# ---------------------------------------------------------------------------------------------
# the schedule
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, logged", [
    (dict(total_steps=24, steps_per_epoch=24, full_batches=23), list(range(1, 25))),
    # NOTE: the early points (1, 2, 3, 4, 5, 6, 8, 10, 13, ..., 160, 200) are logged whatever the flags say
    (dict(total_steps=10, steps_per_epoch=10, full_batches=10, log_every=3, log_dense=4), [1, 2, 3, 4, 5, 6, 8, 9, 10]),
    (dict(total_steps=12, steps_per_epoch=5, full_batches=4, log_every=4, log_dense=0), [1, 2, 3, 4, 5, 6, 8, 10, 12]),
    (dict(total_steps=300, steps_per_epoch=150, full_batches=150, log_every=50, log_dense=2),
     [1, 2, 3, 4, 5, 6, 8, 10, 13, 16, 20, 25, 32, 40, 50, 63, 80, 100, 126, 150, 160, 200, 250, 300]),
    (dict(total_steps=469, steps_per_epoch=469, full_batches=468),  # the default flags: 1-100, then 126, 150, 160, 200 ...
     [*range(1, 101), 126, 150, 160, 200, 250, 300, 350, 400, 450, 469]),
])
def test_schedule_logs_the_start_densely_then_sparsely_and_every_epoch_end(kwargs, logged):
    schedule = LogSchedule(**kwargs)
    assert [s for s in range(1, kwargs["total_steps"] + 1) if schedule.scalars(s)] == logged


def test_the_early_tags_are_written_at_about_ten_log_spaced_steps_per_decade_only():
    schedule = LogSchedule(1000, 469, 468)
    assert [s for s in range(0, 1001) if schedule.early_point(s)] == [1, 2, 3, 4, 5, 6, 8, 10, 13, 16, 20, 25, 32, 40,
                                                                       50, 63, 80, 100, 126, 160, 200]
    assert [s for s in range(0, 1001) if schedule.early(s)] == list(range(1, 201))  # the early picture's window


def test_the_since_step1_chart_is_log10_of_the_ratio_to_step_1_and_absent_without_a_step_1():
    from handgrad.monitor import table

    step1 = table.step1_values([("data_norm", "layers.0.weight", 0.5), ("data_norm", "layers.0.bias", 0.0),
                                ("p_true", "", 0.1)])
    assert step1 == {("data_norm", "layers.0.weight"): 0.5}  # a zero has no ratio; p_true has no such chart
    rows = [("data_norm", "layers.0.weight", 0.005), ("data_norm", "layers.0.bias", 0.2)]
    tag = "early/gradient_data_norm_since_step1_log10"
    out = table.expand(rows, True, step1=step1)
    assert out[("layers.0.weight", tag)] == pytest.approx(-2.0)  # 0.005 / 0.5 = 10^-2: two decades lost
    assert ("layers.0.bias", tag) not in out
    assert (("layers.0.weight", tag)) not in table.expand(rows, False, step1=step1)  # not an early point
    assert (("layers.0.weight", tag)) not in table.expand(rows, True)  # resumed past step 1: no ratio


@pytest.mark.parametrize("total, per_epoch, full, count, pictures", [
    (24, 24, 23, 10, [1, 2, 5, 10, 20, 23]),  # one epoch whose last batch is partial
    (2345, 469, 468, 10, [1, 2, 5, 10, 20, 50, 100, 200, 468, 937, 1406, 1875, 2344]),  # the default run
    (3, 3, 3, 10, [1, 2, 3]),  # fewer steps than the early list
    (100, 10, 10, 4, [1, 2, 5, 10, 20, 40, 50, 70, 100]),  # 4 of 10 epochs: 1, 4, 7, 10
    (100, 10, 10, 0, []),  # --histograms 0: none
])
def test_schedule_takes_pictures_at_the_early_steps_and_a_bounded_number_of_epoch_ends(total, per_epoch, full, count,
                                                                                        pictures):
    schedule = LogSchedule(total, per_epoch, full, histograms=count)
    assert [s for s in range(1, total + 1) if schedule.picture(s)] == pictures
    assert [s for s in range(1, total + 1) if schedule.histogram(s)] == pictures  # the same steps


# ---------------------------------------------------------------------------------------------
# a whole run, read back (main run and the per-layer sub-runs)
# ---------------------------------------------------------------------------------------------


def sub(logdir, name) -> EventAccumulator:
    return read(Path(logdir) / name)


def test_a_24_step_run_has_curves_from_step_0(short_run, tmp_path_factory):
    out, acc = short_run
    logdir = Path(acc.path)
    assert out["step"] == SHORT
    params = [n for n, _ in out["model"].named_parameters()]
    for name in params:
        layer = sub(logdir, name)
        for tag in ("gradient/total_norm_log10", "gradient/data_norm", "update/ratio", "update/ratio_log10"):
            assert steps(layer, tag) == list(range(1, SHORT + 1)), (tag, name)
        assert steps(layer, "weight/norm") == list(range(0, SHORT + 1))
    for name in params[::2]:  # the weights: the penalty is on them only
        assert steps(sub(logdir, name), "gradient/penalty_norm_log10") == list(range(1, SHORT + 1))
    assert steps(acc, "loss/train_step") == list(range(1, SHORT + 1))
    assert steps(acc, "output/p_true") == list(range(1, SHORT + 1))
    assert steps(acc, "output/test_accuracy") == [0, SHORT]
    assert 0.0 < value(acc, "output/test_accuracy", 0) < 30.0  # untrained: near chance
    assert value(acc, "output/test_accuracy", SHORT) == pytest.approx(out["test_acc"], rel=1e-6)


def test_histograms_have_bounded_bins_and_count_every_element(short_run):
    out, acc = short_run
    for name, p in out["model"].named_parameters():
        layer = sub(acc.path, name)
        for tag in ("histogram/data_gradient", "histogram/weight"):
            events = layer.Histograms(tag)
            assert [e.step for e in events] == [1, 2, 5, 10, 20, SHORT - 1]  # never the partial last batch
            for e in events:
                assert e.histogram_value.num == p.numel()
                assert len(e.histogram_value.bucket) <= HIST_BINS + 2
                assert sum(e.histogram_value.bucket) == p.numel()


def test_gradient_flow_pictures_are_real_images(short_run):
    from PIL import Image

    _, acc = short_run
    images = acc.Images("gradient_flow/early")
    assert [e.step for e in images] == [1, 2, 5, 10, 20]
    picture = Image.open(io.BytesIO(images[0].encoded_image_string))
    assert picture.size[0] >= 400 and picture.size[1] >= 300
    assert len(np.unique(np.asarray(picture.convert("L")))) > 10  # not a blank canvas


def test_custom_scalars_layout_one_chart_per_statistic_in_order(short_run):
    _, acc = short_run
    layout = layout_of(acc)
    titles = [c.title for c in layout.category]
    assert titles[0].startswith("early steps")
    charts = [c.title for cat in layout.category for c in cat.chart]
    for words in ("data gradient", "penalty gradient", "total gradient", "weight norm", "update ratio", "dead ReLU",
                  "confident", "stuck", "loss"):
        assert any(words in t for t in charts), words


def test_scalar_steps_follow_the_schedule(logged_run):
    out, acc, logdir = logged_run
    for name, _ in out["model"].named_parameters():
        assert steps(sub(logdir, name), "gradient/total_norm_log10") == [1, 2, 3, 4, 5, 6, 8, 9, 10]
    for tag in ("loss/train_step", "run/lr", "loss/train_epoch", "run/samples_per_s", "loss/test", "output/test_accuracy"):
        assert tag in acc.Tags()["scalars"], tag
    for unit in ("layers.1", "layers.3"):
        assert "units/dead" in sub(logdir, unit).Tags()["scalars"]


def test_logged_norms_are_the_models_norms(logged_run):
    out, acc, logdir = logged_run
    model = out["model"]  # its .grad is from the last step, which is a logging step
    for name, p in model.named_parameters():
        layer = sub(logdir, name)
        assert 10 ** value(layer, "gradient/total_norm_log10", STEPS) == pytest.approx(p.grad.norm().item(), rel=1e-5)
        assert value(layer, "weight/norm", STEPS) == pytest.approx(p.detach().norm().item(), rel=1e-5)
        ratio = value(layer, "update/ratio", STEPS)
        assert 0 < ratio < 1
        assert value(layer, "update/ratio_log10", STEPS) == pytest.approx(np.log10(ratio), abs=1e-5)


def test_config_text_and_hparams(logged_run):
    _, acc, logdir = logged_run
    assert "config" in " ".join(acc.Tags()["tensors"])
    blob = b"".join(p.read_bytes() for p in Path(logdir).glob("events.out.tfevents.*"))
    assert b"_hparams_/session_start_info" in blob and b"hparam/test_acc" in blob


def test_activation_statistics_are_fractions(logged_run):
    _, acc, logdir = logged_run
    series = [sub(logdir, "layers.1").Scalars("units/dead"), sub(logdir, "layers.3").Scalars("units/dead")]
    series += [acc.Scalars(t) for t in ("output/p_true", "output/confident", "output/stuck")]
    for events in series:
        values = [e.value for e in events]
        assert values and all(0.0 <= v <= 1.0 for v in values)


def test_sparse_schedule_for_sigmoid_saturation(tmp_path):
    logdir = tmp_path / "sig"
    train.main(["--epochs", "1", "--limit-train", "256", "--batch-size", "16", "--log-every", "4", "--log-dense", "0",
                "--activation", "sigmoid", "--logdir", str(logdir), "--quiet", "--sample"])
    # every 4th step, plus the early points (1, 2, 3, 4, 5, 6, 8, 10, 13, 16) that the early charts need
    assert steps(sub(logdir, "layers.1"), "units/saturated") == [1, 2, 3, 4, 5, 6, 8, 10, 12, 13, 16]


# ---------------------------------------------------------------------------------------------
# the statistics against direct computations (one step driven by hand, as train.py drives it)
# ---------------------------------------------------------------------------------------------


def _one_logged_step(model, batches, logdir):
    """Log ``len(batches)`` SGD steps; returns a copy of the model as it was before each step."""
    schedule = LogSchedule(total_steps=len(batches), steps_per_epoch=len(batches), full_batches=len(batches))
    before = []
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    monitor = Monitor(str(logdir), model, schedule)
    for step, (x, y) in enumerate(batches, start=1):
        before.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        monitor.before_forward(step)
        total, loss, logits = model.objective(x, y)
        opt.zero_grad()
        total.backward()
        monitor.before_update(step, logits, y)
        opt.step()
        monitor.after_update(step, {"train/loss": loss.detach()})
    monitor.close()
    return before, read(logdir)


def _native_copy(model, state):
    twin = MLP(get_ops("native"), hidden=[m.out_features for m in model.layers[:-1] if hasattr(m, "out_features")],
               activation=model.activation, loss=model.loss_name, weight_decay=model.weight_decay)
    twin.load_state_dict(state)
    return twin


def test_data_and_penalty_gradient_norms_equal_direct_gradients(tmp_path):
    torch.manual_seed(0)
    lam = 0.05  # large enough that the penalty is a visible share of the total gradient
    model = MLP("hand", hidden=(32, 16), weight_decay=lam)
    x, y = torch.randn(64, 784), torch.randint(0, 10, (64,))
    (state,), acc = _one_logged_step(model, [(x, y)], tmp_path / "norms")
    logdir = tmp_path / "norms"
    native = _native_copy(model, state)
    names = [n for n, _ in native.named_parameters()]
    params = list(native.parameters())
    data_grads = torch.autograd.grad(native.data_loss(native(x), y), params)  # the data loss alone
    for name, p, g in zip(names, params, data_grads):
        layer = sub(logdir, name)
        logged_data, logged_total = value(layer, "gradient/data_norm", 1), 10 ** value(layer, "gradient/total_norm_log10", 1)
        assert logged_data == pytest.approx(g.norm().item(), rel=1e-4), name
        if name.endswith("weight"):
            (penalty,) = torch.autograd.grad(lam / 2 * p.square().sum(), p)
            assert 10 ** value(layer, "gradient/penalty_norm_log10", 1) == pytest.approx(penalty.norm().item(), rel=1e-5)
            assert abs(logged_total - logged_data) > 1e-3 * logged_data  # the total is not the data gradient
        else:
            assert "gradient/penalty_norm_log10" not in layer.Tags()["scalars"]
            assert logged_total == pytest.approx(logged_data, rel=1e-5)
    probs = torch.softmax(native(x), -1)[torch.arange(64), y].mean().item()
    assert value(acc, "output/p_true", 1) == pytest.approx(probs, rel=1e-5)


@pytest.mark.parametrize("handed", ["all", "all but one"])
def test_gradient_norms_the_loop_hands_over_are_used_only_when_complete(tmp_path, handed):
    # NOTE: train.py's finiteness check computes every ‖∂J/∂θ‖; the monitor takes them instead of a second pass
    torch.manual_seed(0)
    model = MLP("hand", hidden=(8,))
    x, y = torch.randn(16, 784), torch.randint(0, 10, (16,))
    schedule = LogSchedule(total_steps=1, steps_per_epoch=1, full_batches=1)
    monitor = Monitor(str(tmp_path / handed), model, schedule)
    monitor.before_forward(1)
    total, loss, logits = model.objective(x, y)
    total.backward()
    params = list(model.parameters())
    handed_over = {id(p): torch.tensor(123.0) for p in (params if handed == "all" else params[1:])}
    monitor.before_update(1, logits, y, grad_norms=handed_over)
    monitor.after_update(1, {"train/loss": loss.detach()})
    monitor.close()
    for name, p in model.named_parameters():
        logged = 10 ** value(sub(tmp_path / handed, name), "gradient/total_norm_log10", 1)
        expected = 123.0 if handed == "all" else p.grad.norm().item()
        assert logged == pytest.approx(expected, rel=1e-5), name


def test_squared_error_output_confident_and_stuck_are_told_apart(tmp_path):
    torch.manual_seed(0)
    model = MLP("hand", hidden=(16,), loss="mse", weight_decay=5e-4)
    assert [k for k in model.state_dict()] == ["layers.0.weight", "layers.0.bias", "layers.2.weight", "layers.2.bias"]
    y = torch.randint(0, 10, (32,))
    calm, saturated = torch.zeros(32, 784), 200 * torch.randn(32, 784)
    states, acc = _one_logged_step(model, [(calm, y), (saturated, y)], tmp_path / "mse")
    for tag in ("output/stuck", "output/confident"):
        assert 0.0 <= value(acc, tag, 1) <= 1.0 and 0.0 <= value(acc, tag, 2) <= 1.0
    assert value(acc, "output/stuck", 2) < 0.5  # huge inputs: outputs spread to 0 and 1, not all alike
    native = _native_copy(model, states[1])
    p_true = torch.sigmoid(native(saturated))[torch.arange(32), y].mean().item()
    assert value(acc, "output/p_true", 2) == pytest.approx(p_true, rel=1e-5)
    titles = [c.title for cat in layout_of(acc).category for c in cat.chart]
    # a ReLU network with an output sigmoid: the output is judged by confident/stuck, not as hidden units
    assert any("dead ReLU" in t for t in titles) and not any("saturated sigmoid" in t for t in titles)


def test_confident_answers_count_only_right_and_sure(tmp_path):
    model = MLP("hand", hidden=(4,))
    monitor = Monitor(str(tmp_path / "c"), model, LogSchedule(1, 1, 1))
    logits = torch.tensor([[20.0, 0, 0, 0, 0, 0, 0, 0, 0, 0], [0.0, 20, 0, 0, 0, 0, 0, 0, 0, 0],
                           [0.0] * 10, [3.0, 0, 0, 0, 0, 0, 0, 0, 0, 0]])
    monitor._output_stats(logits, torch.tensor([0, 0, 0, 0]))
    values = {k: float(v) for k, _, v in monitor._pending}
    monitor.close()
    # sample 0 right and sure; 1 sure but wrong; 2 all equal (stuck); 3 right, not sure
    p_true = sum(math.exp(row[0]) / sum(math.exp(v) for v in row) for row in logits.tolist()) / 4
    assert values == {"p_true": pytest.approx(p_true, rel=1e-6), "confident": 0.25, "stuck": 0.25}


def test_a_sigmoid_output_sure_of_two_classes_is_not_confident():
    # NOTE: sigmoid outputs do not sum to 1: the true class and another can both be above 0.99
    logits = torch.tensor([[9.0, 9.0] + [-9.0] * 8, [9.0] + [-9.0] * 9, [9.0, -3.0] + [-9.0] * 8])
    values = {k: float(v) for k, v in output_stats(logits, torch.tensor([0, 0, 0]), softmax=False).items()}
    sig = torch.sigmoid(logits)
    assert values["p_true"] == pytest.approx(sig[:, 0].mean().item(), rel=1e-6)
    assert values["confident"] == pytest.approx(1 / 3)  # NOTE: only row 1; row 2's 0.047 is not < 0.01
    assert values["stuck"] == 0.0


# ---------------------------------------------------------------------------------------------
# the graph picture (drawn by handgrad.graph when it is there)
# ---------------------------------------------------------------------------------------------


def test_the_model_graph_goes_to_the_graphs_tab_images_and_text(logged_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, acc, logdir = logged_run
    graph = EventAccumulator(str(logdir)).Reload().Graph()  # raises ValueError where no graph was written
    ops = {n.op for n in graph.node}
    assert {"Affine", "Parameter", "Input"} <= ops
    cards = sorted(t for t in acc.Tags()["images"] if t.startswith("graph/model"))
    assert cards == ["graph/model/1", "graph/model/2", "graph/model/3", "graph/model/4", "graph/model/full"]
    assert all([e.step for e in acc.Images(t)] == [0] for t in cards)
    assert all(acc.Images(t)[0].width <= 367 and acc.Images(t)[0].height <= 215 for t in cards[:-1])  # TensorBoard's box
    text = acc.Tensors("graph/model/mermaid/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "flowchart" in text and "Affine" in text


# ---------------------------------------------------------------------------------------------
# failures and the server
# ---------------------------------------------------------------------------------------------


def test_writer_is_closed_and_events_kept_when_training_fails(tmp_path):
    logdir = tmp_path / "fail"
    with pytest.raises(train.TrainError):
        train.main(["--epochs", "1", "--limit-train", "640", "--batch-size", "64", "--lr", "1e12",
                    "--schedule", "constant", "--logdir", str(logdir), "--quiet", "--sample"])
    assert read(logdir).Scalars("loss/train_step")  # what was logged before the failure reached the disk


@pytest.mark.parametrize("flag, text", [("--log-dense", "-1"), ("--histograms", "x"), ("--log-every", "0")])
def test_bad_logging_flags_are_one_sentence(flag, text):
    proc = subprocess.run([sys.executable, "train.py", flag, text, "--no-log"], cwd=Path(__file__).resolve().parents[1],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and flag in proc.stderr and "Traceback" not in proc.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def test_tensorboard_server_serves_the_tags_and_the_layout(logged_run):
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
        assert "gradient/data_norm_log10" in scalars.get("run/layers.0.weight", {})
        assert "histogram/data_gradient" in histograms.get("run/layers.0.weight", {})
        series = _get(f"{base}/scalars/scalars?run=run/layers.0.weight&tag=gradient/data_norm_log10")
        assert [row[1] for row in series] == [1, 2, 3, 4, 5, 6, 8, 9, 10]
        layout = _get(f"{base}/custom_scalars/layout")
        assert any(c["title"] == "gradients" for c in layout["category"])
        runs = [r for r in _get(f"{base}/../runs".replace("/plugin/..", "")) if r.startswith("run/layers.") and "weight" in r]
        assert len(runs) == 3  # every layer a run of its own: its own colour and legend row
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_synced_keeps_every_value_exact_whatever_the_mix():
    big = 2**40 + 1  # NOTE: not a float32: an int64 tensor must not pass through one
    values = [torch.tensor(0.5), 3.25, torch.tensor(big), torch.tensor([7.0]), torch.tensor(1.5, dtype=torch.float64)]
    assert synced(values) == [0.5, 3.25, float(big), 7.0, 1.5]
    assert synced([torch.tensor(0.25), torch.tensor(2.0)]) == [0.25, 2.0]
    assert synced([1.0, "x"]) == [1.0, "x"]


def test_a_one_step_epoch_keeps_the_since_step1_charts(tmp_path):
    # NOTE: the epoch's end flushes step 1 a second time (its test loss); step 1's norms must survive it
    torch.manual_seed(0)
    model = MLP("hand", hidden=(8,))
    schedule = LogSchedule(total_steps=3, steps_per_epoch=1, full_batches=1)
    monitor = Monitor(str(tmp_path / "one"), model, schedule)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in (1, 2):
        x, y = torch.randn(16, 784), torch.randint(0, 10, (16,))
        monitor.before_forward(step)
        total, loss, logits = model.objective(x, y)
        opt.zero_grad()
        total.backward()
        monitor.before_update(step, logits, y)
        opt.step()
        monitor.after_update(step, {"train/loss": loss.detach()})
        monitor.scalars(step, {"train/epoch_loss": loss.item(), "test/loss": 1.0, "test/accuracy": 50.0})
    monitor.close()
    tag = "early/gradient_data_norm_since_step1_log10"
    for name, _ in model.named_parameters():
        assert [e.step for e in sub(tmp_path / "one", name).Scalars(tag)] == [1, 2], name
