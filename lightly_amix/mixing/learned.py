"""Learned mixup as a component: the Mix Block together with the two samples of its step.

An AutoMix-style step (AutoMix, Liu et al., ECCV 2022; AMix paper §3.3) makes two mixed samples
from the same images and the same stage-l feature maps:

- the **backbone's sample** (:meth:`LearnedMixup.backbone_sample`): the Mix Block's mask,
  computed without gradient, λ-adjusted (Mix Block+, paper §3.2) and, when λ is within
  ``degenerate_margin`` of 0 or 1, replaced by the constant λ (plain MixUp: AutoMix's
  ``lam_margin``, a mask that far from balanced carries no useful shape);
- the **Mix Block's sample** (:meth:`LearnedMixup.block_sample`): the mask with its gradient,
  and the mask loss ``β (L_mean − L_var)`` (or ``β L_mean`` for AutoMix's block).

The caller encodes the Mix Block's sample with a frozen network and adds its classification
loss (mixup CE for supervised learning, infoNCE / BCE for contrastive learning); the gradient
then reaches only the Mix Block. ``LearnedMixup`` *is* a :class:`MixBlock` (it adds the step to
it), so a method's ``mix_block`` attribute and its checkpoint keys stay those of the block.

Examples:
    >>> mixer = LearnedMixup(in_channels=256, config=MixBlockConfig())
    >>> x_mix, mask, lam_eff = mixer.backbone_sample(x, x[perm], z, z[perm], lam)
    >>> x_mb, mask_mb, loss_mask = mixer.block_sample(x, x[perm2], z, z[perm2], lam2)
    >>> loss = mixup_ce(frozen(x_mb), y, y[perm2], lam2) + loss_mask  # doctest: +SKIP
"""

from __future__ import annotations

import torch
from torch import Tensor

from lightly_amix.mixing.masks import adjust_lambda, mask_loss
from lightly_amix.mixing.mix_block import MixBlock, MixBlockConfig


class LearnedMixup(MixBlock):
    """The Mix Block and the two mixed samples of one AutoMix-style step.

    Args:
        in_channels: Channels of the stage-l feature maps.
        config: Mix Block switches (``MixBlockConfig()`` is Mix Block+, ``.automix()`` AutoMix's).
        degenerate_margin: The backbone's sample is a plain MixUp when ``λ <= margin`` or
            ``λ >= 1 - margin`` (AutoMix's classification configs: 0.08; 0 turns it off).

    Raises:
        ValueError: If ``degenerate_margin`` is not in [0, 0.5).
    """

    def __init__(
        self, in_channels: int, config: MixBlockConfig | None = None, degenerate_margin: float = 0.0
    ) -> None:
        super().__init__(in_channels, config)
        if not 0.0 <= degenerate_margin < 0.5:
            raise ValueError(f"degenerate_margin must be in [0, 0.5), got {degenerate_margin}.")
        self.degenerate_margin = degenerate_margin

    def _mask(self, x: Tensor, z: Tensor, z_partner: Tensor, lam: Tensor) -> Tensor:
        """The mask (N, 1, H, W) of ``x``'s share for partners with maps ``z_partner``."""
        return self(z, z_partner, lam, out_size=(x.shape[2], x.shape[3]))

    @torch.no_grad()
    def backbone_sample(
        self, x: Tensor, x_partner: Tensor, z: Tensor, z_partner: Tensor, lam: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """The backbone's mixed images from a detached, λ-adjusted mask.

        Args:
            x: Images (N, C, H, W).
            x_partner: Their partners (N, C, H, W).
            z: Stage-l maps of ``x`` (N, C_l, h, w).
            z_partner: Those of the partners (N, C_l, h, w).
            lam: Requested share of ``x`` (N,).

        Returns:
            The mixed images (N, C, H, W), the mask (N, 1, H, W) and the effective λ, the
            mask's mean per sample (N,).
        """
        mask = self._mask(x, z, z_partner, lam)
        if self.config.lambda_adjust and self._adjust_this_batch():
            mask = adjust_lambda(mask, lam, self.config.adjust_margin)
        if self.degenerate_margin > 0:
            m = self.degenerate_margin
            plain = ((lam <= m) | (lam >= 1 - m)).view(-1, 1, 1, 1)  # (N, 1, 1, 1)
            mask = torch.where(plain, lam.view(-1, 1, 1, 1).to(mask.dtype).expand_as(mask), mask)
        x_mix = torch.lerp(x_partner, x, mask.to(x.dtype))
        return x_mix, mask, mask.float().mean(dim=(1, 2, 3))

    def block_sample(
        self, x: Tensor, x_partner: Tensor, z: Tensor, z_partner: Tensor, lam: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """The Mix Block's mixed images (with gradient to the block) and its mask loss.

        Args:
            x: Images (N, C, H, W).
            x_partner: Their partners (N, C, H, W).
            z: Stage-l maps of ``x`` (N, C_l, h, w), without gradient.
            z_partner: Those of the partners.
            lam: Requested share of ``x`` (N,).

        Returns:
            The mixed images (N, C, H, W), the mask (N, 1, H, W) and the mask loss (scalar).
        """
        mask = self._mask(x, z, z_partner, lam)
        x_mb = torch.lerp(x_partner, x, mask.to(x.dtype))
        loss = mask_loss(
            mask,
            lam,
            margin=self.config.mask_margin,
            weight=self.config.mask_loss_weight,
            use_variance=self.config.mask_loss == "mean_var",
            reduction=self.config.mask_loss_reduction,
            variance_weight=self.config.variance_weight,
            normalize_variance=self.config.variance_norm,
        )
        return x_mb, mask, loss

    def _adjust_this_batch(self) -> bool:
        """Whether this batch's backbone mask is λ-adjusted (``adjust_probability``)."""
        p = self.config.adjust_probability
        return p >= 1.0 or (p > 0.0 and float(torch.rand(())) < p)
