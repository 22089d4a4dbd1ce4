"""Fixed (hand-designed) mixups, the baselines of the AMix paper (Tables 4 and 5).

Each class mixes sample ``i`` of a batch with its partner ``perm[i]``. As everywhere in this
package, λ is the share of the *first* image: ``x_mix = s ⊙ x_i + (1 − s) ⊙ x_perm[i]``. A box or
a thresholded noise field cannot reach an arbitrary λ, so every mixup returns the *effective* λ,
which equals the mean of the returned mask.

All randomness is drawn on the CPU from ``generator`` (or the global RNG when it is ``None``) and
then moved to the images' device, so a fixed seed gives the same boxes on every device (FMix:
up to a few pixels at the threshold, see :class:`FMix`).

- MixUp: Zhang et al., 2018, https://arxiv.org/abs/1710.09412
- CutMix: Yun et al., 2019, https://arxiv.org/abs/1905.04899
- FMix: Harris et al., 2020, https://arxiv.org/abs/2002.12047
- ResizeMix: Qin et al., 2020, https://arxiv.org/abs/2012.11101
- SaliencyMix: Uddin et al., 2021, https://arxiv.org/abs/2006.01791
- Spectral residual saliency: Hou & Zhang, "Saliency Detection: A Spectral Residual Approach",
  CVPR 2007.

Examples:
    >>> cutmix = CutMix()
    >>> g = torch.Generator().manual_seed(0)
    >>> perm = random_partner(8, generator=g)
    >>> out = cutmix(images, perm, lam=0.7, generator=g)
    >>> out.images.shape, out.lam.shape, out.mask.shape  # (8, 3, H, W), (8,), (8, 1, H, W)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from lightly_amix.mixing.base import MixOutput, Mixup, as_lambda, check_batch, mix_with_mask

# ITU-R BT.601 luma weights, used to turn RGB images grey for the saliency map.
_LUMA = (0.299, 0.587, 0.114)
# Amplitudes below this share of the largest one are raised to it before the log, so that exact
# spectral zeros (e.g. of synthetic images) do not dominate the spectral residual.
_AMPLITUDE_FLOOR = 1e-3
_TINY = 1e-12


def _prepare(images: Tensor, perm: Tensor, lam: Tensor | float) -> Tensor:
    """Checks the arguments of a mixup and returns λ as float32 (N,) on the images' device."""
    check_batch(images, perm)
    if not images.is_floating_point():
        raise ValueError(f"images must be a floating point tensor, got {images.dtype}.")
    return as_lambda(lam, images.shape[0], images.device)


def _box_mask(
    top: Tensor, left: Tensor, box_h: Tensor, box_w: Tensor, height: int, width: int
) -> Tensor:
    """Boolean (N, 1, H, W) mask, True outside the box ``[top, top+box_h) × [left, left+box_w)``.

    All bounds are int64 tensors of shape (N,); the box lies inside the image.
    """
    rows = torch.arange(height, device=top.device).view(1, height, 1)  # (1, H, 1)
    cols = torch.arange(width, device=top.device).view(1, 1, width)  # (1, 1, W)
    top, left = top.view(-1, 1, 1), left.view(-1, 1, 1)  # (N, 1, 1)
    in_rows = (rows >= top) & (rows < top + box_h.view(-1, 1, 1))  # (N, H, 1)
    in_cols = (cols >= left) & (cols < left + box_w.view(-1, 1, 1))  # (N, 1, W)
    return ~(in_rows & in_cols).unsqueeze(1)  # (N, 1, H, W)


def _pixel_share(count: Tensor, pixels: int) -> Tensor:
    """``count / pixels`` as float32 (N,), correctly rounded on every device.

    Dividing by a Python number may become a multiplication by its reciprocal on some devices
    (one unit in the last place off), so the divisor is a tensor.
    """
    numerator = count.to(torch.float32)  # (N,)
    return numerator / torch.full_like(numerator, float(pixels))  # (N,)


