"""Checkpoint files that are never half-written and never silently clobbered.

    check_save_path("ckpt.pt")            # before training: a file path in a writable folder
    with save_lock("ckpt.pt"):            # a second run on the same path is refused while this one runs
        save_checkpoint("ckpt.pt", state) # atomic: the old file or the new one, never half of one
    state = load_checkpoint("ckpt.pt", device)

Every expected failure raises :class:`CheckpointError` with one sentence for the user.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from handgrad.files import Locked, lock_beside, write_atomically

__all__ = ["CheckpointError", "check_save_path", "load_checkpoint", "save_checkpoint", "save_lock"]


class CheckpointError(Exception):
    """A checkpoint cannot be written or read; the message is one sentence saying what to do."""

    status = 2


def check_save_path(path: str | os.PathLike, flag: str = "--save") -> Path:
    """Refuse, before any work is done, a path that :func:`save_checkpoint` could not write.

    A folder, a missing parent folder, a read-only file and a folder that refuses a new file are
    each one sentence; nothing is created.
    """
    path = Path(path)
    parent = path.parent
    if path.is_dir():
        raise CheckpointError(f"{flag} {path} is a folder; give a file path such as {path / 'ckpt.pt'}.")
    if not parent.is_dir():
        what = "does not exist" if not parent.exists() else "is not a folder"
        raise CheckpointError(f"{flag} {path}: the folder {parent} {what}; create it first or choose another path.")
    if path.exists():
        # NOTE: checked by mode bits too, since root may write anything: a file someone made
        # read-only is one they do not want replaced.
        if not os.access(path, os.W_OK) or not path.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
            raise CheckpointError(f"{flag} {path} is read-only; make it writable or choose another path.")
    try:
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as exc:
        raise CheckpointError(f"{flag} {path} cannot be written ({exc.strerror or exc}); choose another path.") from None
    return path


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write ``state`` atomically (:func:`handgrad.files.write_atomically`), with the permissions of a new file.

    A failure at any moment (a full disk, Ctrl-C) leaves ``path`` as it was; an ``OSError``
    becomes a :class:`CheckpointError`.
    """
    path = Path(path)
    # NOTE: torch.save into a full disk fails with an opaque RuntimeError from its zip writer
    # ("unexpected pos"); serializing in memory and writing the bytes ourselves gives the OSError.
    try:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        write_atomically(path, lambda f: f.write(buffer.getbuffer()))
    except OSError as exc:
        kept = f"{path} still holds the previous checkpoint" if path.exists() else "no checkpoint was written"
        raise CheckpointError(f"could not write checkpoint {path} ({exc.strerror or exc}); {kept}.") from None


@contextlib.contextmanager
def save_lock(path: str | os.PathLike, flag: str = "--save") -> Iterator[None]:
    """Keep a second run off the same checkpoint path while this one runs; refused in one sentence."""
    try:
        with lock_beside(path):
            yield
    except Locked as exc:
        who = f"process {exc.pid}" if exc.pid else "another process"
        raise CheckpointError(f"{flag} {path} is in use by another training run ({who}, lock {exc.lock}); wait for "
                              "it to finish or choose another path.") from None


def load_checkpoint(path: str | os.PathLike, device: torch.device | str = "cpu") -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` onto ``device``; a missing or unreadable file is one sentence."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist; check the --resume path.") from None
    except IsADirectoryError:
        raise CheckpointError(f"checkpoint {path} is a folder; give the checkpoint file.") from None
    except PermissionError:
        raise CheckpointError(f"checkpoint {path} cannot be read (permission denied); make it readable "
                              f"(chmod u+r {path}) or resume from another file.") from None
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same mistake for the user
        raise CheckpointError(f"checkpoint {path} is corrupt or not a handgrad checkpoint ({type(exc).__name__}); "
                              "resume from another file or start afresh.") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} is not a handgrad checkpoint (it holds a {type(state).__name__}).")
    return state
