"""Shared pieces of the benchmarks: interleaved timing, machine description, output."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # so that `python bench/x.py` finds train.py and models/

from handgrad.devices import parse_device  # noqa: E402
from handgrad.testing import table  # noqa: E402,F401 - the one table renderer; the benchmarks import it from here
from models.flags import HelpFormatter  # noqa: E402  (train.py's flags: no torch, no training)


class _Parser(argparse.ArgumentParser):
    """Errors, and a --device this machine lacks, are one line and exit status 2 (no usage dump)."""

    def error(self, message: str):
        self.exit(2, f"error: {message}\n")

    def parse_args(self, *args, **kwargs):
        parsed = super().parse_args(*args, **kwargs)
        try:
            parse_device(parsed.device)
        except ValueError as exc:
            self.error(str(exc))
        return parsed


def parser(description: str) -> argparse.ArgumentParser:
    p = _Parser(description=description, formatter_class=HelpFormatter)
    p.add_argument("--smoke", action="store_true", help="smallest settings, to check the script runs")
    p.add_argument("--out", default=None, help="JSON output (default: bench/results/<name>.json)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    return p


def machine(device: str) -> str:
    cpu = platform.processor() or platform.machine()
    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    return f"{os.cpu_count()}-core {cpu} CPU, {torch.get_num_threads()} threads, torch {torch.__version__}"


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def alternate(fns: dict, rounds: int) -> dict[str, list[float]]:
    """Call each fn once per round and collect what it returns (a measurement in seconds).

    The order flips every round, so a slow drift of the machine does not favour either side, and
    each round's measurements are taken back to back: compare them pairwise (:func:`ratio`).
    """
    results = {k: [] for k in fns}
    items = list(fns.items())
    for r in range(rounds):
        for name, fn in items if r % 2 == 0 else items[::-1]:
            results[name].append(fn())
    return results


def interleaved(fns: dict, rounds: int, min_run_time: float) -> dict[str, list[float]]:
    """Median seconds per call of each fn (torch.utils.benchmark), measured in alternation."""
    # NOTE: imported here: on a machine with CUDA_HOME but no GPU it logs a warning at import,
    # which would otherwise precede a one-line --device error
    from torch.utils import benchmark

    def timed(fn):
        return lambda: benchmark.Timer(stmt="fn()", globals={"fn": fn}).blocked_autorange(min_run_time=min_run_time).median

    return alternate({k: timed(fn) for k, fn in fns.items()}, rounds)


def _round_ratios(times: dict[str, list[float]], a: str, b: str) -> list[float]:
    return [x / y for x, y in zip(times[a], times[b])]


def ratio(times: dict[str, list[float]], a: str = "hand", b: str = "native") -> float:
    """The median over rounds of a/b, each round's pair measured back to back."""
    return statistics.median(_round_ratios(times, a, b))


def ratio_spread(times: dict[str, list[float]], a: str = "hand", b: str = "native") -> tuple[float, float]:
    """The quartiles (25%, 75%) of the per-round ratios a/b: how much to trust :func:`ratio`."""
    ratios = _round_ratios(times, a, b)
    if len(ratios) < 2:
        return ratios[0], ratios[0]
    q1, _, q3 = statistics.quantiles(ratios, n=4)
    return q1, q3


def write(name: str, args, payload: dict, markdown: str) -> None:
    print(markdown)
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": name, "machine": machine(args.device), **payload}, indent=2))
    print(f"\n{machine(args.device)}; JSON in {out}")
