"""TensorBoard logging overhead: python bench/tb_logging.py

Measured side by side, logging on and off, in alternating rounds (median of the per-round on/off
ratios, and the middle half of them):

* the 100-step run (one epoch of 12,800 images): the wall time of the whole ``python train.py``
  process, which is what a person waits for, start-up and the TensorBoard writer process included;
* the default run (5 epochs; statistics at every one of the first 100 steps, then every 50 and at
  each epoch's end; gradient-flow pictures and histograms at steps 1, 2, 5, 10, 20, 50, 100, 200
  and at each epoch's end), the same way (skipped with --short-only);
* accounted: one logged default run in this process with every Monitor method and forward hook
  timed, as a share of the same run's training time (what the training loop itself pays; the
  writer process's work is not counted there, the A/B counts it).

The processes run with Python's bytecode cache (see ``ENV``), after one unmeasured run of each.
"""

import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from unittest import mock

from common import ROOT, alternate, parser, ratio, ratio_spread, table, write

import train
from handgrad.monitor import Monitor

#: Monitor methods by when train.py calls them; INNER ones run inside a per-step method.
PER_STEP = ("before_forward", "before_update", "after_update")
PER_EPOCH = ("scalars",)
PER_RUN = ("__init__", "start", "config", "model_graph", "hparams", "close")
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


#: Python as installed: compiled modules are kept in __pycache__ and read back. NOTE: this project's
#: machines set PYTHONDONTWRITEBYTECODE=1, under which every process compiles the project's modules
#: from source again (about 30 ms more with logging on, which imports the monitor and graph modules)
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def process(argv: list[str]):
    """A function that runs ``python train.py argv`` and returns its wall seconds."""
    def run() -> float:
        started = time.perf_counter()
        subprocess.run([sys.executable, str(ROOT / "train.py"), *argv], check=True, cwd=ROOT, stdout=subprocess.DEVNULL,
                       env=ENV)
        return time.perf_counter() - started

    return run


def ab_rows(label: str, walls: dict) -> list[list]:
    q1, q3 = ratio_spread(walls, "on", "off")
    return [
        [f"{label}: wall seconds of `python train.py`, logging off (median)", f"{statistics.median(walls['off']):.3f}", ""],
        [f"{label}: wall seconds of `python train.py`, logging on (median)", f"{statistics.median(walls['on']):.3f}", ""],
        [f"{label}: median of per-round on/off - 1", f"{100 * (ratio(walls, 'on', 'off') - 1):+.1f}%",
         f"{100 * (q1 - 1):+.1f}% to {100 * (q3 - 1):+.1f}%"],
    ]


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
    # NOTE: 100 steps of 128 (the run the issue measured)
    short = base if args.smoke else ["--epochs", "1", *base[2:], "--limit-train", "12800"]
    with tempfile.TemporaryDirectory() as tmp:
        logdir = iter(f"{tmp}/run{i}" for i in range(10**6))
        costs = [] if args.short_only else [accounted(base, next(logdir)) for _ in range(1 if args.smoke else 3)]
        short_runs = {"on": lambda: process(short + ["--logdir", next(logdir)])(), "off": process(short + ["--no-log"])}
        for run in short_runs.values():  # NOTE: unmeasured: the bytecode cache is written, the files are read once
            run()
        walls = alternate(short_runs, rounds)
        long = {} if args.short_only else alternate({"on": lambda: process(base + ["--logdir", next(logdir)])(),
                                                      "off": process(base + ["--no-log"])}, rounds)
    rows = [] if args.short_only else _long_rows(costs) + ab_rows(f"{args.epochs}-epoch run", long)
    rows += ab_rows("100-step run", walls)
    write("tb_logging", args, {"accounted": costs, "long_run_wall": long, "short_run_wall": walls,
                               "short_run_overhead": ratio(walls, "on", "off") - 1},
          table([f"measurement ({args.epochs}-epoch runs, defaults)", "value", "middle half of rounds"], rows))


def _long_rows(costs) -> list[list]:
    share = {k: statistics.median(c[k] / c["train_seconds"] for c in costs) for k in ("per_step", "per_epoch", "pictures")}
    return [
        ["accounted: in-loop logging / training time", f"{100 * share['per_step']:.2f}%", ""],
        ["  of which histograms and gradient-flow numbers (the drawing is in the writer process)",
         f"{100 * share['pictures']:.2f}%", ""],
        ["accounted: per-epoch scalars / training time", f"{100 * share['per_epoch']:.2f}%", ""],
        ["accounted: total / training time", f"{100 * (share['per_step'] + share['per_epoch']):.2f}%", ""],
        ["per run, outside training time: writer process, layout, step-0 evaluation, model graph, hparams (s)",
         f"{statistics.median(c['per_run'] for c in costs):.3f}", f"first run {costs[0]['per_run']:.3f} s"],
        ["training seconds of the accounted runs (median)", f"{statistics.median(c['train_seconds'] for c in costs):.2f}", ""],
    ]


if __name__ == "__main__":
    main()
