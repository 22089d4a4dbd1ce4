"""Optimiser groups: which parameters get weight decay."""

from __future__ import annotations

import pytest
import torch

from lightly_amix.mixing.mix_block import MixBlock
from lightly_amix.optim import sgd_param_groups, weight_decay_split


def test_scalars_norms_and_biases_take_no_decay() -> None:
    block = MixBlock(16)  # γ: a 0-dim parameter outside any norm layer
    decay, no_decay = weight_decay_split([block])
    assert any(p is block.gamma for p in no_decay)
    assert not any(p is block.gamma for p in decay)
    assert all(p.dim() >= 2 for p in decay)
    assert {id(p) for p in decay} | {id(p) for p in no_decay} == {id(p) for p in block.parameters()}
    assert any(p is block.content.bn.weight for p in no_decay)


def test_groups_are_named_scaled_and_decay_only_where_due() -> None:
    net, block = torch.nn.Linear(4, 3), MixBlock(16)
    groups = sgd_param_groups({"": ([net], 1.0), "mix_block_": ([block], 10.0)}, 0.1, 5e-4)
    by_name = {g["name"]: g for g in groups}
    assert set(by_name) == {"decay", "no_decay", "mix_block_decay", "mix_block_no_decay"}
    assert by_name["decay"]["params"] == [net.weight] and by_name["no_decay"]["params"] == [
        net.bias
    ]
    assert by_name["mix_block_decay"]["lr"] == pytest.approx(1.0)
    assert by_name["mix_block_no_decay"]["weight_decay"] == 0.0
    assert by_name["decay"]["weight_decay"] == 5e-4
    # SGD with weight decay leaves γ where its (zero) gradient leaves it.
    with torch.no_grad():
        block.gamma.fill_(0.5)
    optimizer = torch.optim.SGD(groups, lr=0.1)
    block.gamma.grad = torch.zeros(())
    optimizer.step()
    assert block.gamma.item() == 0.5
