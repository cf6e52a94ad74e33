"""handgrad.compat: each private torch API handgrad uses, exercised by name on the running torch."""

import pytest
import torch
from torch.utils.tensorboard import SummaryWriter

from handgrad import compat


class _Double(torch.autograd.Function):
    @staticmethod
    def forward(x):
        return 2 * x

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, g):
        return 2 * g


def test_transforms_active_is_false_outside_and_true_inside_vmap():
    assert compat.transforms_active() is False
    seen = []
    torch.func.vmap(lambda x: seen.append(compat.transforms_active()) or x)(torch.zeros(2))
    assert seen == [True]


def test_any_autocast_enabled_follows_autocast():
    assert compat.any_autocast_enabled() is False
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert compat.any_autocast_enabled() is True


def test_undefined_grad_is_a_function_that_makes_undefined_gradients():
    undefined = compat.undefined_grad()
    assert undefined is not None
    x = torch.ones(2, requires_grad=True)
    y = undefined()(x * 1)
    y.sum().backward()
    assert x.grad is None or torch.all(x.grad == 0)


def test_forward_class_and_custom_node():
    x = torch.ones(2, requires_grad=True)
    custom = _Double.apply(x).grad_fn
    builtin = (x * 3).grad_fn
    assert compat.forward_class(custom) is _Double
    assert compat.is_custom_function_node(custom) and not compat.is_custom_function_node(builtin)
    assert compat.forward_class(builtin) is None


def test_input_metadata_describes_the_forward_outputs():
    x = torch.ones(2, 3, dtype=torch.float64, requires_grad=True)
    metas = compat.input_metadata(_Double.apply(x).grad_fn)
    assert metas is not None and tuple(metas[0].shape) == (2, 3) and metas[0].dtype == torch.float64


def test_saved_attributes_of_a_builtin_node():
    a = torch.randn(3, requires_grad=True)
    b = torch.randn(3, requires_grad=True)
    node = (a * b).grad_fn
    assert {"self", "other"} <= set(compat.saved_attribute_names(node))
    assert torch.equal(compat.saved_attribute(node, "other"), b)
    assert compat.saved_attribute(node, "no_such_thing") is None


def test_saved_attribute_freed_by_backward_is_none():
    a = torch.randn(3, requires_grad=True)
    b = torch.randn(3, requires_grad=True)
    y = (a * b).sum()
    node = y.grad_fn.next_functions[0][0]
    y.backward()
    assert compat.saved_attribute(node, "other") is None


def test_event_file_writer(tmp_path):
    writer = SummaryWriter(tmp_path)
    try:
        assert hasattr(compat.event_file_writer(writer), "add_summary")
    finally:
        writer.close()


def test_version_counter_counts_in_place_writes():
    x = torch.zeros(3)
    before = compat.version_counter(x)
    x.add_(1)
    x[1:].mul_(2)  # NOTE: a write through a view counts on the base too
    assert compat.version_counter(x) == before + 2
    assert compat.version_counter(x.clone()) == 0


def test_missing_api_names_the_api_and_the_torch_version():
    class NoWriter:
        pass

    with pytest.raises(compat.MissingTorchAPI) as info:
        compat.event_file_writer(NoWriter())
    message = str(info.value)
    assert "SummaryWriter._get_file_writer" in message and torch.__version__ in message


def test_drop_forward_hooks_removes_them_from_every_submodule():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU())
    seen = []
    for m in model.modules():
        m.register_forward_hook(lambda mod, i, o: seen.append(type(mod).__name__))
    model(torch.zeros(1, 2))
    assert len(seen) == 3
    compat.drop_forward_hooks(model)
    seen.clear()
    model(torch.zeros(1, 2))
    assert seen == []


@pytest.mark.parametrize("fused", [True, False])
def test_fused_list_ops_equal_their_loops(fused, monkeypatch):
    if not fused:  # NOTE: the fallback a torch without the fused ops takes
        for name in ("_foreach_norm", "_foreach_add", "_foreach_sub_"):
            monkeypatch.setattr(compat, name, None)
    a = [torch.tensor([3.0, 4.0]), torch.ones(2, 2)]
    b = [torch.tensor([1.0, 1.0]), torch.full((2, 2), 2.0)]
    assert [float(n) for n in compat.norms(a)] == [5.0, 2.0]
    assert compat.norms([]) == []
    summed = compat.add_scaled(a, b, alpha=-0.5)
    assert torch.equal(summed[0], torch.tensor([2.5, 3.5])) and torch.equal(summed[1], torch.zeros(2, 2))
    compat.sub_(a, b)
    assert torch.equal(a[0], torch.tensor([2.0, 3.0])) and torch.equal(a[1], -torch.ones(2, 2))
