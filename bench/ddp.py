"""train.py's samples/s with one and two processes (torchrun, DDP): python bench/ddp.py --data-dir ../shared/data

Each configuration runs train.py in fresh processes, one configuration after another in every
round (the order flips each round). The number is the global samples per second that process 0
prints for the epochs after the first (the batch loop only, evaluation excluded); the median
over the rounds is reported. torchrun sets OMP_NUM_THREADS=1 in every process when it starts
more than one, so "python, 1 process, 1 thread" is the fair single-process comparison for the
two-process row; "python, 1 process" uses torch's default thread count.
"""

import os
import statistics
import subprocess
import sys

import torch
from common import ROOT, alternate, parser, table, write

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node"]
#: name -> (command before train.py, extra environment, processes)
CONFIGS = {
    "python, 1 process": ([sys.executable], {}, 1),
    "python, 1 process, 1 thread": ([sys.executable], {"OMP_NUM_THREADS": "1"}, 1),
    "torchrun, 1 process": ([*TORCHRUN, "1"], {}, 1),
    "torchrun, 2 processes": ([*TORCHRUN, "2"], {}, 2),
}

#: the fair single-process comparison for two processes of one thread each
REFERENCE = "python, 1 process, 1 thread"


def threads(name: str) -> int:
    _, env, processes = CONFIGS[name]
    return 1 if processes > 1 or env.get("OMP_NUM_THREADS") == "1" else torch.get_num_threads()


def samples_per_s(name: str, flags: list[str]) -> float:
    command, env, _ = CONFIGS[name]
    proc = subprocess.run([*command, str(ROOT / "train.py"), *flags], cwd=ROOT, capture_output=True, text=True,
                          timeout=900, env={**os.environ, **env})
    if proc.returncode != 0:
        sys.exit(f"bench/ddp.py: {name} failed (exit {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
    rates = [float(line.split()[-2]) for line in proc.stdout.splitlines() if line.startswith("epoch ")]
    return statistics.median(rates[1:] or rates)


def main():
    p = parser(__doc__)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    epochs, limit, hidden, batches = "3", "20000", "256,128", [128, 512]
    if args.smoke:
        epochs, limit, hidden, batches, args.rounds = "1", "512", "16", [64], 1
    base = ["--quiet", "--no-log", "--device", args.device, "--epochs", epochs, "--limit-train", limit, "--hidden", hidden]
    base += ["--data-dir", args.data_dir] if args.data_dir else ["--no-download"]
    rows, payload = [], {}
    for batch in batches:
        flags = [*base, "--batch-size", str(batch)]
        rates = alternate({name: (lambda n=name, f=flags: samples_per_s(n, f)) for name in CONFIGS}, args.rounds)
        reference = statistics.median(rates[REFERENCE])
        for name, values in rates.items():
            median = statistics.median(values)
            rows.append([name, CONFIGS[name][2], threads(name), batch, median, f"{min(values):.0f}-{max(values):.0f}",
                         median / reference])
        payload[str(batch)] = rates
    write("ddp", args, {"samples_per_s": payload, "epochs": epochs, "limit_train": limit, "hidden": hidden,
                        "rounds": args.rounds},
          table(["configuration", "processes", "threads each", "global batch", "samples/s (median)", "rounds (min-max)",
                 f"vs {REFERENCE}"], rows))


if __name__ == "__main__":
    main()
