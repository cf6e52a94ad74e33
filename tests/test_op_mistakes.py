"""Mistakes with the ops and modules get one sentence naming what was called (issue 18)."""

from __future__ import annotations

import pytest
import torch

import handgrad as hg


@pytest.mark.parametrize("lam", [-1.0, -1e-12, float("nan"), -3])
def test_l2_penalty_refuses_a_negative_or_nan_penalty(lam):
    w = torch.ones(2, 2, requires_grad=True)
    with pytest.raises(ValueError, match=r"^l2_penalty: lam must be ≥ 0 .*, got ") as info:
        hg.l2_penalty([w], lam)
    assert str(info.value).count(".") <= 2 and "\n" not in str(info.value)  # one sentence (the number's point aside)


@pytest.mark.parametrize("lam", [0.0, 0, 0.3])
def test_l2_penalty_takes_zero_and_positive_penalties(lam):
    w = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    assert hg.l2_penalty([w], lam).item() == pytest.approx(lam / 2 * 5.0)


@pytest.mark.parametrize("module", [hg.nn.ReLU, hg.nn.Sigmoid])
def test_an_activation_given_ops_by_position_names_itself_and_its_signature(module):
    name = module.__name__
    with pytest.raises(TypeError) as info:
        module("hand")
    message = str(info.value)
    assert message.startswith(f"{name} takes only the keyword ops") and f"{name}(*, ops='hand')" in message
    assert f"{name}(ops='hand')" in message and "_Activation" not in message
    with pytest.raises(TypeError, match=f"^{name} takes only the keyword ops, got opz='native'"):
        module(opz="native")
    assert module(ops="native").ops is hg.get_ops("native")
