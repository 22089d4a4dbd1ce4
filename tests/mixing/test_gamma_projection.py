"""γ of Mix Block+ is projected back into [0, 1] at every training-mode forward."""

from __future__ import annotations

import pytest
import torch

from lightly_amix.mixing.mix_block import MixBlock, MixBlockConfig


@pytest.mark.parametrize(("start", "projected"), [(3.0, 1.0), (-2.0, 0.0), (0.25, 0.25)])
def test_a_training_forward_projects_gamma_into_the_unit_interval(
    start: float, projected: float
) -> None:
    torch.manual_seed(0)
    block = MixBlock(8, MixBlockConfig())
    assert isinstance(block.gamma, torch.nn.Parameter)
    with torch.no_grad():
        block.gamma.fill_(start)
    z = torch.randn(2, 8, 3, 3)
    block.train()
    mask = block(z, z.flip(0), torch.tensor([0.3, 0.7]), out_size=(6, 6))
    assert mask.shape == (2, 1, 6, 6)
    assert float(block.gamma.detach()) == projected  # the parameter itself, not only the value used
    assert float(block.gamma_value().detach()) == projected
