"""Mask losses, λ adjusting and diagnostics for learned mixup masks (AMix paper §3.2).

All functions take a mask ``s_i`` of shape (N, 1, H, W) (the share of ``x_i`` per pixel) and
λ of shape (N,).

Sign of the variance term: the paper prints ``L_mask = β (L_mean + L_var)`` but describes the
variance term as encouraging sparse (non-constant) masks; minimising ``+L_var`` would push the
mask towards a constant, the trivial solution the paper warns against. So the variance is
*rewarded*: ``L_mask = β (L_mean − L_var)`` (the reference code also subtracts a variance).

Reference: AMix, ICLR 2022 submission, §3.2 ("Prior knowledge of mixup").

Examples:
    >>> mask = block(z, z[perm], lam, out_size=(96, 96))
    >>> loss = mask_loss(mask, lam)               # train the Mix Block
    >>> backbone_mask = adjust_lambda(mask.detach(), lam)  # mix for the backbone
"""

from __future__ import annotations

import torch
from torch import Tensor

_EPS = 1e-6


def _check(mask: Tensor, lam: Tensor) -> None:
    if mask.dim() != 4 or mask.shape[1] != 1:
        raise ValueError(f"mask must have shape (N, 1, H, W), got {tuple(mask.shape)}.")
    if lam.shape != (mask.shape[0],):
        raise ValueError(f"lam must have shape ({mask.shape[0]},), got {tuple(lam.shape)}.")


def mask_mean(mask: Tensor) -> Tensor:
    """Per-sample mean ``μ_i`` of a mask (N, 1, H, W) -> (N,)."""
    return mask.mean(dim=(1, 2, 3))


MASK_LOSS_REDUCTIONS = ("sample", "batch")


def mask_loss(
    mask: Tensor,
    lam: Tensor,
    margin: float = 0.1,
    weight: float = 0.1,
    use_variance: bool = True,
    reduction: str = "sample",
    variance_weight: float = 1.0,
    normalize_variance: bool = False,
) -> Tensor:
    """``β (L_mean − w L_var)``, or ``β L_mean`` without the variance term (AutoMix).

    With ``reduction="sample"`` (the paper's text), per sample:
    ``L_mean = mean_i max(|λ_i − μ_i| − ε, 0)`` keeps each mask's area near its λ;
    ``L_var = mean_i (1/HW) Σ_hw (s_i,hw − μ_i)²`` is the per-sample spatial variance.

    With ``reduction="batch"`` (the authors' code, OpenMixup's ``PixelMixBlock.mask_loss``):
    ``μ`` is the mean of the whole batch of masks and ``λ̄`` the batch's mean λ (their code
    draws one λ per batch), ``L_mean = max(|λ̄ − μ| − ε, 0)`` and ``L_var = (1/NHW) Σ (s − μ)²``,
    the variance around the batch mean (spatial *and* between samples); their SAMix subtracts
    it twice (``variance_weight = 2``).

    Args:
        mask: ``s_i``, shape (N, 1, H, W).
        lam: λ, shape (N,).
        margin: ε, paper 0.1.
        weight: β, paper 0.1.
        use_variance: Subtract the variance term (Mix Block+) or not (AutoMix).
        reduction: ``sample`` or ``batch`` (see above).
        variance_weight: ``w``, the weight of the variance term (paper 1, authors' code 2).
        normalize_variance: Divide each variance by ``μ (1 − μ)``, the variance of a binary
            mask with that mean, so the term (in [0, 1]) rewards sharp masks of any area
            instead of pulling every mean towards 1/2, where ``μ (1 − μ)`` peaks. (In the mask
            lab a plain variance term strong enough to make masks spatial held their means at
            1/2, blind to λ: ``benchmarks/RESULTS.md``.)

    Returns:
        Scalar loss (fp32).
    """
    _check(mask, lam)
    if margin < 0 or weight < 0 or variance_weight < 0:
        raise ValueError(
            f"margin, weight and variance_weight must be >= 0, got {margin}, {weight} and "
            f"{variance_weight}."
        )
    if reduction not in MASK_LOSS_REDUCTIONS:
        raise ValueError(
            f"Invalid reduction {reduction!r}. Expected one of: {', '.join(MASK_LOSS_REDUCTIONS)}."
        )
    mask = mask.float()
    if reduction == "batch":
        mu = mask.mean().view(1)  # (1,): the batch's mean mask value
        loss_mean = (torch.abs(lam.float().mean() - mu) - margin).clamp(min=0).mean()
    else:
        mu = mask_mean(mask)  # (N,)
        loss_mean = (torch.abs(lam.float() - mu) - margin).clamp(min=0).mean()
    if not use_variance:
        return weight * loss_mean
    mu4 = mu.view(-1, 1, 1, 1)
    if normalize_variance:
        squares = (mask - mu4) ** 2
        var = squares.mean(dim=(1, 2, 3)) if reduction == "sample" else squares.mean().view(1)
        bound = (mu * (1 - mu)).clamp(min=_EPS)  # the variance of a binary mask of mean μ
        loss_var = (var / bound).mean()
    else:
        loss_var = ((mask - mu4) ** 2).mean()  # equal sample sizes: mean of means
    return weight * (loss_mean - variance_weight * loss_var)


