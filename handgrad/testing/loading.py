"""Naming things from text: ``file.py:Name``, ``module:Name`` or ``package.module.name``; devices and dtypes.

Each mistake is a :class:`UsageError`: one sentence for a person (the CLI prints it and exits 2).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

from .report import first_line

__all__ = ["UsageError", "load", "parse_device", "parse_dtypes"]


class UsageError(ValueError):
    """A mistake in how the checker was called: one sentence for the person (exit status 2 on the command line)."""


def load(spec: str, what: str):
    """The object named by ``file.py:Name``, ``module:Name`` or a dotted path ``package.module.name``."""
    if ":" not in spec and (spec.endswith(".py") or Path(spec).is_file()):
        raise UsageError(f"{what} {spec!r} names a file but not what to take from it; write {spec}:Name "
                         f"(e.g. {spec}:MyFunction).")
    if ":" in spec:
        where, name = spec.rsplit(":", 1)
        module = import_file(where, what) if where.endswith(".py") or Path(where).is_file() else import_module(where, what)
    else:
        module, name = None, spec
        parts = spec.split(".")
        for cut in range(len(parts) - 1, 0, -1):
            try:
                module, name = importlib.import_module(".".join(parts[:cut])), ".".join(parts[cut:])
                break
            except ImportError:
                continue
        if module is None:
            raise UsageError(f"{what} {spec!r} names no importable module; use file.py:Name, module:Name or package.module.name.")
    obj, path = module, spec.rsplit(":", 1)[0] if ":" in spec else spec[: len(spec) - len(name) - 1]
    for part in name.split("."):
        if not hasattr(obj, part):
            raise UsageError(f"{what} {spec!r}: {path} has no attribute {part!r}.")
        obj, path = getattr(obj, part), f"{path}.{part}"
    if not callable(obj):
        raise UsageError(f"{what} {spec!r} is a {type(obj).__name__}, not a callable or an autograd.Function.")
    return obj


def import_module(name: str, what: str):
    try:
        return importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001 - any failure to import is the user's to fix: say which
        raise UsageError(f"{what}: could not import module {name!r} ({first_line(exc)}).") from None


def import_file(path: str, what: str):
    file = Path(path)
    if not file.is_file():
        raise UsageError(f"{what}: no file {path!r}.")
    spec = importlib.util.spec_from_file_location(f"_handgrad_user_{file.stem}", file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # NOTE: dataclasses and pickling look a class's module up here
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - an error in the user's file: say where, not a traceback
        raise UsageError(f"{what}: running {path} failed ({first_line(exc)}).") from None
    return module




def parse_dtypes(names) -> tuple:
    """torch dtypes from names ('float16', 'torch.bfloat16') or dtypes; UsageError for anything else."""
    import torch

    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    out, bad = [], []
    for n in names:
        d = n if isinstance(n, torch.dtype) else getattr(torch, str(n).removeprefix("torch."), None)
        if isinstance(d, torch.dtype) and d.is_floating_point:
            out.append(d)
        else:
            bad.append(str(n).removeprefix("torch."))
    if bad:
        raise UsageError(f"dtypes: {', '.join(bad)} is not a floating-point torch dtype (e.g. float32, bfloat16, float16).")
    return tuple(out)


def parse_device(text: str | None):
    """A torch.device this machine can use (None stays None); UsageError with handgrad.devices' one sentence if not."""
    from ..devices import parse_device as parse

    if text is None:
        return None
    try:
        return parse(text)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
