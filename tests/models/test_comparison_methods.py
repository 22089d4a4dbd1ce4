"""MoCHi, i-Mix and Un-Mix: formulas re-computed directly, gradients, real CPU steps."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lightly_amix.config import IMixConfig, MixingConfig, MoCHiConfig, ODCConfig, OptimConfig
from lightly_amix.losses import info_nce_from_logits, info_nce_logits
from lightly_amix.mixing.hard_negatives import mochi_negatives
from lightly_amix.models import IMix, MoCHi, PuzzleMixMoCo, UnMix
from lightly_amix.models.imix import imix_loss
from lightly_amix.models.unmix import mirrored_partners
from tests.models.test_amix import BATCH, N_IMAGES, fit, model_cfg

D = 8


def _unit(*shape: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


# ----------------------------------------------------------------------------- MoCHi
def test_mochi_logits_add_the_synthetic_negatives_of_each_query() -> None:
    model = MoCHi(model_cfg(), OptimConfig(), BATCH, MoCHiConfig(num_hard=6, num_mix=4,
                                                                  num_query_mix=2))  # fmt: skip
    q = _unit(BATCH, D, seed=0).requires_grad_()
    k, queue = _unit(BATCH, D, seed=1), _unit(18, D, seed=2)
    torch.manual_seed(5)
    logits = model.mochi_logits(q, k, queue)
    torch.manual_seed(5)
    synthetic = mochi_negatives(q.detach(), queue, 6, 4, 2)  # (N, 6, D)
    t = model.model_cfg.temperature
    expected = torch.cat([info_nce_logits(q, k, queue, t),
                          torch.einsum("nd,nsd->ns", q, synthetic) / t], dim=1)  # fmt: skip
    assert logits.shape == (BATCH, 1 + 18 + 6) and torch.allclose(logits, expected, atol=1e-6)
    # The gradient reaches the query; the synthetic negatives are constants.
    (grad,) = torch.autograd.grad(info_nce_from_logits(logits), q)
    assert grad.abs().sum() > 0


def test_mochi_starts_mixing_at_its_start_epoch_and_fits_small_queues() -> None:
    with pytest.warns(UserWarning, match="larger than the queue"):
        model = MoCHi(model_cfg(), OptimConfig(), BATCH, MoCHiConfig(start_epoch=1))
    assert model.mochi_cfg.num_hard == model.model_cfg.queue_size == 18
    q, k, queue = _unit(BATCH, D, seed=0), _unit(BATCH, D, seed=1), _unit(18, D, seed=2)
    plain = info_nce_logits(q, k, queue, model.model_cfg.temperature)
    assert torch.equal(model.mochi_logits(q, k, queue), plain)  # epoch 0 < start_epoch


def test_mochi_trains() -> None:
    torch.manual_seed(0)
    model = MoCHi(model_cfg(), OptimConfig(), BATCH, MoCHiConfig(num_hard=8, num_mix=8,
                                                                  num_query_mix=4))  # fmt: skip
    trainer = fit(model, steps=2)
    assert trainer.global_step == 2 and torch.isfinite(trainer.callback_metrics["train/loss"])


# ----------------------------------------------------------------------------- i-Mix
def test_imix_loss_is_the_cross_entropy_with_virtual_labels() -> None:
    q, keys, queue = _unit(3, D, seed=0), _unit(3, D, seed=1), _unit(5, D, seed=2)
    own, partner = torch.arange(3), torch.tensor([2, 0, 1])
    lam = torch.tensor([0.7, 0.7, 0.7])
    loss, _ = imix_loss(q, keys, queue, own, partner, lam, temperature=0.2)
    logits = torch.cat([q @ keys.T, q @ queue.T], dim=1) / 0.2  # (3, 3 + 5)
    target = torch.zeros(3, 8)
    target[torch.arange(3), own] += lam
    target[torch.arange(3), partner] += 1 - lam
    expected = -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
    assert torch.allclose(loss, expected, atol=1e-6)
    # λ = 1: InfoNCE of the own key against the batch's other keys and the queue.
    ones, _ = imix_loss(q, keys, queue, own, partner, torch.ones(3), temperature=0.2)
    assert torch.allclose(ones, F.cross_entropy(logits, own), atol=1e-6)


@pytest.mark.parametrize("mix", ["mixup", "cutmix"])
def test_imix_trains_without_gradient_to_the_keys(mix: str) -> None:
    torch.manual_seed(0)
    model = IMix(model_cfg(), OptimConfig(), BATCH, MixingConfig(alpha=1.0), IMixConfig(mix))
    assert type(model.mixup).__name__ == {"mixup": "MixUp", "cutmix": "CutMix"}[mix]
    trainer = fit(model, steps=2)
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    assert not any(p.requires_grad for p in model.backbone_momentum.parameters())


# ----------------------------------------------------------------------------- Un-Mix
def test_unmix_mixes_each_image_with_its_mirror_and_alternates_mixups() -> None:
    assert mirrored_partners(5, torch.device("cpu")).tolist() == [4, 3, 2, 1, 0]
    model = UnMix(model_cfg(), OptimConfig(), BATCH, MixingConfig(alpha=1.0))
    assert [model.mixup_of_step(s).name for s in range(4)] == ["mixup", "cutmix"] * 2


def test_unmix_trains() -> None:
    torch.manual_seed(0)
    trainer = fit(UnMix(model_cfg(), OptimConfig(), BATCH, MixingConfig(alpha=1.0)), steps=2)
    metrics = trainer.callback_metrics
    assert torch.isfinite(metrics["train/loss_mix"]) and torch.isfinite(metrics["train/loss_moco"])


# ----------------------------------------------------------------------------- PuzzleMix (C)
def _puzzlemix() -> PuzzleMixMoCo:
    odc = ODCConfig(num_clusters=3, min_cluster_size=4, refresh_interval=2)
    return PuzzleMixMoCo(model_cfg(), OptimConfig(), BATCH, MixingConfig(alpha=1.0), odc,
                         num_samples=N_IMAGES)  # fmt: skip


def test_puzzlemix_saliency_is_the_cluster_heads_input_gradient() -> None:
    pytest.importorskip("gco")
    torch.manual_seed(0)
    model = _puzzlemix()
    x = torch.randn(BATCH, 3, 32, 32)
    y = torch.arange(BATCH) % 3
    saliency = model.saliency(x, y)
    xr = x.clone().requires_grad_()
    model.eval()
    q = F.normalize(model.projection_head(model.backbone(xr)), dim=1)
    F.cross_entropy(model.clustering.head(q), y).backward()
    assert xr.grad is not None
    assert torch.allclose(saliency, xr.grad.pow(2).mean(dim=1).sqrt(), rtol=1e-4, atol=1e-9)
    model.zero_grad(set_to_none=True)
    model.train()
    model.saliency(x, y)
    assert all(p.grad is None for p in model.parameters())  # the parameters are untouched
    assert model.training and model.backbone.training  # eval mode only for the pass


def test_puzzlemix_mixes_the_same_with_a_permutation_or_with_gathered_partners() -> None:
    """The one-process path (batch + permutation) and the DDP path (2N batch of partners)
    give the same mixes, so a partner on another device is mixed as a local one."""
    pytest.importorskip("gco")
    model = _puzzlemix()
    g = torch.Generator().manual_seed(1)
    x, sal = torch.randn(BATCH, 3, 32, 32, generator=g), torch.rand(BATCH, 32, 32, generator=g)
    perm, lam = torch.roll(torch.arange(BATCH), 1), torch.full((BATCH,), 0.6)
    torch.manual_seed(3)
    local = model.puzzle_mix(x, sal, x[perm], sal[perm], lam, perm)
    torch.manual_seed(3)
    paired = model.puzzle_mix(x, sal, x[perm], sal[perm], lam, None)
    assert torch.allclose(local.images, paired.images) and torch.equal(local.lam, paired.lam)
    assert local.mask is not None and torch.allclose(local.lam, local.mask.mean(dim=(1, 2, 3)))


def test_puzzlemix_trains_with_cluster_labels() -> None:
    pytest.importorskip("gco")
    torch.manual_seed(0)
    model = _puzzlemix()
    head_before = model.clustering.head.weight.detach().clone()
    trainer = fit(model, steps=2)
    metrics = trainer.callback_metrics
    assert bool(model.clustering.memory.initialized)
    for name in ("train/loss_mix", "train/loss_moco", "train/loss_head"):
        assert torch.isfinite(metrics[name]), name
    assert 0.0 <= float(metrics["train/lam"]) <= 1.0
    assert not torch.equal(model.clustering.head.weight, head_before)  # the head learns
    assert int((model.clustering.queue_labels >= 0).sum()) == 2 * BATCH
