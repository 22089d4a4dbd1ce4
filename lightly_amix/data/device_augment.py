"""MoCo v2 two-view augmentation of whole uint8 batches on the training device.

The loader then only reads pixels: uint8 images (pinned, copied without blocking) reach the
accelerator, where :class:`MoCoV2DeviceAugment` draws both views of every image, each image
with its own random parameters. The parameters are those of the per-image CPU path,
:func:`lightly_amix.data.transforms.moco_v2_transform` (lightly's ``MoCoV2Transform``), so the
two modes give the same distribution of views (up to PIL's 8-bit rounding between steps):

- random resized crop, scale (0.2, 1), aspect ratio (3/4, 4/3), bilinear; the box sampler is
  torchvision's (10 tries, then the whole image or its central crop of the extreme ratio);
- horizontal flip, p = 0.5;
- colour jitter with p = 0.8: brightness, contrast, saturation factors in [0.6, 1.4], hue
  shift in [-0.1, 0.1], applied in a random order drawn for every image, as torchvision does;
- greyscale, p = 0.2 (ITU-R 601 luma, as PIL's ``convert("L")``);
- Gaussian blur, p = 0.5, sigma in [0.1, 2] pixels, off for images of at most 32 pixels;
- ImageNet mean/std normalisation.

Crop, flip, greyscale, blur and normalisation are kornia's batched augmentations (per-sample
parameters). The colour jitter is written here because kornia's ``ColorJitter`` and
``ColorJiggle`` draw one order of the four adjustments per *batch*; the adjustments
themselves are kornia's functions with torchvision's formulas.

Data sets of JPEGs of varying sizes (ImageNet, image folders) cannot be batched before the
crop, so their loader decodes and crops on the CPU (:class:`UInt8RandomResizedCrops`) and the
device does the rest (``MoCoV2DeviceAugment(crop=False)``).

Examples:
    >>> augment = MoCoV2DeviceAugment(96)
    >>> images = torch.randint(0, 256, (8, 1, 3, 96, 96), dtype=torch.uint8)
    >>> view_q, view_k = augment(images)
    >>> tuple(view_q.shape), view_q.dtype
    ((8, 3, 96, 96), torch.float32)
"""

from __future__ import annotations

import math
from typing import Any

import kornia.augmentation as K
import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import Dataset
from torchvision import transforms as T

from lightly_amix.config import AUGMENT_ON_CHOICES
from lightly_amix.data.color_jitter import BatchColorJitter
from lightly_amix.data.registry import dataset_spec
from lightly_amix.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MOCO_V2_BLUR_PROB,
    MOCO_V2_BLUR_SIGMAS,
    MOCO_V2_GRAYSCALE_PROB,
    MOCO_V2_HFLIP_PROB,
    MOCO_V2_MIN_SCALE,
    SMALL_IMAGE_MAX_SIZE,
    check_min_scale,
)

# torchvision's RandomResizedCrop defaults, which lightly's MoCoV2Transform keeps.
CROP_RATIO: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)


def blur_kernel_size(image_size: int, sigma_max: float = MOCO_V2_BLUR_SIGMAS[1]) -> int:
    """Odd Gaussian kernel size covering +-3 sigma_max, at most the image side.

    The CPU path blurs with PIL, whose Gaussian (three box filters) has no kernel size; a
    kernel of 2 * ceil(3 * sigma) + 1 holds 99.7 % of the Gaussian's mass, so the two paths
    blur alike (13 pixels for sigma up to 2).

    Args:
        image_size: Side length of the views in pixels.
        sigma_max: Largest sigma drawn.

    Returns:
        The kernel size.

    Examples:
        >>> blur_kernel_size(96)
        13
    """
    size = 2 * math.ceil(3 * sigma_max) + 1
    largest_odd = image_size if image_size % 2 else image_size - 1
    return max(3, min(size, largest_odd))


