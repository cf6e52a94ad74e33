"""How strong is the test suite? Apply single-change mutants to the ops and see pytest catch them.

    python tests/mutation.py                 # every mutant in the catalogue (about 15-25 min on 2 cores)
    python tests/mutation.py --only relu     # the mutants whose id contains "relu"
    python tests/mutation.py --list          # the catalogue, without running anything

Not a test (pytest does not collect it) and not run in CI: it runs the suite once per mutant.
Each mutant is one textual change to one file (``find`` must occur exactly once, so the catalogue
cannot silently go stale when the code moves). The change is applied to a scratch copy of the
tracked files, never to this checkout. A mutant is *killed* when ``python -m pytest`` fails:
first the tests most likely to see it (``first``), then, if those pass, the whole suite.
Mutants marked ``equivalent`` change nothing a caller can observe; each says why, and they are
reported apart from the kill rate. The script exits 1 if a non-equivalent mutant survives.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    id: str
    path: str
    find: str
    replace: str
    why: str  # the mistake it stands for
    first: tuple[str, ...] = ()  # pytest arguments for the first, fast pass
    equivalent: str = ""  # why no caller can observe it (then it is not counted)


def _m(id, path, find, replace, why, first=(), equivalent=""):
    return Mutant(id, path, find, replace, why, tuple(first), equivalent)


F = "handgrad/functions.py"

#: the catalogue; see the module docstring
G = "handgrad/_grad_utils.py"
A = "handgrad/autocast.py"
FN = "handgrad/functional.py"


def _ops(*names):
    return ("tests/test_matrix.py", "-k", " or ".join(names))


def _values(test: str, *names):
    """tests/test_autocast_values.py: the tests whose name has ``test`` in it, for ``names`` (all ops if none)."""
    selection = test if not names else f"{test} and ({' or '.join(names)})"
    return ("tests/test_autocast_values.py", "-k", selection)


CATALOGUE: list[Mutant] = [
    # ---- broadcasting and dtypes, shared by every op ----------------------------------------
    _m("sum_to_shape-no-reduction", G, "    if dims:\n        grad = grad.sum(dim=dims, keepdim=True)\n", "",
       "a broadcast gradient returned unsummed", _ops("add", "mul")),
    _m("sum_to_shape-lead-dims-kept", G, "    dims = list(range(lead))\n", "    dims = []\n",
       "leading broadcast dimensions not summed", _ops("add", "mul")),
    _m("grad_like-no-dtype-cast", G, "    return grad if grad.dtype == dtype else grad.to(dtype)",
       "    return grad", "a gradient left in the promoted dtype", _ops("add", "mul", "mse_loss")),
    _m("autocast-saved-ignores-float32-policy", A, "    ctx.computed_in = _compute_dtype(device_type, policy)\n",
       "    ctx.computed_in = ctx.autocast[1]\n", "a loss's backward recomputes in bfloat16 under autocast, not float32",
       _values("first_derivatives", "mse_loss", "cross_entropy", "l2_penalty")),
    _m("autocast-cast-copy-outside-graph", A, "    return tuple(_cast_floating(t, dtype) for t in saved)\n",
       "    with torch.no_grad():\n        return tuple(_cast_floating(t, dtype) for t in saved)\n",
       "backward's cast copies disconnected from the inputs: second derivatives miss them",
       _values("second_derivatives", "affine", "mse_loss", "cross_entropy")),
    _m("cast_back-skipped", A, "    if metas is None:\n        return grads\n    return tuple(",
       "    return grads\n    return tuple(", "gradients not cast back after autocast", _ops("affine", "l2_penalty")),
    # ---- add gate --------------------------------------------------------------------------
    _m("add-grad-b-negated", F, "            grad_b = grad_like(grad, meta_b)", "            grad_b = grad_like(-grad, meta_b)",
       "the add gate flips the sign of one branch", _ops("add")),
    _m("add-grad-a-doubled", F, "            grad_a = grad_like(grad, meta_a)", "            grad_a = grad_like(2 * grad, meta_a)",
       "the add gate scales its gradient", _ops("add")),
    _m("add-jvp-drops-tb", F, "        out = ta if tb is None else tb if ta is None else ta + tb",
       "        out = ta if ta is not None else tb", "forward mode forgets the second tangent", _ops("add")),
    _m("add-ignores-needs-input-grad", F, "        if ctx.needs_input_grad[1]:\n            grad_b = grad_like(grad, meta_b)",
       "        if True:\n            grad_b = grad_like(grad, meta_b)", "a gradient for an input that needs none", _ops("add")),
    # ---- multiply gate ---------------------------------------------------------------------
    _m("mul-no-swap", F, "            grad_a = grad_like(grad * b, meta_a)", "            grad_a = grad_like(grad * a, meta_a)",
       "the multiply gate does not swap its inputs", _ops("mul")),
    _m("mul-grad-b-sign", F, "            grad_b = grad_like(grad * a, meta_b)", "            grad_b = grad_like(-grad * a, meta_b)",
       "wrong sign on one input", _ops("mul")),
    _m("mul-jvp-drops-tb", F, "            out = a * tb if out is None else out + a * tb",
       "            out = a * tb if out is None else out",
       "forward mode forgets b's tangent", _ops("mul")),
    _m("mul-jvp-swapped", F, "            out = ta * b\n", "            out = ta * a\n", "jvp with the operands swapped", _ops("mul")),
    # ---- max gate --------------------------------------------------------------------------
    _m("max-forward-where", F, "        return torch.maximum(a, b)", "        return torch.where(a >= b, a, b)",
       "max that hides a NaN in a", _ops("maximum")),
    _m("max-tie-all-to-a", F, "        return torch.where(mine == other, grad / 2, grad).masked_fill(mine < other, 0)",
       "        return grad.masked_fill(mine < other, 0)", "a tie gives the whole gradient to both sides", _ops("maximum")),
    _m("max-routes-to-smaller", F, ".masked_fill(mine < other, 0)", ".masked_fill(mine > other, 0)",
       "the max gate routes to the smaller input", _ops("maximum")),
    _m("max-jvp-tie-share", F, "        return (a > b).to(dtype) + 0.5 * (a == b).to(dtype)", "        return (a >= b).to(dtype)",
       "forward mode gives a tie wholly to a", _ops("maximum")),
    # ---- ReLU ------------------------------------------------------------------------------
    _m("relu-mask-sign-only", F, "        return y.nan_to_num(1.0).sign_()", "        return y.sign()",
       "ReLU's gradient stops at a NaN input", _ops("relu")),
    _m("relu-forward-leaky", F, "        return x.clamp_min(0)\n", "        return torch.where(x > 0, x, 0.01 * x)\n",
       "a leaky forward with the plain backward", _ops("relu")),
    _m("relu-no-mask", F, "        return grad * ReLU._mask(y).to(grad.dtype)", "        return grad",
       "ReLU passes every gradient", _ops("relu")),
    _m("relu-jvp-no-mask", F, "        return tx * ReLU._mask(y).to(tx.dtype)", "        return tx",
       "ReLU's jvp ignores the mask", _ops("relu")),
    # ---- sigmoid ---------------------------------------------------------------------------
    _m("sigmoid-backward-y-only", F, "        return grad * y * (1 - y)\n\n    @staticmethod\n    def jvp",
       "        return grad * y\n\n    @staticmethod\n    def jvp", "dσ = y instead of y (1 - y)", _ops("sigmoid")),
    _m("sigmoid-jvp-sign", F, "        return tx * y * (1 - y)", "        return tx * y * (y - 1)",
       "forward mode with the wrong sign", _ops("sigmoid")),
    _m("sigmoid-naive-forward", F, "        return x.clamp_max(0).exp_().div_(x.abs().neg_().exp_().add_(1))",
       "        return 1 / (1 + torch.exp(-x))", "the textbook form: e^-x overflows for very negative x", _ops("sigmoid")),
    _m("sigmoid-float16-tail", F, "        return x.clamp_max(0).exp_().div_(x.abs().neg_().exp_().add_(1))",
       "        return x.clamp_max(0).exp_().div_(x.abs().neg_().exp_().add_(1)).clamp_min(1e-7)",
       "float16 tails flushed to a floor (underflow handled wrongly)", _ops("sigmoid")),
    # ---- affine ----------------------------------------------------------------------------
    _m("affine-dx-scaled", F, "            grad_x = grad.matmul(weight)\n",
       "            grad_x = grad.matmul(weight * 1.0001)\n",
       "dX slightly off (a wrong scale)", _ops("affine")),
    _m("affine-db-mean", F, "                grad_b = grad_2d.sum(0)", "                grad_b = grad_2d.mean(0)",
       "db = mean instead of sum over the batch (a missing N)", _ops("affine")),
    _m("affine-dw-missing", F, "            if ctx.needs_input_grad[1]:\n                grad_w = grad_2d.t().matmul(_rows(x))",
       "            if ctx.needs_input_grad[1]:\n                grad_w = grad_2d.t().matmul(_rows(x)) * 0",
       "dW zeroed", _ops("affine")),
    _m("affine-jvp-drops-bias", F, "            tb,\n        ):", "        ):", "forward mode drops the bias tangent", _ops("affine")),
    _m("affine-jvp-drops-weight", F, "            None if tw is None else x.matmul(tw.t()),\n", "",
       "forward mode drops the weight tangent", _ops("affine")),
    _m("affine-saves-nothing-for-dw", F, "        ctx.save_for_backward(x if need_w else None, weight if need_x else None)",
       "        ctx.save_for_backward(x, weight)", "keeps the input alive for nothing (memory)",
       ("tests/test_torch_semantics.py", "-k", "saves")),
    # ---- L2 penalty ------------------------------------------------------------------------
    _m("l2-half-lambda", F, "        scale = grad * ctx.lam\n", "        scale = grad * ctx.lam / 2\n",
       "λ/2 W instead of λ W", _ops("l2_penalty")),
    _m("l2-forward-no-half", F, "        return total * (lam / 2)", "        return total * lam",
       "λ Σ‖W‖² instead of λ/2 Σ‖W‖²", _ops("l2_penalty")),
    _m("l2-only-first-weight", F, "        for w in weights[1:]:\n            total = total + _sum_of_squares(w)\n", "",
       "only the first weight penalized", _ops("l2_penalty")),
    _m("l2-jvp-no-lambda", F, "        return out * ctx.lam\n", "        return out\n", "forward mode without λ", _ops("l2_penalty")),
    # ---- cross-entropy ---------------------------------------------------------------------
    _m("ce-no-mean", F, "        return 1.0 / max(target.numel(), 1)", "        return 1.0",
       "the missing 1/N of a mean loss", _ops("cross_entropy")),
    _m("ce-onehot-sign", F, "        return out.scatter_add(-1, index, (-scale).to(out.dtype).expand(index.shape))",
       "        return out.scatter_add(-1, index, scale.to(out.dtype).expand(index.shape))",
       "softmax + onehot instead of softmax - onehot", _ops("cross_entropy")),
    _m("ce-no-shift", F, "    return logits - logits.amax(dim=-1, keepdim=True).detach()", "    return logits",
       "no max shift: e^z overflows for large logits", _ops("cross_entropy")),
    _m("ce-jvp-no-mean", F, "        return (slope * tlogits).sum(dim=-1).mean()", "        return (slope * tlogits).sum()",
       "forward mode sums where the loss averages", _ops("cross_entropy")),
    _m("ce-shift-not-detached", F, "    return logits - logits.amax(dim=-1, keepdim=True).detach()",
       "    return logits - logits.amax(dim=-1, keepdim=True)",
       "gradient through the max shift", _ops("cross_entropy"),
       equivalent="softmax does not depend on the shift: the gradient through amax sums to 0 per row"),
    # ---- squared error ---------------------------------------------------------------------
    _m("mse-no-2", F, "        return diff * (2.0 / max(diff.numel(), 1))", "        return diff * (1.0 / max(diff.numel(), 1))",
       "dL/da = (a - y)/N, the missing 2", _ops("mse_loss")),
    _m("mse-target-sign", F, "            grad_t = grad_like(-slope, meta_t)", "            grad_t = grad_like(slope, meta_t)",
       "the target's gradient with the prediction's sign", _ops("mse_loss")),
    _m("mse-grad-pred-promoted-dtype", F, "            grad_p = grad_like(slope, meta_p)", "            grad_p = slope",
       "pred's gradient left in the promoted dtype (float64 for a float32 pred)", _values("mixed_dtype", "mse_loss")),
    _m("mse-jvp-drops-target", F, "for u, v, t in ((pred, target, tp), (target, pred, tt)) if t is not None]",
       "for u, v, t in ((pred, target, tp),) if t is not None]", "forward mode forgets the target's tangent", _ops("mse_loss")),
    # ---- the lowercase API's checks --------------------------------------------------------
    _m("ce-target-range-unchecked", FN, "        if low < 0 or high >= classes:", "        if low < 0 or high > classes:",
       "a target equal to C accepted", ("tests/test_errors.py",)),
    _m("ce-target-not-int64", FN, "    if target.dtype != torch.int64:\n        target = target.long()\n", "",
       "small-int class targets passed on as they are (gather wants int64)", _values("small_int")),
    _m("affine-feature-check-off", FN, "    if x.dim() < 1 or x.shape[-1] != weight.shape[1]:", "    if x.dim() < 1:",
       "a shape mismatch reaches torch's raw matmul error", ("tests/test_errors.py",)),
]


# ---------------------------------------------------------------------------------------------
# running
# ---------------------------------------------------------------------------------------------


def _scratch_copy() -> Path:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    dest = Path(tempfile.mkdtemp(prefix="handgrad-mutants-"))
    for name in filter(None, files.decode().split("\0")):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def _pytest(cwd: Path, args: list[str], timeout: float) -> tuple[bool, str]:
    """(passed, the first failing test or the reason) for one pytest run."""
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--no-header", "-rfE", *args]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return False, f"timed out after {timeout:.0f} s"
    if proc.returncode == 0:
        return True, ""
    if proc.returncode == 5:  # the selection collected nothing: not a kill
        return True, ""
    failed = [line for line in proc.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
    return False, (failed[0] if failed else proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else "pytest failed")


def run_mutant(m: Mutant, copy: Path, timeout: float) -> dict:
    target = copy / m.path
    original = target.read_text()
    count = original.count(m.find)
    if count != 1:
        return {"id": m.id, "status": "stale", "detail": f"'find' occurs {count} times in {m.path}"}
    target.write_text(original.replace(m.find, m.replace))
    started = time.perf_counter()
    try:
        passed, detail = _pytest(copy, list(m.first), timeout) if m.first else (True, "")
        stage = "first"
        if passed:
            passed, detail = _pytest(copy, [], timeout)
            stage = "suite"
    finally:
        target.write_text(original)
    status = "survived" if passed else "killed"
    return {"id": m.id, "status": status, "stage": stage if not passed else "", "detail": detail,
            "seconds": round(time.perf_counter() - started, 1), "equivalent": m.equivalent}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="+", default=None, metavar="TEXT", help="mutants whose id contains TEXT")
    p.add_argument("--list", action="store_true", help="print the catalogue and exit")
    p.add_argument("--timeout", type=float, default=900, help="seconds allowed for one pytest run")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args(argv)
    mutants = [m for m in CATALOGUE if not args.only or any(t in m.id for t in args.only)]
    if args.list:
        for m in mutants:
            print(f"{m.id:32s} {m.path:28s} {m.why}" + (f"  [equivalent: {m.equivalent}]" if m.equivalent else ""))
        return 0
    copy = _scratch_copy()
    results = []
    try:
        for i, m in enumerate(mutants, 1):
            r = run_mutant(m, copy, args.timeout)
            results.append(r)
            print(f"[{i}/{len(mutants)}] {m.id:32s} {r['status']:9s} {r.get('seconds', '')}s  {r.get('detail', '')}",
                  flush=True)
    finally:
        shutil.rmtree(copy, ignore_errors=True)
    counted = [r for r in results if not r.get("equivalent")]
    killed = sum(r["status"] == "killed" for r in counted)
    bad = [r for r in counted if r["status"] != "killed"]
    print(f"\n{killed} of {len(counted)} mutants killed by pytest"
          f" ({100.0 * killed / max(len(counted), 1):.0f}%); {len(results) - len(counted)} equivalent mutants not counted")
    for r in results:
        if r.get("equivalent"):
            print(f"  equivalent {r['id']} ({r['status']}): {r['equivalent']}")
    for r in bad:
        print(f"  NOT KILLED {r['id']}: {r['status']} {r.get('detail', '')}")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
