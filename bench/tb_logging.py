"""TensorBoard logging overhead at the default settings: python bench/tb_logging.py

Trains the default MLP with logging on (defaults: statistics every 50 steps, histograms each
epoch) and off, alternating, and reports the ratio of training times.
"""

import itertools
import statistics
import tempfile

from common import alternate, parser, ratio, ratio_spread, table, write

import train


def main():
    p = parser(__doc__)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    rounds = 1 if args.smoke else args.rounds
    base = ["--epochs", "1", "--quiet", "--device", args.device, "--seed", "0"]
    if args.data_dir:
        base += ["--data-dir", args.data_dir]
    if args.smoke:
        base += ["--limit-train", "256", "--hidden", "16", "--log-every", "2", "--no-download"]
    with tempfile.TemporaryDirectory() as tmp:
        count = itertools.count()

        def logged():
            return train.main(base + ["--logdir", f"{tmp}/run{next(count)}"])["train_seconds"]

        def unlogged():
            return train.main(base + ["--no-log"])["train_seconds"]

        times = alternate({"on": logged, "off": unlogged}, rounds)
    overhead = ratio(times, "on", "off") - 1
    q1, q3 = ratio_spread(times, "on", "off")
    rows = [["logging off", statistics.median(times["off"]), ""],
            ["logging on (defaults)", statistics.median(times["on"]), ""],
            ["overhead (median of per-round on/off - 1)", f"{100 * overhead:+.1f}%",
             f"{100 * (q1 - 1):+.1f}% to {100 * (q3 - 1):+.1f}%"]]
    write("tb_logging", args, {"seconds": times, "overhead": overhead, "overhead_quartiles": [q1 - 1, q3 - 1]},
          table(["run (1 epoch)", "training seconds", "middle half of rounds"], rows))


if __name__ == "__main__":
    main()
