"""The rows: the variants made from each sample (float64, transposed, strided, 0-d, empty, batch sizes,
extremal values, lower precisions), and the copying that keeps every run on tensors of its own."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["DTYPES", "VARIANTS", "Row", "rows_of"]

#: the lower precisions checked by default
DTYPES = (torch.float32, torch.bfloat16, torch.float16)
#: the generated rows (0-d and empty only for elementwise functions, batch sizes only for the others,
#: extremal only with a reference)
VARIANTS = ("transposed", "strided", "0-d", "empty", "batch", "extremal")
SHORT = {torch.float64: "float64", torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


@dataclass
class Row:
    label: str
    args: tuple
    diff: tuple[int, ...]  # positions of the inputs to differentiate
    dtype: torch.dtype  # the least precise float dtype among the inputs: the row's tolerance
    # "exact" (float64: the numerical checks), "parity" (float64 or as given, compared with the
    # reference only), "dtype" (a lower precision made from the sample) or "extremal"
    kind: str
    first: bool = False  # the sample's first row on its device: saved and compile run here
    variant: str = ""  # the generated variant ("transposed", "batch 1", "float32", ...); "" for the sample itself


def is_float(x) -> bool:
    return isinstance(x, torch.Tensor) and x.is_floating_point()


def diff_positions(args) -> tuple[int, ...]:
    marked = tuple(i for i, a in enumerate(args) if is_float(a) and a.requires_grad)
    return marked or tuple(i for i, a in enumerate(args) if is_float(a))


def strided_like(like: torch.Tensor, dtype=None, device=None) -> torch.Tensor:
    """Zeros with ``like``'s shape and strides (a view into a fresh buffer when they are not dense)."""
    dtype, device = dtype or like.dtype, device or like.device
    if like.is_contiguous() or like.numel() == 0 or 0 in like.stride():
        # NOTE: overlapping strides (an expanded tensor) cannot be written to: such inputs get a dense copy.
        return torch.zeros(like.shape, dtype=dtype, device=device)
    size = 1 + sum((n - 1) * s for n, s in zip(like.shape, like.stride()))
    return torch.zeros(size, dtype=dtype, device=device).as_strided(like.shape, like.stride())


def copy(x: torch.Tensor, dtype=None, device=None, values=None) -> torch.Tensor:
    """A detached copy of ``x`` (or of ``values``) in ``dtype`` on ``device``, with ``x``'s strides."""
    if values is None and dtype in (None, x.dtype) and device in (None, x.device) and x.is_contiguous():
        # NOTE: the common case (every finite-difference step copies every input) in one call, same strides
        return x.detach().clone(memory_format=torch.contiguous_format)
    out = strided_like(x, dtype, device)
    with torch.no_grad():
        out.copy_(x if values is None else values)
    return out.detach()


def fresh(args, diff, needs=None) -> tuple:
    """New leaves for the inputs to differentiate (``needs`` of them requiring grad), copies of the other tensors.

    NOTE: every run gets tensors of its own, so that a Function writing into one (an integer target,
    an input) cannot change what the reference or the next check sees.
    """
    needs = diff if needs is None else needs
    return tuple(copy(a).requires_grad_(i in needs) if i in diff else a.clone() if isinstance(a, torch.Tensor) else a
                 for i, a in enumerate(args))


def map_floats(args, f) -> tuple:
    return tuple(f(a) if is_float(a) else a for a in args)


def map_tensors(args, f) -> tuple:
    return tuple(f(a) if isinstance(a, torch.Tensor) else a for a in args)


def transposed(x: torch.Tensor) -> torch.Tensor:
    if x.dim() < 2 or x.shape[-1] < 2 or x.shape[-2] < 2:
        return x
    return x.transpose(-1, -2).contiguous().transpose(-1, -2)


def strided(x: torch.Tensor) -> torch.Tensor:
    if x.dim() < 1 or x.shape[-1] < 2:
        return x
    # NOTE: every other element of a buffer one wider than 2n, so that no dimension can be merged
    # with the next (a plain stride-2 view of a 2n-wide buffer still flattens with .view(-1)).
    n = x.shape[-1]
    buffer = torch.zeros(*x.shape[:-1], 2 * n + 1, dtype=x.dtype, device=x.device)
    buffer[..., : 2 * n : 2] = x
    return buffer[..., : 2 * n : 2]


def specials(dtype) -> list[float]:
    info = torch.finfo(dtype)
    return [float("nan"), float("inf"), float("-inf"), info.max / 4, -info.max / 4, info.tiny, -info.tiny]


