"""TensorBoard logging for training: a dashboard that shows the first steps and every layer at once.

* :mod:`.table`: every statistic declared once (tag, chart, category, schedule, series) and the
  custom-scalars layout derived from it;
* :mod:`.schedule`: when to log (dense early, sparse later; pictures at fixed early steps);
* :mod:`.core`: :class:`Monitor`, which computes the statistics during training;
* :mod:`.events`: the event files (the main run and one sub-run per layer);
* :mod:`.pictures`: gradient-flow pictures and histograms.

See docs/dashboard.md, "Reading the dashboard".
"""

from .core import LOG10_FLOOR, Monitor, log10
from .pictures import HIST_BINS
from .schedule import EARLY_END, EARLY_STEPS, LogSchedule
from .table import STATS, Stat, layout

__all__ = ["Monitor", "LogSchedule", "HIST_BINS", "LOG10_FLOOR", "EARLY_STEPS", "EARLY_END", "STATS", "Stat", "layout",
           "log10"]
