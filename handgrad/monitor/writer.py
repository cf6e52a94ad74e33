"""The training side of the writer process (:mod:`.sink`): start it early, send it numbers, wait for it at the end.

Logging costs the training loop only the statistics and a pickled message per record: TensorBoard's
protos, the event files, the pictures (Pillow; matplotlib for the model graph's cards) and the PNG
files all live in the writer process, which runs on another core. ``train.py`` calls
:func:`prestart` right after parsing its flags, before it imports torch, so the writer has loaded
what it needs by the time the first step is logged. This module imports no torch.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["WriterProcess", "WriterFailed", "prestart", "BATCHED", "FLUSH_SECS"]

_SPARE: subprocess.Popen | None = None
_BUFFER = 1 << 16  # NOTE: one histogram message is about 7 kB; a full buffer is written at once
#: the messages sent in batches (the per-step ones), and the seconds between flushes of them
BATCHED, FLUSH_SECS = frozenset({"keys", "scalars"}), 0.5


class WriterFailed(RuntimeError):
    """The writer process stopped before it wrote everything (it said why on standard error)."""


def _spawn() -> subprocess.Popen:
    # NOTE: in the trainer's session on purpose: Linux groups CPU time by session ("autogroup"), and
    # a writer in a session of its own would get an equal share of the CPU whatever its priority,
    # slowing training about 1:1 with its drawing; Ctrl-C and SIGTERM are ignored by the writer instead
    package_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    # NOTE: the child imports this same handgrad, wherever the parent found it (a checkout, sys.path edits)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    return subprocess.Popen([sys.executable, "-m", "handgrad.monitor.sink"], stdin=subprocess.PIPE, env=env, bufsize=_BUFFER)


def prestart() -> None:
    """Start a writer process now for the next :class:`WriterProcess` to take (no-op when one waits already)."""
    global _SPARE
    if _SPARE is None or _SPARE.poll() is not None:
        _SPARE = _spawn()


def _take() -> subprocess.Popen:
    global _SPARE
    proc, _SPARE = _SPARE, None
    return proc if proc is not None and proc.poll() is None else _spawn()


class WriterProcess:
    """``send(method, *args)`` calls ``Sink.method(wall_time, *args)`` in the writer process, in order."""

    def __init__(self, logdir: str) -> None:
        self.logdir = logdir
        self._proc = _take()
        self._lost = False
        self._flushed = time.monotonic()
        self.send("open", str(logdir))

    def send(self, method: str, *args) -> None:
        if self._lost:
            return
        try:
            pickle.dump((method, time.time(), args), self._proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            # NOTE: the per-step records in batches: each flush is a system call and wakes the writer's
            # reader, which takes a core from training (102 flushes were 9 ms of a 100-step run); the
            # rest at once, so the writer draws the model graph while the trainer is still building
            if method not in BATCHED or time.monotonic() - self._flushed >= FLUSH_SECS:
                self._proc.stdin.flush()
                self._flushed = time.monotonic()
        except (BrokenPipeError, OSError):  # NOTE: it said why on stderr; close() raises
            self._lost = True

    def close(self) -> None:
        """Wait until every record is written; :class:`WriterFailed` if the writer process could not write them."""
        try:
            self._proc.stdin.close()
        except (BrokenPipeError, OSError):
            self._lost = True
        status = self._proc.wait()
        if status != 0 or self._lost:
            # NOTE: no final stop: a caller may go on with what is kept (train.py: "; ckpt.pt holds the trained model.")
            raise WriterFailed(f"The TensorBoard events in {self.logdir} are incomplete: the writer process stopped "
                               f"(exit status {status}; its message is above)")
