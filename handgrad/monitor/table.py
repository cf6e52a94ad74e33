"""Every statistic the dashboard shows, declared once: tag, chart, category, schedule, series.

A statistic with ``per="param"`` (or ``"weight"``, ``"unit"``) is written once per layer into a
sub-run named after the layer (``<logdir>/layers.0.weight``): TensorBoard gives every run its own
colour and a legend row, so the layers of one chart are told apart at a glance, and a tag (the
chart's name) never contains a layer's name. ``log10`` statistics are also written as
``<tag>_log10`` (they span decades); ``early`` ones also as ``early/<tag>`` for steps 1-200, a chart
whose x-axis is the first steps. The custom-scalars layout is derived from this table and holds
only the charts a run writes, so runs in one folder merge into one layout without empty charts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Stat", "STATS", "CATEGORIES", "stat", "early_tag", "log10_tag", "layout", "expand", "log10", "LOG10_FLOOR"]

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
         early=True),
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


def _charts(s: Stat) -> list[tuple[str, str, str]]:
    """(category, title, tag) of the charts that show ``s``."""
    out = [(s.category, f"{s.chart}, log10", log10_tag(s))] if s.log10 else []
    if s.raw:
        out.append((s.category, s.chart, s.tag))
    if s.early:
        out.insert(0, (_E, f"{s.chart}{', log10' if s.log10 else ''}: steps 1-200", early_tag(s)))
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


def expand(rows, early: bool, log=log10) -> dict[tuple[str, str], float]:
    """(key, run, value) rows -> {(run, tag): value}: the raw tag, the log10 tag, the early tag, as declared."""
    out = {}
    for key, run, v in rows:
        s = _BY_KEY[key]
        if s.raw:
            out[(run, s.tag)] = v
        if s.log10:
            out[(run, log10_tag(s))] = log(v)
        if s.early and early:
            out[(run, early_tag(s))] = log(v) if s.log10 else v
    return out
