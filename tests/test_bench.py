"""Every benchmark runs with its smallest settings, so none of them rots. No time is asserted."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from all import BENCHMARKS as SCRIPTS  # noqa: E402  (one list of scripts: bench/all.py's)


def _skip_data_without_torchvision(name):
    """bench/data.py times torchvision's own loader: where torchvision cannot be imported there is nothing to time."""
    if name == "data":
        try:
            import torchvision  # noqa: F401
        except Exception as exc:  # noqa: BLE001 - one built for another torch raises RuntimeError, not ImportError
            pytest.skip(f"torchvision cannot be imported here ({type(exc).__name__}: {str(exc).splitlines()[0]})")


@pytest.mark.parametrize("name", SCRIPTS)
def test_benchmark_smoke(name, tmp_path):
    _skip_data_without_torchvision(name)
    out = tmp_path / f"{name}.json"
    proc = subprocess.run([sys.executable, f"bench/{name}.py", "--smoke", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert re.search(r"\n\|-+\|", proc.stdout)  # a markdown table
    payload = json.loads(out.read_text())
    assert payload["benchmark"] and payload["machine"]


def test_saved_bytes_hand_never_exceed_native():
    # memory is counted, not timed, so this one target can be a test
    from memory import saved_bytes

    for activation, loss in (("relu", "ce"), ("sigmoid", "ce"), ("relu", "mse"), ("sigmoid", "mse")):
        hand = saved_bytes("hand", 32, [64, 32], activation, loss)
        native = saved_bytes("native", 32, [64, 32], activation, loss)
        assert hand[1] <= native[1], (activation, loss, hand, native)


def test_logging_benchmark_accounts_for_time_inside_the_logger(tmp_path):
    # the accounted share must come from the patched Monitor methods; zero would mean the
    # instrumentation measured nothing
    out = tmp_path / "tb.json"
    proc = subprocess.run([sys.executable, "bench/tb_logging.py", "--smoke", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = json.loads(out.read_text())["accounted"][0]
    assert run["per_step"] > 0 and run["per_epoch"] > 0 and run["per_run"] > 0
    assert 0 < run["histograms"] + run["pictures"] <= run["per_step"]  # both inside the per-step share
    assert run["per_step"] + run["per_epoch"] < 10 * run["train_seconds"] + 1.0


def test_one_command_runs_the_benchmarks_and_reports_a_failure(tmp_path):
    every = [p.stem for p in (ROOT / "bench").glob("*.py") if p.stem not in ("all", "common")]
    assert sorted(every) == sorted(SCRIPTS)  # a new script must be added to bench/all.py
    run = [sys.executable, "bench/all.py", "--smoke", "--out-dir", str(tmp_path), "--only", "memory", "step"]
    proc = subprocess.run(run, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert {p.name for p in tmp_path.iterdir()} == {"memory.json", "step.json"}
    bad = subprocess.run(run[:-2] + ["step", "--device", "no-such-device"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode == 1 and "step failed" in bad.stderr


@pytest.mark.parametrize("name", SCRIPTS)
def test_an_unavailable_device_is_one_line(name):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    _skip_data_without_torchvision(name)
    proc = subprocess.run([sys.executable, f"bench/{name}.py", "--smoke", "--device", "cuda"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: --device cuda was given but CUDA is not available on this machine; use --device cpu."]
