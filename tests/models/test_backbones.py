import pytest
import torch
import torchvision

from lightly_amix.models.backbones import ResNetBackbone


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
