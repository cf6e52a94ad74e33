"""Flags that mean nothing together are refused in one sentence at parse time, never silently ignored."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("flags, words", [
    (["--ops", "native", "--inject-fault", "relu:scale=1.5"], "--ops native runs none"),
    (["--ops", "hand", "--compare-tol", "1e-3"], "only with --ops compare"),
    (["--compare-dtype", "float32"], "only with --ops compare"),
])
def test_flags_without_effect_are_refused(flags, words):
    done = subprocess.run([sys.executable, "train.py", *flags], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert words in done.stderr and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_an_injected_fault_with_compare_is_accepted_by_the_parser():
    import train

    args = train.parse_args(["--ops", "compare", "--inject-fault", "relu:scale=1.5", "--compare-dtype", "float32"])
    assert args.inject_fault and train.ops_choice(args).compare_dtype == "float32"
