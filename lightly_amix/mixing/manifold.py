"""ManifoldMix: mixup of hidden features at a random stage of the backbone.

The mixup itself only draws the stage; the mixing happens inside the backbone, in
``ResNetBackbone.forward_manifold``. :func:`manifold_features` joins the two.

- [0] Manifold Mixup: Better Representations by Interpolating Hidden States, Verma et al.,
  2019, https://arxiv.org/abs/1806.05236

Examples:
    >>> mixup = ManifoldMix(stages=(0, 1, 2, 3))
    >>> out = mixup(images, perm, lam, generator=g)  # out.images is images, out.stage is set
    >>> features = manifold_features(backbone, out, perm)  # (N, out_dim)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from lightly_amix.mixing.base import MixOutput, Mixup, as_lambda, check_batch

if TYPE_CHECKING:
    from lightly_amix.models.backbones import ResNetBackbone

_VALID_STAGES = (0, 1, 2, 3)


class ManifoldMix(Mixup):
    """ManifoldMix: ``h ← λ h_i + (1 − λ) h_perm[i]`` at the input of a random ResNet stage.

    ``forward`` returns the images unchanged (the very same tensor) together with λ and a stage
    drawn uniformly from ``stages``; pass the output to :func:`manifold_features` (or directly
    to ``ResNetBackbone.forward_manifold``) to get the mixed features. ``stage = 0`` mixes the
    stem's output, ``stage = 3`` the input of ``layer4``.

    - [0] Manifold Mixup: Better Representations by Interpolating Hidden States, Verma et al.,
      2019, https://arxiv.org/abs/1806.05236

    Args:
        stages: Stages to draw from, a non-empty tuple of values in 0..3.

    Raises:
        ValueError: If ``stages`` is empty or holds a value outside 0..3.

    Examples:
        >>> out = ManifoldMix(stages=(2, 3))(images, perm, lam=0.7, generator=g)
        >>> out.images is images, out.stage in (2, 3)
        (True, True)
    """

    name = "manifoldmix"

    def __init__(self, stages: tuple[int, ...] = (0, 1, 2, 3)) -> None:
        super().__init__()
        stages = tuple(stages)
        if not stages:
            raise ValueError("stages must not be empty.")
        for stage in stages:
            if isinstance(stage, bool) or stage not in _VALID_STAGES:
                raise ValueError(f"stages must hold values in 0, 1, 2, 3, got {stages}.")
        self.stages: tuple[int, ...] = tuple(int(stage) for stage in stages)

    def forward(
        self,
        images: Tensor,
        perm: Tensor,
        lam: Tensor | float,
        generator: torch.Generator | None = None,
    ) -> MixOutput:
        """Draws the stage to mix at; the images are returned as they are.

        Args:
            images: Batch (N, C, H, W).
            perm: Partner of each sample, integer tensor (N,).
            lam: Share of ``x_i``, a float or a tensor (N,) in [0, 1].
            generator: CPU generator for the stage (``None``: global RNG).

        Returns:
            ``MixOutput(images=images, lam=λ (N,) float32, mask=None, stage=k)``.

        Raises:
            ValueError: On a bad shape of ``images``, ``perm`` or ``lam``, or λ outside [0, 1].
        """
        check_batch(images, perm)
        lam_t = as_lambda(lam, images.shape[0], images.device)  # (N,)
        index = int(torch.randint(len(self.stages), (1,), generator=generator).item())
        return MixOutput(images=images, lam=lam_t, mask=None, stage=self.stages[index])


def manifold_features(backbone: ResNetBackbone, out: MixOutput, perm: Tensor) -> Tensor:
    """Pooled features with hidden features mixed at ``out.stage`` (ManifoldMix).

    Args:
        backbone: The ResNet backbone.
        out: Output of :class:`ManifoldMix` (``stage`` set).
        perm: The partner permutation given to the mixup, shape (N,).

    Returns:
        Features of shape (N, backbone.out_dim).

    Raises:
        ValueError: If ``out.stage`` is ``None`` (``out`` is not from ManifoldMix) or ``perm``
            does not match the batch.

    Examples:
        >>> out = ManifoldMix()(images, perm, lam, generator=g)
        >>> features = manifold_features(backbone, out, perm)  # (N, out_dim)
    """
    if out.stage is None:
        raise ValueError("out.stage is None: manifold_features needs the output of ManifoldMix.")
    check_batch(out.images, perm)
    return backbone.forward_manifold(out.images, out.stage, perm, out.lam)
