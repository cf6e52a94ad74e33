"""The engine: the runs the checks share (a forward and backward, the same against the reference and in
float64, forward-mode derivatives, each custom node's backward called directly), cached per row.

Every run gets inputs and incoming gradients of its own (:func:`~handgrad.testing.variants.fresh`,
:meth:`Engine.cotangents`): a backward that writes into ``grad_output`` cannot corrupt what the
reference or the float64 truth receives (the ``untouched`` check names that write).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
import torch.autograd.forward_ad as fwAD

from .. import compat
from .nodes import Graph, tensor_outputs
from .numerics import ULPS_WITHOUT_REFERENCE, cotangent, floats, jacobians, out_names, randn_like, seeded, split, zeros_for_none
from .registry import Check
from .report import Fail, Result, Skip, first_line
from .variants import Row, copy, fresh, map_floats

__all__ = ["Engine", "Run", "run_check"]


@dataclass
class Run:
    """One forward and backward: outputs, the gradients of the inputs to differentiate (or what backward
    raised: ``values`` checks the forward alone), and the incoming gradients used (pristine copies)."""

    outs: list
    grads: list | BaseException
    cotangents: list

    def gradients(self) -> list:
        if isinstance(self.grads, BaseException):
            raise self.grads
        return self.grads


@dataclass
class Engine:
    fn: Callable
    reference: Callable | None
    classes: list  # the autograd.Function classes behind fn (given, or found in the graph)
    compile_backend: str | None
    tolerances: dict
    seed: int
    skip: Mapping[str, str]
    extreme_upstream: bool = False  # incoming gradients with inf and NaN in them (reference comparisons)
    _cache: dict = field(default_factory=dict)

    def cotangents(self, outs, seed_offset: int = 1) -> list:
        gen = seeded(self.seed + seed_offset)
        return [cotangent(o, gen, self.extreme_upstream) for o in outs]

    def evaluate(self, func, args, diff, cotangents=None) -> Run:
        """One forward and backward of ``func`` on fresh copies of ``args`` (cotangents: copies of these)."""
        leaves = fresh(args, diff)
        outs = tensor_outputs(func(*leaves))
        douts = [o for o in outs if o.requires_grad]
        cotangents = self.cotangents(douts) if cotangents is None else cotangents
        xs = [leaves[i] for i in diff]
        try:
            given = [c.clone() for c in cotangents]  # NOTE: backward may write into these; the originals stay
            grads = torch.autograd.grad(douts, xs, given, allow_unused=True) if douts and xs else ()
            grads = zeros_for_none(grads, xs)
        except Exception as exc:  # noqa: BLE001 - kept for the gradient checks; values needs the forward only
            grads = exc
        return Run([o.detach() for o in outs], grads, cotangents)

    def parity(self, row) -> tuple[Run, Run | None, Run]:
        """(hand, reference in the row's dtype or None, float64 truth).

        The truth is the reference (or, without one, fn) in float64 on the row's own inputs and
        cotangents, so that rounding the inputs to the row's dtype is not counted as an error. On a
        float64 row the truth is also the reference in the row's dtype, so that dtypes are compared.
        """
        if row.label not in self._cache:
            hand = self.evaluate(self.fn, row.args, row.diff)
            own = None
            if self.reference is not None and row.dtype != torch.float64:
                own = self.evaluate(self.reference, row.args, row.diff, hand.cotangents)
            up = map_floats(row.args, lambda t: t.double())
            truth = self.evaluate(self.reference or self.fn, up, row.diff, [c.double() for c in hand.cotangents])
            self._cache[row.label] = hand, own if row.dtype != torch.float64 else truth, truth
        return self._cache[row.label]

    def jvps(self, func, args, diff, tangents) -> tuple[list, list]:
        """(outputs, jvps) of ``func`` at ``args`` along ``tangents`` (forward-mode AD), floating outputs only."""
        duals = list(fresh(args, ()))
        with fwAD.dual_level():
            for i, t in zip(diff, tangents):
                duals[i] = fwAD.make_dual(copy(args[i]), copy(args[i], values=t))
            unpacked = [fwAD.unpack_dual(o) for o in floats(tensor_outputs(func(*duals)))]
        outs = [u.primal.detach() for u in unpacked]
        return outs, [torch.zeros_like(o) if u.tangent is None else u.tangent.detach() for u, o in zip(unpacked, outs)]

    def jvp_parity(self, row):
        """(hand's jvps, the reference's in the row's dtype or None, float64 truth) along seeded tangents.

        Raises Skip when the reference has no forward-mode derivative. NOTE: the reference's jvp
        is taken in its output's dtype: torch.func/forward AD can return a float64 tangent for a
        float32 output of a native op (``t * 0.15``, torch 2.14); fn's own must match its output.
        """
        key = ("jvp", row.label)
        if key not in self._cache:
            gen = seeded(self.seed + 6)
            tangents = [randn_like(row.args[i], gen) for i in row.diff]
            outs, mine = self.jvps(self.fn, row.args, row.diff, tangents)
            for k, (o, j) in enumerate(zip(outs, mine)):
                if j.dtype != o.dtype:
                    raise Fail(f"jvp of {out_names(len(outs))[k]} has dtype {j.dtype}, its output {o.dtype}")
            try:
                own = None
                if self.reference is not None and row.dtype != torch.float64:
                    own = [j.to(o.dtype) for o, j in zip(*self.jvps(self.reference, row.args, row.diff, tangents))]
                up = map_floats(row.args, lambda t: t.double())
                truth = [j.to(o.dtype) for o, j in zip(*self.jvps(self.reference or self.fn, up, row.diff,
                                                                   [t.double() for t in tangents]))]
            except Exception as exc:  # noqa: BLE001 - a reference without forward AD: nothing to compare with
                raise Skip(f"the reference has no forward-mode derivative here ({first_line(exc)})") from exc
            self._cache[key] = mine, own if row.dtype != torch.float64 else truth, truth
        return self._cache[key]

    def backward_calls(self, row, needs, forward_only_context=None):
        """Run fn and its backward once; per custom Function node reached: (node, raw gradients, autograd's).

        The raw gradients come from calling the node (its Function's backward, with the real ctx)
        directly; autograd's are what it made of them (summed to shape, cast to dtype). Returns
        (calls, leaves, graph): the graph keeps the outputs, and so the nodes, alive.
        ``forward_only_context``: a context manager the forward alone runs in (autocast).
        """
        import contextlib

        leaves = fresh(row.args, row.diff, needs)
        with forward_only_context or contextlib.nullcontext():
            graph = Graph.of(self.fn(*leaves))
        incoming, outgoing = {}, {}

        def recorder(store, node):
            def hook(grads, *_):  # a prehook gets the incoming gradients, a hook the outgoing ones first
                store[node] = grads

            return hook

        handles = [n.register_prehook(recorder(incoming, n)) for n in graph.nodes]
        handles += [n.register_hook(recorder(outgoing, n)) for n in graph.nodes]
        try:
            gen = seeded(self.seed + 1)
            torch.autograd.backward(graph.outputs, [randn_like(o, gen) for o in graph.outputs], retain_graph=True)
        finally:
            for h in handles:
                h.remove()
        calls = []
        for node in (n for n in graph.nodes if n in incoming):
            metas = compat.input_metadata(node) or [None] * len(incoming[node])
            grads = tuple(g if g is not None else torch.zeros(m.shape, dtype=m.dtype, device=m.device)
                          for g, m in zip(incoming[node], metas))
            with torch.no_grad():
                raw = node.apply(*grads)
            calls.append((node, raw if isinstance(raw, tuple) else (raw,), outgoing.get(node)))
        return calls, leaves, graph

    def jacobians(self, row):
        """(xs, f, labels, [(k, j, J_backward, J_finite-differences)]) of the row, computed once and shared by
        grad (both Jacobians) and fwd_ad (the finite differences, against forward AD's Jacobian)."""
        key = ("jacobians", row.label)
        if key not in self._cache:
            xs, f, labels = self.setup(row)
            self._cache[key] = xs, f, labels, jacobians(f, xs)
        return self._cache[key]

    def forward_jacobians(self, row, n_outs) -> list[list[torch.Tensor]]:
        """[k][j]: J of output k by input j from forward AD, column m the jvp along the one-hot tangent e_m."""
        cols = [[[] for _ in row.diff] for _ in range(n_outs)]
        for j, i in enumerate(row.diff):
            x = row.args[i]
            for m in range(x.numel()):
                onehot = torch.zeros(x.numel(), dtype=x.dtype, device=x.device)
                onehot[m] = 1
                _, jvps = self.jvps(self.fn, row.args, (i,), [onehot.reshape(x.shape)])
                for k in range(n_outs):
                    cols[k][j].append(jvps[k].reshape(-1))
        return [[torch.stack(c, dim=1) if c else None for c in per_out] for per_out in cols]

    def setup(self, row):
        """Fresh leaves, the inputs to differentiate, fn of those alone, and their names."""
        leaves = fresh(row.args, row.diff)
        xs = [leaves[i] for i in row.diff]
        return xs, split(self.fn, leaves, row.diff), [f"input {i}" for i in row.diff]

    def tol(self, row, truths=None):
        """(rtol, atol) of the row's dtype; without a reference, in a lower precision, one per tensor of
        ``truths``: atol grows to a few units in the last place at the tensor's largest |value|."""
        rtol, atol = self.tolerances.get(row.dtype, (1e-2, 1e-2))
        if truths is None or self.reference is not None or row.dtype == torch.float64:
            return (rtol, atol) if truths is None else [(rtol, atol)] * len(truths)
        eps = torch.finfo(row.dtype).eps
        scale = [float(t.detach().abs().nan_to_num(0, 0, 0).max()) if t.numel() else 0.0 for t in truths]
        return [(rtol, max(atol, ULPS_WITHOUT_REFERENCE * eps * s)) for s in scale]


def run_check(engine: Engine, check: Check, row: Row) -> Result:
    """One cell: the check's skip declaration, then its function; FAIL, skip or ERROR from what it raises."""
    reason = engine.skip[check.name] if check.name in engine.skip else check.skip_reason(engine, row)
    if reason is not None:
        return Result(row.label, check.name, "skip", message=reason)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            outcome = check.run(engine, row)
    except Skip as exc:
        return Result(row.label, check.name, "skip", message=str(exc))
    except Fail as exc:
        return Result(row.label, check.name, "FAIL", exc.error, str(exc), facts=exc.facts)
    except Exception as exc:  # noqa: BLE001 - the report never dies: a check that raises is an ERROR cell
        return Result(row.label, check.name, "ERROR", None, first_line(exc))
    error, shown = outcome if isinstance(outcome, tuple) else (outcome, None)
    return Result(row.label, check.name, "ok", error, shown=shown)
