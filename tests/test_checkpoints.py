from __future__ import annotations

import torch

from lightly_amix.checkpoints import backbone_from_checkpoint
from lightly_amix.models.backbones import ResNetBackbone


def test_split_batchnorm_checkpoint_gives_a_plain_backbone() -> None:
    torch.manual_seed(0)
    split = ResNetBackbone("resnet18", bn_splits=4).train()
    shift = torch.arange(4.0).repeat(2).view(8, 1, 1, 1)  # sample i is in part i % 4
    split(torch.randn(8, 3, 32, 32) + shift)  # four parts, four sets of statistics
    model_cfg = {"backbone": "resnet18", "cifar_stem": False, "bn_splits": 4}
    ckpt = {
        "state_dict": {f"backbone.{k}": v for k, v in split.state_dict().items()},
        "hyper_parameters": {"model": model_cfg},
    }

    backbone = backbone_from_checkpoint(ckpt, "backbone.")

    assert backbone.bn_splits == 0
    assert backbone.resnet.bn1.running_mean.shape == (64,)
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(backbone.eval()(x), split.eval()(x), atol=1e-5)


def test_checkpoint_without_bn_splits_key_loads_as_before() -> None:
    plain = ResNetBackbone("resnet18")
    ckpt = {
        "state_dict": {f"backbone.{k}": v for k, v in plain.state_dict().items()},
        "hyper_parameters": {"model": {"backbone": "resnet18", "cifar_stem": False}},
    }
    backbone = backbone_from_checkpoint(ckpt)
    assert torch.equal(backbone.resnet.conv1.weight, plain.resnet.conv1.weight)
