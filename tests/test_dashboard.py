"""The dashboard read back from a real (tiny) run: log10 and early tags, pictures and histograms at the
listed early steps, a model-independent layout without empty charts, the compare verdict, fault
injection, bounded schedules, and a run without matplotlib."""

import math
import os
import re
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2

import train
from handgrad.compare import Comparison
from handgrad.faults import FaultError, inject, parse_fault
from handgrad.functional import get_ops
from handgrad.monitor import EARLY_STEPS, LogSchedule
from handgrad.monitor.schedule import EARLY_POINTS
from models.mlp import MLP

ROOT = Path(__file__).resolve().parents[1]
STEPS = 202  # one epoch of 1616 images in batches of 8: past every early step (the last is 200)
TINY = ["--epochs", "1", "--hidden", "16,8", "--batch-size", "8", "--limit-train", str(8 * STEPS), "--quiet", "--sample"]


def read(path) -> EventAccumulator:
    acc = EventAccumulator(str(path), size_guidance={"scalars": 0, "histograms": 0, "tensors": 0, "images": 0})
    acc.Reload()
    return acc


def layout_of(acc) -> layout_pb2.Layout:
    (event,) = acc.Tensors("custom_scalars__config__")
    layout = layout_pb2.Layout()
    layout.ParseFromString(event.tensor_proto.string_val[0])
    return layout


def runs_of(logdir: Path) -> dict[str, EventAccumulator]:
    """The main run ("") and every sub-run folder (one per layer, and the compare lines)."""
    return {"": read(logdir), **{p.name: read(p) for p in sorted(logdir.iterdir()) if p.is_dir()}}


def all_scalar_tags(runs) -> set[str]:
    return {t for acc in runs.values() for t in acc.Tags()["scalars"]}


