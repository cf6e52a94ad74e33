"""Event files of one run: the main run and one sub-run per layer (its own colour in TensorBoard).

Values of a step go out as one event per run (about 7 µs a value, against about 150 µs for an
``add_scalar`` call each). Pictures are PNG-encoded once, and the same bytes go into the event
file and into a ``.png`` file beside it.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
from tensorboard.compat.proto.summary_pb2 import Summary
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import histogram_raw
from torch.utils.tensorboard.writer import FileWriter

from .. import compat

__all__ = ["Events", "png_bytes"]


def png_bytes(image: np.ndarray) -> bytes:
    """An (H, W, 3) uint8 image as PNG bytes (Pillow, which TensorBoard's own writer uses)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


class Events:
    """``scalars({(run, tag): value}, step)``: run "" is the main run, any other name a sub-run folder."""

    def __init__(self, logdir: str) -> None:
        self.logdir = Path(logdir)
        self.main = SummaryWriter(log_dir=logdir, flush_secs=30)
        self._writers = {"": compat.event_file_writer(self.main)}
        self._lock = threading.Lock()  # NOTE: the picture thread writes histograms into sub-runs too

    def _writer(self, run: str):
        writer = self._writers.get(run)
        if writer is None:
            with self._lock:
                writer = self._writers.get(run)
                if writer is None:
                    writer = self._writers[run] = FileWriter(str(self.logdir / run), flush_secs=30)
        return writer

    def _by_run(self, items: Iterable[tuple[tuple[str, str], object]]) -> dict[str, list]:
        runs: dict[str, list] = {}
        for (run, tag), v in items:
            runs.setdefault(run, []).append((tag, v))
        return runs

    def scalars(self, values: Mapping[tuple[str, str], float], step: int) -> None:
        for run, pairs in self._by_run(values.items()).items():
            summary = Summary(value=[Summary.Value(tag=t, simple_value=float(v)) for t, v in pairs])
            self._writer(run).add_summary(summary, step)

    def image(self, tag: str, image: np.ndarray, step: int, png_name: str | None = None) -> None:
        data = png_bytes(image)
        height, width = image.shape[:2]
        picture = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=data)
        self._writers[""].add_summary(Summary(value=[Summary.Value(tag=tag, image=picture)]), step)
        if png_name:
            (self.logdir / png_name).write_bytes(data)

    def histogram(self, run: str, tag: str, lo: float, hi: float, counts: np.ndarray, num: int, total: float,
                  squares: float, step: int) -> None:
        edges = np.linspace(lo, hi, len(counts) + 1)
        # NOTE: TensorBoard stores right edges only; an empty first bucket carries the left edge
        summary = histogram_raw(tag, lo, hi, num, total, squares, edges.tolist(), [0.0, *counts.tolist()])
        self._writer(run).add_summary(summary, step)

    def text(self, tag: str, markdown: str, step: int = 0) -> None:
        self.main.add_text(tag, markdown, step)

    def close(self) -> None:
        for run, writer in self._writers.items():
            if run:
                writer.flush()
                writer.close()
        self.main.flush()
        self.main.close()
