"""TensorBoard logging overhead at the default settings: python bench/tb_logging.py

Trains the default MLP with logging on (defaults: statistics every 50 steps, histograms each
epoch) and off, alternating, and reports the ratio of training times.
"""

import statistics
import tempfile

from common import parser, table, write

import train


def main():
    p = parser(__doc__)
    p.add_argument("--data-dir", default=None)
    args = p.parse_args()
    rounds = 1 if args.smoke else 3
    base = ["--epochs", "1", "--quiet", "--device", args.device, "--seed", "0"]
    if args.data_dir:
        base += ["--data-dir", args.data_dir]
    if args.smoke:
        base += ["--limit-train", "256", "--hidden", "16", "--log-every", "2", "--no-download"]
    times = {"on": [], "off": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for mode in ("off", "on"):
                extra = ["--no-log"] if mode == "off" else ["--logdir", f"{tmp}/run{r}"]
                out = train.main(base + extra)
                times[mode].append(out["train_seconds"])
    overhead = statistics.median(on / off for on, off in zip(times["on"], times["off"])) - 1
    rows = [["logging off", statistics.median(times["off"])], ["logging on (defaults)", statistics.median(times["on"])],
            ["overhead", f"{100 * overhead:.1f}%"]]
    write("tb_logging", args, {"seconds": times, "overhead": overhead},
          table(["run (1 epoch)", "training seconds"], rows))


if __name__ == "__main__":
    main()
