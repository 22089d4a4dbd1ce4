"""Colour jitter of whole batches with torchvision's per-image semantics.

Examples:
    >>> jitter = BatchColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8)
    >>> tuple(jitter(torch.rand(4, 3, 8, 8)).shape)
    (4, 3, 8, 8)
"""

from __future__ import annotations

import math

import torch
from kornia.enhance import (
    adjust_brightness_accumulative,
    adjust_contrast_with_mean_subtraction,
    adjust_hue,
    adjust_saturation_with_gray_subtraction,
)
from torch import Tensor, nn

from lightly_amix.data.transforms import (
    MOCO_V2_CJ_BRIGHTNESS,
    MOCO_V2_CJ_CONTRAST,
    MOCO_V2_CJ_HUE,
    MOCO_V2_CJ_PROB,
    MOCO_V2_CJ_SATURATION,
)

# Neutral factor of each colour adjustment (brightness, contrast, saturation, hue).
_NEUTRAL = (1.0, 1.0, 1.0, 0.0)


class BatchColorJitter(nn.Module):
    """torchvision's ``RandomApply([ColorJitter(b, c, s, h)], p)``, batched, per-sample order.

    Every image draws whether it is jittered (probability ``p``), its four factors
    (brightness, contrast, saturation ~ U[max(0, 1 - x), 1 + x], hue ~ U[-h, h]) and a random
    order of the four adjustments, exactly as torchvision's ``ColorJitter.get_params`` does
    per call. Inputs and outputs are float images in [0, 1]; every adjustment clamps to
    [0, 1] (hue keeps the range by construction), as torchvision's tensor functions do.

    Written here because kornia's ``ColorJitter`` draws one order per batch. The parameters
    are drawn on the CPU (torch's global generator), so the indices of the images that take
    adjustment ``op`` at position ``k`` of their order are known on the host: each of the 16
    (position, adjustment) pairs runs on its own subset of the batch, every image goes
    through its four adjustments exactly once, and nothing waits for the GPU.

    Args:
        brightness: Brightness strength x (factor range [1 - x, 1 + x]).
        contrast: Contrast strength.
        saturation: Saturation strength.
        hue: Hue strength h in [0, 0.5] (shift in turns).
        p: Probability of jittering an image.

    Examples:
        >>> jitter = BatchColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8)
        >>> out = jitter(torch.rand(4, 3, 8, 8))
        >>> tuple(out.shape)
        (4, 3, 8, 8)
    """

    def __init__(
        self,
        brightness: float = MOCO_V2_CJ_BRIGHTNESS,
        contrast: float = MOCO_V2_CJ_CONTRAST,
        saturation: float = MOCO_V2_CJ_SATURATION,
        hue: float = MOCO_V2_CJ_HUE,
        p: float = MOCO_V2_CJ_PROB,
    ) -> None:
        super().__init__()
        for name, value in (
            ("brightness", brightness),
            ("contrast", contrast),
            ("saturation", saturation),
        ):
            if value < 0:
                raise ValueError(f"{name} must be non-negative, got {value}.")
        if not 0.0 <= hue <= 0.5:
            raise ValueError(f"hue must be in [0, 0.5], got {hue}.")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}.")
        self.ranges = (
            (max(0.0, 1.0 - brightness), 1.0 + brightness),
            (max(0.0, 1.0 - contrast), 1.0 + contrast),
            (max(0.0, 1.0 - saturation), 1.0 + saturation),
            (-hue, hue),
        )
        self.p = p

    def sample_params(self, batch_size: int) -> tuple[Tensor, Tensor, Tensor]:
        """Draws per-image parameters on the CPU.

        Returns:
            ``applied`` (B,) bool: whether each image is jittered; ``factors`` (B, 4):
            brightness, contrast, saturation and hue (in turns) of every image; ``order``
            (B, 4): a permutation of 0..3 per image (0 brightness, 1 contrast, 2 saturation,
            3 hue), as torchvision's ``torch.randperm(4)``.
        """
        low = torch.tensor([r[0] for r in self.ranges])  # (4,)
        high = torch.tensor([r[1] for r in self.ranges])  # (4,)
        applied = torch.rand(batch_size) < self.p  # (B,)
        factors = low + (high - low) * torch.rand(batch_size, 4)  # (B, 4)
        order = torch.rand(batch_size, 4).argsort(dim=1)  # (B, 4) uniform permutations
        return applied, factors, order

    @staticmethod
    def apply_params(images: Tensor, applied: Tensor, factors: Tensor, order: Tensor) -> Tensor:
        """Applies the adjustments with the given parameters, in each image's order.

        Args:
            images: Float images in [0, 1], shape (B, 3, H, W), on any device.
            applied: (B,) bool on the CPU: images to jitter; the others are returned as is.
            factors: (B, 4) brightness, contrast, saturation, hue (in turns) per image.
            order: (B, 4) permutation of 0..3 per image, on the CPU.

        Returns:
            The jittered images, shape (B, 3, H, W).
        """
        out = images.clone()
        factors = factors.to(images.device, non_blocking=True)
        for position in range(4):
            for op in range(4):
                rows = (applied & (order[:, position] == op)).nonzero().squeeze(1)  # CPU
                if rows.numel() == 0:
                    continue
                rows = rows.to(images.device, non_blocking=True)
                adjusted = _adjust(out.index_select(0, rows), factors[rows, op], op)
                out.index_copy_(0, rows, adjusted)
        return out

    def forward(self, images: Tensor) -> Tensor:
        return self.apply_params(images, *self.sample_params(images.shape[0]))


def _adjust(images: Tensor, factor: Tensor, op: int) -> Tensor:
    """One colour adjustment with a per-image factor (B,): torchvision's formulas."""
    if op == 0:
        return adjust_brightness_accumulative(images, factor).clamp(0.0, 1.0)
    if op == 1:
        return adjust_contrast_with_mean_subtraction(images, factor).clamp(0.0, 1.0)
    if op == 2:
        return adjust_saturation_with_gray_subtraction(images, factor).clamp(0.0, 1.0)
    return adjust_hue(images, factor * 2.0 * math.pi)  # turns -> radians, as kornia expects
