"""The writer process: records sent by the training process reach the event files, without torch, in order;
a failure there is one sentence and a failed close, never a hung or silently short run."""

import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from handgrad.monitor import writer
from handgrad.monitor.events import Events

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read(path) -> EventAccumulator:
    acc = EventAccumulator(str(path), size_guidance={"scalars": 0, "histograms": 0, "tensors": 0, "images": 0})
    acc.Reload()
    return acc


def test_the_sink_writes_every_kind_of_record_and_never_imports_torch(tmp_path):
    logdir = tmp_path / "run"
    messages = [
        ("open", 0.0, (str(logdir),)),
        ("keys", 0.0, (0, (("", "loss"), ("layers.0.weight", "gradients/data_norm")))),
        ("scalars", 1000.0, (3, 0, [1.5, 0.25])),
        ("scalars", 1001.0, (4, 0, [1.25, 0.125])),
        ("text", 1000.0, (0, "config", "    lr: 0.1")),
        ("layout", 1000.0, ({"gradients": {"data gradient": ("Multiline", ["^gradients/data_norm$"])}},)),
        ("hparams", 1000.0, ({"lr": 0.1, "ops": "hand", "bias": True}, {"hparam/test_acc": 97.5})),
        ("histograms", 1000.0, (3, [("layers.0.weight", "histogram/weight", -1.0, 1.0, [1.0, 0.0, 2.0], 3, 0.5, 1.25)])),
        ("gradient_flow", 1000.0, (3, "gradient_flow/early", ["layers.0.weight"], [1e-3], [1e-2], None, None)),
    ]
    code = textwrap.dedent("""
        import io, pickle, sys
        from handgrad.monitor.sink import serve
        status = serve(io.BytesIO(sys.stdin.buffer.read()))
        print(status, "torch" in sys.modules)
    """)
    blob = b"".join(pickle.dumps(m) for m in messages)
    proc = subprocess.run([sys.executable, "-c", code], input=blob, capture_output=True, cwd=ROOT, timeout=120)
    assert proc.stdout.decode().split() == ["0", "False"], proc.stderr.decode()[-2000:]

    main = read(logdir)
    assert [(e.step, e.value, e.wall_time) for e in main.Scalars("loss")] == [(3, 1.5, 1000.0), (4, 1.25, 1001.0)]
    assert main.Tensors("config/text_summary")[0].tensor_proto.string_val[0] == b"    lr: 0.1"
    assert b"gradients/data_norm" in main.Tensors("custom_scalars__config__")[0].tensor_proto.string_val[0]
    assert [e.step for e in main.Images("gradient_flow/early")] == [3]
    assert (logdir / "gradient_flow-step0000003.png").read_bytes()[:4] == b"\x89PNG"
    assert [e.value for e in main.Scalars("hparam/test_acc")] == [97.5]
    blob = b"".join(p.read_bytes() for p in logdir.glob("events.out.tfevents.*"))
    assert b"_hparams_/session_start_info" in blob and b"_hparams_/experiment" in blob
    layer = read(logdir / "layers.0.weight")
    assert [e.value for e in layer.Scalars("gradients/data_norm")] == [0.25, 0.125]
    (h,) = layer.Histograms("histogram/weight")
    assert (h.step, h.histogram_value.num, h.histogram_value.sum, list(h.histogram_value.bucket)) == (3, 3, 0.5, [0, 1, 0, 2])


def test_hparams_records_read_back_as_the_hparams_plugin_reads_them(tmp_path):
    from tensorboard.plugins.hparams import plugin_data_pb2

    from handgrad.monitor import protos

    experiment, start, _ = protos.hparams({"lr": 0.1, "ops": "hand", "bias": False, "epochs": 5}, ["hparam/test_acc"])
    data = plugin_data_pb2.HParamsPluginData.FromString(start.value[0].metadata.plugin_data.content)
    got = {k: v.WhichOneof("kind") for k, v in data.session_start_info.hparams.items()}
    assert got == {"lr": "number_value", "ops": "string_value", "bias": "bool_value", "epochs": "number_value"}
    assert data.session_start_info.hparams["bias"].bool_value is False
    exp = plugin_data_pb2.HParamsPluginData.FromString(experiment.value[0].metadata.plugin_data.content).experiment
    assert [m.name.tag for m in exp.metric_infos] == ["hparam/test_acc"]


def test_events_from_the_training_side_reach_the_files_when_close_returns(tmp_path):
    events = Events(str(tmp_path / "r"))
    for step in range(1, 51):
        events.scalars({("", "loss"): 1.0 / step, ("layers.0.weight", "gradients/data_norm"): float(step)}, step)
    events.text("config", "hello")
    events.close()
    main = read(tmp_path / "r")
    assert [e.step for e in main.Scalars("loss")] == list(range(1, 51))
    assert main.Scalars("loss")[-1].value == pytest.approx(1 / 50)
    assert [e.value for e in read(tmp_path / "r" / "layers.0.weight").Scalars("gradients/data_norm")][-1] == 50.0


def test_a_writer_that_cannot_write_says_so_once_and_close_raises(tmp_path, capfd):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the run's folder should be")
    events = Events(str(blocker))
    for step in range(1, 200):  # NOTE: more than a pipe holds: the failed writer must keep draining, not hang
        events.scalars({("", "loss"): float(step), ("sub", "x"): 1.0}, step)
    with pytest.raises(writer.WriterFailed, match="incomplete"):
        events.close()
    lines = [line for line in capfd.readouterr().err.splitlines() if "writer" in line]
    assert len(lines) == 1 and "the TensorBoard writer stopped" in lines[0], lines
    assert blocker.read_text().startswith("a file")


