"""Files written whole or not at all, and a lock that keeps two runs off one file.

    write_atomically("ckpt.pt", lambda f: f.write(data))   # the old file or the new one, never half
    with lock_beside("ckpt.pt"):                           # .ckpt.pt.lock, held while the block runs
        ...

Both raise plain ``OSError`` (and :class:`Locked`); callers turn them into their own sentence.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = ["Locked", "lock_beside", "lock_path", "write_atomically"]


def _open_temp(path: Path) -> tuple[int, Path]:
    """A new file beside ``path``, created with mode 0o666 so the umask applies (0644 under umask 022).

    NOTE: tempfile.mkstemp creates 0600 files; a checkpoint replaced through one would lose the
    permissions a user expects of a file they wrote.
    """
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(path.parent))


def write_atomically(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> None:
    """``write(f)`` into a temp file beside ``path``, fsync, rename over ``path``, fsync the folder.

    A failure at any moment (an OSError, Ctrl-C) removes the temp file and leaves ``path`` as it was.
    """
    path = Path(path)
    fd, tmp = _open_temp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # NOTE: makes the rename itself durable; not every file system allows it
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


class Locked(OSError):
    """Another process holds the lock; ``pid`` is its process id when it wrote one."""

    def __init__(self, path: Path, pid: int | None) -> None:
        super().__init__(errno.EWOULDBLOCK, "locked by another process", str(path))
        self.lock, self.pid = path, pid


def lock_path(path: str | os.PathLike) -> Path:
    """Where :func:`lock_beside` puts the lock of ``path``: ``.NAME.lock`` in the same folder."""
    path = Path(path)
    return path.parent / f".{path.name}.lock"


@contextlib.contextmanager
def lock_beside(path: str | os.PathLike) -> Iterator[Path]:
    """Hold an exclusive lock on ``path`` (a lock file beside it) while the block runs; :class:`Locked` if taken.

    NOTE: flock, so a process that dies releases it; the file is removed on the way out, and a
    lock taken on a file another process just removed is retried on the new one.
    """
    import fcntl

    lock = lock_path(path)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = None
            with contextlib.suppress(OSError, ValueError):
                pid = int(os.pread(fd, 32, 0).decode().strip())
            os.close(fd)
            raise Locked(lock, pid) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield lock
    finally:
        with contextlib.suppress(OSError):
            lock.unlink()
        os.close(fd)
