"""One parser for the ``--device`` text every handgrad command takes.

    parse_device("auto")    # cuda (the current GPU, as cuda:N) when there is one, else cpu
    parse_device("cuda:1")  # that GPU, if this machine has it
    parse_device("tpu")     # ValueError: one sentence saying what to type instead
"""

from __future__ import annotations

import torch

__all__ = ["parse_device"]

_CHOICES = "auto, cpu, cuda or cuda:N"


def parse_device(text: str) -> torch.device:
    """``text`` as a device this machine has; a ValueError with one sentence otherwise.

    ``auto`` picks CUDA when available; a bare ``cuda`` becomes ``cuda:N`` of the current GPU, so
    messages and logs name the GPU actually used.
    """
    name = str(text).strip()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"--device {text!r} is not a device; use {_CHOICES}.") from None
    if device.type == "cpu":
        return torch.device("cpu")
    if device.type != "cuda":
        raise ValueError(f"--device {text!r} is not supported; use {_CHOICES}.")
    if not torch.cuda.is_available():
        raise ValueError(f"--device {text} was given but CUDA is not available on this machine; use --device cpu.")
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise ValueError(f"--device {text} does not exist: this machine has {count} GPU(s).")
    if device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device
