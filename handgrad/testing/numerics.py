"""Comparisons and derivatives: a tensor against the truth at a tolerance (naming the worst element),
Jacobians by backward and by central differences, seeded incoming gradients and tangents.

Tolerances (rtol, atol) per dtype are :data:`TOLERANCES`; in a lower precision a Function also
passes where it is at most :data:`SLACK` times as far from the float64 truth as the reference
itself is in that dtype at the same element.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .nodes import tensor_outputs
from .report import Fail
from .variants import copy

__all__ = ["TOLERANCES", "SLACK", "compare", "compare_all"]

#: (rtol, atol) for values and gradients in each dtype. float64 and float32 as handgrad's own
#: matrix has always used them; bfloat16 and float16 about two units in the last place in rtol and
#: one at 1 in atol (a sum of O(1) terms that cancels keeps the absolute error of its terms).
TOLERANCES = {
    torch.float64: (1e-12, 1e-10),
    torch.float32: (1e-5, 1e-5),
    torch.bfloat16: (1.6e-2, 8e-3),
    torch.float16: (2e-3, 1e-3),
}
#: in a lower precision, a Function may be this many times as far from the truth as the reference, element by element
SLACK = 4.0
#: without a reference, a lower precision is compared with the Function's own float64 result, allowing
#: this many units in the last place of the dtype at the largest |value| (its own rounding, honestly bounded)
ULPS_WITHOUT_REFERENCE = 4

# NOTE: gradcheck's step and tolerances, as handgrad's own matrix has always used them.
EPS, ATOL, RTOL = 1e-6, 1e-5, 1e-3
# NOTE: batched, undefined-gradient and compiled results differ from the plain ones only by
# summation order, so they are compared almost exactly.
CLOSE = (1e-9, 1e-12)


def index(shape, flat: int) -> str:
    if not shape:
        return ""
    return "[" + ", ".join(str(i) for i in unravel(int(flat), tuple(shape))) + "]"


def show(x) -> str:
    return f"{float(x):.8g}"


def pair(a, b) -> tuple[str, str]:
    """``a`` and ``b`` with as many significant digits as it takes to tell them apart (8 to 17)."""
    a, b = float(a), float(b)
    for digits in range(8, 18):
        sa, sb = f"{a:.{digits}g}", f"{b:.{digits}g}"
        if sa != sb or a == b or a != a or b != b:
            return sa, sb
    return sa, sb


def gaps(a, b) -> str:
    """'abs error 3.1e-09, rel error 5.3e-09' for two finite numbers."""
    a, b = float(a), float(b)
    rel = abs(a - b) / abs(b) if b else float("inf")
    return f"abs error {abs(a - b):.2g}, rel error {rel:.2g}"


def where(args, shape, flat) -> str:
    """' where input i = v' for the first input of the output's shape (an elementwise op's own input)."""
    for i, a in enumerate(args):
        if isinstance(a, torch.Tensor) and a.shape == shape and a.numel():
            return f" where input {i} = {show(a.detach().reshape(-1)[flat])}"
    return ""


def compare(what, hand, truth, tol, own=None, args=()) -> tuple[bool, float, str]:
    """Is ``hand`` ``truth`` up to ``tol`` = (rtol, atol)? Returns (ok, max |hand - truth|, the worst element).

    Non-finite values must sit where ``own`` (the reference in the same dtype) or ``truth`` has
    them, and be equal. Elsewhere |hand - truth| must be ≤ atol + rtol |truth|, or ≤ SLACK times
    |own - truth| at the same element when given.
    """
    if hand.shape != truth.shape or (own is not None and hand.dtype != own.dtype):
        kind = "dtype" if hand.shape == truth.shape else "shape"
        theirs = own.dtype if kind == "dtype" else tuple(truth.shape)
        mine = hand.dtype if kind == "dtype" else tuple(hand.shape)
        return False, float("inf"), f"{what}: {kind} {mine}, the reference's is {theirs}"
    if hand.numel() == 0:
        return True, 0.0, ""
    rtol, atol = tol
    h, t = hand.detach().double().reshape(-1), truth.detach().double().reshape(-1)
    pattern = own.detach().double().reshape(-1) if own is not None else t
    special = ~torch.isfinite(pattern) | ~torch.isfinite(h)
    if special.any():  # NOTE: the usual all-finite case needs none of this (the same result, fewer tensor ops)
        same = (h == pattern) | (h.isnan() & pattern.isnan())
        # NOTE: finite where the reference overflowed in a low precision is fine if it is the truth
        truthful = torch.isfinite(h) & torch.isfinite(t) & ((h - t).abs() <= atol + rtol * t.abs())
        wrong = special & ~same & ~truthful
        if wrong.any():
            k = int(wrong.nonzero()[0])
            mine, theirs = pair(h[k], pattern[k])
            return False, float("inf"), f"{what}{index(hand.shape, k)}: hand {mine}, reference {theirs}{where(args, hand.shape, k)}"
        finite = (~special | truthful) & torch.isfinite(t)
    else:
        finite = torch.isfinite(t)
    if not finite.any():
        return True, 0.0, ""
    zero = torch.zeros_like(h)
    gap = torch.where(finite, (h - t).abs(), zero)
    allowed = atol + rtol * t.abs()
    theirs = zero
    if own is not None:
        o = own.detach().double().reshape(-1)
        theirs = torch.where(finite & torch.isfinite(o), (o - t).abs(), zero)
    # NOTE: element by element: where the reference is exact, so must fn be (a zero tolerance stays exact)
    over = ratio(gap, torch.maximum(allowed, SLACK * theirs))
    k = int(over.argmax())
    ok = float(over[k]) <= 1.0
    mention = (f"; the reference's own error there is {float(ratio(theirs[k], allowed[k])):.3g}x"
               if SLACK * theirs[k] > allowed[k] else "")
    mine, theirs = pair(h[k], t[k])
    detail = "" if ok else (f"{what}{index(hand.shape, k)}: hand {mine}, reference {theirs} "
                            f"({gaps(h[k], t[k])}; off by {float(ratio(gap[k], allowed[k])):.3g}x the tolerance rtol={rtol:g}, "
                            f"atol={atol:g}{mention}){where(args, hand.shape, k)}")
    # NOTE: the error shown is absolute for |truth| ≤ 1 and relative above, so huge values read sensibly.
    return ok, float((gap / t.abs().clamp_min(1)).max()), detail


def ratio(gap, bound):
    """gap / bound, with 0 / 0 = 0 (an exact match under a zero tolerance) and gap / 0 = inf."""
    return torch.where(gap == 0, torch.zeros_like(gap), gap / bound)


def compare_all(names, hands, truths, tol, owns=None, args=()) -> tuple[bool, float, str]:
    """:func:`compare` over lists of tensors, ``names[k]`` naming the k-th (``tol``: one, or a list of one per tensor)."""
    if len(hands) != len(truths):
        return False, float("inf"), f"{len(hands)} tensors, the reference gives {len(truths)}"
    owns = owns if owns is not None else [None] * len(hands)
    tols = tol if isinstance(tol, list) else [tol] * len(hands)
    ok, err, details = True, 0.0, []
    for name, h, t, o, tl in zip(names, hands, truths, owns, tols):
        good, e, detail = compare(name, h, t, tl, o, args)
        ok, err = ok and good, max(err, e)
        if detail:
            details.append(detail)
    return ok, err, "; ".join(details)


def out_names(n: int, prefix: str = "out") -> list[str]:
    return [prefix] if n == 1 else [f"{prefix}{k}" for k in range(n)]


def randn_like(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return torch.randn(x.shape, generator=gen, dtype=torch.float64).to(device=x.device, dtype=x.dtype)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def cotangent(out: torch.Tensor, gen: torch.Generator, extreme: bool = False) -> torch.Tensor:
    """A seeded normal incoming gradient for ``out``; ``extreme``: inf at every 4th element from the 2nd, NaN from the 4th."""
    grad = randn_like(out, gen)
    if extreme:
        flat = grad.view(-1)
        if flat.numel() <= 1:
            flat.fill_(float("inf"))
        flat[1::4] = float("inf")
        flat[3::4] = float("nan")
    return grad


def split(fn, args, diff) -> Callable:
    """``fn`` as a function of the inputs to differentiate only, returning its tensor outputs."""

    def f(*xs):
        full = list(args)
        for i, x in zip(diff, xs):
            full[i] = x
        return tensor_outputs(fn(*full))

    return f


def zeros_for_none(grads, like) -> list[torch.Tensor]:
    return [torch.zeros_like(x) if g is None else g for g, x in zip(grads, like)]


def jacobians(f, xs, eps=EPS):
    """[(output k, input j, J_backward, J_finite-differences)], each J of shape (out.numel(), x.numel())."""
    outs = floats(f(*xs))
    numeric = numerical(f, xs, eps, len(outs))
    result = []
    for k, out in enumerate(outs):
        rows = analytical_rows(out, xs)
        for j, x in enumerate(xs):
            analytic = torch.stack([r[j] for r in rows]) if rows else x.new_zeros(0, x.numel())
            result.append((k, j, analytic, numeric[k][j].to(analytic)))
    return result


def analytical_rows(out, xs) -> list[list[torch.Tensor]]:
    """Row m of each input's Jacobian: the gradients for a one-hot incoming gradient at output element m.

    NOTE: all rows in one batched backward (``is_grads_batched``) where backward allows it, else one
    backward per row: the same numbers, 1/n of the calls.
    """
    n = out.numel()
    if not out.requires_grad:
        return [[torch.zeros_like(x).reshape(-1) for x in xs] for _ in range(n)]
    if n > 1:
        try:
            eye = torch.eye(n, dtype=out.dtype, device=out.device).reshape(n, *out.shape)
            batched = torch.autograd.grad(out, xs, eye, retain_graph=True, allow_unused=True, is_grads_batched=True)
            batched = [b if b is not None else torch.zeros(n, *x.shape, dtype=x.dtype, device=x.device)
                       for b, x in zip(batched, xs)]
            return [[b[m].reshape(-1) for b in batched] for m in range(n)]
        except Exception:  # noqa: BLE001, S110 - a backward vmap cannot run (in-place, .item(), numpy): one at a time
            pass
    rows = []
    for m in range(n):
        onehot = torch.zeros_like(out).reshape(-1)
        onehot[m] = 1
        g = torch.autograd.grad(out, xs, onehot.reshape(out.shape), retain_graph=True, allow_unused=True)
        rows.append([z.reshape(-1) for z in zeros_for_none(g, xs)])
    return rows


def unravel(flat: int, shape) -> tuple[int, ...]:
    """The index of element ``flat`` of a row-major tensor of ``shape`` (torch.unravel_index, without tensors)."""
    out = []
    for size in reversed(shape):
        flat, i = divmod(flat, size)
        out.append(i)
    return tuple(reversed(out))


def numerical(f, xs, eps, n_outs) -> list[list[torch.Tensor]]:
    """[k][j]: column m is (f(x + eps e_m) - f(x - eps e_m))_k / 2 eps for input j (central differences).

    NOTE: one pair of calls per input element serves every output; each call gets fresh copies, so
    a Function that writes into its inputs cannot shift the next column.
    """
    cols = [[[] for _ in xs] for _ in range(n_outs)]
    for j, x in enumerate(xs):
        for m in range(x.numel()):
            index = unravel(m, x.shape)
            values = []
            for step in (eps, -eps):
                moved = [copy(y).requires_grad_(y.requires_grad) for y in xs]
                with torch.no_grad():
                    moved[j][index] += step
                values.append([o.detach().reshape(-1) for o in floats(f(*moved))])
            for k in range(n_outs):
                cols[k][j].append((values[0][k] - values[1][k]) / (2 * eps))
    base = floats(f(*(copy(y).requires_grad_(y.requires_grad) for y in xs))) if any(x.numel() == 0 for x in xs) else None
    return [[torch.stack(cols[k][j], dim=1) if cols[k][j] else
             torch.zeros(base[k].numel(), 0, dtype=x.dtype, device=x.device) for j, x in enumerate(xs)]
            for k in range(n_outs)]


def floats(outs) -> list[torch.Tensor]:
    return [o for o in outs if o.is_floating_point()]


def worst_jacobian(jacs, out_names, out_shapes, in_names, in_shapes, atol=ATOL, rtol=RTOL) -> tuple[float, str]:
    """The largest |J_backward - J_numerical| and the entry furthest outside gradcheck's tolerance."""
    # NOTE: a local named num below is a Jacobian; show() formats numbers
    err, worst, detail = 0.0, -float("inf"), ""
    for k, j, an, num in jacs:
        if an.numel() == 0:
            continue
        gap = (an - num).abs()
        err = max(err, float(gap.max()))
        excess = (gap - (atol + rtol * num.abs())).reshape(-1)
        flat = int(excess.argmax())
        if float(excess[flat]) > worst:
            worst = float(excess[flat])
            r, c = divmod(flat, an.shape[1])
            detail = (f"d {out_names[k]}{index(out_shapes[k], r)} / d {in_names[j]}{index(in_shapes[j], c)}: "
                      "hand {}, numerical {}".format(*pair(an[r, c], num[r, c])) + f" ({gaps(an[r, c], num[r, c])})")
    return err, detail if worst > 0 else ""


