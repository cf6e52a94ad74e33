"""Every statistic the dashboard shows, declared once: tag, chart, category, schedule, series.

A statistic with ``per="param"`` (or ``"weight"``, ``"unit"``) is written once per layer into a
sub-run named after the layer (``<logdir>/layers.0.weight``): TensorBoard gives every run its own
colour and a legend row, so the layers of one chart are told apart at a glance, and a tag (the
chart's name) never contains a layer's name. ``log10`` statistics are also written as
``<tag>_log10`` (they span decades); ``early`` ones also as ``early/<tag>`` at the log-spaced
:data:`~.schedule.EARLY_POINTS` (steps 1-200), a chart whose x-axis is the first steps; ``since_step1``
ones also as ``early/<tag>_since_step1_log10`` = log10(v_t / v_1) per series, which starts at 0 in
every layer (see :func:`since_step1_tag`). The custom-scalars layout is derived from this table and holds
only the charts a run writes, so runs in one folder merge into one layout without empty charts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Stat", "STATS", "CATEGORIES", "stat", "early_tag", "log10_tag", "since_step1_tag", "layout", "expand", "log10",
           "LOG10_FLOOR", "step1_values"]

LOG10_FLOOR = -20.0  # log10 of an exact 0 (an error that vanished) is drawn here, not at -inf


def log10(value: float) -> float:
    """log10(max(v, 1e-20)): values TensorBoard's table would round to 0, in a readable form."""
    return math.log10(value) if value > 10**LOG10_FLOOR else LOG10_FLOOR


@dataclass(frozen=True)
class Stat:
    """One statistic. ``when``: "step" (the scalar schedule), "epoch" (each epoch's end, and step 0 for
    "start+epoch"), "compare" (each logged step of a compare run). ``per``: "run" (one series),
    "param", "weight" (penalized weights only), "unit" (each ReLU/Sigmoid module), "compare" (each
    parameter plus the tolerance and float32-noise lines). ``needs``: what the run must have."""

    key: str
    tag: str
    chart: str
    category: str
    when: str = "step"
    per: str = "run"
    log10: bool = False
    raw: bool = True
    early: bool = False
    needs: str = ""
    since_step1: bool = False


CATEGORIES = ("hand vs native: verdict", "early steps (1-200)", "gradients", "weights and updates",
              "hidden units and output", "loss and accuracy", "run")
_V, _E, _G, _W, _U, _L, _R = CATEGORIES

STATS = (
    Stat("cmp_err", "compare/rel_err", "relative gradient error ‖g_hand − g_native‖/‖g_native‖ per parameter, "
         "with the tolerance and the float32 noise floor", _V, "compare", "compare", log10=True, raw=False),
    Stat("cmp_worst", "compare/worst_rel_err", "largest relative gradient error since the last point", _V, "compare",
         log10=True, raw=False),
    Stat("cmp_obj", "compare/objective_diff", "objective difference |J_hand − J_native|", _V, "compare", log10=True,
         raw=False),
    Stat("data_norm", "gradient/data_norm", "data gradient ‖∂L/∂θ‖ (penalty removed)", _G, per="param", log10=True,
         early=True, since_step1=True),
    Stat("penalty_norm", "gradient/penalty_norm", "penalty gradient ‖λW‖", _G, per="weight", log10=True, raw=False,
         early=True, needs="penalty"),
    Stat("total_norm", "gradient/total_norm", "total gradient ‖∂J/∂θ‖ = data + penalty", _G, per="param", log10=True,
         raw=False),
    Stat("weight_norm", "weight/norm", "weight norm ‖θ‖", _W, "start+step", per="param"),
    Stat("update_ratio", "update/ratio", "update ratio ‖Δθ‖/‖θ‖ of the optimizer step", _W, per="param", log10=True,
         early=True),
    Stat("dead", "units/dead", "dead ReLU units (zero for the whole batch)", _U, per="unit", early=True, needs="relu"),
    Stat("saturated", "units/saturated", "saturated sigmoid units (outputs < 0.01 or > 0.99)", _U, per="unit",
         early=True, needs="sigmoid"),
    Stat("p_true", "output/p_true", "mean probability of the true class", _U, early=True),
    Stat("confident", "output/confident", "confident answers: true class > 0.99, every other < 0.01", _U, early=True),
    Stat("stuck", "output/stuck", "stuck answers: all ten outputs within 0.05 of each other", _U, early=True),
    Stat("step_loss", "loss/train_step", "training loss of each logged batch", _L, early=True),
    Stat("epoch_loss", "loss/train_epoch", "training loss, mean over each epoch", _L, "epoch"),
    Stat("test_loss", "loss/test", "test loss (measured at step 0 and each epoch's end)", _L, "start+epoch"),
    Stat("test_acc", "output/test_accuracy", "test accuracy % (measured at step 0 and each epoch's end)", _L,
         "start+epoch"),
    Stat("lr", "run/lr", "learning rate", _R),
    Stat("samples_per_s", "run/samples_per_s", "training samples per second", _R, "epoch"),
)

