"""``python -m handgrad.graph`` mistakes: a picture format it does not write, a folder as --output, matplotlib missing.

Each answers in one sentence with a nonzero exit and writes nothing; text output still works
without matplotlib.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: run the CLI with matplotlib unimportable (sys.modules[name] = None makes `import name` fail)
NO_MATPLOTLIB = "import sys; sys.modules['matplotlib'] = None; from handgrad.graph import main; sys.exit(main(sys.argv[1:]))"


def _run(*args, cwd, code=None):
    command = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "handgrad.graph", *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"})


def _one_sentence(err: str) -> str:
    """The error line (argparse adds a usage line above it); no traceback."""
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if not line.startswith(("usage:", " "))]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("name, kind", [("g.jpg", "JPEG"), ("g.JPEG", "JPEG"), ("g.pdf", "PDF"), ("g.gif", "GIF")])
@pytest.mark.parametrize("fmt", [None, "mermaid", "png"])
def test_a_picture_format_it_does_not_write_is_refused(tmp_path, name, kind, fmt):
    run = _run("--example", "xyz", "--output", name, *(["--format", fmt] if fmt else []), cwd=tmp_path)
    assert run.returncode == 2
    line = _one_sentence(run.stderr)
    assert f"writes PNG or SVG pictures, not {kind}" in line and ".png" in line
    assert list(tmp_path.iterdir()) == []  # no mermaid text in a .jpg, nothing at all


def test_an_unknown_suffix_is_refused_unless_the_format_is_given(tmp_path):
    run = _run("--example", "xyz", "--output", "g.txt", cwd=tmp_path)
    assert run.returncode == 2 and "cannot tell the format of 'g.txt'" in _one_sentence(run.stderr)
    assert list(tmp_path.iterdir()) == []
    run = _run("--example", "xyz", "--output", "g.txt", "--format", "mermaid", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "g.txt").read_text(encoding="utf-8").startswith("flowchart LR")


@pytest.mark.parametrize("suffix, first", [(".mmd", "flowchart LR"), (".dot", "digraph"), (".svg", "<?xml"), (".png", "\x89PNG")])
def test_the_format_comes_from_the_suffix(tmp_path, suffix, first):
    run = _run("--example", "xyz", "--output", f"g{suffix}", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / f"g{suffix}").read_bytes().decode("latin-1").startswith(first)


@pytest.mark.parametrize("given", ["some_dir/", "some_dir"])
@pytest.mark.parametrize("fmt", [[], ["--format", "png"], ["--format", "dot"]])
def test_a_folder_as_output_is_one_sentence(tmp_path, given, fmt):
    (tmp_path / "some_dir").mkdir()
    run = _run("--example", "xyz", "--output", given, *fmt, cwd=tmp_path)
    assert run.returncode == 1
    line = _one_sentence(run.stderr)
    assert f"{given!r} is a folder; give a file name in it" in line
    assert ".tmp" not in line and "Errno" not in line  # no errno naming a temporary file
    assert list((tmp_path / "some_dir").iterdir()) == []


@pytest.mark.parametrize("args", [["--format", "png"], ["--output", "g.svg"], ["--output", "g.png", "--backward"]])
def test_without_matplotlib_pictures_are_one_sentence(tmp_path, args):
    run = _run("--example", "xyz", *args, cwd=tmp_path, code=NO_MATPLOTLIB)
    assert run.returncode == 1
    line = _one_sentence(run.stderr)
    assert "needs matplotlib" in line and "pip install matplotlib" in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, first", [([], "flowchart LR"), (["--format", "dot"], "digraph"), (["--backward"], "flowchart RL")])
def test_without_matplotlib_text_still_works(tmp_path, args, first):
    run = _run("--example", "shopping", *args, cwd=tmp_path, code=NO_MATPLOTLIB)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(first) and ("715" in run.stdout or "1.1" in run.stdout)


def test_the_no_matplotlib_switch_really_hides_it(tmp_path):
    code = "import sys; sys.modules['matplotlib'] = None\ntry:\n    import matplotlib\nexcept ImportError:\n    print('hidden')"
    assert _run(cwd=tmp_path, code=code).stdout.strip() == "hidden"