def jacobian_mismatch(jacs, out_names, out_shapes, in_names, in_shapes, what="Jacobian mismatch") -> str | None:
    """None when every J_backward entry is within gradcheck's tolerance of J_numerical, else the first mismatch.

    The criterion is gradcheck's own (``torch.allclose(J_backward, J_numerical, rtol, atol)``: NaN
    never matches, equal infinities do), applied to the Jacobians the engine has already computed,
    so torch's gradcheck need not compute them a second time.
    """
    for k, j, an, num in jacs:
        if an.numel() == 0 or torch.allclose(an, num, rtol=RTOL, atol=ATOL):
            continue
        flat = int((~torch.isclose(an, num, rtol=RTOL, atol=ATOL)).reshape(-1).nonzero()[0])
        r, c = divmod(flat, an.shape[1])
        return (f"{what} for output {k} with respect to input {j}: d {out_names[k]}{index(out_shapes[k], r)} / "
                f"d {in_names[j]}{index(in_shapes[j], c)}: hand {show(an[r, c])}, numerical {show(num[r, c])}")
    return None


def reentrant(outs, xs, gen) -> str | None:
    """gradcheck's reentrancy test: backward twice with the same incoming gradients must give the same gradients."""
    douts = [o for o in floats(outs) if o.requires_grad]
    if not douts or not xs:
        return None
    vs = [randn_like(o, gen) for o in douts]
    first, second = (zeros_for_none(torch.autograd.grad(douts, xs, [v.clone() for v in vs], retain_graph=True,
                                                         allow_unused=True), xs) for _ in range(2))
    if all(bool(((a == b) | (a.isnan() & b.isnan())).all()) for a, b in zip(first, second)):  # NOTE: NaN twice is the same
        return None
    return ("Backward is not reentrant: running backward with the same input and grad_output twice gives different "
            "values (a backward that changes its saved tensors or ctx state)")


def constant_factor(jacs) -> float | None:
    """c when J_backward = c J_numerical everywhere (c not 1): the signature of a missing or extra factor."""
    ratios = []
    for _, _, an, num in jacs:
        big = num.abs() > 1e-4
        if ((an.abs() > 1e-4) & ~big).any():
            return None
        ratios.append((an[big] / num[big]).reshape(-1))
    ratios = torch.cat(ratios) if ratios else torch.zeros(0)
    if ratios.numel() == 0:
        return None
    c = float(ratios.median())
    if abs(c - 1) < 1e-3 or float((ratios - c).abs().max()) > 1e-3 * max(abs(c), 1e-3):
        return None
    return c




def close_batches(batched, looped, what) -> float:
    """Largest difference of ``batched[i][k]`` from ``looped[k][i]``; Fail when not almost equal."""
    err = 0.0
    for i, b in enumerate(batched):
        for k, lo in enumerate(looped):
            ok, e, detail = compare(f"[batch {k}] result {i}", b[k], lo[i], CLOSE)
            err = max(err, e)
            if not ok:
                raise Fail(f"{what}: {detail.replace('reference', 'loop')}", e)
    return err

