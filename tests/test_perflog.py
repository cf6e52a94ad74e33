"""Logging made cheap must still log the right things: histograms and pictures drawn by the writer
process describe the step they were taken at, and reading the model graph does not feed the
monitor's statistics."""

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from handgrad.monitor import LogSchedule, Monitor
from models.mlp import MLP


def read(path) -> EventAccumulator:
    acc = EventAccumulator(str(path), size_guidance={"scalars": 0, "histograms": 0, "tensors": 0, "images": 0})
    acc.Reload()
    return acc


def test_weight_histogram_holds_the_weights_of_its_step_not_those_after_the_update(tmp_path):
    torch.manual_seed(0)
    model = MLP("hand", hidden=(8,))
    x, y = torch.randn(16, 784), torch.randint(0, 10, (16,))
    monitor = Monitor(str(tmp_path / "h"), model, LogSchedule(1, 1, 1))
    monitor.before_forward(1)
    total, _, logits = model.objective(x, y)
    total.backward()
    weight = model.layers[0].weight
    before = weight.detach().sum().item()
    monitor.before_update(1, logits, y)
    with torch.no_grad():  # NOTE: what optimizer.step() does: in place, while the writer process is still busy
        weight.add_(1.0)
    monitor.after_update(1, {})
    monitor.close()
    (event,) = read(tmp_path / "h" / "layers.0.weight").Histograms("histogram/weight")
    assert event.histogram_value.sum == pytest.approx(before, rel=1e-4, abs=1e-4)
    assert event.histogram_value.sum != pytest.approx(before + weight.numel(), rel=1e-3)


def test_reading_the_model_graph_adds_no_statistics_and_reaches_the_events(tmp_path):
    model = MLP("hand", hidden=(8,))
    monitor = Monitor(str(tmp_path / "g"), model, LogSchedule(1, 1, 1))
    monitor.before_forward(1)  # NOTE: capture on, as during a logged step: the graph's forward pass must not be counted
    weight_grad = model.layers[0].weight.grad
    monitor.model_graph(model, torch.randn(16, 784), torch.randint(0, 10, (16,)), step=0)
    assert not monitor._pending and monitor._capture
    assert model.layers[0].weight.grad is weight_grad  # NOTE: the graph's gradients leave .grad alone
    monitor.close()
    assert [e.step for e in read(tmp_path / "g").Images("graph/model/1")] == [0]