def test_prestart_hands_its_process_to_the_next_run_and_it_outlives_ctrl_c(tmp_path):
    writer.prestart()
    spare = writer._SPARE
    events = Events(str(tmp_path / "p"))
    assert events._writer._proc is spare and writer._SPARE is None
    # NOTE: the trainer's session: Linux shares CPU time out by session, and the idle class only works inside one
    assert os.getsid(spare.pid) == os.getsid(0)
    events.text("config", "before Ctrl-C")
    deadline = time.monotonic() + 120
    while not list((tmp_path / "p").glob("events.out.tfevents.*")) and time.monotonic() < deadline:
        time.sleep(0.05)  # NOTE: an event file means the writer is serving, its signal handling set up
    os.kill(spare.pid, signal.SIGINT)  # NOTE: what Ctrl-C in a terminal sends to the whole foreground group
    events.text("after", "after Ctrl-C")
    events.close()
    assert spare.returncode == 0
    tags = read(tmp_path / "p").Tags()["tensors"]
    assert "config/text_summary" in tags and "after/text_summary" in tags


def test_an_unused_prestarted_writer_leaves_nothing_behind(tmp_path):
    code = "from handgrad.monitor.writer import prestart; prestart(); import json; print(json.dumps('started'))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120,
                          env={**os.environ, "PYTHONPATH": ROOT})
    assert proc.returncode == 0 and json.loads(proc.stdout) == "started", proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_training_run_whose_events_could_not_be_written_ends_in_one_sentence_and_keeps_its_checkpoint(tmp_path):
    logdir, save = tmp_path / "run", tmp_path / "ckpt.pt"
    logdir.mkdir()
    (logdir / "layers.0.weight").write_text("a file where the layer's sub-run folder goes")
    proc = subprocess.run([sys.executable, "train.py", "--sample", "--epochs", "1", "--hidden", "8", "--limit-train", "64",
                           "--batch-size", "32", "--quiet", "--logdir", str(logdir), "--save", str(save)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    (error,) = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert error == (f"error: The TensorBoard events in {logdir} are incomplete: the writer process stopped (exit status 1; "
                     f"its message is above); {save} holds the trained model.")
    assert save.exists() and (logdir / "layers.0.weight").read_text().startswith("a file")


def _serve_hidden(tmp_path, hidden: list[str], prepare: bool = True):
    """The sink run in a fresh interpreter where ``hidden`` packages cannot be imported; (status, stderr, logdir)."""
    logdir = tmp_path / "run"
    messages = [
        ("open", 0.0, (str(logdir),)),
        ("keys", 0.0, (0, (("", "loss"),))),
        ("scalars", 1000.0, (1, 0, [1.5])),
        ("gradient_flow", 1000.0, (1, "gradient_flow/early", ["layers.0.weight"], [1e-3], [1e-2], None, None)),
        ("curves", 1000.0, (1, "early/data_gradient_curves", {"layers.0.weight": ([1], [0.5])}, "curves", "c.png")),
    ]
    code = textwrap.dedent(f"""
        import io, pickle, sys
        for name in {hidden!r}:
            sys.modules[name] = None  # NOTE: import name now fails, as for a package that is not installed
        from handgrad.monitor.sink import serve, _warm_up
        print(serve(io.BytesIO(sys.stdin.buffer.read()), prepare={'_warm_up' if prepare else 'None'}))
    """)
    blob = b"".join(pickle.dumps(m) for m in messages)
    proc = subprocess.run([sys.executable, "-c", code], input=blob, capture_output=True, cwd=ROOT, timeout=120)
    return int(proc.stdout.decode().strip() or -1), proc.stderr.decode(), logdir


def test_without_pillow_the_charts_are_skipped_in_one_sentence_and_the_rest_is_written(tmp_path):
    status, stderr, logdir = _serve_hidden(tmp_path, ["PIL"])
    assert status == 0, stderr
    assert stderr.strip().splitlines() == ["Pillow is not installed: the dashboard's charts are skipped (pip install Pillow)."]
    main = read(logdir)
    assert [e.value for e in main.Scalars("loss")] == [1.5] and main.Tags()["images"] == []


def test_without_google_crc32c_the_records_are_checksummed_by_tensorboards_own_code(tmp_path):
    status, stderr, logdir = _serve_hidden(tmp_path, ["google_crc32c"])
    assert status == 0, stderr
    main = read(logdir)  # NOTE: TensorBoard's reader checks every record's two checksums
    assert [e.value for e in main.Scalars("loss")] == [1.5]
    assert [e.step for e in main.Images("gradient_flow/early")] == [1]


def test_a_warm_up_that_fails_costs_only_the_head_start(tmp_path):
    from handgrad.monitor.sink import Sink, serve

    def broken():
        raise ImportError("a library the warm-up wanted is missing")

    logdir = tmp_path / "warm"
    blob = b"".join(pickle.dumps(m) for m in [("open", 0.0, (str(logdir),)), ("keys", 0.0, (0, (("", "loss"),))),
                                               ("scalars", 1.0, (1, 0, [2.5]))])
    import io

    assert serve(io.BytesIO(blob), Sink(), prepare=broken) == 0
    assert [e.value for e in read(logdir).Scalars("loss")] == [2.5]
