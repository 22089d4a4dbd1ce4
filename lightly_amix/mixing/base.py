"""The common interface of every mixup: a batch, a partner permutation and λ in; mixed batch out.

Every mixup here (the learned Mix Block and the fixed ones) mixes sample ``i`` of a batch with
its partner ``perm[i]``. ``λ`` is always the share of the *first* image ``x_i``:
``x_mix = s_i ⊙ x_i + (1 − s_i) ⊙ x_perm[i]`` with ``mean(s_i) ≈ λ``. Because a box or a
thresholded noise field cannot hit an arbitrary λ exactly, each mixup returns the *effective* λ
(the measured share of ``x_i``), which the losses use.

Examples:
    >>> mixup = build_mixup("cutmix")
    >>> g = torch.Generator().manual_seed(0)
    >>> perm = random_partner(8, generator=g)
    >>> lam = sample_lambda(8, alpha=2.0, generator=g)
    >>> out = mixup(images, perm, lam, generator=g)
    >>> out.images.shape, out.lam.shape  # (8, 3, H, W), (8,)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass
class MixOutput:
    """What a mixup returns.

    Attributes:
        images: Mixed images (N, C, H, W). ManifoldMix returns the input images unchanged and
            sets ``stage``: the mixing then happens inside the backbone.
        lam: Effective share of ``x_i`` in each mixed sample, shape (N,), float32.
        mask: Per-pixel share of ``x_i``, shape (N, 1, H, W), for pixel-wise mixups
            (``None`` for MixUp and ManifoldMix, whose share is ``lam`` everywhere).
        stage: ManifoldMix only: index of the ResNet stage whose input is mixed
            (see ``ResNetBackbone.forward_manifold``).
    """

    images: Tensor
    lam: Tensor
    mask: Tensor | None = None
    stage: int | None = None


def as_lambda(lam: Tensor | float, n: int, device: torch.device) -> Tensor:
    """Returns λ as a float32 tensor of shape (N,) on ``device``; checks 0 <= λ <= 1.

    The range is checked where that costs no host-device synchronisation: for Python numbers
    and CPU tensors (``sample_lambda`` draws on the CPU). λ already on an accelerator is
    trusted, so the check never stalls a training step.
    """
    source = torch.as_tensor(lam, dtype=torch.float32)
    if source.device.type == "cpu" and bool(((source < 0) | (source > 1)).any()):
        raise ValueError("lam must lie in [0, 1] (it is the share of the first image).")
    lam_t = source.to(device, non_blocking=True)
    if lam_t.dim() == 0:
        lam_t = lam_t.expand(n)
    if lam_t.shape != (n,):
        raise ValueError(f"lam must be a scalar or have shape ({n},), got {tuple(lam_t.shape)}.")
    return lam_t.contiguous()


def check_batch(images: Tensor, perm: Tensor) -> None:
    """Raises ValueError unless ``images`` is (N, C, H, W) and ``perm`` a permutation of N."""
    if images.dim() != 4:
        raise ValueError(f"images must have shape (N, C, H, W), got {tuple(images.shape)}.")
    n = images.shape[0]
    if perm.shape != (n,) or perm.dtype not in (torch.int64, torch.int32):
        raise ValueError(
            f"perm must be an integer tensor of shape ({n},), got {tuple(perm.shape)} {perm.dtype}."
        )


def random_partner(
    n: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
) -> Tensor:
    """A random permutation of ``range(n)``: the partner of sample ``i`` is ``perm[i]``."""
    return torch.randperm(n, generator=generator, device="cpu").to(device)


def sample_lambda(
    n: int,
    alpha: float = 2.0,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Draws λ ~ Beta(α, α) per sample, shape (N,); α = 2 is the paper's SSL default (Fig. 5).

    ``torch.distributions.Beta`` takes no generator, so it samples under a forked global RNG
    seeded from ``generator``: the same generator state gives the same λ.
    """
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}.")
    seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        lam = torch.distributions.Beta(float(alpha), float(alpha)).sample((n,))
    return lam.to(device)


class Mixup(nn.Module):
    """Base class of the mixups: ``forward(images, perm, lam, generator=None) -> MixOutput``.

    Subclasses are batched tensor code on the input's device (no Python loop over samples or
    pixels). ``generator`` (a CPU ``torch.Generator``) makes the random parts reproducible.
    """

    name: str = "mixup-base"

    def forward(
        self,
        images: Tensor,
        perm: Tensor,
        lam: Tensor | float,
        generator: torch.Generator | None = None,
    ) -> MixOutput:
        """Mixes each sample with its partner.

        Args:
            images: Batch (N, C, H, W), floating point.
            perm: Partner of each sample, integer tensor (N,).
            lam: Requested share of ``x_i``, a float or a tensor (N,) in [0, 1].
            generator: CPU generator for the random parts (``None``: the global RNG).

        Returns:
            The mixed batch, the effective λ (N,) and, for pixel-wise mixups, the mask
            (N, 1, H, W) in the images' dtype.

        Raises:
            ValueError: On a bad shape of ``images``, ``perm`` or ``lam``, or λ outside [0, 1].
        """
        raise NotImplementedError


def mix_with_mask(images: Tensor, perm: Tensor, mask: Tensor) -> Tensor:
    """``mask ⊙ x_i + (1 − mask) ⊙ x_perm[i]`` for a mask of shape (N, 1, H, W)."""
    return torch.lerp(images[perm], images, mask.to(images.dtype))


def pair_batch(images: Tensor, partners: Tensor, lam: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """A 2N batch in which sample ``n`` and ``N + n`` are each other's partners.

    Mixing ``images[n]`` with an arbitrary ``partners[n]`` (say, from another device) with
    any mixup: run the mixup on the returned batch, permutation and λ, and keep the first N
    rows.

    Returns:
        ``(cat(images, partners)`` (2N, ...), the swap permutation (2N,), ``cat(λ, 1 − λ)``
        (2N,)).
    """
    n = images.shape[0]
    swap = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(images.device)
    lam = lam.to(images.device)
    return torch.cat([images, partners]), swap, torch.cat([lam, 1 - lam])
