"""Every benchmark in one command: python bench/all.py --data-dir ../shared/data [--device cuda]

Runs the scripts one after another, each in its own process (so that they never compete for the
machine), prints their tables, and leaves their JSON in bench/results/ (or --out-dir). Exits 1 if
any of them failed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: every benchmark script, in the order the README's Performance section lists them
BENCHMARKS = ("ops", "step", "autocast_step", "memory", "data", "tb_logging", "time_to_98", "ddp", "checker")
#: the scripts that read MNIST and take --data-dir
NEEDS_DATA = frozenset({"data", "tb_logging", "time_to_98", "ddp"})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None, help="MNIST root for the benchmarks that read it")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS), metavar="NAME",
                   help=f"run only these ({', '.join(BENCHMARKS)})")
    p.add_argument("--smoke", action="store_true", help="smallest settings, to check the scripts run")
    p.add_argument("--out-dir", default=None, help="where the JSON goes (default: bench/results/)")
    args = p.parse_args(argv)
    failed = []
    for name in (b for b in BENCHMARKS if b in args.only):
        cmd = [sys.executable, str(HERE / f"{name}.py"), "--device", args.device]
        if args.smoke:
            cmd.append("--smoke")
        if args.out_dir:
            cmd += ["--out", str(Path(args.out_dir) / f"{name}.json")]
        if name in NEEDS_DATA and args.data_dir:
            cmd += ["--data-dir", args.data_dir]
        print(f"\n## {name}\n", flush=True)
        if subprocess.call(cmd) != 0:
            failed.append(name)
    if failed:
        print(f"\nbench/all.py: {', '.join(failed)} failed.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
