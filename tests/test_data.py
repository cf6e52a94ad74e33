"""The MNIST data path: real files in any usual layout, validation, the shipped sample, batching."""

import gzip
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

from handgrad.data import MEAN, STD, DataError, load_mnist, resolve_data_dir

ROOT = Path(__file__).resolve().parents[1]
FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
# published facts about MNIST: the first labels of each set
FIRST_TRAIN_LABELS = [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
FIRST_TEST_LABELS = [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture(scope="module")
def mnist(request):
    from conftest import MNIST_DIR

    if MNIST_DIR is None:
        pytest.skip("the MNIST files are not here: set HANDGRAD_DATA")
    return load_mnist(MNIST_DIR, download=False, fallback=False)


def test_real_mnist_matches_the_published_facts(mnist):
    assert mnist.source == "mnist" and mnist.note == ""
    assert mnist.train_x.shape == (60000, 784) and mnist.test_x.shape == (10000, 784)
    assert mnist.train_x.dtype == torch.float32
    assert mnist.train_y[:10].tolist() == FIRST_TRAIN_LABELS
    assert mnist.test_y[:10].tolist() == FIRST_TEST_LABELS
    assert torch.bincount(mnist.train_y).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert torch.bincount(mnist.test_y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    # normalized once with the training set's own statistics
    assert abs(mnist.train_x.mean().item()) < 1e-3
    assert abs(mnist.train_x.std().item() - 1) < 1e-3
    assert mnist.train_x.min().item() == pytest.approx(-MEAN / STD, abs=1e-5)


def test_batches_are_a_seeded_permutation_and_resume_where_they_stopped(mnist):
    batches = list(mnist.batches(1000, epoch=0, seed=1))
    assert len(batches) == mnist.steps_per_epoch(1000) == 60
    labels = torch.cat([y for _, y in batches])
    assert torch.equal(torch.bincount(labels), torch.bincount(mnist.train_y))  # every image once
    again = list(mnist.batches(1000, epoch=0, seed=1, start=57))
    assert all(torch.equal(a[1], b[1]) for a, b in zip(again, batches[57:]))
    other = next(mnist.batches(1000, epoch=1, seed=1))
    assert not torch.equal(other[1], batches[0][1])


def _copy_raw(src: str, dst: Path) -> Path:
    raw = dst / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in (Path(src) / "MNIST" / "raw").iterdir():
        if f.name.endswith("-ubyte"):
            shutil.copy(f, raw / f.name)
    return raw


def test_a_truncated_file_is_named(mnist_dir, tmp_path):
    raw = _copy_raw(mnist_dir, tmp_path)
    victim = raw / "t10k-images-idx3-ubyte"
    victim.write_bytes(victim.read_bytes()[:100_000])
    with pytest.raises(DataError) as info:
        load_mnist(tmp_path, download=False, fallback=False)
    message = str(info.value)
    assert str(victim) in message and "truncated" in message and "\n" not in message


def test_a_corrupt_byte_is_caught_by_the_checksum(mnist_dir, tmp_path):
    raw = _copy_raw(mnist_dir, tmp_path)
    victim = raw / "train-labels-idx1-ubyte"
    data = bytearray(victim.read_bytes())
    data[100] = (data[100] + 1) % 10
    victim.write_bytes(bytes(data))
    with pytest.raises(DataError) as info:
        load_mnist(tmp_path, download=False, fallback=False)
    assert str(victim) in str(info.value) and "corrupt" in str(info.value)


def test_missing_data_without_download_or_fallback_is_one_sentence(tmp_path):
    with pytest.raises(DataError) as info:
        load_mnist(tmp_path / "nothing", download=False, fallback=False)
    message = str(info.value)
    assert "does not exist" in message and "--data-dir" in message and "\n" not in message


@pytest.fixture
def no_location(monkeypatch, tmp_path):
    """No --data-dir, no $HANDGRAD_DATA, and a working folder without ./data."""
    monkeypatch.delenv("HANDGRAD_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_shipped_sample_when_no_location_was_given(no_location):
    data = load_mnist(download=False)
    assert data.source == "sample" and data.location is None
    assert data.train_x.shape == (8000, 784) and data.test_x.shape == (2000, 784)
    assert data.train_y[:10].tolist() == FIRST_TRAIN_LABELS and data.test_y[:10].tolist() == FIRST_TEST_LABELS
    assert set(torch.unique(data.train_y).tolist()) == set(range(10))
    assert "no MNIST location given" in data.note and "shipped with handgrad" in data.note and "8,000" in data.note
    assert data.identity() == {"source": "sample", "train": 8000, "test": 2000}
    assert _tree(no_location) == []  # nothing created in the working folder
    with pytest.raises(DataError):
        load_mnist(download=False, fallback=False)


def test_the_sample_is_the_first_digits_of_the_official_files(mnist):
    sample = load_mnist(sample=True)
    assert torch.equal(sample.train_x, mnist.train_x[:8000]) and torch.equal(sample.train_y, mnist.train_y[:8000])
    assert torch.equal(sample.test_x, mnist.test_x[:2000]) and torch.equal(sample.test_y, mnist.test_y[:2000])


def test_the_sample_regenerates_byte_for_byte(mnist_dir, tmp_path):
    spec = importlib.util.spec_from_file_location("make_mnist_sample", ROOT / "tools" / "make_mnist_sample.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    tool.make(Path(mnist_dir), tmp_path)
    shipped = ROOT / "handgrad" / "mnist_sample"
    for name in FILES:
        assert (tmp_path / f"{name}.gz").read_bytes() == (shipped / f"{name}.gz").read_bytes(), name
    assert "CC BY-SA 3.0" in (shipped / "ATTRIBUTION.md").read_text().replace("Attribution-Share Alike 3.0", "CC BY-SA 3.0")
    assert "Yann LeCun" in (shipped / "ATTRIBUTION.md").read_text()


def test_limit_train_and_dtype():
    data = load_mnist(sample=True, limit_train=500, dtype=torch.float64)
    assert data.train_x.shape == (500, 784) and data.train_x.dtype == torch.float64
    assert data.identity()["train"] == 8000  # the source's size, not the limit


@pytest.mark.parametrize("how", ["argument", "environment"])
@pytest.mark.parametrize("case", ["typo", "empty", "other files"])
def test_a_given_location_without_mnist_is_an_error_that_creates_nothing(tmp_path, monkeypatch, how, case):
    root = tmp_path / "given"
    if case != "typo":
        root.mkdir()
    if case == "other files":
        (root / "notes.txt").write_text("not MNIST")
    before = _tree(tmp_path)
    monkeypatch.delenv("HANDGRAD_DATA", raising=False)
    if how == "environment":
        monkeypatch.setenv("HANDGRAD_DATA", str(root))
    with pytest.raises(DataError) as info:
        load_mnist(str(root) if how == "argument" else None, download=False)
    message = str(info.value)
    assert str(root) in message and "train-images-idx3-ubyte" in message and f"{root}/MNIST/raw" in message
    assert ("does not exist" if case == "typo" else "holds no MNIST") in message and "\n" not in message
    assert message.startswith(f"$HANDGRAD_DATA ({root})" if how == "environment" else f"the data folder {root}")
    assert _tree(tmp_path) == before


@pytest.fixture
def unreachable_mirror(monkeypatch, tmp_path):
    """torchvision's real download code, pointed at a closed local port: it fails at once, offline."""
    try:
        import torchvision
    except Exception as exc:  # noqa: BLE001 - one built for another torch raises RuntimeError, not ImportError
        pytest.skip(f"torchvision cannot be imported here ({type(exc).__name__}: {str(exc).splitlines()[0]})")

    monkeypatch.setattr(torchvision.datasets.MNIST, "mirrors", ["http://127.0.0.1:9/"])
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    return scratch


def test_a_failed_download_into_a_given_location_leaves_nothing_behind(tmp_path, unreachable_mirror):
    typo = tmp_path / "typo"
    with pytest.raises(DataError) as info:
        load_mnist(typo, download=True)
    assert "the download failed" in str(info.value) and str(typo) in str(info.value)
    assert not typo.exists()
    assert _tree(unreachable_mirror) == []  # the temporary download folder is gone too


def test_a_failed_download_without_a_location_falls_back_to_the_sample_and_says_why(no_location, unreachable_mirror):
    data = load_mnist(download=True)
    assert data.source == "sample" and "the download failed" in data.note
    assert not (no_location / "data").exists()
    assert _tree(unreachable_mirror) == []


def _link_files(src: str, folder: Path, gz: tuple = ()) -> None:
    """The four official files in ``folder``: symlinks, or gzipped copies for the names in ``gz``."""
    folder.mkdir(parents=True, exist_ok=True)
    raw = Path(src) / "MNIST" / "raw"
    for name in FILES:
        if name in gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress((raw / name).read_bytes(), compresslevel=1))
        else:
            os.symlink(raw / name, folder / name)


@pytest.mark.parametrize("layout", [".", "MNIST/raw", "raw", "MNIST"])
def test_every_usual_layout_is_found(mnist_dir, tmp_path, layout):
    folder = tmp_path / ("MNIST/raw" if layout == "MNIST" else layout)
    _link_files(mnist_dir, folder, gz=("train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte"))
    given = tmp_path / "MNIST" if layout == "MNIST" else tmp_path  # "MNIST": the folder above raw/ is given
    data = load_mnist(given, download=False)
    assert data.source == "mnist" and data.location.resolve() == folder.resolve()
    assert data.train_y[:10].tolist() == FIRST_TRAIN_LABELS
    assert data.test_y[:10].tolist() == FIRST_TEST_LABELS and data.train_size == 60000


def test_an_incomplete_folder_names_the_missing_files(mnist_dir, tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    _link_files(mnist_dir, raw)
    (raw / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError) as info:
        load_mnist(tmp_path, download=False)
    assert "incomplete" in str(info.value) and "t10k-labels-idx1-ubyte" in str(info.value)
    assert "train-images" not in str(info.value)


def test_a_truncated_gzip_is_named(mnist_dir, tmp_path):
    _link_files(mnist_dir, tmp_path, gz=("t10k-labels-idx1-ubyte",))
    victim = tmp_path / "t10k-labels-idx1-ubyte.gz"
    victim.write_bytes(victim.read_bytes()[:-40])
    with pytest.raises(DataError) as info:
        load_mnist(tmp_path, download=False)
    assert str(victim) in str(info.value) and "truncated" in str(info.value)


def test_data_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("HANDGRAD_DATA", str(tmp_path))
    assert resolve_data_dir("given") == Path("given")
    assert resolve_data_dir(None) == tmp_path
    monkeypatch.delenv("HANDGRAD_DATA")
    assert resolve_data_dir(None) == Path("data")
