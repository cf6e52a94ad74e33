"""Time to 98% test accuracy with the default configuration, hand vs native.

    python bench/time_to_98.py --data-dir ../shared/data

Runs `train.py`'s defaults once with each ops per round (the order flips every round) and reports
the training time up to the first epoch whose test accuracy reaches the target, and the median of
the per-round hand / native ratios.
"""

import math
import statistics

from common import alternate, parser, ratio, ratio_spread, table, write

import train


def main():
    p = parser(__doc__)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--target", type=float, default=98.0)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    base = ["--quiet", "--no-log", "--device", args.device]
    if args.data_dir:
        base += ["--data-dir", args.data_dir]
    if args.smoke:
        base += ["--epochs", "1", "--limit-train", "256", "--hidden", "16", "--no-download"]
        args.target, args.rounds = 0.0, 1
    runs = {"hand": [], "native": []}

    def seconds_to_target(kind):
        def run():
            out = train.main(base + ["--ops", kind])
            elapsed, reached = 0.0, None
            for h in out["history"]:
                elapsed += h["seconds"]
                if h["test_acc"] >= args.target:
                    reached = {"seconds": elapsed, "epoch": h["epoch"], "test_acc": h["test_acc"]}
                    break
            runs[kind].append({"reached": reached, "final_acc": out["test_acc"]})
            return reached["seconds"] if reached else math.nan

        return run

    times = alternate({kind: seconds_to_target(kind) for kind in runs}, args.rounds)
    rows = []
    for kind, results in runs.items():
        epochs = [r["reached"]["epoch"] for r in results if r["reached"]]
        rows.append([kind, statistics.median(times[kind]), ",".join(map(str, epochs)) or "not reached",
                     ",".join(f"{r['final_acc']:.2f}" for r in results), ""])
    r, (q1, q3) = ratio(times), ratio_spread(times)
    rows.append(["hand / native (median of per-round ratios)", r, "", "", f"{q1:.3f}-{q3:.3f}"])
    write("time_to_98", args, {"target": args.target, "runs": runs, "seconds": times, "ratio": r,
                               "ratio_quartiles": [q1, q3]},
          table(["ops", f"seconds to {args.target:g}%", "epoch reached", "final test acc %", "middle half of rounds"], rows))


if __name__ == "__main__":
    main()
