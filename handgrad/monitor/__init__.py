"""TensorBoard logging for training: a dashboard that shows the first steps and every layer at once.

* :mod:`.table`: every statistic declared once (tag, chart, category, schedule, series) and the
  custom-scalars layout derived from it;
* :mod:`.schedule`: when to log (dense early, sparse later; pictures at fixed early steps);
* :mod:`.core`: :class:`Monitor`, which computes the statistics during training;
* :mod:`.stats`: the statistics' math; :mod:`.pictures`: gradient-flow and histogram numbers;
* :mod:`.events` and :mod:`.writer`: the records, handed to the writer process;
* :mod:`.sink` (the writer process, no torch) and :mod:`.protos`: event files and pictures on disk.

See docs/dashboard.md, "Reading the dashboard". Importing this package imports no torch: names
are loaded when first used, so ``train.py`` can start the writer process before torch loads.
"""

from __future__ import annotations

import importlib

__all__ = ["Monitor", "LogSchedule", "HIST_BINS", "LOG10_FLOOR", "EARLY_STEPS", "EARLY_END", "STATS", "Stat", "layout",
           "log10", "prestart"]

_WHERE = {"Monitor": "core", "LOG10_FLOOR": "table", "log10": "table", "HIST_BINS": "pictures", "LogSchedule": "schedule",
          "EARLY_STEPS": "schedule", "EARLY_END": "schedule", "STATS": "table", "Stat": "table", "layout": "table",
          "prestart": "writer"}


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted([*globals(), *__all__])
