"""What `pip install` puts on disk: handgrad alone, typed, with its license and the MNIST sample."""

import inspect
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

try:
    import tomllib
except ImportError:  # Python < 3.11
    tomllib = None


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)]
    try:  # NOTE: without build isolation where setuptools is here already (seconds instead of a download)
        import setuptools

        if int(setuptools.__version__.split(".")[0]) >= 77:
            cmd.insert(4, "--no-build-isolation")
    except ImportError:
        pass
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = out.glob("handgrad-*.whl")
    return path


def test_the_wheel_installs_handgrad_alone(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert top == {"handgrad", next(t for t in top if t.endswith(".dist-info"))}, top
    assert not any(n.startswith(("models/", "train", "bench/", "tools/", "tests/")) for n in names)


def test_the_wheel_ships_py_typed_the_sample_and_the_licenses(wheel):
    archive = zipfile.ZipFile(wheel)
    names = set(archive.namelist())
    assert "handgrad/py.typed" in names
    for split in ("train", "t10k"):
        for kind in ("images-idx3", "labels-idx1"):
            assert f"handgrad/mnist_sample/{split}-{kind}-ubyte.gz" in names
    assert "handgrad/mnist_sample/ATTRIBUTION.md" in names
    licenses = [n for n in names if "/licenses/" in n]
    assert any(n.endswith("/licenses/LICENSE") for n in licenses) and any(n.endswith("ATTRIBUTION.md") for n in licenses)
    metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: MIT AND CC-BY-SA-3.0" in metadata
    requires = re.findall(r"^Requires-Dist: ([A-Za-z0-9_.-]+)", metadata, re.M)
    assert "torch" in requires and "mlxtend" not in requires


def test_the_installed_wheel_trains_on_its_own_sample(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)  # NOTE: what pip does for a pure-Python wheel
    code = ("import handgrad, handgrad.data as d; data = d.load_mnist(sample=True); "
            "print(handgrad.__file__); print(data.train_size, data.test_y.numel())")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    where, sizes = proc.stdout.strip().splitlines()
    assert where.startswith(str(site)) and sizes == "8000 2000"


def test_license_matches_pyproject():
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "Copyright (c) 2026 the handgrad authors" in text
    if tomllib is None:
        pytest.skip("tomllib needs Python 3.11")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"].split(" AND ")[0] == "MIT" and "LICENSE" in project["license-files"]
    assert not any(dep.startswith("mlxtend") for dep in project["dependencies"])


def test_nothing_imports_mlxtend():
    for path in [*ROOT.glob("handgrad/*.py"), ROOT / "train.py", *ROOT.glob("models/*.py"), *ROOT.glob("bench/*.py")]:
        assert "mlxtend" not in path.read_text(), path


def _public_callables():
    import handgrad.checkpoint
    import handgrad.data
    import handgrad.nn

    for module in (handgrad.nn, handgrad.data, handgrad.checkpoint):
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isclass(obj):
                yield f"{module.__name__}.{name}.__init__", obj.__init__
                for attr, member in vars(obj).items():
                    if inspect.isfunction(member) and not attr.startswith("_"):
                        yield f"{module.__name__}.{name}.{attr}", member
            elif callable(obj):
                yield f"{module.__name__}.{name}", obj


def test_the_public_api_of_nn_data_and_checkpoint_is_annotated():
    missing = []
    for name, fn in _public_callables():
        if fn is object.__init__ or not inspect.isfunction(fn):
            continue
        sig = inspect.signature(fn)
        missing += [f"{name}({p})" for p in sig.parameters if p != "self" and sig.parameters[p].annotation is inspect._empty]
        if sig.return_annotation is inspect._empty:
            missing.append(f"{name} -> ?")
    assert not missing, missing
