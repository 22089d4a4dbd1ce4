from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lightly_amix.mixing.masks import (
    MaskEpochStatistics,
    adjust_lambda,
    mask_diagnostics,
    mask_loss,
    pearson,
    whole_image,
)


def test_mask_loss_matches_direct_formula() -> None:
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(4, 1, 5, 6, generator=g)
    lam = torch.tensor([0.1, 0.5, 0.52, 0.95])
    mean_terms, var_terms = [], []
    for n in range(4):
        mu = mask[n].mean()
        mean_terms.append(max(abs(lam[n] - mu) - 0.1, 0.0))
        var_terms.append(((mask[n] - mu) ** 2).sum() / 30)
    l_mean = torch.tensor(mean_terms).mean()
    l_var = torch.stack(var_terms).mean()
    assert torch.allclose(mask_loss(mask, lam), 0.1 * (l_mean - l_var), atol=1e-6)
    assert torch.allclose(mask_loss(mask, lam, use_variance=False), 0.1 * l_mean, atol=1e-6)
    no_margin = (lam - mask.mean(dim=(1, 2, 3))).abs().mean() - l_var
    assert torch.allclose(mask_loss(mask, lam, margin=0.0, weight=1.0), no_margin, atol=1e-6)


def test_variance_is_rewarded_so_constant_masks_are_not_optimal() -> None:
    lam = torch.tensor([0.5])
    constant = torch.full((1, 1, 4, 4), 0.5)
    binary = torch.zeros(1, 1, 4, 4)
    binary[..., :2] = 1.0  # same mean 0.5, variance 0.25
    assert mask_loss(binary, lam) < mask_loss(constant, lam)
    assert mask_loss(binary, lam) == pytest.approx(-0.1 * 0.25)


def test_gradient_of_mask_loss_pushes_the_mean_towards_lambda() -> None:
    mask = torch.full((1, 1, 2, 2), 0.9, requires_grad=True)
    mask_loss(mask, torch.tensor([0.2])).backward()
    assert bool((mask.grad > 0).all())  # lowering the mask lowers the loss


@settings(max_examples=60, deadline=None)
@given(
    lam=st.floats(0.0, 1.0),
    seed=st.integers(0, 10_000),
    power=st.floats(0.2, 5.0),
    margin=st.sampled_from([0.0, 0.05, 0.1]),
)
def test_adjusted_mask_stays_in_range_and_its_mean_is_within_the_margin(
    lam: float, seed: int, power: float, margin: float
) -> None:
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(3, 1, 6, 7, generator=g) ** power  # masks of many different means
    lam_t = torch.full((3,), lam)
    out = adjust_lambda(mask, lam_t, margin=margin)
    assert bool(((out >= 0) & (out <= 1)).all())
    mu_before = mask.mean(dim=(1, 2, 3))
    mu_after = out.mean(dim=(1, 2, 3))
    assert bool(((mu_after - lam_t).abs() <= margin + 1e-5).all())
    inside = (mu_before - lam_t).abs() <= margin
    assert torch.equal(out[inside], mask[inside])  # masks already close to λ are untouched


def test_adjust_lambda_formulas_per_branch() -> None:
    mask = torch.tensor([0.2, 0.9, 1.0, 0.7]).view(1, 1, 2, 2).repeat(2, 1, 1, 1)
    mu = mask[0].mean()  # 0.7
    lam = torch.tensor([0.3, 0.95])
    out = adjust_lambda(mask, lam)
    assert torch.allclose(out[0], mask[0] * 0.3 / mu)  # μ > λ + m: shrink s_i
    s_j = (1 - mask[1]) * (1 - 0.95) / (1 - mu)  # μ < λ − m: shrink s_j
    assert torch.allclose(out[1], 1 - s_j)
    assert out[1].mean() == pytest.approx(0.95, abs=1e-6)


def test_adjust_lambda_has_no_gradient_and_handles_degenerate_masks() -> None:
    mask = torch.zeros(2, 1, 3, 3, requires_grad=True)
    out = adjust_lambda(mask, torch.tensor([0.5, 0.0]))
    assert not out.requires_grad and torch.isfinite(out).all()
    assert out[0].mean().item() == pytest.approx(0.5, abs=1e-5)
    assert torch.equal(out[1], torch.zeros(1, 3, 3))


