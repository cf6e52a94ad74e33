"""The writer process: turns the monitor's numbers into event files and pictures, off the training process.

``python -m handgrad.monitor.sink`` reads pickled messages ``(method, wall_time, args)`` from its
standard input (see :mod:`.writer`, the training side) and writes them; it never imports torch.
Started before the training process imports torch, it loads TensorBoard's protos, Pillow and
matplotlib on the other core meanwhile, so drawing a picture costs the training loop nothing but the numbers
it sends. A failure is said in one sentence on standard error and the exit status is 1; the
messages after it are read and dropped, so the training process never blocks on a full pipe.
"""

from __future__ import annotations

import os
import pickle
import queue
import signal
import socket
import struct
import sys
import threading
import time
from pathlib import Path

from . import protos

try:
    from google_crc32c import value as _crc32c
except ImportError:  # NOTE: a checkout updated without reinstalling: TensorBoard's own, in pure Python (slower)
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import crc32c as _crc32c

__all__ = ["Sink", "serve"]

#: seconds between flushes of an event file (and at close): TensorBoard reads what is flushed
FLUSH_SECS = 5


def _masked_crc(data: bytes) -> bytes:
    """The record checksum of TensorFlow's record format: CRC-32C, rotated and offset, little-endian.

    google-crc32c computes it in C: TensorBoard's own writer does it byte by byte in Python, which
    was half of this process's work at the end of a short run."""
    crc = _crc32c(data)
    return struct.pack("<I", (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


class EventFile:
    """One event file, written in this process's own thread (TensorBoard's writer starts a thread per file).

    Each record is TensorFlow's: the length (8 bytes), its checksum, the serialized Event and its
    checksum; TensorBoard checks both when it reads the file."""

    def __init__(self, folder: Path, number: int) -> None:
        from tensorboard.compat.proto.event_pb2 import Event

        folder.mkdir(parents=True, exist_ok=True)
        name = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}.{number}"
        self._file = open(folder / name, "wb")  # noqa: SIM115 - closed by close()
        self._flushed = time.monotonic()
        self.add_event(Event(wall_time=time.time(), file_version="brain.Event:2"))

    def add_event(self, event) -> None:
        data = event.SerializeToString()
        length = struct.pack("<Q", len(data))
        self._file.write(b"".join((length, _masked_crc(length), data, _masked_crc(data))))
        if time.monotonic() - self._flushed > FLUSH_SECS:
            self._file.flush()
            self._flushed = time.monotonic()

    def close(self) -> None:
        self._file.close()


class Sink:
    """One run's event files: the main run ("") and a sub-run folder per layer, made when first written."""

    def __init__(self) -> None:
        self.logdir: Path | None = None
        self._files: dict[str, object] = {}
        self._told: set[str] = set()
        self._keys: dict[int, dict[str, list[tuple[int, str]]]] = {}

    # ---- files -------------------------------------------------------------------------------

    def open(self, wall: float, logdir: str) -> None:
        self.logdir = Path(logdir)

    def _file(self, run: str) -> EventFile:
        writer = self._files.get(run)
        if writer is None:
            writer = self._files[run] = EventFile(self.logdir / run, len(self._files))
        return writer

    def _write(self, run: str, summary, step: int, wall: float) -> None:
        from tensorboard.compat.proto.event_pb2 import Event

        self._file(run).add_event(Event(summary=summary, step=int(step), wall_time=wall))

    def close(self, wall: float = 0.0) -> None:
        for writer in self._files.values():
            writer.close()
        self._files.clear()

    # ---- records -----------------------------------------------------------------------------

    def keys(self, wall: float, key_id: int, keys: tuple[tuple[str, str], ...]) -> None:
        """Names the (run, tag) keys of later ``scalars`` messages with ``key_id``."""
        runs: dict[str, list[tuple[int, str]]] = {}
        for i, (run, tag) in enumerate(keys):
            runs.setdefault(run, []).append((i, tag))
        self._keys[key_id] = runs

    def scalars(self, wall: float, step: int, key_id: int, values: list[float]) -> None:
        """The values of the keys named ``key_id``, one record per run."""
        for run, tags in self._keys[key_id].items():
            self._write(run, protos.scalars([(tag, values[i]) for i, tag in tags]), step, wall)

    def text(self, wall: float, step: int, tag: str, markdown: str) -> None:
        self._write("", protos.text(tag, markdown), step, wall)

    def layout(self, wall: float, categories: dict) -> None:
        self._write("", protos.layout(categories), 0, wall)

    def hparams(self, wall: float, values: dict, metrics: dict[str, float]) -> None:
        for summary in protos.hparams(values, list(metrics)):
            self._write("", summary, 0, wall)
        self._write("", protos.scalars(list(metrics.items())), 0, wall)

    def histograms(self, wall: float, step: int, rows: list[tuple]) -> None:
        """``rows``: (run, tag, lo, hi, counts, num, sum, sum of squares)."""
        for run, tag, *facts in rows:
            self._write(run, protos.histogram(tag, *facts), step, wall)

    def _drawn(self, draw, package: str = "matplotlib", what: str = "the model-graph pictures"):
        """What ``draw()`` returns, or None where ``package`` is missing (said once): the rest is still written."""
        try:
            return draw()
        except ImportError:
            if package not in self._told:
                self._told.add(package)
                print(f"{package} is not installed: {what} are skipped (pip install {package}).", file=sys.stderr)
            return None

    def _image(self, wall: float, step: int, tag: str, picture, png_name: str | None = None) -> None:
        """``picture`` in Images under ``tag``, and as ``png_name`` beside the events if given (the same PNG bytes)."""
        png = protos.png_bytes(picture)
        self._write("", protos.image(tag, png, *picture.shape[:2]), step, wall)
        if png_name:
            (self.logdir / png_name).write_bytes(png)

    def gradient_flow(self, wall: float, step: int, tag: str, names: list[str], mean: list[float], maximum: list[float],
                      errors: dict | None, tol: float | None) -> None:
        """The gradient-flow picture (Images tab, and ``gradient_flow-step<N>.png`` beside the events)."""
        def draw():
            from .. import plots  # NOTE: Pillow, about 1 ms a chart

            return plots.gradient_flow(names, mean, maximum, step, errors=errors, tol=tol)

        self._chart(wall, step, tag, draw, f"gradient_flow-step{step:07d}.png")

    def curves(self, wall: float, step: int, tag: str, series: dict, title: str, png_name: str) -> None:
        def draw():
            from .. import plots

            return plots.curves(series, title)

        self._chart(wall, step, tag, draw, png_name)

    def _chart(self, wall: float, step: int, tag: str, draw, png_name: str) -> None:
        picture = self._drawn(draw, "Pillow", "the dashboard's charts")
        if picture is not None:
            self._image(wall, step, tag, picture, png_name)

    def model_graph(self, wall: float, step: int, tag: str, facts: list[dict], graph, mermaid: str) -> None:
        """The Graphs tab's graph data, the pictures in Images under ``tag/1``, ``tag/2``, ... (and ``tag/full``)
        and the mermaid source in Text (``graph``: detached; ``mermaid``: as the Text tab shows it)."""
        from tensorboard.compat.proto.event_pb2 import Event

        from ..graph.graphdef import graph_def_of

        self._file("").add_event(Event(graph_def=graph_def_of(facts).SerializeToString(), step=step, wall_time=wall))
        self.text(wall, step, f"{tag}/mermaid", mermaid)

        def draw():
            from ..graph.cards import card_images

            return card_images(graph)

        for suffix, image in self._drawn(draw) or []:
            self._image(wall, step, f"{tag}/{suffix}", image)


def _warm_up() -> None:
    """What the first messages need, loaded while the training process is still importing torch."""
    import numpy  # noqa: F401
    from tensorboard.compat.proto import event_pb2  # noqa: F401

    protos.load_all()

    from .. import plots
    from ..graph import cards  # noqa: F401

    # NOTE: one throwaway chart of each kind loads the fonts and Pillow's code now: the first real one
    # is drawn while training runs, when this process gets little CPU, and waited for at the end
    protos.png_bytes(plots.gradient_flow(["layer.weight"], [1e-3], [1e-2], 0, errors={"layer.weight": 1e-9}, tol=1e-8))
    protos.png_bytes(plots.curves({"layer.weight": ([1, 2], [1.0, 0.5])}, "warm-up"))

    try:
        import matplotlib.backends.backend_agg  # noqa: F401  (the model graph's cards, drawn first)
        import matplotlib.figure  # noqa: F401
        import matplotlib.patches  # noqa: F401
    except ImportError:
        pass


def _read_all(stream, inbox: queue.SimpleQueue) -> None:
    """Every message of ``stream`` into ``inbox``, then None: the pipe is emptied as fast as it fills, so the
    training process never waits on a full pipe while a picture is being drawn."""
    try:
        while True:
            inbox.put(pickle.load(stream))
    except EOFError:
        pass
    finally:
        inbox.put(None)


def serve(stream, sink: Sink | None = None, background: bool = False, prepare=None) -> int:
    """Write every message of ``stream`` until its end; 0, or 1 after saying what failed (once).

    ``background``: the writing and drawing yield to the training process (the reader keeps its
    priority, so the pipe never fills and the trainer never waits on it). ``prepare()`` runs first,
    in the writing thread (with its priority), while the reader already empties the pipe.
    """
    sink = sink or Sink()
    inbox: queue.SimpleQueue = queue.SimpleQueue()
    threading.Thread(target=_read_all, args=(stream, inbox), name="handgrad-sink-reader", daemon=True).start()
    if background:
        _yield_to_training()  # NOTE: this thread only: Linux schedules threads one by one
    if prepare is not None:
        try:
            prepare()
        except Exception:  # NOTE: only a head start: whatever it could not load fails, said once, where it is used
            pass
    failed = False
    while (message := inbox.get()) is not None:
        if failed:
            continue
        method, wall, args = message
        try:
            getattr(sink, method)(wall, *args)
        except Exception as err:  # NOTE: one sentence, then drain: the training process must never block on the pipe
            failed = True
            where = f" in {sink.logdir}" if sink.logdir else ""
            print(f"handgrad: the TensorBoard writer stopped{where} ({type(err).__name__}: {err}); "
                  "the events after that point are missing.", file=sys.stderr)
    try:
        sink.close()
    except Exception as err:
        print(f"handgrad: the TensorBoard event files could not be closed ({err}).", file=sys.stderr)
        failed = True
    return 1 if failed else 0


def _yield_to_training() -> None:
    """Drawing is background work: it takes a core the training process leaves idle, not one it computes on."""
    try:
        # NOTE: Linux's idle class runs it only on a core nothing else wants; elsewhere, a lower priority
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        try:
            os.nice(10)
        except (AttributeError, OSError):  # NOTE: no nice() on Windows; a refusal changes nothing written
            pass


if __name__ == "__main__":
    # NOTE: Ctrl-C and SIGTERM are the trainer's to handle: it closes the writer, which finishes
    # writing what it was sent; if the trainer dies, the pipe's end stops the writer
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # NOTE: the warm-up too is idle-class work: the trainer imports torch on one core, so it gets the
    # other one whole; at full priority it slowed that import by 0.05 s
    status = serve(sys.stdin.buffer, background=True, prepare=_warm_up)
    sys.stdout.flush(), sys.stderr.flush()
    # NOTE: every file is closed by now; skipping the interpreter's teardown (matplotlib, protobuf) is
    # a tenth of a second the training process would otherwise wait for at its end
    os._exit(status)
