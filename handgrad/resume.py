"""The rules of train.py's checkpoint files: what resumes, what --save may replace, in one sentence each.

    state = load_checkpoint("c.pt")                      # version and every needed key checked
    start = check_resume("c.pt", state, flags, data, steps_per_epoch)   # or TrainError / NothingToDo
    check_save_target("c.pt", flags, overwrite=False, resume=None)      # before the data loads

A checkpoint resumes only under the flags (``MODEL_KEYS``, ``TRAINING_KEYS``) and the data that
wrote it; a finished one resumes under a larger ``--epochs`` alone, the added epochs following a
learning-rate schedule of their own (``schedule_start`` records where it starts). ``--save``
writes a new file or replaces a checkpoint of the same run; anything else needs ``--overwrite``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from handgrad.checkpoint import CheckpointError
from handgrad.checkpoint import load_checkpoint as _load_file

__all__ = ["CHECKPOINT_VERSION", "IMPLIED", "MODEL_KEYS", "NothingToDo", "SCHEDULE_NAMES", "TRAINING_KEYS", "TrainError",
           "check_resume", "check_save_data", "check_save_target", "is_finished", "load_checkpoint", "resumed_line",
           "same_file"]

CHECKPOINT_VERSION = 2  # 2: records its data; version 1 files still resume (without the data check)
# the flags that fix the model's shape and math: a checkpoint only resumes under the same ones
MODEL_KEYS = ("hidden", "activation", "loss", "dtype", "bias")
#: what a checkpoint written before a flag existed implies for it
IMPLIED = {"bias": True, "schedule_start": 0}
# ...and the flags that fix the sequence of updates; the data is compared as well (see check_resume)
TRAINING_KEYS = ("epochs", "batch_size", "lr", "momentum", "weight_decay", "schedule", "seed", "limit_train")


#: how a message names each --schedule
SCHEDULE_NAMES = {"onecycle": "one-cycle", "constant": "constant learning-rate"}


class TrainError(Exception):
    """An expected failure: one sentence for the user and an exit status."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


#: what a checkpoint of any version holds; a missing one is named in the refusal
REQUIRED = ("model", "optimizer", "scheduler", "epoch", "step_in_epoch", "step", "rng_cpu", "config")


def load_checkpoint(path: str | os.PathLike, device: str = "cpu") -> dict:
    """A handgrad checkpoint of a version this train.py reads, with every key it needs; one sentence otherwise."""
    state = _load_file(path, device)
    version = state.get("version")
    if isinstance(version, int) and version > CHECKPOINT_VERSION:
        raise TrainError(f"checkpoint {path} was made by a newer handgrad (checkpoint version {version}; this one reads "
                         f"versions 1 to {CHECKPOINT_VERSION}); upgrade handgrad to resume it, or start afresh.")
    if version not in (1, CHECKPOINT_VERSION):
        raise TrainError(f"checkpoint {path} is not a handgrad checkpoint (no known version; this handgrad reads "
                         f"versions 1 to {CHECKPOINT_VERSION}); resume from another file or start afresh.")
    missing = [k for k in REQUIRED if k not in state]
    if missing:
        raise TrainError(f"checkpoint {path} lacks {', '.join(repr(k) for k in missing)}, which resuming needs "
                         "(it was cut short or not written by train.py); resume from another file or start afresh.")
    return state


def _shown(value) -> str:
    """A flag's value as one would type it: 256,128 for a list, none for None."""
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return "none" if value is None else str(value)


def _typed(key: str, value) -> str:
    """``--flag value`` as one types it: ``--no-bias`` for bias False, ``--hidden 256,128`` for a list."""
    if isinstance(value, bool):
        return f"--{'' if value else 'no-'}{key.replace('_', '-')}"
    return f"--{key.replace('_', '-')} {_shown(value)}"


def _data_shown(data: dict) -> str:
    kind = "full MNIST" if data.get("source") == "mnist" else "the shipped sample"
    return f"{kind} of {data.get('train')} train / {data.get('test')} test images"


def _differences(saved: dict, config: dict, keys=(*MODEL_KEYS, *TRAINING_KEYS)) -> list[str]:
    """Each flag that differs, as typed: ``--lr 0.1 (checkpoint) vs 0.001 (now)``, ``--bias (checkpoint) vs --no-bias (now)``."""
    diffs = []
    for k in keys:
        if saved.get(k) == config[k]:
            continue
        if isinstance(config[k], bool):
            diffs.append(f"{_typed(k, saved.get(k))} (checkpoint) vs {_typed(k, config[k])} (now)")
        else:
            diffs.append(f"{_typed(k, saved.get(k))} (checkpoint) vs {_shown(config[k])} (now)")
    return diffs


def _fix_for(saved: dict, config: dict, keys, presets: Mapping[str, Mapping]) -> str:
    """How to get the checkpoint's values: its --preset when that differs, and the flags that still differ."""
    preset = saved.get("preset")
    flags = [k for k in keys if saved.get(k) != config[k]]
    if preset and preset != config.get("preset") and preset in presets:
        rest = [k for k in flags if presets[preset].get(k, object()) != saved.get(k)]
        typed = " ".join(_typed(k, saved.get(k)) for k in rest)
        return f"add --preset {preset} (the checkpoint's preset)" + (f" {typed}" if typed else "")
    return "use the checkpoint's values (" + " ".join(_typed(k, saved.get(k)) for k in flags) + ")"


