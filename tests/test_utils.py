"""Shared helpers: batch-statistics mode for a frozen network the gradient passes through."""

from __future__ import annotations

import torch
from lightly.models.batchnorm import SplitBatchNorm
from torch import nn

from lightly_amix.utils import batch_stats_mode, eval_mode


def net(norm: nn.Module) -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), norm, nn.ReLU())
    with torch.no_grad():  # running statistics far from any batch's
        norm.running_mean.fill_(3.0)
        norm.running_var.fill_(9.0)
    return model


def test_batch_stats_mode_normalises_with_the_batch_and_leaves_running_stats() -> None:
    for norm in (nn.BatchNorm2d(4), SplitBatchNorm(4, num_splits=2)):
        model = net(norm).eval()
        x = torch.randn(8, 3, 6, 6)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        with batch_stats_mode(model):
            assert model.training and norm.momentum == 0.0
            out = model(x)
        # Batch statistics: the same as a plain train-mode forward (direct re-computation).
        h = model[0](x)
        if isinstance(norm, SplitBatchNorm):  # split g holds samples g, g + 2, ...
            h5 = h.view(4, 2, 4, 4, 4)  # (row, split, C, h, w): sample 2 row + split
            mean = h5.mean(dim=(0, 3, 4), keepdim=True)
            var = h5.var(dim=(0, 3, 4), unbiased=False, keepdim=True)
            expected = ((h5 - mean) / torch.sqrt(var + norm.eps)).reshape(8, 4, 4, 4)
        else:
            mean = h.mean(dim=(0, 2, 3), keepdim=True)
            var = h.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
            expected = (h - mean) / torch.sqrt(var + norm.eps)
        scale, shift = norm.weight.view(1, -1, 1, 1), norm.bias.view(1, -1, 1, 1)
        expected = torch.relu(expected * scale + shift)
        assert torch.allclose(out, expected, atol=1e-5)
        with eval_mode(model):  # running statistics give a very different output
            assert not torch.allclose(model(x), out, atol=1e-2)
        # Nothing moved, and the mode and BatchNorm momentum are restored.
        for key, value in model.state_dict().items():
            assert torch.equal(value, before[key]), key
        assert not model.training and norm.momentum == 0.1


def test_batch_stats_mode_restores_training_flags() -> None:
    a, b = nn.BatchNorm1d(2), nn.BatchNorm1d(2).eval()
    with batch_stats_mode(a, b):
        assert a.training and b.training
    assert a.training and not b.training
