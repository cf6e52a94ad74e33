"""Nothing lost, nothing silent: --save never clobbers, SIGTERM saves, mistakes are one sentence (issue 18)."""

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
from handgrad.checkpoint import CheckpointError

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--sample", "--epochs", "2", "--limit-train", "256", "--batch-size", "64", "--hidden", "16", "--no-log", "--quiet"]
LONG = ["--sample", "--epochs", "200", "--hidden", "16", "--no-log"]  # 63 steps an epoch; stopped by a signal


def cli(*args, cwd=ROOT, env=None, code=None):
    argv = [sys.executable, "-c", code, *args] if code else [sys.executable, str(ROOT / "train.py"), *args]
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=300, env=env)


def one_line(proc) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return lines[0]


def _started(*args):
    """train.py in the background, returned once its training has begun (the lock is held from start-up on)."""
    proc = subprocess.Popen([sys.executable, "-u", "train.py", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith("epoch 1/"):
            return proc
    proc.kill()
    raise AssertionError(proc.stderr.read()[-3000:])


# ---------------------------------------------------------------------------------------------
# --save: a new file or a checkpoint of the same run; anything else refused before training
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, content", [("notes.txt", b"my notes\n"), ("train_copy.py", b"print('a script')\n")])
def test_save_over_a_file_that_is_no_checkpoint_is_refused_and_the_bytes_stay(tmp_path, capsys, name, content):
    target = tmp_path / name
    target.write_bytes(content)
    with pytest.raises(train.TrainError) as info:
        train.main([*TINY, "--save", str(target)])
    message = str(info.value)
    assert f"--save {target} already exists and is not a handgrad checkpoint" in message and "--overwrite" in message
    assert "\n" not in message and "epoch 1/" not in capsys.readouterr().out
    assert target.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no lock or temp file left


def test_overwrite_replaces_it_for_those_who_mean_it(tmp_path):
    target = tmp_path / "notes.txt"
    target.write_bytes(b"my notes\n")
    train.main([*TINY, "--save", str(target), "--overwrite", "--stop-after", "1"])
    assert torch.load(target, weights_only=True)["step"] == 4


def test_save_over_another_runs_checkpoint_is_refused_the_same_runs_is_replaced(tmp_path):
    path = tmp_path / "c.pt"
    train.main([*TINY, "--save", str(path), "--stop-after", "1"])
    before = path.read_bytes()
    with pytest.raises(train.TrainError) as info:
        train.main([*TINY, "--save", str(path), "--lr", "0.01"])
    assert "holds the checkpoint of another run (--lr 0.1 (checkpoint) vs 0.01 (now))" in str(info.value)
    assert f"--resume {path}" in str(info.value) and "--overwrite" in str(info.value)
    assert path.read_bytes() == before
    out = train.main([*TINY, "--save", str(path)])  # the same flags and data: the same run, started again
    assert out["epoch"] == 2 and torch.load(path, weights_only=True)["step"] == 8


def test_a_checkpoint_file_gets_the_permissions_of_a_new_file(tmp_path):
    old = os.umask(0o027)
    try:
        train.main([*TINY, "--save", str(tmp_path / "c.pt"), "--stop-after", "1"])
    finally:
        os.umask(old)
    assert (tmp_path / "c.pt").stat().st_mode & 0o777 == 0o640  # 0666 minus the umask, not mkstemp's 0600


def test_two_runs_on_one_path_the_second_refuses_at_start(tmp_path):
    path = tmp_path / "shared.pt"
    first = _started(*LONG, "--save", str(path))
    try:
        started = time.perf_counter()
        second = cli(*LONG, "--save", str(path))
        assert second.returncode == 2
        line = one_line(second)
        assert f"--save {path} is in use by another training run (process {first.pid}" in line, line
        assert "epoch 1/" not in second.stdout and "training" not in second.stdout
        assert time.perf_counter() - started < 120
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=120)
    finally:
        first.kill()
    assert first.returncode == 143, err[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shared.pt"]  # the lock went with the run


# ---------------------------------------------------------------------------------------------
# SIGTERM behaves like Ctrl-C
# ---------------------------------------------------------------------------------------------


def test_sigterm_saves_a_resumable_checkpoint_at_the_step_and_exits_143(tmp_path):
    path = tmp_path / "c.pt"
    proc = _started(*LONG, "--save", str(path))
    try:
        time.sleep(0.3)  # NOTE: somewhere inside epoch 2; any moment must do
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 143, err[-3000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("terminated (SIGTERM) at step ") and str(path) in lines[0], err
    step = int(re.search(r"holds step (\d+)", lines[0]).group(1))
    state = torch.load(path, weights_only=True)
    assert state["step"] == step >= 63 and state["step"] == state["epoch"] * 63 + state["step_in_epoch"]
    out = train.main([*LONG, "--quiet", "--resume", str(path), "--stop-after", "1"])
    assert out["history"][0]["train_steps"] == 63 - state["step_in_epoch"]
    assert torch.load(path, weights_only=True)["step"] == (state["epoch"] + 1) * 63  # saved back to the --resume file


# ---------------------------------------------------------------------------------------------
# flags refused or accepted at parse time, before anything is built
# ---------------------------------------------------------------------------------------------


def test_a_seed_of_any_size_trains():
    out = train.main([*TINY, "--seed", "1733150000123456789", "--stop-after", "1"])
    assert out["epoch"] == 1


@pytest.mark.parametrize("args, words", [
    (["--seed", "1e23"], "--seed: expected a whole number from 0 to 18446744073709551615, got '1e23'"),
    (["--seed", "18446744073709551616"], "expected a whole number from 0 to 18446744073709551615"),
    (["--seed", "-1"], "expected a whole number from 0"),
    (["--epochs", "1000000000", "--stop-after", "1"], "--epochs: expected a positive integer up to 100,000"),
    (["--hidden", "100000000"], "layer sizes must be from 1 to 65,536"),
])
def test_out_of_range_flags_are_one_sentence_at_parse_time(args, words, capsys):
    with pytest.raises(SystemExit) as info:
        train.parse_args(args)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0], err


# Runs train.py with `import torch` (or torchvision) made to fail: what is answered without it.
_NO_MODULE = r"""
import runpy, sys
blocked, argv = sys.argv[1], sys.argv[2:]
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == blocked or name.startswith(blocked + "."):
            raise RuntimeError("operator torchvision::nms does not exist")
        return None
sys.meta_path.insert(0, Block())
sys.argv = ["train.py", *argv]
runpy.run_path("train.py", run_name="__main__")
"""


@pytest.mark.parametrize("args, status", [(["--help"], 0), (["--epohcs", "3"], 2), (["--preset", "seed004", "--help"], 0)])
def test_help_and_a_typo_are_answered_before_torch_is_imported(args, status):
    proc = cli("torch", *args, code=_NO_MODULE)
    assert proc.returncode == status, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    if status == 2:
        assert one_line(proc).startswith("error: unrecognized arguments: --epohcs")


def test_a_broken_torchvision_never_stops_training_on_the_shipped_sample(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "HANDGRAD_DATA"}
    proc = cli("torchvision", "--epochs", "1", "--limit-train", "256", "--hidden", "16", "--no-log", "--quiet",
               cwd=tmp_path, env={**env, "PYTHONPATH": str(ROOT)}, code=_NO_MODULE.replace('"train.py"', repr(str(ROOT / "train.py"))))
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = one_line(proc)
    assert "torchvision cannot be imported (RuntimeError: operator torchvision::nms does not exist)" in line
    assert "training on the 10,000-digit MNIST sample" in line
    assert "done: 1 epochs" in proc.stdout


# ---------------------------------------------------------------------------------------------
# checkpoints that cannot resume: one sentence that names the reason
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def half_done(tmp_path_factory):
    path = tmp_path_factory.mktemp("half") / "h.pt"
    train.main([*TINY, "--save", str(path), "--stop-after", "1"])
    return path


def _edited(half_done, tmp_path, edit):
    state = torch.load(half_done, weights_only=True)
    edit(state)
    path = tmp_path / "edited.pt"
    torch.save(state, path)
    return path


@pytest.mark.parametrize("key", ["rng_cpu", "epoch"])
def test_a_checkpoint_missing_a_key_names_it(half_done, tmp_path, key):
    path = _edited(half_done, tmp_path, lambda s: s.pop(key))
    with pytest.raises(train.TrainError) as info:
        train.main([*TINY, "--resume", str(path)])
    assert f"checkpoint {path} lacks '{key}'" in str(info.value) and "\n" not in str(info.value)


def test_a_checkpoint_of_a_newer_version_says_so(half_done, tmp_path):
    path = _edited(half_done, tmp_path, lambda s: s.update(version=3))
    with pytest.raises(train.TrainError) as info:
        train.main([*TINY, "--resume", str(path)])
    assert f"checkpoint {path} was made by a newer handgrad (checkpoint version 3" in str(info.value)


def test_an_unreadable_checkpoint_is_not_called_corrupt(half_done, monkeypatch):
    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(ckpt_module.torch, "load", denied)
    with pytest.raises(CheckpointError) as info:
        train.main([*TINY, "--resume", str(half_done), "--save", str(half_done)])
    assert "cannot be read (permission denied)" in str(info.value) and "corrupt" not in str(info.value)


def test_a_refusal_across_presets_names_typeable_flags_and_the_preset(tmp_path):
    path = tmp_path / "p.pt"
    args = ["--sample", "--epochs", "2", "--limit-train", "256", "--no-log", "--quiet"]
    train.main([*args, "--preset", "seed004", "--save", str(path), "--stop-after", "1"])
    with pytest.raises(train.TrainError) as info:
        train.main([*args, "--resume", str(path)])
    message = str(info.value)
    assert "--hidden 512 (checkpoint) vs 256,128 (now)" in message and "--no-bias (checkpoint) vs --bias (now)" in message
    assert "add --preset seed004 (the checkpoint's preset)" in message and "--bias False" not in message


# ---------------------------------------------------------------------------------------------
# a finished run: nothing to do, or more epochs
# ---------------------------------------------------------------------------------------------


def test_a_finished_checkpoint_has_nothing_to_do_and_can_be_extended(tmp_path, capsys):
    path, straight = tmp_path / "f.pt", tmp_path / "s.pt"
    train.main([*TINY, "--save", str(path)])
    before = path.read_bytes()
    capsys.readouterr()
    out = train.main([*TINY, "--resume", str(path), "--save", str(path)])
    said = capsys.readouterr().out
    assert out["nothing_to_do"] and path.read_bytes() == before
    assert f"nothing to do: checkpoint {path} already trained 2 epochs" in said and "--epochs 4" in said
    assert "one-cycle schedule of their own" in said and "training" not in said
    # more epochs: one go, and the same in two goes (so an extended run resumes exactly too)
    straight.write_bytes(before)
    out = train.main([*TINY, "--epochs", "4", "--resume", str(straight)])
    assert out["epoch"] == 4 and "epochs 3-4 follow a one-cycle schedule of their own (8 steps" in capsys.readouterr().out
    train.main([*TINY, "--epochs", "4", "--resume", str(path), "--stop-after", "1"])
    train.main([*TINY, "--epochs", "4", "--resume", str(path)])
    a, b = (torch.load(p, weights_only=True) for p in (straight, path))
    assert (a["epoch"], a["step"]) == (b["epoch"], b["step"]) == (4, 16)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


# ---------------------------------------------------------------------------------------------
# start-up refusals leave nothing behind; the README's save-and-resume line works on first use
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("args, words", [
    (["--resume", "missing.pt"], "missing.pt does not exist"),
    (["--data-dir", "typo", "--no-download"], "the data folder typo does not exist"),
    (["--data-dir", str(ROOT / "handgrad" / "mnist_sample")], "holds the 10,000-digit MNIST sample shipped with handgrad"),
])
def test_a_refused_start_leaves_no_run_folder(tmp_path, args, words):
    proc = cli(*args, "--epochs", "1", cwd=tmp_path)
    assert proc.returncode == 2
    assert words in one_line(proc)
    assert list(tmp_path.iterdir()) == []  # no runs/<stamp>, no lock


def test_the_sample_folder_as_data_dir_says_to_use_sample(capsys):
    with pytest.raises(train.DataError) as info:
        train.main(["--data-dir", str(ROOT / "handgrad" / "mnist_sample"), "--no-log"])
    assert "train on it with --sample" in str(info.value) and "replace it with the original" not in str(info.value)


def test_the_readme_save_and_resume_line_works_on_first_use(tmp_path, capsys):
    path = tmp_path / "ckpt.pt"
    first = train.main([*TINY, "--save", str(path), "--resume", str(path), "--stop-after", "1"])
    assert first["epoch"] == 1 and "does not exist yet: starting a new run" in capsys.readouterr().out
    second = train.main([*TINY, "--save", str(path), "--resume", str(path)])
    assert second["epoch"] == 2 and f"resumed from {path}: epoch 1 of 2" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# the library pieces: one device parser, one atomic writer, one lock
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, words", [("tpu", "is not a device"), ("meta", "is not supported"), ("cuda:99", "cuda:99")])
def test_parse_device_refuses_in_one_sentence(text, words):
    from handgrad.devices import parse_device

    if text == "cuda:99" and not torch.cuda.is_available():
        words = "CUDA is not available"
    with pytest.raises(ValueError) as info:
        parse_device(text)
    assert words in str(info.value) and str(info.value).endswith(".") and "\n" not in str(info.value)


def test_parse_device_names_what_it_picks():
    from handgrad.devices import parse_device

    assert parse_device("cpu") == torch.device("cpu")
    assert parse_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if torch.cuda.is_available():
        assert parse_device("cuda").index is not None


def test_write_atomically_keeps_the_old_file_when_writing_fails(tmp_path):
    from handgrad.files import write_atomically

    path = tmp_path / "f.bin"
    path.write_bytes(b"old")

    def half_then_fail(f):
        f.write(b"new but")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        write_atomically(path, half_then_fail)
    assert path.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]
    write_atomically(path, lambda f: f.write(b"new"))
    assert path.read_bytes() == b"new"


def test_lock_beside_refuses_a_second_holder_and_goes_away(tmp_path):
    from handgrad.files import Locked, lock_beside

    path = tmp_path / "c.pt"
    with lock_beside(path) as lock:
        assert lock.read_text().strip() == str(os.getpid())
        with pytest.raises(Locked) as info, lock_beside(path):
            pass
        assert info.value.pid == os.getpid()
    assert list(tmp_path.iterdir()) == []
    with lock_beside(path):  # free again
        pass
