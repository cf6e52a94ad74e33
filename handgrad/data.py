"""MNIST as tensors on the training device, normalized once, batched by a seeded permutation.

Where the data comes from:

1. a location given explicitly, as ``data_dir`` or in ``$HANDGRAD_DATA``: the four MNIST files
   (``train-images-idx3-ubyte`` ..., each also accepted gzipped as ``.gz``) in ``<dir>``,
   ``<dir>/MNIST/raw`` (torchvision's layout) or ``<dir>/raw``; downloaded into
   ``<dir>/MNIST/raw`` when missing, unless ``download=False``. A given location that holds no
   MNIST is an error: it is never replaced by something else, and a failed download leaves no
   folder behind;
2. no location given: the same search in ``./data``, then a download into it;
3. still nothing, and no location was given: the 10,000 real MNIST digits shipped with handgrad
   (``handgrad/mnist_sample/``: the first 8,000 training and first 2,000 test digits), unless
   ``fallback=False``; ``sample=True`` picks them whatever is on disk.

Every file read is checked (IDX header, size, checksum, counts, label range): torchvision verifies
checksums only when it downloads.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import shutil
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

__all__ = ["DataError", "MNISTData", "find_mnist", "load_mnist", "read_idx", "resolve_data_dir", "MEAN", "STD",
           "SAMPLE_SIZES"]

MEAN, STD = 0.1307, 0.3081  # of the 60,000 training images, after scaling to [0, 1]
ENV_VAR = "HANDGRAD_DATA"

# name -> (number of items, md5 of the uncompressed file); published facts about MNIST
_FILES = {
    "train-images-idx3-ubyte": (60000, "6bbc9ace898e44ae57da46a324031adb"),
    "train-labels-idx1-ubyte": (60000, "a25bea736e30d166cdddb491f175f624"),
    "t10k-images-idx3-ubyte": (10000, "2646ac647ad5339dbf082846283269ea"),
    "t10k-labels-idx1-ubyte": (10000, "27ae3e4e09519cfbb04c329615203637"),
}
_LAYOUTS = (".", "MNIST/raw", "raw")  # where, under a data folder, the four files may sit
_LOOKED_FOR = "the four files " + ", ".join(_FILES) + " (each also as .gz)"

SAMPLE_DIR = "mnist_sample"  # inside the handgrad package
SAMPLE_SIZES = {"train": 8000, "test": 2000}
# name -> (number of items, md5 of the uncompressed IDX file); tools/make_mnist_sample.py prints these
_SAMPLE_FILES = {
    "train-images-idx3-ubyte": (8000, "b7415614e1e2aaec77bfbe899892b87b"),
    "train-labels-idx1-ubyte": (8000, "58765f20ef0b2dc9b3096a4be32a5d00"),
    "t10k-images-idx3-ubyte": (2000, "014beca301477cb2e974ccd9bba2262c"),
    "t10k-labels-idx1-ubyte": (2000, "a82723c4f1ffcf0f0a0d4d06f6c879a0"),
}


class DataError(Exception):
    """The data cannot be used; the message is one sentence saying what to do."""


@dataclass
class MNISTData:
    """The whole data set as tensors on one device: images (N, 784) normalized, labels (N,)."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    source: str  # "mnist" (the full set) or "sample" (the digits shipped with handgrad)
    note: str = ""  # one line for the user when the data is not the full set
    location: Path | None = None  # the folder the MNIST files were read from; None for the sample
    available_train: int = 0  # training images in the source, before any limit_train

    @property
    def train_size(self) -> int:
        return self.train_y.numel()

    def identity(self) -> dict:
        """What a checkpoint records about its data: the source and its sizes (not the folder)."""
        return {"source": self.source, "train": self.available_train, "test": self.test_y.numel()}

    def steps_per_epoch(self, batch_size: int) -> int:
        return -(-self.train_size // batch_size)

    def batches(self, batch_size: int, epoch: int, seed: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The training batches of one epoch, in the order fixed by ``(seed, epoch)``.

        The permutation depends only on the seed and the epoch number, so a resumed run draws
        exactly the batches the interrupted one would have; ``start`` skips batches already done.
        """
        # NOTE: modulo 2**64 (torch's seed range), so a seed of any size works; unchanged below ~1.8e14
        gen = torch.Generator().manual_seed((seed * 100_003 + epoch) % 2**64)
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


def _given_location(data_dir: str | os.PathLike | None) -> tuple[Path | None, str]:
    """The explicitly given folder (argument, else environment) and how to name it, or (None, "")."""
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir), f"the data folder {data_dir}"
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]), f"${ENV_VAR} ({os.environ[ENV_VAR]})"
    return None, ""


# ---------------------------------------------------------------------------------------------
# IDX files
# ---------------------------------------------------------------------------------------------


def _present(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def find_mnist(root: str | os.PathLike) -> Path | None:
    """The folder under ``root`` (``MNIST/raw``, ``raw`` or ``root`` itself) holding all four files."""
    for layout in _LAYOUTS:
        folder = Path(root) / layout
        if all(_present(folder, name) for name in _FILES):
            return folder
    return None


def _partial(root: Path) -> tuple[Path, list[str]] | None:
    """A folder under ``root`` holding some but not all of the four files, and the missing names."""
    for layout in _LAYOUTS:
        folder = root / layout
        missing = [name for name in _FILES if not _present(folder, name)]
        if 0 < len(missing) < len(_FILES):
            return folder, missing
    return None


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
        return gzip.decompress(raw) if path.suffix == ".gz" else raw
    except (EOFError, gzip.BadGzipFile, OSError) as exc:
        reason = "truncated" if isinstance(exc, EOFError) else f"unreadable: {exc}"
        raise DataError(f"MNIST file {path} is {reason}; delete it and get it again.") from None


def read_idx(data: bytes, images: bool, count: int | None, md5: str | None, where: str | os.PathLike) -> torch.Tensor:
    """An IDX file's contents as uint8 images (N, 28, 28) or int64 labels (N,), checked.

    ``where`` names the file in errors; ``count`` and ``md5`` (of the uncompressed bytes) are
    checked when given.
    """
    header_len = 16 if images else 8
    if len(data) < header_len:
        raise DataError(f"MNIST file {where} is truncated ({len(data)} bytes, not even a header); delete it and get it again.")
    magic, n = struct.unpack(">II", data[:8])
    expected_magic = 2051 if images else 2049
    if magic != expected_magic or (count is not None and n != count):
        expected = f"magic {expected_magic}" + (f", {count} items" if count is not None else "")
        raise DataError(f"MNIST file {where} is not the expected IDX file (magic {magic}, {n} items; expected "
                        f"{expected}); replace it with the original.")
    if images:
        rows, cols = struct.unpack(">II", data[8:16])
        if (rows, cols) != (28, 28):
            raise DataError(f"MNIST file {where} holds {rows}x{cols} images, not 28x28; replace it with the original.")
    expected_size = header_len + n * (28 * 28 if images else 1)
    if len(data) != expected_size:
        raise DataError(f"MNIST file {where} is {'truncated' if len(data) < expected_size else 'too long'} "
                        f"({len(data)} bytes, expected {expected_size}); delete it and get it again.")
    if md5 is not None:
        digest = hashlib.md5(data, usedforsecurity=False).hexdigest()
        if digest != md5:
            raise DataError(f"MNIST file {where} is corrupt (md5 {digest}, expected {md5}); delete it and get it again.")
    values = torch.frombuffer(bytearray(data[header_len:]), dtype=torch.uint8) if n else torch.zeros(0, dtype=torch.uint8)
    return values.reshape(n, 28, 28) if images else values.to(torch.int64)


def _read_folder(folder: Path) -> tuple[torch.Tensor, ...]:
    out = []
    for name, (count, md5) in _FILES.items():
        path = _present(folder, name)
        data = _read_bytes(path)
        sample_count, sample_md5 = _SAMPLE_FILES[name]
        sample_size = (16 + sample_count * 28 * 28) if "images" in name else (8 + sample_count)
        if len(data) == sample_size and hashlib.md5(data, usedforsecurity=False).hexdigest() == sample_md5:
            raise DataError(f"{folder} holds the 10,000-digit MNIST sample shipped with handgrad, not the full set; "
                            "train on it with --sample (and no --data-dir), or point --data-dir at the full MNIST files.")
        out.append(read_idx(data, "images" in name, count, md5, path))
    return tuple(out)


def _read_sample() -> tuple[torch.Tensor, ...]:
    """The 10,000 digits in handgrad/mnist_sample/, checked like the full files."""
    folder = resources.files("handgrad") / SAMPLE_DIR
    out = []
    for name, (count, md5) in _SAMPLE_FILES.items():
        entry = folder / f"{name}.gz"
        try:
            data = gzip.decompress(entry.read_bytes())
        except (OSError, EOFError) as exc:
            raise DataError(f"the MNIST sample shipped with handgrad is unreadable ({entry}: {exc}); reinstall handgrad.") from None
        out.append(read_idx(data, "images" in name, count, md5, entry))
    return tuple(out)


# ---------------------------------------------------------------------------------------------
# download
# ---------------------------------------------------------------------------------------------


def _download(root: Path) -> str | None:
    """Download MNIST into ``root/MNIST/raw``; return None on success, else the reason.

    NOTE: torchvision downloads into a temporary folder, and the four files move into place only
    once all of them have arrived: a failed download leaves no folder or partial file behind.
    """
    try:
        # NOTE: imported here, inside the try: a torchvision that is missing or broken (built for
        # another torch: "operator torchvision::nms does not exist") only costs the download
        import torchvision
    except Exception as exc:  # noqa: BLE001 - any failure to import is the same for the user
        return f"torchvision cannot be imported ({type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''})"
    out = io.StringIO()
    with tempfile.TemporaryDirectory(prefix="handgrad-mnist-") as tmp:
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                torchvision.datasets.MNIST(tmp, train=True, download=True)
        except (RuntimeError, OSError) as exc:
            lines = [line for line in str(exc).strip().splitlines() if line.strip()]
            return lines[-1].strip() if lines else type(exc).__name__
        dest = root / "MNIST" / "raw"
        dest.mkdir(parents=True, exist_ok=True)
        for name in _FILES:
            shutil.move(str(Path(tmp) / "MNIST" / "raw" / name), str(dest / name))
    return None


# ---------------------------------------------------------------------------------------------
# load
# ---------------------------------------------------------------------------------------------


def _validate(images: torch.Tensor, labels: torch.Tensor, what: str) -> None:
    if labels.shape != (images.shape[0],):
        raise DataError(f"{what} has {labels.numel()} labels for {images.shape[0]} images.")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) > 9):
        raise DataError(f"{what} has labels outside 0-9 (from {int(labels.min())} to {int(labels.max())}).")


def _to_device(images: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    # NOTE: normalize the whole set once; per-sample ToTensor/Normalize costs ~3 s an epoch here.
    x = images.to(device).reshape(images.shape[0], -1).to(dtype)
    return x.div_(255.0).sub_(MEAN).div_(STD)


def _missing_message(root: Path, place: str, download: bool, reason: str | None) -> str:
    places = [str(root / layout) for layout in _LAYOUTS]
    got = "downloads are off" if not download else f"the download failed: {reason}"
    found = "does not exist" if not root.exists() else "holds no MNIST"
    return (f"{place} {found} (looked for {_LOOKED_FOR} in {', '.join(places[:-1])} and {places[-1]}; {got}); "
            f"put the four files there, or point --data-dir or ${ENV_VAR} at the folder that holds them.")


def _sample_note(why: str) -> str:
    return (f"{why}: training on the 10,000-digit MNIST sample shipped with handgrad ({SAMPLE_SIZES['train']:,} train / "
            f"{SAMPLE_SIZES['test']:,} test); for the full set, give the folder holding the four MNIST files "
            f"(--data-dir or ${ENV_VAR}) or allow the download.")


def load_mnist(
    data_dir: str | os.PathLike | None = None,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    download: bool = True,
    fallback: bool = True,
    limit_train: int | None = None,
    sample: bool = False,
) -> MNISTData:
    """Load MNIST onto ``device`` (see the module docstring for where it comes from)."""
    given, place = _given_location(data_dir)
    root = given if given is not None else Path("data")
    location, note = None, ""
    if sample:
        tensors = _read_sample()
        # NOTE: asked for by name, so no note: the caller knows what it gets
    else:
        location = find_mnist(root)
        reason = None
        if location is None and download:
            reason = _download(root)
            location = find_mnist(root)
        partial = _partial(root) if location is None else None
        if partial is not None:
            folder, missing = partial
            raise DataError(f"MNIST in {folder} is incomplete: {', '.join(missing)} missing; add the missing files "
                            "(or their .gz) or delete the folder.")
        if location is not None:
            tensors = _read_folder(location)
        elif given is not None:
            raise DataError(_missing_message(root, place, download, reason))
        elif fallback:
            tensors = _read_sample()
            got = "downloads are off" if not download else f"the download failed ({reason})"
            note = _sample_note(f"no MNIST location given, none in ./data and {got}")
        else:
            raise DataError(_missing_message(root, "no data folder was given and ./data", download, reason))
    train_x, train_y, test_x, test_y = tensors
    source = "mnist" if location is not None else "sample"
    _validate(train_x, train_y, f"the {source} training set")
    _validate(test_x, test_y, f"the {source} test set")
    available = train_y.numel()
    if limit_train is not None:
        if limit_train < 1:
            raise DataError(f"--limit-train must be a positive number of images, got {limit_train}.")
        train_x, train_y = train_x[:limit_train], train_y[:limit_train]
    device = torch.device(device)
    return MNISTData(
        train_x=_to_device(train_x, device, dtype),
        train_y=train_y.to(device=device),
        test_x=_to_device(test_x, device, dtype),
        test_y=test_y.to(device=device),
        source=source,
        note=note,
        location=location,
        available_train=available,
    )
