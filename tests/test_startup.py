"""The command lines read their arguments before torch is imported: --help and a mistyped flag answer at once.

Each command runs in a fresh interpreter through a small runner that reports, as its last line on
stderr, whether ``torch`` was imported. No timing is asserted (speed lives in bench/ and the docs):
what is checked is that torch was never imported on the way to the answer.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# NOTE: runpy runs the module as `python -m` would; the finally clause reports even after SystemExit.
RUNNER = """
import runpy, sys
module, *args = sys.argv[1:]
sys.argv = [module, *args]
try:
    runpy.run_module(module, run_name="__main__", alter_sys=True)
finally:
    sys.stderr.write("\\ntorch imported: %s\\n" % ("torch" in sys.modules))
"""


def _run(*argv: str) -> tuple[int, str, str, bool]:
    """(exit status, stdout, stderr without the runner's line, whether torch was imported)."""
    proc = subprocess.run([sys.executable, "-c", RUNNER, *argv], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"})
    body, _, last = proc.stderr.rstrip("\n").rpartition("\n")
    assert last.startswith("torch imported: "), proc.stderr
    return proc.returncode, proc.stdout, body, last.endswith("True")


def _code(*statements: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "\n".join(statements)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})


HELP = [
    ("handgrad.check", "--help"),
    ("handgrad.check", "--help", "--function"),
    ("handgrad.testing", "--help"),
    ("handgrad.graph", "--help"),
]
MISTAKES = [
    (("handgrad.check", "--opp", "relu"), "unrecognized arguments: --opp"),
    (("handgrad.check", "--device"), "--device: expected one argument"),
    (("handgrad.check", "--function"), "--function: expected one argument"),
    (("handgrad.check", "--function", "f.py:F", "--shape", "3", "--op", "relu"), "give one of them"),
    (("handgrad.testing", "--function", "x.py:F", "--shape", "4,3", "--elemntwise"), "unrecognized arguments: --elemntwise"),
    (("handgrad.testing", "--shape", "4,3"), "the following arguments are required: --function"),
    (("handgrad.graph", "--exmple", "shopping"), "unrecognized arguments: --exmple"),
    (("handgrad.graph", "--example", "shoping"), "invalid choice: 'shoping'"),
]


@pytest.mark.parametrize("argv", HELP, ids=" ".join)
def test_help_answers_without_importing_torch(argv):
    code, out, err, torch_imported = _run(*argv)
    assert code == 0, err
    assert out.startswith("usage: python -m ")
    assert not torch_imported


@pytest.mark.parametrize("argv, sentence", MISTAKES, ids=lambda a: " ".join(a) if isinstance(a, tuple) else "")
def test_a_usage_mistake_is_one_sentence_without_importing_torch(argv, sentence):
    code, _, err, torch_imported = _run(*argv)
    assert code == 2
    assert sentence in err and "Traceback" not in err, err
    assert not torch_imported


def test_the_runner_sees_torch_when_it_is_imported():
    # NOTE: the control for the tests above: an unknown op name is checked against the registry,
    # which needs torch (ops declared by others count), so this answer comes after the import.
    code, _, err, torch_imported = _run("handgrad.check", "--op", "relux")
    assert code == 2
    assert "error: unknown op relux; choose from " in err and "Traceback" not in err, err
    assert torch_imported


def test_import_handgrad_alone_does_not_import_torch_and_the_ops_load_on_first_use():
    proc = _code(
        "import sys, handgrad as hg",
        "print('torch' in sys.modules)",
        "from handgrad import graph, testing, check_cli",
        "print('torch' in sys.modules)",
        "from handgrad import relu",
        "print('torch' in sys.modules, relu is hg.relu is hg.get_ops('hand').relu)",
        "print(sorted(hg.OP_NAMES) == sorted(set(hg.__all__) - {'OP_NAMES', 'functions', 'get_ops', 'nn', 'registry'}))",
        "print('relu' in dir(hg), hg.nn.Affine.__name__, 'torch' in sys.modules)",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:5] == ["False", "False", "True True", "True", "True Affine True"]


def test_star_import_and_an_unknown_name():
    proc = _code(
        "from handgrad import *",
        "print(relu.__name__, sigmoid.__name__, get_ops('native').relu.__name__)",
        "import handgrad",
        "try:\n    handgrad.no_such_op\nexcept AttributeError as e:\n    print(e)",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == ["relu sigmoid relu", "module 'handgrad' has no attribute 'no_such_op'"]


def test_graph_example_names_are_the_examples():
    from handgrad.graph.cli import EXAMPLE_NAMES
    from handgrad.graph.examples import EXAMPLES

    assert EXAMPLE_NAMES == tuple(EXAMPLES)


def test_graph_package_names_load_on_first_use_and_layout_stays_the_function():
    proc = _code(
        "import sys, handgrad.graph.draw",  # NOTE: importing the submodule layout binds a module named layout
        "from handgrad import graph",
        "print(callable(graph.layout), type(graph.layout).__name__, graph.mermaid.__name__, 'layout' in dir(graph))",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[0] == "True function mermaid True"
