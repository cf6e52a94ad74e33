"""TensorBoard logging overhead: python bench/tb_logging.py

The default run (5 epochs; statistics at every one of the first 100 steps, then every 50 and at
each epoch's end; gradient-flow pictures and histograms at steps 1, 2, 5, 10, 20, 50, 100, 200 and
at each epoch's end), measured three ways:

* accounted: one logged run with every Monitor method and forward hook timed, reported as the
  time spent in them over the same run's training time, so the slow drift of a shared machine
  cancels out; the writers' and the picture thread's work is not counted. Per-run work outside
  the training time (creating the writers, the step-0 evaluation, the layout, hparams, waiting
  for the last pictures) is reported in seconds.
* A/B: whole runs with logging on and off, alternating (--rounds pairs), as the median of the
  per-round on/off ratios. This counts everything but is as noisy as the machine.
* the same A/B for a 100-step run (one epoch of 12,800 images), timing the whole of ``main()``:
  there the per-run costs weigh most.
"""

import itertools
import statistics
import tempfile
import time
from contextlib import ExitStack
from unittest import mock

from common import alternate, parser, ratio, ratio_spread, table, write

import train
from handgrad.monitor import Monitor

#: Monitor methods by when train.py calls them; INNER ones run inside a per-step method.
PER_STEP = ("before_forward", "before_update", "after_update")
PER_EPOCH = ("scalars",)
PER_RUN = ("__init__", "start", "config", "graph_later", "hparams", "close")
INNER = {"_snapshots": "pictures"}


def accounted(base: list[str], logdir: str) -> dict[str, float]:
    """Seconds spent inside the logger, by kind, and the training seconds, for one logged run."""
    spent = {"per_step": 0.0, "per_epoch": 0.0, "per_run": 0.0, "histograms": 0.0, "pictures": 0.0}

    def timed(fn, kind):
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[kind] += time.perf_counter() - started

        return wrapper

    make_hook = Monitor._unit_hook

    def timed_hook_factory(self, name, relu):
        return timed(make_hook(self, name, relu), "per_step")

    with ExitStack() as stack:
        for kind, names in (("per_step", PER_STEP), ("per_epoch", PER_EPOCH), ("per_run", PER_RUN)):
            for name in names:
                stack.enter_context(mock.patch.object(Monitor, name, timed(getattr(Monitor, name), kind)))
        for name, kind in INNER.items():
            stack.enter_context(mock.patch.object(Monitor, name, timed(getattr(Monitor, name), kind)))
        stack.enter_context(mock.patch.object(Monitor, "_unit_hook", timed_hook_factory))
        out = train.main(base + ["--logdir", logdir])
    return {**spent, "train_seconds": out["train_seconds"]}


def main():
    p = parser(__doc__)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=5, help="epochs per run (5: the default run)")
    p.add_argument("--short-only", action="store_true", help="only the 100-step A/B (minutes instead of an hour on 2 cores)")
    args = p.parse_args()
    rounds = 1 if args.smoke else args.rounds
    args.epochs = 1 if args.smoke else args.epochs
    base = ["--epochs", str(args.epochs), "--quiet", "--device", args.device, "--seed", "0"]
    if args.data_dir:
        base += ["--data-dir", args.data_dir]
    if args.smoke:
        base += ["--limit-train", "256", "--hidden", "16", "--log-every", "2", "--no-download"]
    with tempfile.TemporaryDirectory() as tmp:
        count = itertools.count()
        costs = [] if args.short_only else [accounted(base, f"{tmp}/accounted{i}") for i in range(1 if args.smoke else 3)]

        def logged():
            return train.main(base + ["--logdir", f"{tmp}/run{next(count)}"])["train_seconds"]

        def unlogged():
            return train.main(base + ["--no-log"])["train_seconds"]

        times = {"on": [], "off": []} if args.short_only else alternate({"on": logged, "off": unlogged}, rounds)
        # NOTE: 100 steps of 128 (the run the issue measured), whole main() timed: start-up costs count too
        short = base if args.smoke else ["--epochs", "1", *base[2:], "--limit-train", "12800"]

        def wall(extra):
            def run():
                started = time.perf_counter()
                train.main(short + extra)
                return time.perf_counter() - started
            return run

        walls = alternate({"on": wall(["--logdir", f"{tmp}/short{next(count)}"]), "off": wall(["--no-log"])}, rounds)
    short_overhead = ratio(walls, "on", "off") - 1
    s1, s3 = ratio_spread(walls, "on", "off")
    rows = [] if args.short_only else _long_rows(costs, times)
    rows += [
        ["100-step run, wall seconds of main(), logging off", f"{statistics.median(walls['off']):.3f}", ""],
        ["100-step run, wall seconds of main(), logging on", f"{statistics.median(walls['on']):.3f}", ""],
        ["100-step run: median of per-round on/off - 1", f"{100 * short_overhead:+.1f}%",
         f"{100 * (s1 - 1):+.1f}% to {100 * (s3 - 1):+.1f}%"],
    ]
    write("tb_logging", args, {"accounted": costs, "seconds": times, "short_run_wall": walls,
                               "short_run_overhead": short_overhead},
          table([f"measurement ({args.epochs}-epoch runs, defaults)", "value", "middle half of rounds"], rows))


def _long_rows(costs, times) -> list[list]:
    share = {k: statistics.median(c[k] / c["train_seconds"] for c in costs) for k in ("per_step", "per_epoch", "pictures")}
    overhead = ratio(times, "on", "off") - 1
    q1, q3 = ratio_spread(times, "on", "off")
    return [
        ["accounted: in-loop logging / training time", f"{100 * share['per_step']:.2f}%", ""],
        ["  of which histograms and gradient-flow pictures (statistics; drawing is on a thread)",
         f"{100 * share['pictures']:.2f}%", ""],
        ["accounted: per-epoch scalars / training time", f"{100 * share['per_epoch']:.2f}%", ""],
        ["accounted: total / training time", f"{100 * (share['per_step'] + share['per_epoch']):.2f}%", ""],
        ["per run, outside training time: writer, layout, step-0 evaluation, hparams (s)",
         f"{statistics.median(c['per_run'] for c in costs):.3f}", f"first run {costs[0]['per_run']:.3f} s"],
        ["training seconds of the accounted runs (median)", f"{statistics.median(c['train_seconds'] for c in costs):.2f}", ""],
        ["A/B: training seconds, logging off", f"{statistics.median(times['off']):.3f}", ""],
        ["A/B: training seconds, logging on", f"{statistics.median(times['on']):.3f}", ""],
        ["A/B: median of per-round on/off - 1", f"{100 * overhead:+.1f}%", f"{100 * (q1 - 1):+.1f}% to {100 * (q3 - 1):+.1f}%"],
    ]


if __name__ == "__main__":
    main()