class MoCoV2DeviceAugment(nn.Module):
    """Draws the two MoCo v2 views of a uint8 batch on the batch's device.

    Args:
        image_size: Side length of the square views in pixels.
        normalize: Normalise with the ImageNet mean and std; if False the views are in [0, 1].
        crop: Apply the random resized crop. Pass False when the loader already delivers
            the two crops (:class:`UInt8RandomResizedCrops`).
        blur: Apply Gaussian blur (p = 0.5); default: only for views larger than 32 pixels,
            as the CPU path.
        min_scale: Smallest crop area as a fraction of the image (MoCo v2: 0.2).

    Shape:
        - Input: uint8 (B, V, C, H, W) with V = 1 (both views are drawn from the one image)
          or V = 2 (one pre-cropped image per view), C = 1 (greyscale, repeated to RGB) or 3.
          A (B, C, H, W) batch is taken as V = 1.
        - Output: a list of two float32 views, each (B, 3, image_size, image_size).

    Examples:
        >>> augment = MoCoV2DeviceAugment(32)
        >>> views = augment(torch.zeros(4, 1, 1, 28, 28, dtype=torch.uint8))
        >>> [tuple(v.shape) for v in views]
        [(4, 3, 32, 32), (4, 3, 32, 32)]
    """

    def __init__(
        self,
        image_size: int,
        normalize: bool = True,
        crop: bool = True,
        blur: bool | None = None,
        min_scale: float = MOCO_V2_MIN_SCALE,
    ) -> None:
        super().__init__()
        if image_size <= 0:
            raise ValueError(f"image_size must be positive, got {image_size}.")
        check_min_scale(min_scale)
        self.image_size = image_size
        self.crop = (
            K.RandomResizedCrop(
                (image_size, image_size),
                scale=(min_scale, 1.0),
                ratio=CROP_RATIO,
                resample="bilinear",
                align_corners=False,
                cropping_mode="resample",  # one batched warp; "slice" loops over images
            )
            if crop
            else None
        )
        self.flip = K.RandomHorizontalFlip(p=MOCO_V2_HFLIP_PROB)
        self.jitter = BatchColorJitter()
        self.grayscale = K.RandomGrayscale(p=MOCO_V2_GRAYSCALE_PROB)
        use_blur = image_size > SMALL_IMAGE_MAX_SIZE if blur is None else blur
        kernel = blur_kernel_size(image_size)
        self.blur = (
            K.RandomGaussianBlur((kernel, kernel), MOCO_V2_BLUR_SIGMAS, p=MOCO_V2_BLUR_PROB)
            if use_blur
            else None
        )
        self.normalize = normalize
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def view(self, images: Tensor) -> Tensor:
        """One view of every image: float (B, 3, H, W) in [0, 1] -> float (B, 3, S, S)."""
        out = images
        if self.crop is not None:
            out = self.crop(out)
        elif out.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(
                f"Pre-cropped views must be {self.image_size}x{self.image_size} pixels, got "
                f"{tuple(out.shape[-2:])}; check that the loader crops to data.image_size."
            )
        out = self.flip(out)
        out = self.jitter(out)
        out = self.grayscale(out)
        if self.blur is not None:
            out = self.blur(out)
        if self.normalize:
            out = (out - self.mean.to(out.device)) / self.std.to(out.device)
        return out

    def forward(self, images: Tensor) -> list[Tensor]:
        if images.dtype != torch.uint8:
            raise ValueError(
                f"MoCoV2DeviceAugment expects uint8 images, got {images.dtype}; with "
                "data.augment_on=device the data set must yield raw pixels "
                "(see lightly_amix.data.device_augment.loader_transform)."
            )
        if images.dim() == 4:
            images = images.unsqueeze(1)
        if images.dim() != 5 or images.shape[1] not in (1, 2) or images.shape[2] not in (1, 3):
            raise ValueError(
                "Expected uint8 images of shape (B, V, C, H, W) with V in {1, 2} and C in "
                f"{{1, 3}}, or (B, C, H, W); got {tuple(images.shape)}."
            )
        pixels = images.float().div_(255.0)  # (B, V, C, H, W) in [0, 1]
        if pixels.shape[2] == 1:
            pixels = pixels.expand(-1, -1, 3, -1, -1)  # greyscale -> RGB, as PIL convert("RGB")
        first = pixels[:, 0]
        second = pixels[:, 1] if pixels.shape[1] == 2 else first
        return [self.view(first), self.view(second)]