def test_diagnostics() -> None:
    constant = torch.full((2, 1, 4, 4), 0.3)
    d = mask_diagnostics(constant, torch.tensor([0.3, 0.5]))
    assert d["mask_std"].item() == pytest.approx(0.0)
    assert d["mask_mean"].item() == pytest.approx(0.3)
    assert d["mask_lam_gap"].item() == pytest.approx(0.1)
    binary = (torch.arange(16).view(1, 1, 4, 4) % 2).float()
    assert mask_diagnostics(binary, torch.tensor([0.5]))["mask_std"].item() == pytest.approx(0.5)


@pytest.mark.parametrize("fn", [mask_loss, adjust_lambda, mask_diagnostics])
def test_shape_errors(fn) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=r"mask must have shape \(N, 1, H, W\)"):
        fn(torch.rand(2, 3, 4, 4), torch.rand(2))
    with pytest.raises(ValueError, match=r"lam must have shape \(2,\)"):
        fn(torch.rand(2, 1, 4, 4), torch.rand(3))


def test_batch_reduced_mask_loss_matches_the_authors_formula() -> None:
    """``batch``: |mean λ − batch mean| − ε, minus w × the variance around the batch mean."""
    g = torch.Generator().manual_seed(3)
    mask = torch.rand(4, 1, 5, 5, generator=g)
    lam = torch.tensor([0.9, 0.8, 0.95, 0.85])
    mu = mask.sum() / mask.numel()
    var = ((mask - mu) ** 2).sum() / mask.numel()
    expected = 0.1 * (max(abs(float(lam.mean() - mu)) - 0.1, 0.0) - 2 * var)
    got = mask_loss(mask, lam, reduction="batch", variance_weight=2.0)
    assert got.item() == pytest.approx(float(expected), abs=1e-6)
    # The per-sample variance is smaller: it leaves out the spread between the samples' means.
    per_sample = mask_loss(mask, lam, margin=1.0, weight=1.0)
    batch = mask_loss(mask, lam, margin=1.0, weight=1.0, reduction="batch")
    assert batch.item() <= per_sample.item()
    assert mask_loss(mask, lam, use_variance=False, reduction="batch").item() == pytest.approx(
        0.1 * max(abs(float(lam.mean() - mu)) - 0.1, 0.0), abs=1e-6)  # fmt: skip
    with pytest.raises(ValueError, match="reduction"):
        mask_loss(mask, lam, reduction="pixel")
    with pytest.raises(ValueError, match="variance_weight"):
        mask_loss(mask, lam, variance_weight=-1.0)


def test_diagnostics_count_whole_image_masks() -> None:
    mask = torch.stack([torch.full((1, 4, 4), v) for v in (0.01, 0.5, 0.99, 0.97)])
    assert mask_diagnostics(mask, torch.full((4,), 0.5))["mask_whole"].item() == 0.5


def test_epoch_statistics_match_a_direct_recomputation() -> None:
    g = torch.Generator().manual_seed(0)
    stats = MaskEpochStatistics()
    masks, lams = [], []
    for _ in range(3):
        lam = torch.rand(5, generator=g)
        mask = (lam.view(5, 1, 1, 1) + 0.3 * torch.randn(5, 1, 6, 6, generator=g)).clamp(0, 1)
        mask[0] = 1.0  # one whole-image mask per batch
        stats.update(mask, lam)
        masks.append(mask)
        lams.append(lam)
    mask, lam = torch.cat(masks).double(), torch.cat(lams).double()
    mu = mask.mean(dim=(1, 2, 3))
    got = stats.compute()
    assert got["std"] == pytest.approx(float(mask.flatten(1).std(dim=1, unbiased=False).mean()))
    assert got["lam_corr"] == pytest.approx(float(torch.corrcoef(torch.stack([mu, lam]))[0, 1]))
    assert got["lam_gap"] == pytest.approx(float((mu - lam).abs().mean()))
    assert got["whole"] == pytest.approx(3 / 15)
    assert stats.compute() == {}  # compute resets
    stats.update(torch.full((3, 1, 2, 2), 0.5), torch.rand(3))
    assert math.isnan(stats.compute()["lam_corr"])  # a constant mask mean has no correlation
    assert pearson(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0, 4.0, 6.5])) > 0.99


