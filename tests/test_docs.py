"""The documentation is tested: the site builds strictly, every public name on the API page has a
docstring, every Python block of the README and the pages runs as shown, and every command of the
README runs (except a short, named list).

Markers in the Markdown (used sparingly; the test counts them):

- ``<!-- not-run: REASON -->`` on the line before a fence: the block is shown but not run.
- ``# file: NAME`` as a Python block's first line: the block is written to NAME in the page's
  scratch folder (so later blocks can import it) instead of being run.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]

#: at most this many blocks may carry the not-run marker, over the README and every page
MAX_NOT_RUN = 3
NOT_RUN = re.compile(r"<!--\s*not-run:\s*(.+?)\s*-->\s*$")
FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)

#: README command lines that are not run, with the reason (the rest all run)
NOT_RUN_COMMANDS = {
    'pip install -e ".[dev]"': "the install itself: .ci/run runs it in a fresh virtual environment",
    "python -m pytest": "this suite itself",
}
#: README commands that start a server: started, asked for a page, and stopped
SERVERS = ("tensorboard ",)


def _blocks(path: Path) -> list[tuple[str, str, int, str | None]]:
    """(language, code, line of the fence, not-run reason or None) of each fenced block."""
    text = path.read_text()
    found = []
    for m in FENCE.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        reason = NOT_RUN.search(before)
        found.append((m.group(1), m.group(2), line, reason.group(1) if reason else None))
    return found


def _commands(path: Path) -> list[str]:
    """Each command line of the bash blocks of ``path``: continuations joined, comments dropped."""
    commands = []
    for lang, code, _, reason in _blocks(path):
        if lang not in ("bash", "sh", "shell") or reason:
            continue
        for line in code.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()  # NOTE: README commands hold no '#' of their own
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def _env(extra_path: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(extra_path or ""), str(ROOT), env.get("PYTHONPATH", "")]))
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("MPLBACKEND", "Agg")
    env["NO_MKDOCS_2_WARNING"] = "1"
    return env


def _need(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.fail(f"{module} is not installed; the docs tools come with the dev extra: pip install -e \".[dev]\"")


def _tail(result) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}"


# ---------------------------------------------------------------------------------------------
# the site
# ---------------------------------------------------------------------------------------------


def _build(config: Path, site: Path) -> subprocess.CompletedProcess:
    _need("mkdocs")
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
                          cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)


def test_the_site_builds_strictly(tmp_path):
    result = _build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert result.returncode == 0, _tail(result)
    assert (tmp_path / "site" / "index.html").is_file()
    for page in ("ops", "check-matrix", "testing", "training", "dashboard", "graphs", "distributed",
                 "performance", "benchmarks", "packaging", "compatibility", "api"):
        assert (tmp_path / "site" / page / "index.html").is_file(), page
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    assert "check_function" in api
    # NOTE: import handgrad is lazy (PEP 562); the ops must still be documented under their defining module
    for name in ("add", "mul", "maximum", "relu", "sigmoid", "affine", "l2_penalty", "cross_entropy", "mse_loss"):
        assert f'id="handgrad.functional.{name}"' in api, name
    assert not (tmp_path / "site" / "_incoming").exists()


def test_a_broken_link_fails_the_build(tmp_path):
    docs = tmp_path / "docs"
    shutil.copytree(ROOT / "docs", docs)
    (docs / "ops.md").write_text((docs / "ops.md").read_text() + "\nSee [nowhere](no-such-page.md).\n")
    config = (ROOT / "mkdocs.yml").read_text().replace("docs_dir: docs", f"docs_dir: {docs}")
    assert f"docs_dir: {docs}" in config
    (tmp_path / "mkdocs.yml").write_text(config)
    result = _build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert result.returncode != 0
    assert "no-such-page.md" in result.stderr + result.stdout


# ---------------------------------------------------------------------------------------------
# docstrings of what the API page shows
# ---------------------------------------------------------------------------------------------


def _api_entries(text: str) -> list[tuple[str, list[str] | None]]:
    """(module, members listed in its options or None) for each ``::: module`` of the API page."""
    entries = []
    for m in re.finditer(r"^::: ([\w.]+)\n((?:[ \t]+.*\n)*)", text, re.M):
        members = re.search(r"members:\s*\[([^\]]*)\]", m.group(2))
        entries.append((m.group(1), [s.strip() for s in members.group(1).split(",")] if members else None))
    return entries


def _undocumented(module: str, members: list[str] | None, search_path: Path = ROOT) -> list[str]:
    """Public names the API page would show for ``module`` that have no docstring (the module included).

    The names are ``members`` when given, else the module's ``__all__``, else every public class and
    function it defines.
    """
    _need("griffe")
    import griffe

    mod = griffe.load(module, search_paths=[str(search_path)])
    missing = [] if mod.docstring else [module]
    listed = members is not None
    if members is None:
        exported = mod.members.get("__all__")
        if exported is not None:
            members = [str(v).strip("'\"") for v in exported.value.elements]
        else:
            members = [n for n, o in mod.members.items() if not n.startswith("_") and not o.is_alias
                       and o.kind.value in ("class", "function")]
    for name in members:
        obj = mod.members.get(name)
        if obj is None:
            if listed:  # NOTE: an __all__ entry griffe cannot see (a tuple assignment) is a constant, not an object to document
                missing.append(f"{module}.{name} (not found)")
        elif obj.is_alias:
            continue  # documented where it is defined
        elif obj.kind.value in ("class", "function") and not obj.docstring:
            missing.append(f"{module}.{name}")
    return missing


def test_every_name_on_the_api_page_has_a_docstring():
    entries = _api_entries((ROOT / "docs" / "api.md").read_text())
    assert len(entries) >= 10
    missing = [name for module, members in entries for name in _undocumented(module, members)]
    assert not missing, f"no docstring (the API page would show nothing for them): {missing}"


def test_a_missing_docstring_is_found(tmp_path):
    (tmp_path / "scratchmod.py").write_text('"""A module."""\n\n\ndef documented():\n    """Yes."""\n\n\ndef bare():\n    pass\n')
    assert _undocumented("scratchmod", None, tmp_path) == ["scratchmod.bare"]
    assert _undocumented("scratchmod", ["documented"], tmp_path) == []


# ---------------------------------------------------------------------------------------------
# Python blocks: each page's blocks run in order, in one namespace, in a scratch folder
# ---------------------------------------------------------------------------------------------

_RUNNER = """
import json, pathlib, sys
sys.path.insert(0, ".")
namespace = {"__name__": "__main__"}
for block in json.loads(pathlib.Path("blocks.json").read_text()):
    print(f"--- {block['where']}", flush=True)
    exec(compile(block["code"], block["where"], "exec"), namespace)
