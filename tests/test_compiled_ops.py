"""Compiled ops give eager's gradients, and no op's forward mutates what a compiled graph sees.

torch 2.11's compile (aot_eager and inductor) gave wrong gradients for a sigmoid whose forward
returned the end of a chain of in-place ops on its own temporaries (exp_, div_) and saved that
output: ``train.py --compile --activation sigmoid`` reached 11% accuracy where eager reached 49%.
The gradient test below catches that on a release where it happens; the graph test catches the
cause (an in-place op in a traced forward) on every release.
"""

import pytest
import torch

from handgrad.functional import get_ops

HAND, NATIVE = get_ops("hand"), get_ops("native")


def _inputs(dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    # NOTE: scaled so that some pre-activations are large (sigmoid near 0 and 1) and some small
    x = 3 * torch.randn(16, 5, generator=g, dtype=torch.float64)
    w = torch.randn(4, 5, generator=g, dtype=torch.float64)
    b = torch.randn(4, generator=g, dtype=torch.float64)
    target = torch.rand(16, 4, generator=g, dtype=torch.float64)
    return [t.to(dtype) for t in (x, w, b, target)]


def _sigmoid_mse(ops, x, w, b, target):
    return ops.mse_loss(ops.sigmoid(ops.affine(x, w, b)), target)


def _loss_and_grads(fn, x, w, b, target):
    w, b = w.clone().requires_grad_(), b.clone().requires_grad_()
    loss = fn(x, w, b, target)
    loss.backward()
    return loss.detach(), w.grad, b.grad


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_compiled_sigmoid_gives_eager_and_native_gradients(dtype, tol):
    args = _inputs(dtype)
    eager = _loss_and_grads(lambda *a: _sigmoid_mse(HAND, *a), *args)
    native = _loss_and_grads(lambda *a: _sigmoid_mse(NATIVE, *a), *args)
    compiled = torch.compile(lambda *a: _sigmoid_mse(HAND, *a), fullgraph=True, backend="aot_eager")
    got = _loss_and_grads(compiled, *args)
    for name, c, e, n in zip(("loss", "dL/dw", "dL/db"), got, eager, native):
        torch.testing.assert_close(c, e, rtol=tol, atol=tol, msg=lambda m, name=name: f"compiled {name} vs eager: {m}")
        torch.testing.assert_close(c, n, rtol=tol, atol=tol, msg=lambda m, name=name: f"compiled {name} vs native: {m}")


def _forward_targets(fn, *args):
    """The names of the ops Dynamo traced from each autograd.Function forward that ``fn`` calls."""
    names = []

    def backend(gm, example_inputs):
        # NOTE: Dynamo puts a Function's forward and backward in subgraphs named fwd_body_N and
        # bwd_body_N (torch 2.13 to 2.15); finding none fails the tests below instead of passing them.
        for name, module in gm.named_modules():
            if name.startswith("fwd_body") and isinstance(module, torch.fx.GraphModule):
                for node in module.graph.nodes:
                    if node.op in ("call_method", "call_function"):
                        names.append(node.target if isinstance(node.target, str) else getattr(node.target, "__name__", ""))
        return gm.forward

    torch.compile(fn, fullgraph=True, backend=backend)(*args)
    return names


def _in_place(names):
    return sorted({n for n in names if n.endswith("_") and not n.startswith("_")})


class _InPlaceSigmoid(torch.autograd.Function):
    """The old forward (in place on its temporaries): what the graph test must catch."""

    @staticmethod
    def forward(x):
        return x.clamp_max(0).exp_().div_(x.abs().neg_().exp_().add_(1))

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return grad * y * (1 - y)


def test_the_graph_check_sees_an_in_place_forward():
    x = torch.randn(3, 4, requires_grad=True)
    assert _in_place(_forward_targets(_InPlaceSigmoid.apply, x)) == ["add_", "div_", "exp_", "neg_"]


@pytest.mark.parametrize("activation", ["sigmoid", "relu"])
def test_no_in_place_op_in_a_compiled_activation_forward(activation):
    # NOTE: the forward's output is what the op saves; in-place ops in a backward (ReLU's mask)
    # write into a temporary nobody saves, which compiled graphs handle on every release tried.
    x = torch.randn(3, 4, requires_grad=True)
    names = _forward_targets(getattr(HAND, activation), x)
    assert names, "Dynamo traced nothing: the check would pass vacuously"
    assert _in_place(names) == []