def test_normalised_variance_rewards_sharp_masks_of_any_area_equally() -> None:
    """Divided by μ (1 − μ), a binary mask scores 1 whatever its area (no pull towards 1/2)."""
    g = torch.Generator().manual_seed(0)
    losses = []
    for area in (0.1, 0.3, 0.5, 0.8):
        mask = (torch.rand(3, 1, 16, 16, generator=g) < area).float()
        lam = mask.mean(dim=(1, 2, 3))
        loss = mask_loss(mask, lam, margin=0.0, weight=1.0, normalize_variance=True)
        losses.append(loss.item())
        plain = mask_loss(mask, lam, margin=0.0, weight=1.0)
        expected = -float((mask.mean(dim=(1, 2, 3)) * (1 - mask.mean(dim=(1, 2, 3)))).mean())
        assert plain.item() == pytest.approx(expected, abs=1e-6)  # plain: μ (1 − μ)
    assert losses == pytest.approx([-1.0] * 4, abs=1e-5)
    soft = torch.full((2, 1, 4, 4), 0.3) + 0.1 * torch.randn(2, 1, 4, 4, generator=g)
    lam = soft.mean(dim=(1, 2, 3))
    mu = lam.double()
    var = ((soft.double() - mu.view(-1, 1, 1, 1)) ** 2).mean(dim=(1, 2, 3))
    got = mask_loss(soft, lam, margin=0.0, weight=0.1, variance_weight=2.0,
                    normalize_variance=True)  # fmt: skip
    assert got.item() == pytest.approx(float(-0.2 * (var / (mu * (1 - mu))).mean()), abs=1e-6)


# --- found unchecked by mutation testing ------------------------------------------------------


def _masks() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(4, 1, 5, 5, generator=g), torch.rand(4, generator=g)


@pytest.mark.parametrize("kwargs", [{"margin": -0.1}, {"weight": -1.0}, {"variance_weight": -1.0}])
def test_each_negative_weight_or_margin_is_refused(kwargs: dict[str, float]) -> None:
    mask, lam = _masks()
    with pytest.raises(ValueError, match="must be >= 0"):
        mask_loss(mask, lam, **kwargs)


def test_zero_and_fractional_weights_are_allowed() -> None:
    mask, lam = _masks()
    assert mask_loss(mask, lam, weight=0.0) == 0
    no_variance = mask_loss(mask, lam, use_variance=False)
    assert mask_loss(mask, lam, use_variance=True, variance_weight=0.0) == no_variance
    half = mask_loss(mask, lam, use_variance=True, variance_weight=0.5)
    one = mask_loss(mask, lam, use_variance=True, variance_weight=1.0)
    assert half > one  # the variance term, subtracted, is half as large


def test_an_unknown_reduction_names_the_choices() -> None:
    mask, lam = _masks()
    with pytest.raises(ValueError) as error:
        mask_loss(mask, lam, reduction="mean")
    assert str(error.value) == "Invalid reduction 'mean'. Expected one of: sample, batch."


def test_batch_reduction_with_the_normalised_variance() -> None:
    mask, lam = _masks()
    got = mask_loss(mask, lam, margin=0.0, weight=1.0, use_variance=True, reduction="batch",
                    variance_weight=2.0, normalize_variance=True)  # fmt: skip
    mu = mask.double().mean()
    variance = ((mask.double() - mu) ** 2).mean() / (mu * (1 - mu))
    expected = (lam.double().mean() - mu).abs() - 2.0 * variance
    assert got.item() == pytest.approx(expected.item(), abs=1e-6)


def test_whole_image_boundaries_are_not_whole() -> None:
    mu = torch.tensor([0.0199, 0.02, 0.5, 0.98, 0.9801], dtype=torch.float64)
    assert whole_image(mu).tolist() == [True, False, False, False, True]


def test_epoch_statistics_of_given_rows_and_of_none() -> None:
    stats = MaskEpochStatistics()
    assert stats.samples().shape == (0, 3)
    assert stats.compute() == {}
    mask, lam = _masks()
    stats.update(mask, lam)  # kept, but compute(rows) reads the rows it is given
    rows = torch.tensor([[0.2, 0.1, 0.25], [0.6, 0.3, 0.5], [0.99, 0.0, 0.9]])
    got = stats.compute(rows)
    assert got["std"] == pytest.approx(0.4 / 3)
    assert got["lam_gap"] == pytest.approx((0.05 + 0.1 + 0.09) / 3)
    assert got["whole"] == pytest.approx(1 / 3)
    assert got["lam_corr"] == pytest.approx(pearson(rows[:, 0], rows[:, 2]))


def test_pearson_of_small_values() -> None:
    # Norms far below 1: the correlation does not depend on the scale.
    a = torch.tensor([1.0, 2.0, 4.0]) * 1e-3
    b = torch.tensor([2.0, 1.0, 5.0]) * 1e-3
    assert pearson(a, b) == pytest.approx(pearson(a * 1e3, b * 1e3))
    assert 0 < pearson(a, b) < 1
