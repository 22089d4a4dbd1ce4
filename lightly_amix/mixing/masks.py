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


def mask_loss(
    mask: Tensor,
    lam: Tensor,
    margin: float = 0.1,
    weight: float = 0.1,
    use_variance: bool = True,
) -> Tensor:
    """``β (L_mean − L_var)``, or ``β L_mean`` without the variance term (AutoMix).

    ``L_mean = mean_i max(|λ_i − μ_i| − ε, 0)`` keeps the mask's area near λ;
    ``L_var = mean_i (1/HW) Σ_hw (s_i,hw − μ_i)²`` is the per-sample spatial variance.

    Args:
        mask: ``s_i``, shape (N, 1, H, W).
        lam: λ, shape (N,).
        margin: ε, paper 0.1.
        weight: β, paper 0.1.
        use_variance: Subtract the variance term (Mix Block+) or not (AutoMix).

    Returns:
        Scalar loss (fp32).
    """
    _check(mask, lam)
    if margin < 0 or weight < 0:
        raise ValueError(f"margin and weight must be >= 0, got {margin} and {weight}.")
    mask = mask.float()
    mu = mask_mean(mask)  # (N,)
    loss_mean = (torch.abs(lam.float() - mu) - margin).clamp(min=0).mean()
    if not use_variance:
        return weight * loss_mean
    loss_var = ((mask - mu.view(-1, 1, 1, 1)) ** 2).mean(dim=(1, 2, 3)).mean()
    return weight * (loss_mean - loss_var)


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
    mask = mask.float()
    mu = mask_mean(mask)
    return {
        "mask_mean": mu.mean(),
        "mask_lam_gap": (mu - lam.float()).abs().mean(),
        "mask_std": mask.flatten(1).std(dim=1, unbiased=False).mean(),
    }