def is_finished(state: dict) -> bool:
    """Whether the checkpoint's run trained every epoch of its --epochs."""
    saved = state.get("config", {})
    return state.get("step_in_epoch") == 0 and saved.get("epochs") is not None and state.get("epoch") >= saved["epochs"]


def check_resume(path: str, state: dict, config: dict, data: dict, steps_per_epoch: int,
                 presets: Mapping[str, Mapping] | None = None) -> int:
    """Refuse a checkpoint written under other flags or other data: one sentence naming each difference.

    Returns the epoch the learning-rate schedule starts at (0, or where a finished run was extended).
    A finished checkpoint under the same flags raises :class:`NothingToDo`; under a larger ``--epochs``
    alone it is extended: the added epochs follow a schedule of their own. ``presets`` (name ->
    flag values) lets a refusal suggest the checkpoint's ``--preset``.
    """
    saved = {**IMPLIED, **state.get("config", {})}
    extend = is_finished(state) and isinstance(saved.get("epochs"), int) and config["epochs"] > saved["epochs"]
    keys = tuple(k for k in (*MODEL_KEYS, *TRAINING_KEYS) if not (extend and k == "epochs"))
    diffs = _differences(saved, config, keys)
    fixes = [_fix_for(saved, config, keys, presets or {})] if diffs else []
    saved_data = state.get("data")  # NOTE: absent in version-1 checkpoints, which cannot be checked
    if saved_data is not None and saved_data != data:
        diffs.append(f"the data: {_data_shown(saved_data)} (checkpoint) vs {_data_shown(data)} (now)")
        fixes.append("add --sample (the data it was trained on)" if saved_data.get("source") == "sample" else
                     "point --data-dir or $HANDGRAD_DATA at the MNIST files it was trained on")
    if diffs:
        raise TrainError(f"checkpoint {path} was written under other settings: {', '.join(diffs)}; "
                         f"{' and '.join(fixes)}, or drop --resume to start a new run.")
    if is_finished(state) and not extend:
        n = state["epoch"]
        raise NothingToDo(f"nothing to do: checkpoint {path} already trained {n} epochs (--epochs {n}); to train "
                          f"more, give a larger --epochs, e.g. --resume {path} --epochs {2 * n}: the added epochs "
                          f"follow a {SCHEDULE_NAMES[config['schedule']]} schedule of their own, starting again at "
                          f"--lr {config['lr']:g}.")
    start = saved["epochs"] if extend else saved["schedule_start"]
    total_steps = (config["epochs"] - start) * steps_per_epoch
    if not extend and saved.get("total_steps") != total_steps:
        raise TrainError(f"checkpoint {path} follows a schedule of {saved.get('total_steps')} steps but these flags "
                         f"give {total_steps}; use the flags of the run that wrote it.")
    return start


class NothingToDo(Exception):
    """The checkpoint already holds every epoch asked for; the message says how to train more."""


def check_save_target(path: str, config: dict, overwrite: bool, resume: str | None) -> None:
    """--save may write a new file or replace a checkpoint of this same run; anything else only with --overwrite.

    Called before the data loads (the flags); :func:`check_save_data` compares the data once loaded.
    """
    target = Path(path)
    if overwrite or not target.exists() or (resume and same_file(path, resume)):
        return
    try:
        state = _load_file(target, "cpu")
    except CheckpointError:
        state = None
    if state is None or "config" not in state:
        raise TrainError(f"--save {path} already exists and is not a handgrad checkpoint; choose a new path, or add "
                         "--overwrite to replace it.")
    diffs = _differences({**IMPLIED, **state["config"]}, config)
    if diffs:
        raise TrainError(f"--save {path} holds the checkpoint of another run ({', '.join(diffs)}); continue it with "
                         f"--resume {path}, choose a new path, or add --overwrite to replace it.")


def check_save_data(path: str | None, data: dict, overwrite: bool, resume: str | None) -> None:
    """The data half of :func:`check_save_target`: a checkpoint at --save trained on other data is not replaced."""
    if not path or overwrite or not Path(path).exists() or (resume and same_file(path, resume)):
        return
    saved = _load_file(path, "cpu").get("data")
    if saved is not None and saved != data:
        raise TrainError(f"--save {path} holds the checkpoint of a run on other data ({_data_shown(saved)}, now "
                         f"{_data_shown(data)}); choose a new path, or add --overwrite to replace it.")


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    return Path(a).resolve() == Path(b).resolve()


def resumed_line(path: str, epoch: int, step_in_epoch: int, step: int, epochs: int, steps_per_epoch: int) -> str:
    line = f"resumed from {path}: epoch {epoch} of {epochs}, step {step}"
    if step_in_epoch:
        line += f" (mid-epoch: {step_in_epoch} of the {steps_per_epoch} steps of epoch {epoch + 1} done)"
    return line