"""


def _python_blocks(path: Path) -> list[dict]:
    rel = path.relative_to(ROOT)
    return [{"code": code, "where": f"{rel}:{line}"}
            for lang, code, line, reason in _blocks(path) if lang in ("python", "py") and not reason]


def test_not_run_markers_are_few():
    marked = [f"{p.relative_to(ROOT)}:{line} ({reason})" for p in PAGES for _, _, line, reason in _blocks(p) if reason]
    assert len(marked) <= MAX_NOT_RUN, f"more blocks marked not-run than {MAX_NOT_RUN}: {marked}"


@pytest.mark.parametrize("page", [p for p in PAGES if _python_blocks(p)], ids=lambda p: str(p.relative_to(ROOT)))
def test_python_blocks_run_as_shown(page, tmp_path):
    to_run = []
    for block in _python_blocks(page):
        first = block["code"].split("\n", 1)[0]
        m = re.match(r"#\s*file:\s*(\S+)\s*$", first)
        if m:
            (tmp_path / m.group(1)).write_text(block["code"])
        else:
            to_run.append(block)
    assert to_run
    (tmp_path / "blocks.json").write_text(json.dumps(to_run))
    result = subprocess.run([sys.executable, "-c", _RUNNER], cwd=tmp_path, env=_env(tmp_path),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, _tail(result)


def test_a_failing_block_fails(tmp_path):
    (tmp_path / "blocks.json").write_text(json.dumps([{"code": "assert 1 == 2, 'shown'", "where": "page.md:1"}]))
    result = subprocess.run([sys.executable, "-c", _RUNNER], cwd=tmp_path, env=_env(tmp_path),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "page.md:1" in result.stderr


# ---------------------------------------------------------------------------------------------
# the README's commands
# ---------------------------------------------------------------------------------------------

README_COMMANDS = _commands(README)


def test_the_readme_commands_are_found():
    assert len(README_COMMANDS) >= 5
    for command in NOT_RUN_COMMANDS:
        assert command in README_COMMANDS, f"{command!r} is no longer in the README: drop it from NOT_RUN_COMMANDS"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A folder laid out like the repository root, so ``python train.py`` and runs/ stay out of the checkout."""
    work = tmp_path_factory.mktemp("readme")
    for name in ("train.py", "models", "bench", "tools"):
        if (ROOT / name).exists():
            (work / name).symlink_to(ROOT / name)
    return work


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve_and_ask(command: str, cwd: Path) -> None:
    port = _free_port()
    proc = subprocess.Popen(f"exec {command} --host 127.0.0.1 --port {port}", shell=True, cwd=cwd, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"{command} exited {proc.returncode}: {proc.stderr.read()[-2000:]}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as page:
                    assert page.status == 200
                    return
            except OSError:
                assert time.monotonic() < deadline, f"{command} did not answer on port {port} within 120 s"
                time.sleep(1)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("command", [c for c in README_COMMANDS if c not in NOT_RUN_COMMANDS])
def test_readme_command_runs(command, workdir):
    if command.startswith(SERVERS):
        _serve_and_ask(command, workdir)
        return
    result = subprocess.run(command, shell=True, cwd=workdir, env=_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, _tail(result)


def _anchors(path: Path) -> set[str]:
    """The ids MkDocs gives the headings of ``path`` (the toc extension's default slugs)."""
    slugs = set()
    for heading in re.findall(r"^#+ (.+)$", path.read_text(), re.M):
        slug = re.sub(r"[^\w\s-]", "", heading.replace("`", "")).strip().lower()
        slugs.add(re.sub(r"[-\s]+", "-", slug))
    return slugs


def test_readme_links_point_at_files_and_headings():
    text = README.read_text()
    links = re.findall(r"\]\(([^)#\s]+)(?:#([^)]*))?\)", text)
    assert len(links) >= 10
    for target, anchor in links:
        if "://" in target:
            continue
        assert (ROOT / target).exists(), f"README links to {target}, which does not exist"
        if anchor:
            assert anchor in _anchors(ROOT / target), f"README links to {target}#{anchor}, a heading {target} does not have"


def test_the_readme_stays_a_front_door():
    lines = README.read_text().splitlines()
    assert len(lines) <= 260, f"README.md has {len(lines)} lines: move reference material to a page under docs/"


def test_ci_runs_the_readme_set_up_commands():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    for command in NOT_RUN_COMMANDS:  # the two set-up commands: what CI runs is what the README says
        assert command in README_COMMANDS
        assert command in [line.strip() for line in ci], f".ci/run no longer runs {command!r} as the README shows it"


#: paths in the README's map that other branches are creating; each is skipped while missing and
#: must leave this set once it exists (the test says so), so the map cannot drift from the tree
MAP_PENDING: set[str] = set()


def _map_paths() -> list[str]:
    section = README.read_text().split("## Where things live", 1)[1]
    block = FENCE.search(section).group(2)
    paths = []
    for line in block.splitlines():
        names = re.split(r"\s{2,}", line.strip())[0]
        for name in names.split():
            paths.append(f"handgrad/{name}" if line.startswith("  ") else name)
    return paths


def test_the_readme_map_names_real_paths():
    paths = _map_paths()
    assert "handgrad/functions.py" in paths and "train.py" in paths
    for path in paths:
        exists = (ROOT / path).exists() and (ROOT / path).is_dir() == path.endswith("/")
        if path in MAP_PENDING:
            assert not exists, f"{path} exists now: remove it from MAP_PENDING in tests/test_docs.py"
        else:
            assert exists, f"the README's map names {path}, which is not in the repository"