@torch.no_grad()
def adjust_lambda(mask: Tensor, lam: Tensor, margin: float = 0.1) -> Tensor:
    """Moves each mask's mean to λ when it is more than ``margin`` away (no gradient).

    Per sample, with ``μ`` clamped into (1e-6, 1 − 1e-6):

    - ``μ > λ + m``: ``s ← s · λ / μ`` (shrink the share of ``x_i``),
    - ``μ < λ − m``: ``s ← 1 − (1 − s)(1 − λ) / (1 − μ)`` (shrink the share of ``x_j``),
    - otherwise unchanged.

    Both branches keep ``s`` in [0, 1] and give a mean of exactly λ.

    Args:
        mask: ``s_i``, shape (N, 1, H, W), values in [0, 1].
        lam: λ, shape (N,).
        margin: m, paper 0.1.

    Returns:
        The adjusted mask, same shape and dtype.
    """
    _check(mask, lam)
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}.")
    s = mask.float()
    mu = mask_mean(s).clamp(_EPS, 1 - _EPS).view(-1, 1, 1, 1)  # (N, 1, 1, 1)
    lam4 = lam.float().view(-1, 1, 1, 1)
    shrink_i = s * (lam4 / mu)
    shrink_j = 1 - (1 - s) * ((1 - lam4) / (1 - mu))
    out = torch.where(mu > lam4 + margin, shrink_i, torch.where(mu < lam4 - margin, shrink_j, s))
    return out.clamp(0.0, 1.0).to(mask.dtype)


@torch.no_grad()
def mask_diagnostics(mask: Tensor, lam: Tensor) -> dict[str, Tensor]:
    """Scalars to log during training.

    Returns:
        ``mask_mean`` (batch mean of ``μ_i``), ``mask_lam_gap`` (mean ``|μ_i − λ_i|``) and
        ``mask_std`` (mean per-sample spatial standard deviation; near 0 means the Mix Block
        produces constant masks, the known trivial solution).
    """
    _check(mask, lam)
    mu, std = per_sample_mean_std(mask)
    return {
        "mask_mean": mu.mean(),
        "mask_lam_gap": (mu - lam.float()).abs().mean(),
        "mask_std": std.mean(),
        "mask_whole": whole_image(mu).float().mean(),
    }


def per_sample_mean_std(mask: Tensor) -> tuple[Tensor, Tensor]:
    """Each mask's mean ``μ_i`` and spatial standard deviation (population), both (N,), fp32."""
    mask = mask.float()
    return mask_mean(mask), mask.flatten(1).std(dim=1, unbiased=False)


def whole_image(mu: Tensor, margin: float = 0.02) -> Tensor:
    """Which masks take (nearly) one whole image: mean below ``margin`` or above 1 − margin."""
    return (mu < margin) | (mu > 1 - margin)


class MaskEpochStatistics:
    """The four statistics of a learned mixup's masks over many batches (e.g. an epoch).

    Per sample it keeps the mask mean ``μ``, the spatial standard deviation and λ, and
    :meth:`compute` returns:

    - ``std``: mean per-sample spatial standard deviation (≈ 0: constant masks, a blend);
    - ``lam_corr``: Pearson correlation of ``μ`` with λ over all samples (≈ 0: blind to λ;
      NaN when either is constant);
    - ``lam_gap``: mean ``|μ − λ|``;
    - ``whole``: share of masks that take one whole image (``μ < 0.02`` or ``> 0.98``).

    Examples:
        >>> stats = MaskEpochStatistics()
        >>> stats.update(mask, lam)  # every step
        >>> stats.compute()  # at the end of the epoch; also resets
        {'std': 0.21, 'lam_corr': 0.83, 'lam_gap': 0.07, 'whole': 0.02}
    """

    def __init__(self) -> None:
        self._rows: list[Tensor] = []

    @torch.no_grad()
    def update(self, mask: Tensor, lam: Tensor) -> None:
        """Adds a batch: mask (N, 1, H, W), λ (N,)."""
        _check(mask, lam)
        mu, std = per_sample_mean_std(mask.detach())
        self._rows.append(torch.stack([mu, std, lam.detach().float()], dim=1))  # (N, 3)

    def samples(self) -> Tensor:
        """The kept rows ``(μ, std, λ)``, shape (M, 3) (M = 0 before any update)."""
        return torch.cat(self._rows) if self._rows else torch.zeros(0, 3)

    def compute(self, rows: Tensor | None = None) -> dict[str, float]:
        """The four statistics of ``rows`` (default: the kept samples), then a reset."""
        rows = self.samples() if rows is None else rows
        self._rows = []
        if rows.shape[0] == 0:
            return {}
        mu, std, lam = rows.double().unbind(dim=1)
        return {
            "std": float(std.mean()),
            "lam_corr": pearson(mu, lam),
            "lam_gap": float((mu - lam).abs().mean()),
            "whole": float(whole_image(mu).double().mean()),
        }


def pearson(a: Tensor, b: Tensor) -> float:
    """Pearson correlation of two 1-D tensors; NaN when either is constant."""
    a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
    denominator = float(a.norm() * b.norm())
    return float((a * b).sum()) / denominator if denominator > 0 else float("nan")