def _lambda_from_box(box_h: Tensor, box_w: Tensor, height: int, width: int) -> Tensor:
    """Share of ``x_i`` when a box of ``box_h × box_w`` pixels comes from the partner, (N,)."""
    return _pixel_share(height * width - box_h * box_w, height * width)  # (N,)


def _centred_box(
    lam: Tensor, centre_y: Tensor, centre_x: Tensor, height: int, width: int, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    """CutMix box of area ratio ``1 − λ`` around integer centres, clipped to the image.

    Returns the mask (N, 1, H, W) in ``dtype`` (0 inside the box) and the effective λ (N,)
    recomputed from the clipped box.
    """
    side = torch.sqrt(1.0 - lam)  # (N,), side ratio of the box
    full_h = torch.round(side * height).long()  # (N,)
    full_w = torch.round(side * width).long()  # (N,)
    top = (centre_y - full_h // 2).clamp(0, height)  # (N,)
    bottom = (centre_y - full_h // 2 + full_h).clamp(0, height)  # (N,)
    left = (centre_x - full_w // 2).clamp(0, width)  # (N,)
    right = (centre_x - full_w // 2 + full_w).clamp(0, width)  # (N,)
    box_h, box_w = bottom - top, right - left  # (N,), clipped sizes
    mask = _box_mask(top, left, box_h, box_w, height, width).to(dtype)  # (N, 1, H, W)
    return mask, _lambda_from_box(box_h, box_w, height, width)


class MixUp(Mixup):
    """MixUp: a global convex combination ``λ x_i + (1 − λ) x_perm[i]``.

    The effective λ is the requested λ; there is no mask (the share is λ at every pixel).

    - [0] mixup: Beyond Empirical Risk Minimization, Zhang et al., 2018,
      https://arxiv.org/abs/1710.09412

    Examples:
        >>> out = MixUp()(images, perm, lam=0.3)
        >>> torch.allclose(out.images, 0.3 * images + 0.7 * images[perm])
        True
    """

    name = "mixup"

    def forward(
        self,
        images: Tensor,
        perm: Tensor,
        lam: Tensor | float,
        generator: torch.Generator | None = None,
    ) -> MixOutput:
        """Mixes ``images`` (N, C, H, W) with ``images[perm]``; ``generator`` is unused.

        Arguments, returns and errors as in :meth:`Mixup.forward`.
        """
        lam_t = _prepare(images, perm, lam)  # (N,)
        weight = lam_t.to(images.dtype).view(-1, 1, 1, 1)  # (N, 1, 1, 1)
        mixed = torch.lerp(images[perm], images, weight)  # (N, C, H, W)
        return MixOutput(images=mixed, lam=lam_t, mask=None)


class CutMix(Mixup):
    """CutMix: a box of area ratio ``1 − λ`` is pasted from ``x_perm[i]`` into ``x_i``.

    The box has height ``round(H·sqrt(1 − λ))`` and width ``round(W·sqrt(1 − λ))``, its centre is
    a uniformly random pixel, and it is clipped to the image borders. The effective λ is
    recomputed from the clipped box, ``1 − box_area / (H·W)``, and equals the mask mean.

    - [0] CutMix: Regularization Strategy to Train Strong Classifiers with Localizable
      Features, Yun et al., 2019, https://arxiv.org/abs/1905.04899

    Examples:
        >>> out = CutMix()(images, perm, lam=0.6, generator=torch.Generator().manual_seed(0))
        >>> out.mask.shape  # (N, 1, H, W): 0 inside the pasted box
    """

    name = "cutmix"

    def forward(
        self,
        images: Tensor,
        perm: Tensor,
        lam: Tensor | float,
        generator: torch.Generator | None = None,
    ) -> MixOutput:
        """Pastes a random box of each partner into each image.

        ``generator`` (CPU) draws the box centres (``None``: global RNG).

        Arguments, returns and errors as in :meth:`Mixup.forward`.
        """
        lam_t = _prepare(images, perm, lam)  # (N,)
        n, _, height, width = images.shape
        centres = torch.stack(
            (
                torch.randint(height, (n,), generator=generator),
                torch.randint(width, (n,), generator=generator),
            )
        ).to(images.device)  # (2, N)
        mask, lam_eff = _centred_box(lam_t, centres[0], centres[1], height, width, images.dtype)
        return MixOutput(images=mix_with_mask(images, perm, mask), lam=lam_eff, mask=mask)


def _fourier_noise(
    n: int,
    height: int,
    width: int,
    decay_power: float,
    generator: torch.Generator | None,
    device: torch.device,
) -> Tensor:
    """Low-frequency noise fields (N, H, W): random spectra with ``1/f^decay_power`` amplitude."""
    freq_y = torch.fft.fftfreq(height, device=device).view(-1, 1)  # (H, 1)
    freq_x = torch.fft.rfftfreq(width, device=device).view(1, -1)  # (1, W//2+1)
    freq = torch.sqrt(freq_y**2 + freq_x**2)  # (H, W//2+1)
    scale = freq.clamp(min=1.0 / max(height, width)).pow(-decay_power)  # (H, W//2+1)
    shape = (n, 2, height, width // 2 + 1)
    if device.type == "cpu":
        parts = torch.randn(shape, generator=generator)
    else:
        # Millions of normal draws on the CPU would dominate the cost on an accelerator: draw
        # them there, from a device generator seeded by ``generator`` (reproducible per device).
        seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
        device_gen = torch.Generator(device=device).manual_seed(seed)
        parts = torch.randn(shape, generator=device_gen, device=device)
    spectrum = torch.complex(parts[:, 0], parts[:, 1]) * scale  # (N, H, W//2+1)
    return torch.fft.irfft2(spectrum, s=(height, width))  # (N, H, W)


class FMix(Mixup):
    """FMix: a binary mask from thresholded low-frequency Fourier noise.

    Per sample, a random complex spectrum on the ``rfft2`` frequency grid is scaled by
    ``1 / max(f, 1/max(H, W)) ** decay_power`` and transformed back to a real noise field. The
    mask is 1 (pixel from ``x_i``) on the ``round(λ·H·W)`` pixels with the largest noise, so the
    effective λ is ``round(λ·H·W) / (H·W)``, the mask mean.

    The spectra are drawn on the images' device from a stream seeded by ``generator``: a
    fixed seed gives identical masks on the same kind of device, and the same areas (λ) on any
    device, but not the same masks on a CPU and a GPU.

    - [0] FMix: Enhancing Mixed Sample Data Augmentation, Harris et al., 2020,
      https://arxiv.org/abs/2002.12047

    Args:
        decay_power: Decay of the amplitude with frequency; larger gives smoother masks.

    Raises:
        ValueError: If ``decay_power`` is not a positive finite number.

    Examples:
        >>> out = FMix(decay_power=3.0)(images, perm, lam=0.5, generator=g)
        >>> out.mask.sum(dim=(1, 2, 3))  # round(0.5 * H * W) for every sample
    """

    name = "fmix"

    def __init__(self, decay_power: float = 3.0) -> None:
        super().__init__()
        if not (math.isfinite(decay_power) and decay_power > 0):
            raise ValueError(f"decay_power must be a positive number, got {decay_power}.")
        self.decay_power = float(decay_power)

    def forward(
        self,
        images: Tensor,
        perm: Tensor,
        lam: Tensor | float,
        generator: torch.Generator | None = None,
    ) -> MixOutput:
        """Mixes each image with its partner through a thresholded noise mask.

        ``generator`` seeds the random spectra (``None``: global RNG).

        Arguments, returns and errors as in :meth:`Mixup.forward`.
        """
        lam_t = _prepare(images, perm, lam)  # (N,)
        n, _, height, width = images.shape
        pixels = height * width
        noise = _fourier_noise(n, height, width, self.decay_power, generator, images.device)
        num_ones = torch.round(lam_t * pixels).long()  # (N,)
        # Rank the pixels of each sample by noise; the num_ones highest come from x_i.
        order = noise.reshape(n, pixels).argsort(dim=1, descending=True)  # (N, HW)
        ranks = torch.arange(pixels, device=images.device).unsqueeze(0)  # (1, HW)
        keep = (ranks < num_ones.unsqueeze(1)).to(images.dtype)  # (N, HW), by rank
        mask = torch.zeros_like(keep).scatter_(1, order, keep)  # (N, HW), by pixel
        mask = mask.view(n, 1, height, width)  # (N, 1, H, W)
        lam_eff = _pixel_share(num_ones, pixels)  # (N,)
        return MixOutput(images=mix_with_mask(images, perm, mask), lam=lam_eff, mask=mask)


class ResizeMix(Mixup):
    """ResizeMix: the whole partner, shrunk by a random factor, is pasted into each image.

    Per sample, a side ratio ``τ ~ U(scale)`` is drawn; ``x_perm[i]`` is resized (bilinear,
    ``align_corners=False``) to ``(round(τH), round(τW))`` pixels (at least 1) and pasted at a
    uniformly random position fully inside the image. The requested λ is validated but
    *ignored*: the share of ``x_i`` comes from τ, and the effective λ is
    ``1 − pasted_area / (H·W)``, the mask mean.

    - [0] ResizeMix: Mixing Data with Preserved Object Information and True Labels,
      Qin et al., 2020, https://arxiv.org/abs/2012.11101

    Args:
        scale: Range ``(low, high)`` of the side ratio τ, with ``0 < low <= high <= 1``.

    Raises:
        ValueError: If ``scale`` is not such a range.

    Examples:
        >>> out = ResizeMix(scale=(0.1, 0.8))(images, perm, lam=0.5, generator=g)
        >>> out.lam  # from the pasted area, not 0.5
    """

    name = "resizemix"

    def __init__(self, scale: tuple[float, float] = (0.1, 0.8)) -> None:
        super().__init__()
        if len(scale) != 2:
            raise ValueError(f"scale must be a pair (low, high), got {scale}.")
        low, high = float(scale[0]), float(scale[1])
        if not (0.0 < low <= high <= 1.0):
            raise ValueError(f"scale must satisfy 0 < low <= high <= 1, got {scale}.")
        self.scale = (low, high)

    def forward(
        self,
        images: Tensor,
        perm: Tensor,
        lam: Tensor | float,
        generator: torch.Generator | None = None,
    ) -> MixOutput:
        """Pastes a resized copy of each partner into each image.

        ``generator`` (CPU) draws τ and the positions (``None``: global RNG).

        Arguments, returns and errors as in :meth:`Mixup.forward`.
        """
        _prepare(images, perm, lam)
        n, channels, height, width = images.shape
        device = images.device
        draws = torch.rand(n, 3, generator=generator).to(device)  # (N, 3): τ, top, left
        low, high = self.scale
        tau = low + (high - low) * draws[:, 0]  # (N,)
        box_h = torch.round(tau * height).long().clamp(1, height)  # (N,)
        box_w = torch.round(tau * width).long().clamp(1, width)  # (N,)
        top = torch.minimum(
            torch.floor(draws[:, 1] * (height - box_h + 1)).long(), height - box_h
        )  # (N,), uniform in [0, H - box_h]
        left = torch.minimum(
            torch.floor(draws[:, 2] * (width - box_w + 1)).long(), width - box_w
        )  # (N,), uniform in [0, W - box_w]

        # Affine map from output to partner coordinates (normalised, align_corners=False):
        # output pixel c maps to (2 (c − left) + 1) / box_w − 1, i.e. pixel c − left of the
        # partner resized to box_w columns; the same for rows.
        bw, bh = box_w.to(torch.float32), box_h.to(torch.float32)  # (N,)
        zeros = torch.zeros_like(bw)
        theta = torch.stack(
            (
                torch.stack((width / bw, zeros, (width - 2 * left) / bw - 1), dim=1),
                torch.stack((zeros, height / bh, (height - 2 * top) / bh - 1), dim=1),
            ),
            dim=1,
        )  # (N, 2, 3)
        grid = F.affine_grid(theta, [n, channels, height, width], align_corners=False)
        pasted = F.grid_sample(
            images[perm],
            grid.to(images.dtype),  # (N, H, W, 2)
            mode="bilinear",
            padding_mode="border",
            align_corners=False,
        )  # (N, C, H, W), the resized partner in the box (ignored outside it)
        mask = _box_mask(top, left, box_h, box_w, height, width).to(images.dtype)
        mixed = torch.lerp(pasted, images, mask)  # (N, C, H, W)
        lam_eff = _lambda_from_box(box_h, box_w, height, width)  # (N,)
        return MixOutput(images=mixed, lam=lam_eff, mask=mask)


def _gaussian_blur(maps: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of (N, H, W) maps, radius ``ceil(2σ)``, replicate borders."""
    radius = max(1, math.ceil(2 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=maps.dtype, device=maps.device)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()  # (K,)
    x = maps.unsqueeze(1)  # (N, 1, H, W)
    x = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    x = F.conv2d(x, kernel.view(1, 1, -1, 1))  # blur rows: (N, 1, H, W + 2r)
    x = F.conv2d(x, kernel.view(1, 1, 1, -1))  # blur columns: (N, 1, H, W)
    return x.squeeze(1)  # (N, H, W)


def spectral_residual_saliency(images: Tensor, sigma: float = 1.0, work_size: int = 64) -> Tensor:
    """Spectral residual saliency maps (Hou & Zhang, CVPR 2007) of a batch of images.

    The image is turned grey (BT.601 luma for 3 channels, channel mean otherwise) and
    Fourier-transformed after mirroring it into a 2x2 tile (no jump at the borders). The
    *spectral residual* is the log amplitude minus its 3×3 box-filtered
    version (circular borders, as the spectrum is periodic); it is transformed back with the
    original phase, and the squared magnitude, blurred by a small Gaussian, is the saliency.
    Before the log, ``1e-3`` times the largest amplitude is added, so that exact zeros of the
    spectrum (common in synthetic images) do not dominate the residual. The map is computed in
    float64 (returned as float32) and is not meant to be differentiated.

    - [0] Saliency Detection: A Spectral Residual Approach, Hou & Zhang, CVPR 2007.

    Args:
        images: Batch (N, C, H, W).
        sigma: Standard deviation (pixels at the working size) of the Gaussian that smooths
            the map, > 0.
        work_size: Larger side of the working resolution.

    Returns:
        Non-negative saliency maps of shape (N, H, W), float32.

    Raises:
        ValueError: If ``images`` is not 4-D or ``sigma <= 0``.

    Examples:
        >>> saliency = spectral_residual_saliency(images)  # (N, H, W)
        >>> peak = saliency.flatten(1).argmax(dim=1)  # flat index of the most salient pixel
    """
    if images.dim() != 4:
        raise ValueError(f"images must have shape (N, C, H, W), got {tuple(images.shape)}.")
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a positive number, got {sigma}.")
    if work_size < 8:
        raise ValueError(f"work_size must be >= 8, got {work_size}.")
    # float64 where available: the mirrored tile's spectrum has many tiny amplitudes whose
    # logs float32 resolves poorly (MPS has no float64).
    work_dtype = torch.float32 if images.device.type == "mps" else torch.float64
    x = images.detach().to(work_dtype)
    if x.shape[1] == 3:
        luma = torch.tensor(_LUMA, dtype=work_dtype, device=x.device)
        grey = (x * luma.view(1, 3, 1, 1)).sum(dim=1)  # (N, H, W)
    else:
        grey = x.mean(dim=1)  # (N, H, W)
    height, width = grey.shape[1:]
    scale = work_size / max(height, width)
    if scale < 1:
        small = (max(1, round(height * scale)), max(1, round(width * scale)))
        grey = F.interpolate(grey.unsqueeze(1), size=small, mode="bilinear", antialias=True)
        grey = grey.squeeze(1)  # (N, h, w)
    h, w = grey.shape[1:]
    # Mirror the image into a (2h, 2w) tile before the FFT: the periodic extension then has no
    # jump at the borders, which would otherwise make the corners the most "salient" points.
    grey = torch.cat([grey, grey.flip(-1)], dim=-1)
    grey = torch.cat([grey, grey.flip(-2)], dim=-2)  # (N, 2h, 2w)
    spectrum = torch.fft.fft2(grey)  # (N, 2h, 2w), complex
    amplitude = spectrum.abs()  # (N, 2h, 2w)
    floor = _AMPLITUDE_FLOOR * amplitude.amax(dim=(1, 2), keepdim=True) + _TINY  # (N, 1, 1)
    log_amplitude = torch.log(amplitude + floor)  # (N, 2h, 2w)
    padded = F.pad(log_amplitude.unsqueeze(1), (1, 1, 1, 1), mode="circular")
    local_mean = F.avg_pool2d(padded, kernel_size=3, stride=1).squeeze(1)  # (N, H, W)
    residual = log_amplitude - local_mean  # (N, H, W)
    # The phase factor spectrum / (|spectrum| + floor) fades out bins below the floor, whose
    # phase is numerically arbitrary (the mirrored tile has many near-zero bins).
    back = torch.fft.ifft2(torch.exp(residual) * spectrum / (amplitude + floor))
    saliency = _gaussian_blur(back.abs().square()[:, :h, :w], sigma)  # (N, h, w)
    if saliency.shape[1:] != (height, width):
        saliency = F.interpolate(saliency.unsqueeze(1), size=(height, width), mode="bilinear")
        saliency = saliency.squeeze(1).clamp(min=0)  # (N, H, W)
    return saliency.float()


class SaliencyMix(Mixup):
    """SaliencyMix: the CutMix box is centred on the most salient pixel of the partner.

    The saliency of ``x_perm[i]`` is :func:`spectral_residual_saliency`; the box of area ratio
    ``1 − λ`` (sizes as in :class:`CutMix`) is centred on its argmax (first one on ties),
    clipped to the image, and pasted from ``x_perm[i]`` at the same place. The effective λ is
    recomputed from the clipped box and equals the mask mean. Given the images and λ the result
    is deterministic (``generator`` is unused).

    - [0] SaliencyMix: A Saliency Guided Data Augmentation Strategy for Better Regularization,
      Uddin et al., 2021, https://arxiv.org/abs/2006.01791

    Args:
        sigma: Standard deviation (pixels) of the Gaussian that smooths the saliency map.

    Raises:
        ValueError: If ``sigma <= 0``.

    Examples:
        >>> out = SaliencyMix()(images, perm, lam=0.6)
        >>> out.mask.shape  # (N, 1, H, W): 0 on the box around the partner's saliency peak
    """

    name = "saliencymix"

    def __init__(self, sigma: float = 1.0) -> None:
        super().__init__()
        if not (math.isfinite(sigma) and sigma > 0):
            raise ValueError(f"sigma must be a positive number, got {sigma}.")
        self.sigma = float(sigma)

    def forward(
        self,
        images: Tensor,
        perm: Tensor,
        lam: Tensor | float,
        generator: torch.Generator | None = None,
    ) -> MixOutput:
        """Pastes a box around each partner's saliency peak into each image.

        ``generator`` is unused: SaliencyMix is deterministic.

        Arguments, returns and errors as in :meth:`Mixup.forward`.
        """
        lam_t = _prepare(images, perm, lam)  # (N,)
        _, _, height, width = images.shape
        saliency = spectral_residual_saliency(images[perm], sigma=self.sigma)  # (N, H, W)
        peak = saliency.flatten(1).argmax(dim=1)  # (N,), flat index of the partner's peak
        centre_y, centre_x = peak // width, peak % width  # (N,), (N,)
        mask, lam_eff = _centred_box(lam_t, centre_y, centre_x, height, width, images.dtype)
        return MixOutput(images=mix_with_mask(images, perm, mask), lam=lam_eff, mask=mask)