def with_extremes(args, diff) -> tuple:
    """Each input to differentiate with the special values written in, input k from position 7k on."""
    out = list(args)
    for k, i in enumerate(diff):
        flat = args[i].detach().clone().reshape(-1)
        values = specials(flat.dtype)
        for s, value in enumerate(values[: flat.numel()]):
            flat[(k * len(values) + s) % flat.numel()] = value
        out[i] = flat.reshape(args[i].shape)
    return tuple(out)


def describe(args, float_dtypes: bool = False) -> str:
    """'(3, 4) int64(3,) 2.0': shapes, with the dtype of non-float tensors (of every tensor with ``float_dtypes``)."""
    parts = []
    for a in args:
        if isinstance(a, torch.Tensor):
            shape = "(" + ", ".join(map(str, a.shape)) + ("," if a.dim() == 1 else "") + ")"
            named = not a.is_floating_point() or float_dtypes
            parts.append(f"{str(a.dtype).replace('torch.', '')}{shape}" if named else shape)
        else:
            parts.append(repr(a))
    return " ".join(parts)


def coarsest(args) -> torch.dtype:
    """The least precise float dtype among ``args`` (float64 when there is none)."""
    dtypes = [a.dtype for a in args if is_float(a)]
    return max(dtypes, key=lambda d: torch.finfo(d).eps) if dtypes else torch.float64


def rows_of(label, args, device, *, elementwise, dtypes, variants, extremal, as_given=False, numerical=True) -> list[Row]:
    """Every row of one sample on one device (see the module docstring)."""
    diff = diff_positions(args)
    suffix = "" if device.type == "cpu" else f" {device.type}"
    exact = "exact" if numerical else "parity"
    if as_given:
        given = map_tensors(args, lambda t: copy(t, None, device))
        dtype = coarsest(given)
        return [Row(f"{label}{suffix}", given, diff, dtype, exact if dtype == torch.float64 else "parity", first=True)]
    base = map_tensors(args, lambda t: copy(t, torch.float64 if t.is_floating_point() else None, device))
    rows = [Row(f"{label} float64{suffix}", base, diff, torch.float64, exact, first=True)]

    def add(name, new_args, dtype=torch.float64, kind=exact):
        rows.append(Row(f"{label} {name}{suffix}", new_args, diff, dtype, kind, variant=name))

    for name, make in (("transposed", transposed), ("strided", strided)):
        if name in variants:
            new = map_floats(base, make)
            if any(not new[i].is_contiguous() for i in diff):
                add(name, new)
    tensors = [a for a in base if isinstance(a, torch.Tensor)]
    if elementwise and "0-d" in variants and all(t.numel() for t in tensors):
        add("0-d", map_tensors(base, lambda t: t.reshape(-1)[0].clone()))
    if elementwise and "empty" in variants:
        add("empty", map_tensors(base, lambda t: t.reshape(-1)[:0].clone()))
    if not elementwise and "batch" in variants:
        for name, new in batch_sizes(base, diff):
            add(name, new)
    for dtype in dtypes:
        add(SHORT.get(dtype, str(dtype)), map_floats(base, lambda t, d=dtype: t.to(d)), dtype, "dtype")
    if extremal and "extremal" in variants and diff:
        for dtype in (torch.float64, *dtypes):
            cast = map_floats(base, lambda t, d=dtype: t.to(d))
            add(f"extremal {SHORT.get(dtype, str(dtype))}", with_extremes(cast, diff), dtype, "extremal")
    return rows



def batch_sizes(args, diff) -> list[tuple[str, tuple]]:
    """('batch 1', args) cut to the first sample along dim 0, or ('batch 3', ...) when the sample is a batch of one.

    The batch dimension is the first dimension of the first input to differentiate, when it has at
    least two; every tensor argument with the same first size is cut (or repeated) with it. NOTE:
    ``squeeze()`` on a batch of one also drops the batch dimension: the classic bug this row finds.
    """
    if not diff or args[diff[0]].dim() < 2:
        return []
    size = args[diff[0]].shape[0]
    batched = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor) and a.dim() >= 1 and a.shape[0] == size]
    if size > 1:
        return [("batch 1", tuple(a[:1].clone() if i in batched else a for i, a in enumerate(args)))]
    if size == 1:
        # NOTE: three different samples (scaled copies), not one repeated, so a mix-up between samples shows
        grow = lambda i, a: torch.cat([a, a * 0.5, a * 1.5]) if a.is_floating_point() else torch.cat([a, a, a])  # noqa: E731
        return [("batch 3", tuple(grow(i, a) if i in batched else a for i, a in enumerate(args)))]
    return []
