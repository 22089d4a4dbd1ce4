"""Tests of the fixed mixups: each one against a direct, per-sample re-computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from lightly_amix.mixing.base import MixOutput, Mixup
from lightly_amix.mixing.fixed import (
    CutMix,
    FMix,
    MixUp,
    ResizeMix,
    SaliencyMix,
    spectral_residual_saliency,
)

FIXED = (MixUp, CutMix, FMix, ResizeMix, SaliencyMix)
MASKED = (CutMix, FMix, ResizeMix, SaliencyMix)
BOXED = (CutMix, ResizeMix, SaliencyMix)  # the x_perm[i] region is one rectangle


def _batch(n: int, height: int, width: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, height, width, generator=g), torch.randperm(n, generator=g)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _partner_box(mask: torch.Tensor) -> tuple[int, int, int, int] | None:
    """(top, bottom, left, right) of the zero region of a (H, W) mask, checked to be a box."""
    zero = mask == 0
    if not bool(zero.any()):
        return None
    rows = zero.any(dim=1).nonzero().flatten()
    cols = zero.any(dim=0).nonzero().flatten()
    top, bottom = int(rows[0]), int(rows[-1]) + 1
    left, right = int(cols[0]), int(cols[-1]) + 1
    # One filled rectangle: every pixel inside is 0, and there are no others.
    assert bool(zero[top:bottom, left:right].all())
    assert int(zero.sum()) == (bottom - top) * (right - left)
    return top, bottom, left, right


def _check_masked_output(images: torch.Tensor, perm: torch.Tensor, out: MixOutput) -> None:
    n, _, height, width = images.shape
    assert out.lam.shape == (n,) and out.lam.dtype == torch.float32
    assert out.mask is not None
    assert out.mask.shape == (n, 1, height, width) and out.mask.dtype == images.dtype
    assert bool(((out.mask == 0) | (out.mask == 1)).all()), "mask must be binary"
    measured = out.mask.double().mean(dim=(1, 2, 3))
    assert torch.allclose(out.lam.double(), measured, rtol=0, atol=1e-6)
    assert bool(((out.lam >= 0) & (out.lam <= 1)).all())
    assert out.images.shape == images.shape and out.images.dtype == images.dtype


# --------------------------------------------------------------------------------------------
# Shapes, dtypes and ranges
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", FIXED)
@pytest.mark.parametrize("n", [1, 5])
@pytest.mark.parametrize("per_sample", [False, True])
def test_shapes_dtypes_ranges(cls: type[Mixup], n: int, per_sample: bool) -> None:
    images, perm = _batch(n, 24, 32)
    lam = torch.rand(n, generator=_gen(1)) if per_sample else 0.6
    out = cls()(images, perm, lam, generator=_gen(2))
    assert out.images.shape == (n, 3, 24, 32) and out.images.dtype == torch.float32
    assert out.lam.shape == (n,) and out.lam.dtype == torch.float32
    assert out.stage is None
    # Convex combinations of images in [0, 1] stay in [0, 1].
    assert float(out.images.min()) >= 0.0 and float(out.images.max()) <= 1.0
    if cls is MixUp:
        assert out.mask is None
    else:
        _check_masked_output(images, perm, out)


@pytest.mark.parametrize("cls", FIXED)
def test_float64_images_keep_their_dtype(cls: type[Mixup]) -> None:
    images, perm = _batch(3, 16, 20)
    images = images.double()
    out = cls()(images, perm, 0.4, generator=_gen(0))
    assert out.images.dtype == torch.float64 and out.lam.dtype == torch.float32
    if out.mask is not None:
        assert out.mask.dtype == torch.float64


# --------------------------------------------------------------------------------------------
# MixUp
# --------------------------------------------------------------------------------------------


def test_mixup_matches_hand_computation() -> None:
    images, perm = _batch(5, 24, 32)
    lam = torch.tensor([0.0, 0.25, 0.5, 0.9, 1.0])
    out = MixUp()(images, perm, lam)
    expected = torch.stack([lam[i] * images[i] + (1 - lam[i]) * images[perm[i]] for i in range(5)])
    assert torch.allclose(out.images, expected, atol=1e-6)
    assert torch.equal(out.lam, lam) and out.mask is None
    # A float λ is the same as a constant tensor.
    out_float = MixUp()(images, perm, 0.25)
    assert torch.allclose(out_float.images, 0.25 * images + 0.75 * images[perm], atol=1e-6)


# --------------------------------------------------------------------------------------------
# CutMix
# --------------------------------------------------------------------------------------------


def test_cutmix_matches_per_sample_recipe() -> None:
    n, height, width = 5, 24, 32
    images, perm = _batch(n, height, width)
    lam = torch.tensor([0.1, 0.3, 0.5, 0.7, 0.95])
    out = CutMix()(images, perm, lam, generator=_gen(7))
    # The documented recipe, one sample at a time, with the same centre draws.
    g = _gen(7)
    centre_y = torch.randint(height, (n,), generator=g).tolist()
    centre_x = torch.randint(width, (n,), generator=g).tolist()
    for i in range(n):
        side = math.sqrt(1.0 - float(lam[i]))
        full_h, full_w = round(height * side), round(width * side)
        top = min(max(centre_y[i] - full_h // 2, 0), height)
        bottom = min(max(centre_y[i] - full_h // 2 + full_h, 0), height)
        left = min(max(centre_x[i] - full_w // 2, 0), width)
        right = min(max(centre_x[i] - full_w // 2 + full_w, 0), width)
        expected = images[i].clone()
        expected[:, top:bottom, left:right] = images[perm[i], :, top:bottom, left:right]
        assert torch.equal(out.images[i], expected)
        area = (bottom - top) * (right - left)
        assert float(out.lam[i]) == pytest.approx(1 - area / (height * width), abs=1e-7)
    _check_masked_output(images, perm, out)


def test_cutmix_unclipped_box_has_requested_area() -> None:
    # λ = 0.75: the box is exactly half the height and width; centred boxes are not clipped.
    height, width = 24, 32
    images, perm = _batch(200, height, width)
    out = CutMix()(images, perm, 0.75, generator=_gen(3))
    assert out.mask is not None
    sizes = set()
    for i in range(200):
        box = _partner_box(out.mask[i, 0])
        assert box is not None
        top, bottom, left, right = box
        if 0 < top and bottom < height and 0 < left and right < width:
            sizes.add((bottom - top, right - left))
    assert sizes == {(12, 16)}


def test_cutmix_clipping_only_removes_partner_area() -> None:
    height, width = 20, 28
    images, perm = _batch(300, height, width)
    lam = torch.rand(300, generator=_gen(4))
    out = CutMix()(images, perm, lam, generator=_gen(5))
    # Rounding the sides to pixels may add at most half a row and half a column to the box.
    side = torch.sqrt(1 - lam)
    slack = (0.5 * side * (height + width) + 0.25) / (height * width)
    assert bool((out.lam >= lam - slack - 1e-6).all())
    # Clipping happens: on average the partner gets noticeably less than 1 − λ.
    assert float(out.lam.mean()) > float(lam.mean())


# --------------------------------------------------------------------------------------------
# FMix
# --------------------------------------------------------------------------------------------


def test_fmix_matches_per_sample_recipe() -> None:
    n, height, width, decay = 4, 24, 32, 3.0
    images, perm = _batch(n, height, width)
    lam = torch.tensor([0.2, 0.5, 0.77, 1.0])
    out = FMix(decay_power=decay)(images, perm, lam, generator=_gen(11))
    assert out.mask is not None
    parts = torch.randn(n, 2, height, width // 2 + 1, generator=_gen(11)).double()
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    scale = 1.0 / np.maximum(np.sqrt(fy**2 + fx**2), 1.0 / max(height, width)) ** decay
    for i in range(n):
        spectrum = scale * (parts[i, 0].numpy() + 1j * parts[i, 1].numpy())
        noise = np.fft.irfft2(spectrum, s=(height, width))
        k = round(float(lam[i]) * height * width)
        expected = np.zeros(height * width)
        expected[np.argsort(-noise.ravel(), kind="stable")[:k]] = 1.0
        mask = out.mask[i, 0].reshape(-1).numpy()
        assert int(mask.sum()) == k
        assert np.array_equal(mask, expected)
        mixed = expected.reshape(1, height, width) * images[i].numpy()
        mixed += (1 - expected.reshape(1, height, width)) * images[perm[i]].numpy()
        assert np.allclose(out.images[i].numpy(), mixed, atol=0)
    _check_masked_output(images, perm, out)


def test_fmix_mask_is_low_frequency() -> None:
    n, height, width = 8, 32, 32
    images, perm = _batch(n, height, width)
    out = FMix()(images, perm, 0.5, generator=_gen(0))
    assert out.mask is not None
    mask = out.mask[:, 0]

    def changes(m: torch.Tensor) -> float:
        vertical = (m[:, 1:] != m[:, :-1]).float().mean()
        horizontal = (m[:, :, 1:] != m[:, :, :-1]).float().mean()
        return float((vertical + horizontal) / 2)

    # A random mask of the same area per sample: shuffle each sample's pixels.
    g = _gen(1)
    shuffled = torch.stack(
        [m.reshape(-1)[torch.randperm(height * width, generator=g)] for m in mask]
    ).view_as(mask)
    assert changes(mask) < 0.2 * changes(shuffled)


@pytest.mark.parametrize("lam", [0.0, 1.0])
def test_fmix_extreme_lambda(lam: float) -> None:
    images, perm = _batch(3, 10, 14)
    out = FMix()(images, perm, lam, generator=_gen(0))
    assert out.mask is not None
    assert bool((out.mask == lam).all()) and bool((out.lam == lam).all())


# --------------------------------------------------------------------------------------------
# ResizeMix
# --------------------------------------------------------------------------------------------


def test_resizemix_pastes_resized_partner() -> None:
    n, height, width = 6, 24, 32
    images, perm = _batch(n, height, width)
    out = ResizeMix()(images, perm, 0.5, generator=_gen(9))
    assert out.mask is not None
    for i in range(n):
        box = _partner_box(out.mask[i, 0])
        assert box is not None
        top, bottom, left, right = box
        box_h, box_w = bottom - top, right - left
        # Side ratios in the scale range (± 1 px), the box inside the image.
        assert 0.1 * height - 1 <= box_h <= 0.8 * height + 1
        assert 0.1 * width - 1 <= box_w <= 0.8 * width + 1
        assert 0 <= top and bottom <= height and 0 <= left and right <= width
        resized = F.interpolate(
            images[perm[i]][None], size=(box_h, box_w), mode="bilinear", align_corners=False
        )[0]
        assert torch.allclose(out.images[i, :, top:bottom, left:right], resized, atol=1e-5)
        outside = out.mask[i, 0] == 1
        assert torch.equal(out.images[i][:, outside], images[i][:, outside])
        assert float(out.lam[i]) == pytest.approx(1 - box_h * box_w / (height * width), abs=1e-7)
    _check_masked_output(images, perm, out)


def test_resizemix_constant_partner_keeps_its_colour() -> None:
    images = torch.zeros(2, 3, 20, 30)
    colour = torch.tensor([0.2, 0.5, 0.9])
    images[1] = colour.view(3, 1, 1)
    perm = torch.tensor([1, 0])
    out = ResizeMix()(images, perm, 0.5, generator=_gen(0))
    assert out.mask is not None
    inside = out.mask[0, 0] == 0
    pasted = out.images[0][:, inside]  # (3, box pixels)
    assert torch.allclose(pasted, colour.view(3, 1).expand_as(pasted), rtol=0, atol=1e-6)


def test_resizemix_ignores_requested_lambda() -> None:
    images, perm = _batch(4, 16, 16)
    low = ResizeMix()(images, perm, 0.0, generator=_gen(3))
    high = ResizeMix()(images, perm, 1.0, generator=_gen(3))
    assert torch.equal(low.lam, high.lam) and torch.equal(low.images, high.images)


def test_resizemix_scale_range_is_respected() -> None:
    height, width = 40, 50
    images, perm = _batch(100, height, width)
    out = ResizeMix(scale=(0.5, 0.5))(images, perm, 0.5, generator=_gen(0))
    assert out.mask is not None
    for i in range(100):
        box = _partner_box(out.mask[i, 0])
        assert box is not None and (box[1] - box[0], box[3] - box[2]) == (20, 25)


# --------------------------------------------------------------------------------------------
# SaliencyMix
# --------------------------------------------------------------------------------------------


def _reference_saliency(image: torch.Tensor, sigma: float = 1.0) -> np.ndarray:
    """Spectral residual saliency of one (3, H, W) image, written out with numpy."""
    x = image.double().numpy()
    grey = 0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]
    height, width = grey.shape
    tile = np.block([[grey, grey[:, ::-1]], [grey[::-1, :], grey[::-1, ::-1]]])  # mirrored
    spectrum = np.fft.fft2(tile)
    amplitude = np.abs(spectrum)
    floor = 1e-3 * amplitude.max() + 1e-12
    log_amplitude = np.log(amplitude + floor)
    local_mean = (
        sum(np.roll(log_amplitude, (dy, dx), axis=(0, 1)) for dy in (-1, 0, 1) for dx in (-1, 0, 1))
        / 9.0
    )
    residual = log_amplitude - local_mean
    phase = spectrum / (amplitude + floor)  # unit phase, faded out below the floor
    saliency = np.abs(np.fft.ifft2(np.exp(residual) * phase)) ** 2
    saliency = saliency[:height, :width]
    radius = max(1, math.ceil(2 * sigma))
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-(offsets**2) / (2 * sigma**2))
    kernel /= kernel.sum()
    padded = np.pad(saliency, radius, mode="edge")
    blurred = np.zeros_like(saliency)
    for a, ka in enumerate(kernel):
        for b, kb in enumerate(kernel):
            blurred += ka * kb * padded[a : a + height, b : b + width]
    return blurred


def test_spectral_residual_saliency_matches_reference() -> None:
    images, _ = _batch(3, 24, 32)
    saliency = spectral_residual_saliency(images)
    assert saliency.shape == (3, 24, 32) and saliency.dtype == torch.float32
    assert bool((saliency >= 0).all())
    for i in range(3):
        expected = _reference_saliency(images[i])
        assert np.allclose(saliency[i].numpy(), expected, rtol=1e-3, atol=1e-4 * expected.max())


@pytest.mark.parametrize(
    ("height", "width", "top", "left", "size", "background"),
    [(32, 32, 5, 20, 4, 0.0), (24, 32, 15, 3, 5, 0.3), (48, 40, 30, 30, 6, 0.5)],
)
def test_saliency_peaks_at_a_bright_square(
    height: int, width: int, top: int, left: int, size: int, background: float
) -> None:
    image = torch.full((1, 3, height, width), background)
    image[..., top : top + size, left : left + size] = 1.0
    peak = int(spectral_residual_saliency(image).flatten(1).argmax())
    y, x = divmod(peak, width)
    assert top - 2 <= y < top + size + 2 and left - 2 <= x < left + size + 2


def test_large_images_are_analysed_at_the_working_size() -> None:
    image = torch.rand(1, 3, 192, 160, generator=torch.Generator().manual_seed(0)) * 0.1
    image[..., 120:136, 30:46] = 1.0  # a bright 16 px square on faint noise
    saliency = spectral_residual_saliency(image)
    assert saliency.shape == (1, 192, 160)
    y, x = divmod(int(saliency.flatten(1).argmax()), 160)
    assert 112 <= y < 144 and 22 <= x < 54
    small = F.interpolate(image, size=(64, 53), mode="bilinear", antialias=True)
    ref = spectral_residual_saliency(small)  # the same map at the working size
    back = F.interpolate(ref.unsqueeze(1), size=(192, 160), mode="bilinear").squeeze(1)
    assert torch.allclose(saliency, back.clamp(min=0), atol=1e-5 * float(back.max()))


def test_saliencymix_box_around_partner_peak() -> None:
    n, height, width = 5, 24, 32
    images, perm = _batch(n, height, width)
    lam = torch.tensor([0.1, 0.4, 0.5, 0.8, 0.97])
    out = SaliencyMix()(images, perm, lam)
    assert out.mask is not None
    for i in range(n):
        saliency = _reference_saliency(images[perm[i]])
        peak_y, peak_x = divmod(int(np.argmax(saliency)), width)
        side = math.sqrt(1.0 - float(lam[i]))
        full_h, full_w = round(height * side), round(width * side)
        top = min(max(peak_y - full_h // 2, 0), height)
        bottom = min(max(peak_y - full_h // 2 + full_h, 0), height)
        left = min(max(peak_x - full_w // 2, 0), width)
        right = min(max(peak_x - full_w // 2 + full_w, 0), width)
        assert _partner_box(out.mask[i, 0]) == (top, bottom, left, right)
        assert top <= peak_y < bottom and left <= peak_x < right
        expected = images[i].clone()
        expected[:, top:bottom, left:right] = images[perm[i], :, top:bottom, left:right]
        assert torch.equal(out.images[i], expected)
    _check_masked_output(images, perm, out)


# --------------------------------------------------------------------------------------------
# Properties over random sizes and λ (hypothesis)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", MASKED)
@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 4),
    height=st.integers(1, 24),
    width=st.integers(1, 24),
    lam_values=st.lists(st.floats(0.0, 1.0), min_size=4, max_size=4),
    per_sample=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_property_mask_binary_and_lambda_is_mask_mean(
    cls: type[Mixup],
    n: int,
    height: int,
    width: int,
    lam_values: list[float],
    per_sample: bool,
    seed: int,
) -> None:
    images, perm = _batch(n, height, width, seed=seed)
    lam = torch.tensor(lam_values[:n]) if per_sample else lam_values[0]
    out = cls()(images, perm, lam, generator=_gen(seed))
    _check_masked_output(images, perm, out)
    assert out.mask is not None
    if cls is not ResizeMix:
        assert torch.equal(out.images, out.mask * images + (1 - out.mask) * images[perm])
    if cls in BOXED:
        for i in range(n):
            _partner_box(out.mask[i, 0])  # asserts a single rectangle
    if cls is FMix:
        lam_t = torch.as_tensor(lam, dtype=torch.float32).expand(n)
        expected = torch.round(lam_t * height * width)
        assert torch.equal(out.mask.sum(dim=(1, 2, 3)), expected)


# --------------------------------------------------------------------------------------------
# Reproducibility
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", MASKED)
def test_same_seed_same_output(cls: type[Mixup]) -> None:
    images, perm = _batch(5, 24, 32)
    lam = torch.rand(5, generator=_gen(0))
    first = cls()(images, perm, lam, generator=_gen(123))
    second = cls()(images, perm, lam, generator=_gen(123))
    assert torch.equal(first.images, second.images) and torch.equal(first.lam, second.lam)
    assert first.mask is not None and second.mask is not None
    assert torch.equal(first.mask, second.mask)


@pytest.mark.parametrize("cls", [CutMix, FMix, ResizeMix])
def test_different_seeds_different_masks(cls: type[Mixup]) -> None:
    images, perm = _batch(5, 24, 32)
    first = cls()(images, perm, 0.5, generator=_gen(1))
    second = cls()(images, perm, 0.5, generator=_gen(2))
    assert first.mask is not None and second.mask is not None
    assert not torch.equal(first.mask, second.mask)


def test_global_rng_is_used_without_generator() -> None:
    images, perm = _batch(5, 24, 32)
    torch.manual_seed(5)
    first = CutMix()(images, perm, 0.5)
    torch.manual_seed(5)
    second = CutMix()(images, perm, 0.5)
    assert first.mask is not None and second.mask is not None
    assert torch.equal(first.mask, second.mask)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("cls", FIXED)
def test_same_result_on_cuda(cls: type[Mixup]) -> None:
    images, perm = _batch(5, 24, 32)
    lam = torch.rand(5, generator=_gen(0))
    cpu = cls()(images, perm, lam, generator=_gen(4))
    cuda = cls()(images.cuda(), perm.cuda(), lam.cuda(), generator=_gen(4))
    assert cuda.images.device.type == "cuda" and cuda.lam.device.type == "cuda"
    assert torch.equal(cpu.lam, cuda.lam.cpu())
    if cls is FMix:
        # FMix draws its noise on the device: same areas, and the same masks for the same
        # seed on the GPU, but other masks than on the CPU.
        again = cls()(images.cuda(), perm.cuda(), lam.cuda(), generator=_gen(4))
        assert cuda.mask is not None and again.mask is not None
        assert torch.equal(cuda.mask, again.mask)
        return
    if cpu.mask is not None:
        assert cuda.mask is not None and torch.equal(cpu.mask, cuda.mask.cpu())
    assert torch.allclose(cpu.images, cuda.images.cpu(), atol=1e-4)


# --------------------------------------------------------------------------------------------
# Gradients
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [MixUp, CutMix])
def test_gradient_flows_to_both_images(cls: type[Mixup]) -> None:
    images, perm = _batch(4, 12, 16)
    images.requires_grad_(True)
    lam = torch.tensor([0.2, 0.4, 0.6, 0.8])
    out = cls()(images, perm, lam, generator=_gen(0))
    out.images.sum().backward()
    assert images.grad is not None
    share = lam.view(-1, 1, 1, 1) if out.mask is None else out.mask.detach()
    share = share.expand(4, 1, 12, 16)
    inverse = torch.argsort(perm)
    # d/dx_k of Σ x_mix: its own share, plus the partner share where k is the partner.
    expected = (share + (1 - share)[inverse]).expand(4, 3, 12, 16)
    assert torch.allclose(images.grad, expected, atol=1e-6)


# --------------------------------------------------------------------------------------------
# Bad arguments
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", FIXED)
@pytest.mark.parametrize(
    ("change", "match"),
    [
        ("lam_high", "lam must lie in"),
        ("lam_low", "lam must lie in"),
        ("lam_shape", "lam must be a scalar or have shape"),
        ("perm_shape", "perm must be an integer tensor"),
        ("perm_dtype", "perm must be an integer tensor"),
        ("images_3d", "images must have shape"),
        ("images_int", "floating point"),
    ],
)
def test_bad_arguments(cls: type[Mixup], change: str, match: str) -> None:
    images, perm = _batch(4, 8, 8)
    lam: torch.Tensor | float = 0.5
    if change == "lam_high":
        lam = 1.5
    elif change == "lam_low":
        lam = torch.tensor([0.5, -0.1, 0.5, 0.5])
    elif change == "lam_shape":
        lam = torch.full((5,), 0.5)
    elif change == "perm_shape":
        perm = torch.arange(3)
    elif change == "perm_dtype":
        perm = perm.float()
    elif change == "images_3d":
        images = images[0]
    elif change == "images_int":
        images = (images * 255).to(torch.uint8)
    with pytest.raises(ValueError, match=match):
        cls()(images, perm, lam, generator=_gen(0))


@pytest.mark.parametrize("decay_power", [0.0, -1.0, float("nan"), float("inf")])
def test_fmix_bad_decay_power(decay_power: float) -> None:
    with pytest.raises(ValueError, match="decay_power"):
        FMix(decay_power=decay_power)


@pytest.mark.parametrize("scale", [(0.0, 0.5), (0.5, 1.2), (0.6, 0.4), (-0.1, 0.5), (0.5,)])
def test_resizemix_bad_scale(scale: tuple[float, float]) -> None:
    with pytest.raises(ValueError, match="scale"):
        ResizeMix(scale=scale)


@pytest.mark.parametrize("sigma", [0.0, -1.0])
def test_saliency_bad_sigma(sigma: float) -> None:
    with pytest.raises(ValueError, match="sigma"):
        SaliencyMix(sigma=sigma)
    with pytest.raises(ValueError, match="sigma"):
        spectral_residual_saliency(torch.rand(1, 3, 8, 8), sigma=sigma)


def test_saliency_needs_4d_images() -> None:
    with pytest.raises(ValueError, match="images must have shape"):
        spectral_residual_saliency(torch.rand(3, 8, 8))
