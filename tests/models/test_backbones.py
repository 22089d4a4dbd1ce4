import pytest
import torch
import torchvision

from lightly_amix.models.backbones import ResNetBackbone, merge_split_bn_statistics


@pytest.mark.parametrize(
    ("name", "cifar", "size", "dims", "stage3_hw"),
    [
        ("resnet18", False, 96, (512, 256), 6),
        ("resnet18", True, 32, (512, 256), 8),
        ("resnet50", False, 64, (2048, 1024), 4),
    ],
)
def test_shapes_and_shared_forward(
    name: str, cifar: bool, size: int, dims: tuple[int, int], stage3_hw: int
) -> None:
    torch.manual_seed(0)
    backbone = ResNetBackbone(name, cifar_stem=cifar).eval()
    x = torch.randn(2, 3, size, size)
    pooled, stage3 = backbone.forward_with_stage3(x)
    assert pooled.shape == (2, dims[0]) and backbone.out_dim == dims[0]
    assert stage3.shape == (2, dims[1], stage3_hw, stage3_hw) and backbone.stage3_dim == dims[1]
    # The tap does not change the result: same pooled features as the plain forward, and the
    # same stage-3 map as torchvision's own modules.
    assert torch.allclose(pooled, backbone(x), atol=1e-6)
    r = backbone.resnet
    ref = r.layer3(r.layer2(r.layer1(r.maxpool(r.relu(r.bn1(r.conv1(x)))))))
    assert torch.allclose(stage3, ref, atol=1e-6)


def test_cifar_stem_replaces_conv_and_pool() -> None:
    r = ResNetBackbone("resnet18", cifar_stem=True).resnet
    assert r.conv1.kernel_size == (3, 3) and r.conv1.stride == (1, 1)
    assert isinstance(r.maxpool, torch.nn.Identity)


def test_export_loads_into_torchvision_resnet() -> None:
    backbone = ResNetBackbone("resnet18")
    state = backbone.export_state_dict()
    assert not any(key.startswith("fc.") for key in state)
    target = torchvision.models.resnet18()
    missing, unexpected = target.load_state_dict(state, strict=False)
    assert sorted(missing) == ["fc.bias", "fc.weight"] and unexpected == []
    assert torch.equal(target.conv1.weight, backbone.resnet.conv1.weight)


def test_unknown_backbone() -> None:
    with pytest.raises(ValueError, match="resnet18, resnet34, resnet50"):
        ResNetBackbone("vgg11")


def test_split_batchnorm_normalises_each_part_with_its_own_statistics() -> None:
    torch.manual_seed(0)
    split = ResNetBackbone("resnet18", bn_splits=2).train()
    plain = ResNetBackbone("resnet18").train()
    plain.resnet.load_state_dict(split.export_state_dict())
    x = torch.randn(8, 3, 32, 32)
    # Direct re-computation: plain BatchNorm run on each part separately. Lightly's parts are
    # interleaved: part g holds samples g, g + 2, g + 4, ...
    by_parts = torch.stack([plain(x[0::2]), plain(x[1::2])], dim=1).flatten(0, 1)
    assert torch.allclose(split(x), by_parts, atol=1e-5)
    assert not torch.allclose(split(x), plain(x), atol=1e-3)


def test_split_statistics_are_averaged_on_export() -> None:
    torch.manual_seed(0)
    split = ResNetBackbone("resnet18", bn_splits=2).train()
    shift = torch.tensor([0.0, 3.0]).repeat(4).view(8, 1, 1, 1)  # part 0 vs part 1
    for _ in range(3):
        split(torch.randn(8, 3, 32, 32) + shift)  # the two parts see different statistics
    parts = split.resnet.bn1.running_mean.view(2, -1).clone()
    assert not torch.allclose(parts[0], parts[1], atol=1e-2)

    state = split.export_state_dict()
    assert state["bn1.running_mean"].shape == (64,)
    assert torch.allclose(state["bn1.running_mean"], parts.mean(dim=0))
    target = torchvision.models.resnet18()
    missing, unexpected = target.load_state_dict(state, strict=False)
    assert sorted(missing) == ["fc.bias", "fc.weight"] and unexpected == []
    # The exported plain network evaluates as the split one does.
    plain = ResNetBackbone("resnet18")
    plain.resnet.load_state_dict(state)
    x = torch.randn(3, 3, 32, 32)
    assert torch.allclose(split.eval()(x), plain.eval()(x), atol=1e-5)


def test_merge_split_statistics_leaves_other_entries() -> None:
    state = {
        "bn.weight": torch.ones(2),
        "bn.running_mean": torch.tensor([1.0, 2.0, 3.0, 6.0]),
        "bn.running_var": torch.tensor([1.0, 1.0, 3.0, 5.0]),
        "bn.num_batches_tracked": torch.tensor(7),
        "conv.weight": torch.ones(4),
    }
    merged = merge_split_bn_statistics(state, 2)
    assert merged["bn.running_mean"].tolist() == [2.0, 4.0]
    assert merged["bn.running_var"].tolist() == [2.0, 3.0]
    for key in ("bn.weight", "bn.num_batches_tracked", "conv.weight"):
        assert torch.equal(merged[key], state[key])
    assert merge_split_bn_statistics(state, 0) == state


def test_negative_bn_splits() -> None:
    with pytest.raises(ValueError, match="bn_splits must be >= 0"):
        ResNetBackbone("resnet18", bn_splits=-2)


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_a_narrow_resnet_keeps_depth_and_map_sizes(name: str) -> None:
    wide = ResNetBackbone(name, cifar_stem=True)
    narrow = ResNetBackbone(name, cifar_stem=True, width=16)
    assert narrow.out_dim == wide.out_dim // 4 and narrow.stage3_dim == wide.stage3_dim // 4
    x = torch.randn(2, 3, 28, 28)
    pooled, stage3 = narrow.forward_with_stage3(x)
    assert pooled.shape == (2, narrow.out_dim) and stage3.shape == (2, narrow.stage3_dim, 7, 7)
    # Same layers, same keys, narrower tensors; torchvision's initialisation.
    assert narrow.resnet.state_dict().keys() == wide.resnet.state_dict().keys()
    assert narrow.resnet.conv1.weight.shape == (16, 3, 3, 3)
    conv = narrow.resnet.layer2[0].conv1.weight
    fan_out = conv.shape[0] * conv.shape[2] * conv.shape[3]
    assert float(conv.detach().std()) == pytest.approx((2 / fan_out) ** 0.5, rel=0.2)
    assert torch.all(narrow.resnet.layer3[0].bn1.weight == 1)
    zero = ResNetBackbone(name, width=16, zero_init_residual=True)
    last = zero.resnet.layer1[0].bn3 if name == "resnet50" else zero.resnet.layer1[0].bn2
    assert torch.all(last.weight == 0)
    with pytest.raises(ValueError, match="width must be >= 1"):
        ResNetBackbone(name, width=0)
