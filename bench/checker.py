"""handgrad.testing against torch.autograd.gradcheck with every flag, on the same small Functions.

For each Function of the bug corpus (tests/bug_corpus.py: one realistic bug each, and its correct
counterpart) it times and scores

* ``engine``           ``check_function(fn, samples, reference)``: every row and check
* ``engine, no ref``   the same without a reference
* ``gradcheck, all``   ``gradcheck`` with check_batched_grad, check_forward_ad, check_undefined_grad,
                       check_backward_ad, then ``gradgradcheck``: each flag that the Function supports

and prints seconds per Function (median over rounds, measured in alternation) and how many planted
bugs each caught. ``--profile`` prints where the engine's time goes (cProfile, top functions).
``--engine FILE.py`` times another copy of the engine (e.g. the one before a change).

    python bench/checker.py [--rounds 3] [--profile] [--smoke]
"""

from __future__ import annotations

import cProfile
import importlib.util
import pstats
import statistics
import sys
import time
import warnings

import common
import torch

sys.path.insert(0, str(common.ROOT / "tests"))
from bug_corpus import CORPUS  # noqa: E402


def _engine(path: str | None):
    if path is None:
        import handgrad.testing as engine

        return engine
    spec = importlib.util.spec_from_file_location("_engine_under_test", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _flags(cls) -> dict:
    """gradcheck's optional flags, each on where the Function supports what it checks."""
    batched = bool(getattr(cls, "generate_vmap_rule", False)) or cls.vmap is not torch.autograd.Function.vmap
    jvp = cls.jvp is not torch.autograd.Function.jvp
    return dict(check_batched_grad=batched, check_forward_ad=jvp, check_undefined_grad=True, check_backward_ad=True)


def gradcheck_all(cls, samples) -> bool:
    """True when gradcheck (every supported flag) and gradgradcheck pass on every sample."""
    for args in samples:
        xs = tuple(a.detach().clone().double().requires_grad_() if a.is_floating_point() else a for a in args)
        try:
            ok = torch.autograd.gradcheck(cls.apply, xs, raise_exception=False, **_flags(cls))
            ok = ok and torch.autograd.gradgradcheck(cls.apply, xs, raise_exception=False)
        except Exception:  # noqa: BLE001 - a Function gradcheck cannot run is one it did not pass
            ok = False
        if not ok:
            return False
    return True


def _timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main(argv=None) -> None:
    p = common.parser("handgrad.testing against gradcheck with every flag, on the bug corpus")
    p.add_argument("--rounds", type=int, default=3, help="measurements per Function and method (default: 3)")
    p.add_argument("--profile", action="store_true", help="also profile the engine over the corpus")
    p.add_argument("--engine", default=None, metavar="FILE.py", help="another copy of the engine to time")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    engine = _engine(args.engine)
    corpus = CORPUS[:2] if args.smoke else CORPUS
    rounds = 1 if args.smoke else args.rounds
    methods = {
        "engine": lambda cls, s, ref, opt: not engine.check_function(cls.apply, s, ref, **opt).ok,
        "engine, no ref": lambda cls, s, ref, opt: not engine.check_function(cls.apply, s, None, **opt).ok,
        "gradcheck, all flags": lambda cls, s, ref, opt: not gradcheck_all(cls, s),
    }
    seconds = {m: [] for m in methods}
    caught = {m: 0 for m in methods}
    false_alarms = {m: 0 for m in methods}
    # NOTE: torch imports sympy on the first backward given explicit incoming gradients (seconds): not timed
    x = torch.ones(2, requires_grad=True)
    torch.autograd.grad(x * 2, x, torch.ones(2))
    for _, bad, good, samples, ref, options, _, _ in corpus:
        for cls, buggy in ((bad, True), (good, False)):
            calls = {m: (lambda f=f, c=cls, s=samples, r=ref, o=options: _timed(lambda: f(c, s, r, o)))
                     for m, f in methods.items()}
            times = common.alternate(calls, rounds)
            for m, runs in times.items():
                seconds[m].append(statistics.median(t for t, _ in runs))
                flagged = runs[0][1]
                caught[m] += buggy and flagged
                false_alarms[m] += (not buggy) and flagged
    total = {m: sum(v) for m, v in seconds.items()}
    rows = [[m, len(corpus), caught[m], false_alarms[m], total[m], total[m] / (2 * len(corpus)),
             total[m] / total["gradcheck, all flags"]] for m in methods]
    markdown = common.table(["method", "bugs planted", "caught", "false alarms on correct twins", "seconds (all)",
                             "seconds per Function", "x gradcheck"], rows)
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        for _, _, good, samples, ref, options, _, _ in corpus:
            engine.check_function(good.apply, samples, ref, **options)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
    common.write("checker", args, {"seconds": total, "caught": caught, "false_alarms": false_alarms,
                                   "functions": 2 * len(corpus)}, markdown)


if __name__ == "__main__":
    main()
