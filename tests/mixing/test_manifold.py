"""Tests of ManifoldMix and of mixing hidden features through the ResNet backbone."""

from __future__ import annotations

import pytest
import torch

from lightly_amix.mixing.base import MixOutput
from lightly_amix.mixing.manifold import ManifoldMix, manifold_features
from lightly_amix.models.backbones import ResNetBackbone


@pytest.fixture(scope="module")
def backbone() -> ResNetBackbone:
    torch.manual_seed(0)
    return ResNetBackbone("resnet18", cifar_stem=True).eval()


def _batch(n: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 16, 24, generator=g), torch.randperm(n, generator=g)


def _hand_features(
    backbone: ResNetBackbone, x: torch.Tensor, stage: int, perm: torch.Tensor, lam: torch.Tensor
) -> torch.Tensor:
    """Pooled features with ``λ h + (1 − λ) h[perm]`` before ``layer{stage + 1}``, by hand."""
    r = backbone.resnet
    h = r.maxpool(r.relu(r.bn1(r.conv1(x))))
    layers = [r.layer1, r.layer2, r.layer3, r.layer4]
    for layer in layers[:stage]:
        h = layer(h)
    share = lam.view(-1, 1, 1, 1)
    h = share * h + (1 - share) * h[perm]
    for layer in layers[stage:]:
        h = layer(h)
    return torch.flatten(r.avgpool(h), 1)


@pytest.mark.parametrize("n", [1, 5])
@pytest.mark.parametrize("per_sample", [False, True])
def test_images_untouched_and_output_fields(n: int, per_sample: bool) -> None:
    images, perm = _batch(n)
    before = images.clone()
    lam = torch.rand(n) if per_sample else 0.3
    out = ManifoldMix()(images, perm, lam, generator=torch.Generator().manual_seed(0))
    assert out.images is images and out.images.data_ptr() == images.data_ptr()
    assert torch.equal(images, before)
    assert out.mask is None and out.stage in (0, 1, 2, 3)
    assert out.lam.shape == (n,) and out.lam.dtype == torch.float32
    expected = lam if isinstance(lam, torch.Tensor) else torch.full((n,), lam)
    assert torch.equal(out.lam, expected)


def test_stage_drawn_from_configured_set() -> None:
    images, perm = _batch()
    mixup = ManifoldMix(stages=(1, 3))
    g = torch.Generator().manual_seed(0)
    drawn = [mixup(images, perm, 0.5, generator=g).stage for _ in range(50)]
    assert set(drawn) == {1, 3}


def test_same_seed_same_stages_different_seeds_differ() -> None:
    images, perm = _batch()
    mixup = ManifoldMix()

    def stages(seed: int) -> list[int | None]:
        g = torch.Generator().manual_seed(seed)
        return [mixup(images, perm, 0.5, generator=g).stage for _ in range(20)]

    assert stages(7) == stages(7)
    assert stages(7) != stages(8)


@pytest.mark.parametrize("stage", [0, 2, 3])
def test_features_match_hand_computation(backbone: ResNetBackbone, stage: int) -> None:
    images, perm = _batch(4)
    lam = torch.tensor([0.1, 0.5, 0.7, 0.95])
    out = ManifoldMix(stages=(stage,))(images, perm, lam)
    assert out.stage == stage
    with torch.no_grad():
        features = manifold_features(backbone, out, perm)
        expected = _hand_features(backbone, images, stage, perm, lam)
    assert features.shape == (4, backbone.out_dim)
    assert torch.allclose(features, expected, atol=1e-5)


def test_lambda_one_is_plain_forward_lambda_zero_is_partner(backbone: ResNetBackbone) -> None:
    images, perm = _batch(4)
    with torch.no_grad():
        plain = backbone(images)
        for stage in (0, 1, 2, 3):
            one = ManifoldMix(stages=(stage,))(images, perm, 1.0)
            assert torch.allclose(manifold_features(backbone, one, perm), plain, atol=1e-5)
            zero = ManifoldMix(stages=(stage,))(images, perm, 0.0)
            assert torch.allclose(manifold_features(backbone, zero, perm), plain[perm], atol=1e-5)


def test_manifold_features_needs_a_stage(backbone: ResNetBackbone) -> None:
    images, perm = _batch(2)
    out = MixOutput(images=images, lam=torch.full((2,), 0.5))
    with pytest.raises(ValueError, match="stage"):
        manifold_features(backbone, out, perm)


def test_manifold_features_checks_perm(backbone: ResNetBackbone) -> None:
    images, perm = _batch(3)
    out = ManifoldMix()(images, perm, 0.5)
    with pytest.raises(ValueError, match="perm"):
        manifold_features(backbone, out, torch.arange(2))


@pytest.mark.parametrize("stages", [(), (4,), (-1,), (0, 5), (True,)])
def test_bad_stages(stages: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="stages"):
        ManifoldMix(stages=stages)


@pytest.mark.parametrize(
    ("lam", "perm", "images", "match"),
    [
        (1.5, None, None, "lam must lie in"),
        (torch.full((3,), 0.5), None, None, "lam must be a scalar or have shape"),
        (0.5, torch.arange(2), None, "perm must be an integer tensor"),
        (0.5, None, torch.rand(3, 8, 8), "images must have shape"),
    ],
)
def test_bad_arguments(
    lam: float | torch.Tensor,
    perm: torch.Tensor | None,
    images: torch.Tensor | None,
    match: str,
) -> None:
    default_images, default_perm = _batch(4)
    with pytest.raises(ValueError, match=match):
        ManifoldMix()(
            default_images if images is None else images,
            default_perm if perm is None else perm,
            lam,
        )
