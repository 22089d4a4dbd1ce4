"""LearnedMixup: the Mix Block's two samples of a step, re-computed directly."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from lightly_amix.mixing.learned import LearnedMixup
from lightly_amix.mixing.masks import adjust_lambda, mask_loss
from lightly_amix.mixing.mix_block import MixBlockConfig

N, C, H = 6, 16, 12


def _inputs() -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, 3, H, H, generator=g)
    z = torch.randn(N, C, 3, 3, generator=g)
    perm = torch.tensor([1, 2, 3, 4, 5, 0])
    return x, z, perm


def test_the_backbone_sample_is_the_detached_adjusted_mask_mix() -> None:
    torch.manual_seed(0)
    mixer = LearnedMixup(C, MixBlockConfig(dropout=0.0, init_std=0.5))
    x, z, perm = _inputs()
    lam = torch.tensor([0.2, 0.4, 0.5, 0.6, 0.8, 0.3])
    x_mix, mask, lam_eff = mixer.backbone_sample(x, x[perm], z, z[perm], lam)
    expected = adjust_lambda(mixer(z, z[perm], lam, out_size=(H, H)), lam, 0.1)
    assert torch.allclose(mask, expected) and not mask.requires_grad
    assert torch.allclose(x_mix, expected * x + (1 - expected) * x[perm], atol=1e-6)
    assert torch.allclose(lam_eff, expected.mean(dim=(1, 2, 3)))
    assert ((lam_eff - lam).abs() <= 0.1 + 1e-6).all()  # adjusted to within the margin


def test_lambda_near_0_or_1_degenerates_to_mixup() -> None:
    torch.manual_seed(0)
    mixer = LearnedMixup(C, MixBlockConfig(init_std=0.5), degenerate_margin=0.08)
    x, z, perm = _inputs()
    lam = torch.tensor([0.05, 0.95, 0.5, 0.08, 0.92, 0.3])
    _, mask, lam_eff = mixer.backbone_sample(x, x[perm], z, z[perm], lam)
    plain = [0, 1, 3, 4]
    for i in plain:  # a constant mask of value λ: MixUp
        assert torch.allclose(mask[i], torch.full_like(mask[i], float(lam[i])))
    assert torch.allclose(lam_eff[plain], lam[plain])
    assert float(mask[2].std()) > 0  # the others keep the Mix Block's mask
    with pytest.raises(ValueError, match="degenerate_margin"):
        LearnedMixup(C, degenerate_margin=0.5)


def test_the_block_sample_has_the_gradient_and_the_mask_loss() -> None:
    torch.manual_seed(0)
    config = MixBlockConfig()
    mixer = LearnedMixup(C, config)
    x, z, perm = _inputs()
    lam = torch.full((N,), 0.4)
    torch.manual_seed(1)
    x_mb, mask, loss = mixer.block_sample(x, x[perm], z, z[perm], lam)
    assert mask.requires_grad and x_mb.requires_grad
    expected = mask_loss(mask, lam, margin=config.mask_margin, weight=config.mask_loss_weight,
                         use_variance=True, variance_weight=config.variance_weight,
                         normalize_variance=config.variance_norm)  # fmt: skip
    assert torch.allclose(loss, expected)
    assert torch.allclose(x_mb, mask * x + (1 - mask) * x[perm], atol=1e-6)
    grads = torch.autograd.grad(x_mb.sum() + loss, list(mixer.parameters()), allow_unused=True)
    assert any(g is not None and g.abs().any() for g in grads)


@pytest.mark.parametrize(
    "config",
    [MixBlockConfig(), MixBlockConfig.automix(), MixBlockConfig.samix(),
     MixBlockConfig(variance_norm=True, variance_weight=2.0),
     MixBlockConfig(variance_norm=True, variance_weight=1.5, mask_margin=0.0,
                    mask_loss_weight=0.3, mask_loss_reduction="batch")],
    ids=["mix_block_plus", "automix", "samix", "normalised_variance", "batch_normalised"],
)  # fmt: skip
def test_the_block_samples_mask_loss_follows_the_configs_switches(config: MixBlockConfig) -> None:
    torch.manual_seed(0)
    # Spatial masks from the start (a large output layer), so that the variance term is far
    # from 0 and a dropped switch shows.
    mixer = LearnedMixup(C, replace(config, init_std=3.0, small_init="output", dropout=0.0))
    x, z, perm = _inputs()
    lam = torch.tensor([0.2, 0.4, 0.5, 0.6, 0.8, 0.3])
    _, mask, loss = mixer.block_sample(x, x[perm], z, z[perm], lam)
    mask = mask.detach()
    mu = mask.mean() if config.mask_loss_reduction == "batch" else mask.mean(dim=(1, 2, 3))
    target = lam.mean() if config.mask_loss_reduction == "batch" else lam
    loss_mean = ((target - mu).abs() - config.mask_margin).clamp(min=0).mean()
    centred = mask - (mu if mu.dim() == 0 else mu.view(-1, 1, 1, 1))
    variance = (centred**2).mean() if config.mask_loss == "mean_var" else torch.tensor(0.0)
    if config.variance_norm:  # per sample: each variance over μ (1 − μ), then the mean
        variance = ((centred**2).mean(dim=(1, 2, 3)) / (mu * (1 - mu))).mean()
    expected = config.mask_loss_weight * (loss_mean - config.variance_weight * variance)
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)
    # The variance term is 100 × the tolerance: dropping it (or a switch of it) shows.
    if config.mask_loss == "mean_var":
        assert config.mask_loss_weight * config.variance_weight * variance > 1e-4


def test_the_mixed_images_keep_their_dtype_under_a_float32_mask() -> None:
    mixer = LearnedMixup(C, MixBlockConfig(dropout=0.0))
    x, z, perm = _inputs()
    x_mb, mask, _ = mixer.block_sample(x.bfloat16(), x[perm].bfloat16(), z, z[perm], torch.rand(N))
    assert mask.dtype == torch.float32 and x_mb.dtype == torch.bfloat16
    expected = torch.lerp(x[perm].bfloat16(), x.bfloat16(), mask.bfloat16())
    assert torch.equal(x_mb, expected)


@pytest.mark.parametrize("probability", [0.0, 0.25, 1.0])
def test_lambda_adjusting_in_a_share_of_batches(probability: float) -> None:
    torch.manual_seed(0)
    config = MixBlockConfig(init_std=0.5, dropout=0.0, adjust_probability=probability)
    mixer = LearnedMixup(C, config)
    x, z, perm = _inputs()
    lam = torch.full((N,), 0.9)  # far from the ≈ 0.5 masks: adjusting always changes them
    raw = mixer(z, z[perm], lam, out_size=(H, H)).detach()
    adjusted = 0
    for _ in range(200):
        _, mask, _ = mixer.backbone_sample(x, x[perm], z, z[perm], lam)
        adjusted += int(not torch.allclose(mask, raw))
    assert adjusted == pytest.approx(200 * probability, abs=25)


def test_masks_of_non_square_images_have_their_height_and_width() -> None:
    mixer = LearnedMixup(C, MixBlockConfig(dropout=0.0))
    x, z, perm = _inputs()
    wide = torch.rand(N, 3, H, 2 * H)
    x_mb, mask, _ = mixer.block_sample(wide, wide[perm], z, z[perm], torch.rand(N))
    assert mask.shape == (N, 1, H, 2 * H) and x_mb.shape == wide.shape