@pytest.fixture(scope="module")
def relu_run(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("dash") / "relu"
    out = train.main(TINY + ["--logdir", str(logdir)])
    return out, logdir, runs_of(logdir)


@pytest.fixture(scope="module")
def sigmoid_run(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("dash") / "sigmoid"
    train.main(["--epochs", "1", "--hidden", "16", "--batch-size", "32", "--limit-train", "64", "--quiet", "--sample",
                "--activation", "sigmoid", "--loss", "mse", "--weight-decay", "0", "--logdir", str(logdir)])
    return logdir, runs_of(logdir)


# ---------------------------------------------------------------------------------------------
# tags
# ---------------------------------------------------------------------------------------------


def test_every_layer_is_its_own_run_with_log10_tags_for_the_statistics_that_span_decades(relu_run):
    out, logdir, runs = relu_run
    params = [n for n, _ in out["model"].named_parameters()]
    assert set(params) | {"layers.1", "layers.3"} <= set(runs)
    for name in params:
        tags = set(runs[name].Tags()["scalars"])
        assert {"gradient/data_norm", "gradient/data_norm_log10", "gradient/total_norm_log10", "update/ratio_log10",
                "weight/norm"} <= tags, name
        data = {e.step: e.value for e in runs[name].Scalars("gradient/data_norm")}
        logs = {e.step: e.value for e in runs[name].Scalars("gradient/data_norm_log10")}
        assert all(logs[s] == pytest.approx(np.log10(max(v, 1e-20)), abs=1e-5) for s, v in data.items())
    assert "gradient/penalty_norm_log10" in runs["layers.0.weight"].Tags()["scalars"]
    assert "gradient/penalty_norm_log10" not in runs["layers.0.bias"].Tags()["scalars"]  # biases are not penalized
    for tag in all_scalar_tags(runs):
        assert "layers." not in tag, tag  # a chart's name never depends on the model


def test_early_tags_hold_the_log_spaced_early_points_only(relu_run):
    # NOTE: 21 points, 7 of them in steps 1-8: TensorBoard's outlier cut takes ~1 point per series
    # at each end instead of ~5 of a dense 1-100 series (which were seed001's steps 1-8)
    _, _, runs = relu_run
    points = [1, 2, 3, 4, 5, 6, 8, 10, 13, 16, 20, 25, 32, 40, 50, 63, 80, 100, 126, 160, 200]
    assert list(EARLY_POINTS) == points
    for tag in ("early/gradient_data_norm_log10", "early/gradient_data_norm_since_step1_log10", "early/update_ratio_log10"):
        assert [e.step for e in runs["layers.0.weight"].Scalars(tag)] == points, tag
    assert max(e.step for e in runs["layers.0.weight"].Scalars("gradient/data_norm_log10")) == STEPS
    for tag in ("early/loss_train_step", "early/output_p_true", "early/output_confident", "early/output_stuck"):
        assert [e.step for e in runs[""].Scalars(tag)] == points, tag
    assert [e.step for e in runs["layers.1"].Scalars("early/units_dead")] == points
    # the full-run tags keep every step of the dense start, and the early points past it (126, 160)
    logged = [e.step for e in runs[""].Scalars("loss/train_step")]
    assert logged[:100] == list(range(1, 101)) and {126, 160, 200} <= set(logged)


def test_the_since_step1_series_start_at_0_and_are_the_log10_ratio_of_the_written_norms(relu_run):
    _, _, runs = relu_run
    params = [r for r in runs if r.endswith("weight") or r.endswith("bias")]
    for r in params:
        raw = {e.step: e.value for e in runs[r].Scalars("gradient/data_norm")}
        rel = runs[r].Scalars("early/gradient_data_norm_since_step1_log10")
        assert rel[0].step == 1 and rel[0].value == 0.0
        for e in rel:
            # NOTE: a gradient that is exactly 0 (a dead layer of this tiny net) is drawn at log10(1e-20)
            assert e.value == pytest.approx(np.log10(max(raw[e.step], 1e-20)) - np.log10(raw[1]), abs=1e-5), (r, e.step)


def test_loss_series_are_separate_and_test_loss_only_where_measured(relu_run):
    _, _, runs = relu_run
    main = runs[""]
    assert [e.step for e in main.Scalars("loss/test")] == [0, STEPS]
    assert [e.step for e in main.Scalars("output/test_accuracy")] == [0, STEPS]
    assert [e.step for e in main.Scalars("loss/train_epoch")] == [STEPS]
    assert len(main.Scalars("loss/train_step")) > 100


def _tb_smoothed(ys, weight=0.6):
    """TensorBoard's Time Series smoothing (0.6 by default): a debiased moving average by point index;
    a constant series is left as it is. With smoothing on, only these series size the axis."""
    if all(y == ys[0] for y in ys):
        return list(ys)
    out, acc = [], 0.0
    for n, y in enumerate(ys, 1):
        acc = acc * weight + (1 - weight) * y
        out.append(acc / (1 - weight**n))
    return out


def _d3_nice(start, stop, count=10):
    """d3's scaleLinear().domain([start, stop]).nice(): the ends rounded out to a tick step."""
    previous = None
    for _ in range(10):
        raw = (stop - start) / count
        power = math.floor(math.log10(raw))
        error = raw / 10**power
        factor = 10 if error >= math.sqrt(50) else 5 if error >= math.sqrt(10) else 2 if error >= math.sqrt(2) else 1
        step = factor * 10**power if power >= 0 else -(10**-power) / factor
        if step == previous:
            break
        start, stop = ((math.floor(start / step) * step, math.ceil(stop / step) * step) if step > 0
                       else (math.ceil(start * step) / step, math.floor(stop * step) / step))
        previous = step
    return start, stop


def _tb_default_y_domain(series):
    """TensorBoard 2.21's Time Series y-axis with its defaults (line chart v2, read in its webfiles):
    the smoothed values of every series pooled and sorted, the ends at index ceil(0.05 (n-1)) and
    floor(0.95 (n-1)) ("Ignore outliers"), widened by 5% of that range on each side, then d3 nice."""
    a = sorted(v for ys in series for v in _tb_smoothed(ys))
    lo, hi = a[math.ceil(0.05 * (len(a) - 1))], a[math.floor(0.95 * (len(a) - 1))]
    if hi == lo:
        return (-1.0, 1.0) if lo == 0 else ((2 * lo, 0.0) if lo < 0 else (0.0, 2 * lo))
    pad = (hi - lo + sys.float_info.epsilon) * 0.05
    return _d3_nice(lo - pad, hi + pad)


def test_with_tensorboard_defaults_every_early_card_shows_steps_1_to_8(relu_run):
    # NOTE: before the early points, this run's early/output_stuck lost steps 1 and 4 and
    # early/update_ratio_log10 the last layer's step 1 (dense 1-100: the 5% cut is ~5 points a series)
    _, _, runs = relu_run
    tags = sorted({t for acc in runs.values() for t in acc.Tags()["scalars"] if t.startswith("early/")})
    assert len(tags) >= 8
    for tag in tags:
        series = {r: acc.Scalars(tag) for r, acc in runs.items() if tag in acc.Tags()["scalars"]}
        lo, hi = _tb_default_y_domain([[e.value for e in events] for events in series.values()])
        for run, events in series.items():
            smoothed = _tb_smoothed([e.value for e in events])
            for e, s in zip(events, smoothed):
                if e.step <= 8:
                    assert lo <= e.value <= hi and lo <= s <= hi, (tag, run, e.step, e.value, s, lo, hi)


# ---------------------------------------------------------------------------------------------
# pictures and histograms
# ---------------------------------------------------------------------------------------------


def test_pictures_and_histograms_at_the_early_steps_and_the_epoch_end(relu_run):
    out, logdir, runs = relu_run
    assert [e.step for e in runs[""].Images("gradient_flow/early")] == list(EARLY_STEPS)
    assert [e.step for e in runs[""].Images("gradient_flow/epoch_end")] == [STEPS]
    pngs = sorted(p.name for p in logdir.glob("gradient_flow-step*.png"))
    assert pngs == [f"gradient_flow-step{s:07d}.png" for s in (*EARLY_STEPS, STEPS)]
    assert (logdir / pngs[0]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for name, p in out["model"].named_parameters():
        events = runs[name].Histograms("histogram/data_gradient")
        assert [e.step for e in events] == [*EARLY_STEPS, STEPS]
        assert all(e.histogram_value.num == p.numel() for e in events)


def test_histogram_is_of_the_data_gradient_not_the_total(tmp_path):
    from handgrad.monitor import Monitor

    torch.manual_seed(0)
    lam = 0.5  # large: the total and the data gradient differ visibly
    model = MLP("hand", hidden=(8,), weight_decay=lam)
    x, y = torch.randn(16, 784), torch.randint(0, 10, (16,))
    monitor = Monitor(str(tmp_path / "h"), model, LogSchedule(1, 1, 1))
    monitor.before_forward(1)
    total, loss, logits = model.objective(x, y)
    total.backward()
    (data_grad,) = torch.autograd.grad(model.data_loss(model(x), y), [model.layers[0].weight])
    monitor.before_update(1, logits, y)
    monitor.after_update(1, {})
    monitor.close()
    (event,) = read(tmp_path / "h" / "layers.0.weight").Histograms("histogram/data_gradient")
    assert event.histogram_value.sum == pytest.approx(data_grad.sum().item(), rel=1e-4, abs=1e-6)
    assert event.histogram_value.sum != pytest.approx(model.layers[0].weight.grad.sum().item(), rel=1e-3)


# ---------------------------------------------------------------------------------------------
# the layout
# ---------------------------------------------------------------------------------------------


def _merge(layouts):
    """TensorBoard's custom-scalars merge: same-titled categories join, equal charts are dropped."""
    merged = {}
    for layout in layouts:
        for category in layout.category:
            charts = merged.setdefault(category.title, [])
            charts += [c for c in category.chart if c not in charts]
    return merged


def test_layout_names_do_not_depend_on_the_model_and_no_chart_is_empty(relu_run, sigmoid_run):
    _, relu_dir, relu_runs = relu_run
    sig_dir, sig_runs = sigmoid_run
    for runs in (relu_runs, sig_runs):
        tags = all_scalar_tags(runs)
        for category in layout_of(runs[""]).category:
            for chart in category.chart:
                assert "layers." not in chart.title
                (pattern,) = chart.multiline.tag
                assert any(re.match(pattern, t) for t in tags), (chart.title, pattern)  # never "Matches (0)"
    sig_titles = {c.title for cat in layout_of(sig_runs[""]).category for c in cat.chart}
    assert not any("dead ReLU" in t or "penalty gradient" in t for t in sig_titles)  # what the sigmoid run does not have
    merged = _merge([layout_of(relu_runs[""]), layout_of(sig_runs[""])])
    for charts in merged.values():
        titles = [c.title for c in charts]
        assert len(titles) == len(set(titles)), titles  # one "output" chart, not one per run


# ---------------------------------------------------------------------------------------------
# compare: the verdict, injected faults, float64
# ---------------------------------------------------------------------------------------------


def _one_step(fault=None, dtype="float64", seed=0):
    torch.manual_seed(seed)
    ops = inject(get_ops("hand"), fault) if fault else get_ops("hand")
    model = MLP(ops, hidden=(32, 16), weight_decay=5e-4)
    native = MLP("native", hidden=(32, 16), weight_decay=5e-4)
    x, y = torch.randn(64, 784), torch.randint(0, 10, (64,))
    total, _, _ = model.objective(x, y)
    total.backward()
    return Comparison(model, native, dtype=dtype).step(x, y, 1, total)


def test_a_backward_off_by_1e_5_is_caught_and_float32_noise_is_not():
    for seed in range(3):
        clean = _one_step(seed=seed)
        assert clean.ok, clean.markdown()
        assert clean.noise_max > 1e-8  # float32 rounding alone is above the float64 tolerance...
        assert max(clean.errors.values()) < 1e-12  # ...and the float64 comparison is far below it
    caught = _one_step("relu:scale=1.00001")
    assert not caught.ok and caught.errors["layers.0.weight"] == pytest.approx(2e-5, rel=0.05)
    # the same fault in a float32 comparison hides under float32 noise and the old 1e-4 tolerance
    assert _one_step("relu:scale=1.00001", dtype="float32").ok


def test_the_verdict_names_the_parameter_the_op_the_tolerance_and_the_noise():
    result = _one_step("relu:scale=1.5")
    text = result.markdown()
    assert "FAIL at step 1" in text and "`layers.2.weight`" in text or "`layers.2.bias`" in text
    assert "ReLU layers.3" in result.likely_op and "1e-08" in text and "float32 noise floor" in text
    assert result.errors["layers.4.weight"] < 1e-12  # above every ReLU: still right
    sigmoid = _one_step("sigmoid:scale=1.5")  # not used by a ReLU model: nothing to see
    assert sigmoid.ok and "PASS" in sigmoid.markdown()


def test_an_injected_fault_stops_a_compare_run_with_every_chart_written(tmp_path):
    logdir = tmp_path / "fault"
    with pytest.raises(train.TrainError) as info:
        train.main(["--ops", "compare", "--inject-fault", "relu:scale=1.5", "--epochs", "1", "--hidden", "16,8",
                    "--batch-size", "32", "--limit-train", "128", "--quiet", "--sample", "--logdir", str(logdir)])
    assert info.value.status == 4 and "layers.2" in str(info.value) and "ReLU layers.3" in str(info.value)
    runs = runs_of(logdir)
    text = runs[""].Tensors("compare/verdict/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "FAIL at step 1" in text and "ReLU layers.3" in text
    assert [e.step for e in runs[""].Images("gradient_flow/compare_failure")] == [1]
    assert [e.step for e in runs["layers.0.weight"].Histograms("histogram/data_gradient")] == [1]
    assert [e.step for e in runs["layers.0.weight"].Scalars("gradient/data_norm_log10")] == [1]
    assert runs["tolerance"].Scalars("compare/rel_err_log10")[0].value == -8
    assert runs["float32 noise"].Scalars("compare/rel_err_log10")[0].value > -8
    assert "hparam/compare_step" in runs[""].Tags()["scalars"]  # the HParams tab has the failed run
    assert [e.step for e in runs[""].Scalars("loss/train_step")] == [1] == [e.step for e in runs[""].Scalars("run/lr")]
    # NOTE: the injected gradient scaler is an op of the graph too: it must not break the cards
    cards = sorted(t for t in runs[""].Tags()["images"] if t.startswith("graph/model/"))
    assert cards == ["graph/model/1", "graph/model/2", "graph/model/3", "graph/model/4", "graph/model/full"]


@pytest.mark.parametrize("text", ["relu", "relu:scale", "relu:scale=x", "relu:factor=2", ":scale=2"])
def test_bad_fault_specs_are_one_sentence(text):
    with pytest.raises(FaultError, match="OP:scale=NUMBER"):
        parse_fault(text)


def test_unknown_fault_op_and_the_command_line():
    with pytest.raises(FaultError, match="no op 'tanh'"):
        inject(get_ops("hand"), "tanh:scale=2")
    proc = subprocess.run([sys.executable, "train.py", "--inject-fault", "relu:2", "--no-log"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--inject-fault" in proc.stderr and "Traceback" not in proc.stderr


# ---------------------------------------------------------------------------------------------
# bounded schedules; no matplotlib
# ---------------------------------------------------------------------------------------------


def test_the_schedule_is_bounded_for_a_billion_epochs():
    tracemalloc.start()
    schedule = LogSchedule(total_steps=469 * 10**9, steps_per_epoch=469, full_batches=468, histograms=10)
    pictures = [s for s in range(1, 3 * 469 + 1) if schedule.picture(s)]
    last = [s for s in range(schedule.total_steps - 469, schedule.total_steps + 1) if schedule.picture(s)]
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 1_000_000
    assert pictures == list(EARLY_STEPS) + [468]  # epoch 1 is a pick; 2 and 3 are not
    assert last == [schedule.total_steps - 1]  # the last epoch's last full batch
    picked = sum(schedule._picked_epoch(e) for e in range(1, 10**6, 997)) + schedule._picked_epoch(10**9)
    assert 1 <= picked <= 10


def test_the_most_epochs_allowed_stopped_after_one_stays_small(tmp_path):
    # NOTE: train.py refuses more than 100,000 epochs at parse time; at that bound the schedule must not grow
    # with the epoch count (a billion epochs once grew to 22.8 GB)
    code = ("import resource, sys, train; train.main(sys.argv[1:]); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    proc = subprocess.run([sys.executable, "-c", code, "--epochs", "100000", "--stop-after", "1", "--hidden", "8",
                           "--limit-train", "64", "--batch-size", "32", "--quiet", "--sample", "--logdir",
                           str(tmp_path / "huge")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert int(proc.stdout.split()[-1]) < 2_000_000  # KiB: under 2 GB (it grew to 22.8 GB)


def test_without_matplotlib_training_logs_draws_its_charts_and_says_so_in_one_line(tmp_path):
    # NOTE: a package that fails to import, first on the path of train.py and of its writer process
    hidden = tmp_path / "hidden" / "matplotlib"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ImportError('No module named matplotlib')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hidden.parent), str(ROOT)])}
    proc = subprocess.run([sys.executable, "train.py", "--epochs", "1", "--hidden", "8", "--limit-train", "64",
                           "--batch-size", "32", "--quiet", "--sample", "--logdir", str(tmp_path / "nompl")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if "matplotlib" in line]
    assert lines == ["matplotlib is not installed: the model-graph pictures are skipped (pip install matplotlib)."]
    assert "Traceback" not in proc.stderr
    assert "gradient/data_norm_log10" in read(tmp_path / "nompl" / "layers.0.weight").Tags()["scalars"]
    # NOTE: the charts are Pillow's: drawn without matplotlib; only the model graph's cards are missing
    images = read(tmp_path / "nompl").Tags()["images"]
    assert "gradient_flow/early" in images and "early/data_gradient_curves" in images
    assert not [tag for tag in images if tag.startswith("graph/model")]
