"""Regenerate handgrad/mnist_sample/ from the official MNIST files, byte for byte.

    python tools/make_mnist_sample.py ../shared/data            # any folder load_mnist accepts
    python tools/make_mnist_sample.py ../shared/data --out /tmp/s   # write elsewhere, e.g. to compare

The sample is the first 8,000 training digits and the first 2,000 test digits of the official
files, in the IDX format with the item count in the header changed to match, gzipped with a fixed
header (no file name, mtime 0, level 9), so the same input gives the same bytes. It prints the md5
of each uncompressed file: handgrad/data.py checks the sample against these. Not run by CI; a
test regenerates the sample and compares it with the committed files where MNIST is present.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import struct
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # so that `python tools/make_mnist_sample.py` finds handgrad/

from handgrad.data import _FILES, SAMPLE_DIR, SAMPLE_SIZES, _read_bytes, find_mnist, read_idx  # noqa: E402


def subset(data: bytes, images: bool, n: int) -> bytes:
    """The first n items of an IDX file, with the count in its header set to n."""
    header_len, item = (16, 28 * 28) if images else (8, 1)
    magic = struct.unpack(">I", data[:4])[0]
    return struct.pack(">II", magic, n) + data[8:header_len] + data[header_len:header_len + n * item]


def gzip_fixed(data: bytes) -> bytes:
    """gzip with no file name and mtime 0: the output depends only on the input (and zlib)."""
    import io

    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as f:
        f.write(data)
    return buf.getvalue()


def make(source: Path, out: Path) -> dict[str, str]:
    """Write the four gzipped files into ``out``; return name -> md5 of the uncompressed file."""
    folder = find_mnist(source)
    if folder is None:
        raise SystemExit(f"error: no MNIST files in {source} (nor in its MNIST/raw or raw).")
    out.mkdir(parents=True, exist_ok=True)
    digests = {}
    for name, (count, md5) in _FILES.items():
        path = next(p for p in (folder / name, folder / f"{name}.gz") if p.is_file())
        data = _read_bytes(path)
        images = "images" in name
        read_idx(data, images, count, md5, path)  # the official file, checked
        n = SAMPLE_SIZES["train" if name.startswith("train") else "test"]
        part = subset(data, images, n)
        (out / f"{name}.gz").write_bytes(gzip_fixed(part))
        digests[name] = hashlib.md5(part, usedforsecurity=False).hexdigest()
    return digests


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", help="folder holding the official MNIST files")
    p.add_argument("--out", default=str(ROOT / "handgrad" / SAMPLE_DIR), help="where to write the sample")
    args = p.parse_args()
    for name, digest in make(Path(args.source), Path(args.out)).items():
        print(f"{name}: {digest}")


if __name__ == "__main__":
    main()
