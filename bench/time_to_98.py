"""Time to 98% test accuracy with the default configuration, hand vs native.

    python bench/time_to_98.py --data-dir ../shared/data

Runs `train.py`'s defaults once with each ops (alternating, --rounds times) and reports the
training time up to the first epoch whose test accuracy reaches the target.
"""

import statistics

from common import parser, table, write

import train


def main():
    p = parser(__doc__)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--target", type=float, default=98.0)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    base = ["--quiet", "--no-log", "--device", args.device]
    if args.data_dir:
        base += ["--data-dir", args.data_dir]
    if args.smoke:
        base += ["--epochs", "1", "--limit-train", "256", "--hidden", "16", "--no-download"]
        args.target, args.rounds = 0.0, 1
    results = {"hand": [], "native": []}
    for _ in range(args.rounds):
        for kind in ("hand", "native"):
            out = train.main(base + ["--ops", kind])
            elapsed, reached = 0.0, None
            for h in out["history"]:
                elapsed += h["seconds"]
                if h["test_acc"] >= args.target:
                    reached = {"seconds": elapsed, "epoch": h["epoch"], "test_acc": h["test_acc"]}
                    break
            results[kind].append({"reached": reached, "final_acc": out["test_acc"]})
    rows = []
    med = {}
    for kind, runs in results.items():
        secs = [r["reached"]["seconds"] for r in runs if r["reached"]]
        med[kind] = statistics.median(secs) if secs else float("nan")
        epochs = [r["reached"]["epoch"] for r in runs if r["reached"]]
        rows.append([kind, med[kind], ",".join(map(str, epochs)) or "not reached",
                     ",".join(f"{r['final_acc']:.2f}" for r in runs)])
    ratio = med["hand"] / med["native"]
    rows.append(["hand / native", ratio, "", ""])
    write("time_to_98", args, {"target": args.target, "runs": results, "ratio": ratio},
          table(["ops", f"seconds to {args.target:g}%", "epoch reached", "final test acc %"], rows))


if __name__ == "__main__":
    main()