_BY_KEY = {s.key: s for s in STATS}
assert len(_BY_KEY) == len(STATS) and len({s.tag for s in STATS}) == len(STATS)


def stat(key: str) -> Stat:
    return _BY_KEY[key]


def log10_tag(s: Stat) -> str:
    return f"{s.tag}_log10"


def early_tag(s: Stat) -> str:
    """``early/gradient_data_norm_log10``: the early view of the log10 series when there is one."""
    return "early/" + (log10_tag(s) if s.log10 else s.tag).replace("/", "_")


def since_step1_tag(s: Stat) -> str:
    """``early/gradient_data_norm_since_step1_log10``: log10(v_t / v_1), decades gained (+) or lost (−) since step 1.

    NOTE: why a second early chart. TensorBoard's Time Series ("Ignore outliers", on by default)
    cuts the pooled values of a card at their 5% and 95% points; when one layer starts decades above
    the others (seed001's output layer), its first steps are that 5%. Measured against its own step 1
    every series starts at exactly 0, a value every nice axis has as a tick, so the top of the
    axis lands on 0 whenever the other steps 2-3 lie within about a tick below it."""
    return early_tag(s).removesuffix("_log10") + "_since_step1_log10"


def _charts(s: Stat) -> list[tuple[str, str, str]]:
    """(category, title, tag) of the charts that show ``s``."""
    out = [(s.category, f"{s.chart}, log10", log10_tag(s))] if s.log10 else []
    if s.raw:
        out.append((s.category, s.chart, s.tag))
    if s.early:
        out.insert(0, (_E, f"{s.chart}{', log10' if s.log10 else ''}: steps 1-200", early_tag(s)))
    if s.since_step1:
        out.insert(0, (_E, f"{s.chart}: log10 of its ratio to step 1, steps 1-200", since_step1_tag(s)))
    return out


def layout(has: set[str]) -> dict:
    """The custom-scalars layout for a run that has the features ``has`` ("compare", "penalty", "relu",
    "sigmoid"): categories in :data:`CATEGORIES` order, one chart per statistic, each chart a whole-tag
    regex (every layer's sub-run shows in it, in its own colour)."""
    by_category: dict[str, dict] = {c: {} for c in CATEGORIES}
    for s in STATS:
        if (s.when == "compare" and "compare" not in has) or (s.needs and s.needs not in has):
            continue
        for category, title, tag in _charts(s):
            by_category[category][title] = ["Multiline", [f"^{tag}$"]]
    return {c: charts for c, charts in by_category.items() if charts}


def step1_values(rows) -> dict[tuple[str, str], float]:
    """The step-1 rows a ``since_step1`` chart divides by: {(key, run): value}, zeros left out (no ratio)."""
    return {(key, run): v for key, run, v in rows if _BY_KEY[key].since_step1 and v > 0}


def expand(rows, early: bool, log=log10, step1: dict | None = None) -> dict[tuple[str, str], float]:
    """(key, run, value) rows -> {(run, tag): value}: the raw tag, the log10 tag, the early tags, as declared.

    ``step1``: :func:`step1_values` of the run's step 1; a run resumed past step 1 has none and
    writes no ``since_step1`` chart (its ratio would be to another step)."""
    out = {}
    for key, run, v in rows:
        raw, log_tag, early_log, since = _TAGS[key]  # NOTE: built once: this runs for every row of every logged step
        if raw:
            out[(run, raw)] = v
        if log_tag:
            out[(run, log_tag)] = lv = log(v)
        if early and early_log:
            out[(run, early_log)] = lv if log_tag else v
        if early and since and step1 and (key, run) in step1:
            out[(run, since)] = (lv if log_tag else log(v)) - log(step1[(key, run)])
    return out


#: per key: (raw tag, log10 tag, early tag, since-step-1 tag), None where the statistic has none
_TAGS = {s.key: (s.tag if s.raw else None, log10_tag(s) if s.log10 else None, early_tag(s) if s.early else None,
                 since_step1_tag(s) if s.since_step1 else None) for s in STATS}
