"""Likely causes: each failure pattern of a report, and the usual mistake behind it (data; each tested).

A hint is (name, when, text): ``when(report)`` says whether the pattern is there, ``text`` may name
what the failing cell measured (``{factor}`` for a gradient off by a constant factor).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .report import Report, Result

__all__ = ["HINTS", "Hint", "likely_causes"]


@dataclass(frozen=True)
class Hint:
    name: str
    when: Callable[[Report], bool]
    text: str


def _bad(report: Report, check: str | None = None, words: str = "") -> list[Result]:
    """The FAIL cells of ``check`` whose message has ``words`` (an ERROR says its own cause)."""
    return [r for r in report.results if r.status == "FAIL" and (check is None or r.check == check) and words in r.message]


def _only_on(report: Report, marks: tuple[str, ...]) -> bool:
    """Something fails, and only on rows whose label contains one of ``marks``."""
    bad = report.failed()
    return bool(bad) and all(any(m in r.row for m in marks) for r in bad)


def _factor(report: Report) -> float | None:
    return next((r.facts["factor"] for r in _bad(report, "grad") if "factor" in r.facts), None)


def _extremes_only(report: Report) -> bool:
    bad = [r for r in report.results if r.status == "FAIL" and r.check in ("grad", "values")]
    return (bool(bad) and all("extremal" in r.row for r in bad)
            and any(w in r.message for r in bad for w in ("hand nan", "hand inf", "hand -inf")))


HINTS: list[Hint] = [
    Hint("unsummed broadcast",
         lambda r: bool(_bad(r, "shapes", "sums it silently")) and not _bad(r, "grad"),
         "a broadcast input's gradient was not summed back to its shape: sum it over the broadcast "
         "dimensions (grad.sum_to_size(input.shape))"),
    Hint("constant factor", lambda r: _factor(r) is not None,
         "the gradient is {factor:.4g} times the true one everywhere: a constant factor is missing or extra in "
         "backward (the 2 of x², the 1/n of a mean, a sign)"),
    Hint("not differentiable", lambda r: bool(_bad(r, "gradgrad")) and not _bad(r, "grad"),
         "backward is not differentiable: write it in torch ops on the saved tensors (no .detach(), .item() or "
         "numpy), or mark it @once_differentiable"),
    Hint("overflow at extremes", _extremes_only,
         "NaN or inf only at extreme inputs: the formula overflows there; compute from the saved output "
         "(e.g. y(1 - y) for a sigmoid) or in a stable form"),
    Hint("grad_output in place", lambda r: bool(_bad(r, "untouched", "incoming gradient")),
         "backward modifies grad_output in place (e.g. grad_output[x < 0] = 0): autograd may hand the same "
         "tensor to other nodes; clone it first or compute out of place"),
    Hint("input in place", lambda r: bool(_bad(r, "untouched", "writes into input")),
         "an input is written in place (x.mul_(...), x[...] = ...): the caller's tensor changes, and a saved "
         "one breaks backward; work on x.clone()"),
    Hint("batch of one", lambda r: _only_on(r, ("batch 1",)),
         "only a batch of one fails: a squeeze() without a dimension also removed the batch dimension; name "
         "the dimension (squeeze(-1))"),
    Hint("memory layout", lambda r: _only_on(r, ("transposed", "strided")),
         "only non-contiguous inputs fail: the code assumes contiguous memory; use .reshape instead of .view, "
         "or call .contiguous()"),
    Hint("lower precision only", lambda r: _only_on(r, ("float32", "bfloat16", "float16")) and not _bad(r, "shapes_ac"),
         "only the lower precisions fail: the forward loses precision there; compute internally in float32 "
         "and cast the result back"),
    Hint("needs_input_grad", lambda r: bool(_bad(r, "needs_grad")),
         "backward computes gradients nobody asked for: guard each with `if ctx.needs_input_grad[i]:` and "
         "return None otherwise (it is also the main speed lever)"),
    Hint("ctx attribute", lambda r: bool(_bad(r, "saved", "ctx attributes")),
         "tensors stored on ctx (ctx.y = y) instead of ctx.save_for_backward(y)"),
    Hint("saves more", lambda r: bool(_bad(r, "saved", "bytes")),
         "saves more than the reference: save what backward uses and nothing else, and prefer the output "
         "where the derivative can be written with it"),
    Hint("autocast", lambda r: bool(_bad(r, "shapes_ac")),
         "under autocast the forward's output, and so grad_output, is in the autocast dtype: cast each "
         "gradient back to its input's dtype, or record the autocast state in forward and run backward under it"),
    Hint("undefined gradient", lambda r: bool(_bad(r, "undef")),
         "backward does not treat an undefined (None) grad_output as zeros: keep ctx.set_materialize_grads(True) "
         "(the default) or handle None"),
    Hint("jvp", lambda r: bool(_bad(r, "fwd_ad")) and not _bad(r, "grad"),
         "jvp disagrees with the derivative backward computes: check jvp's formula (and that it uses "
         "ctx.save_for_forward's tensors)"),
]


def likely_causes(report: Report) -> list[str]:
    """The text of every hint whose pattern the report shows."""
    out = []
    for hint in HINTS:
        try:
            if hint.when(report):
                out.append(hint.text.format(factor=_factor(report) or 0.0))
        except Exception:  # noqa: BLE001, S112 - a hint never breaks a report
            continue
    return out