def _pil_to_uint8(image: Image.Image) -> Tensor:
    """PIL image -> uint8 tensor (C, H, W) without a float round trip."""
    array = np.asarray(image, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


class UInt8Image:
    """Loader transform for ``augment_on=device``: the whole image, as uint8 (1, C, H, W).

    For data sets whose images all have one size (STL-10, Tiny-ImageNet, Fashion-MNIST), so
    that they can be batched before the crop.
    """

    def __call__(self, image: Image.Image) -> Tensor:
        return _pil_to_uint8(image).unsqueeze(0)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class UInt8RandomResizedCrops:
    """Loader transform for ``augment_on=device`` on images of varying sizes.

    Draws the two random resized crops on the CPU (torchvision's ``RandomResizedCrop``, the
    one the CPU path uses) and returns them as uint8 (2, 3, S, S); the device does the rest.

    Args:
        image_size: Side length S of the crops.
        min_scale: Smallest crop area as a fraction of the image (MoCo v2: 0.2).
    """

    def __init__(self, image_size: int, min_scale: float = MOCO_V2_MIN_SCALE) -> None:
        check_min_scale(min_scale)
        self.crop = T.RandomResizedCrop(image_size, scale=(min_scale, 1.0), ratio=CROP_RATIO)

    def __call__(self, image: Image.Image) -> Tensor:
        return torch.stack([_pil_to_uint8(self.crop(image)) for _ in range(2)])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.crop.size[0]})"


def _fixed_size(dataset: str) -> bool:
    """Whether all images of ``dataset`` have one size (then the device crops them)."""
    return dataset_spec(dataset).fixed_size


def loader_transform(dataset: str, image_size: int, min_scale: float = MOCO_V2_MIN_SCALE) -> Any:
    """The loader-side transform of ``augment_on=device`` for data set ``dataset``.

    Args:
        dataset: Data set name (``lightly_amix.data.DATASETS``).
        image_size: Side length of the views.
        min_scale: Smallest crop area as a fraction of the image.

    Returns:
        :class:`UInt8Image` for fixed-size data sets, else :class:`UInt8RandomResizedCrops`.
    """
    if _fixed_size(dataset):
        return UInt8Image()
    return UInt8RandomResizedCrops(image_size, min_scale)


def device_augment_for(
    dataset: str, image_size: int, min_scale: float = MOCO_V2_MIN_SCALE
) -> MoCoV2DeviceAugment:
    """The device-side half matching :func:`loader_transform` for ``dataset``."""
    crop = _fixed_size(dataset)
    return MoCoV2DeviceAugment(image_size, crop=crop, min_scale=min_scale)


def resolve_augment_on(augment_on: str, accelerator: str) -> str:
    """Resolves ``data.augment_on``: ``auto`` is ``device`` when training on a GPU.

    Args:
        augment_on: ``auto``, ``loader`` or ``device``.
        accelerator: The trainer's accelerator setting (``auto``, ``gpu``, ``cuda``, ``cpu``).

    Returns:
        ``loader`` or ``device``.

    Examples:
        >>> resolve_augment_on("auto", "cpu")
        'loader'
    """
    if augment_on not in AUGMENT_ON_CHOICES:
        raise ValueError(
            f"Invalid data.augment_on '{augment_on}'. Expected one of: "
            + ", ".join(AUGMENT_ON_CHOICES)
            + "."
        )
    if augment_on != "auto":
        return augment_on
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    return "device" if on_gpu else "loader"


class UInt8ArrayImages(Dataset[tuple[Tensor, int]]):
    """Serves a memory-mapped data set's pixels as uint8 (1, C, H, W), without PIL.

    For ``augment_on=device`` on data sets with a ``get_uint8(index)`` method returning
    (H, W, C) uint8 pixels (STL-10, Fashion-MNIST).

    Args:
        dataset: The data set; needs ``get_uint8`` and ``labels``.

    Examples:
        >>> images = UInt8ArrayImages(stl10_train)  # doctest: +SKIP
        >>> image, label = images[0]  # doctest: +SKIP
        >>> tuple(image.shape), image.dtype  # doctest: +SKIP
        ((1, 3, 96, 96), torch.uint8)
    """

    def __init__(self, dataset: Any) -> None:
        if not hasattr(dataset, "get_uint8"):
            raise ValueError(
                f"{type(dataset).__name__} has no get_uint8(index); wrap only memory-mapped "
                "data sets (STL-10, Fashion-MNIST), or use loader_transform() instead."
            )
        self.dataset = dataset
        self.labels = dataset.labels
        self.classes = getattr(dataset, "classes", [])

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        pixels = torch.from_numpy(self.dataset.get_uint8(index))  # (H, W, C)
        return pixels.permute(2, 0, 1).unsqueeze(0), int(self.labels[index])  # (1, C, H, W)
