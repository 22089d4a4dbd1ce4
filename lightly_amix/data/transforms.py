"""Image transforms: MoCo v2 two-view augmentation for pre-training, supervised training and
evaluation."""

from __future__ import annotations

from lightly.transforms import MoCoV2Transform
from torchvision import transforms as T

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

# MoCo v2 augmentation (Chen et al. 2020, https://arxiv.org/abs/2003.04297, and the
# official implementation), passed explicitly so that changing lightly's defaults cannot
# change them.
MOCO_V2_MIN_SCALE = 0.2
MOCO_V2_CJ_PROB = 0.8
MOCO_V2_CJ_BRIGHTNESS = 0.4
MOCO_V2_CJ_CONTRAST = 0.4
MOCO_V2_CJ_SATURATION = 0.4
MOCO_V2_CJ_HUE = 0.1
MOCO_V2_GRAYSCALE_PROB = 0.2
MOCO_V2_BLUR_PROB = 0.5
MOCO_V2_BLUR_SIGMAS: tuple[float, float] = (0.1, 2.0)
MOCO_V2_HFLIP_PROB = 0.5

# Images of at most this many pixels per side are pre-trained without Gaussian blur.
SMALL_IMAGE_MAX_SIZE = 32


def moco_v2_transform(
    image_size: int, normalize: bool = True, min_scale: float = MOCO_V2_MIN_SCALE
) -> MoCoV2Transform:
    """The MoCo v2 augmentation, producing two views of each image.

    Per view: RandomResizedCrop to `image_size` with scale (0.2, 1.0), horizontal flip
    (p=0.5), colour jitter (brightness, contrast, saturation 0.4, hue 0.1) with p=0.8,
    greyscale (p=0.2), Gaussian blur (p=0.5, sigma in [0.1, 2.0]; off for images of at
    most 32 pixels), conversion to a float tensor and ImageNet mean/std normalisation.

    Gaussian blur in lightly 1.6.0 (`lightly.transforms.GaussianBlur`) samples
    sigma ~ U(0.1, 2.0) and calls PIL's `ImageFilter.GaussianBlur(radius=sigma)`, whose
    "radius" is the standard deviation: PIL approximates the Gaussian with three extended
    box filters sized from sigma alone. There is no kernel-size parameter, so the kernel
    does not depend on the image size: sigma is in pixels of the cropped view. MoCo v2's
    official code does the same on 224-pixel ImageNet views (SimCLR describes it as a
    kernel of 10% of the side), so the same sigma blurs a 96-pixel view 2.3x and a
    64-pixel view 3.5x more relative to the object. At 32 pixels or less (CIFAR,
    Fashion-MNIST at 28) a sigma of up to 2 pixels wipes out most of the structure of
    the object, which is why SimCLR's CIFAR-10 experiments (Chen et al. 2020, appendix)
    leave the blur out; so do we.

    lightly fixes the remaining settings: crop aspect ratio (3/4, 4/3) with bilinear
    interpolation (torchvision defaults), no vertical flip and no rotation (passed as 0).

    Args:
        image_size: Side length of the square output views in pixels.
        normalize: Normalise with the ImageNet mean and std; if False the views are in
            [0, 1].
        min_scale: Smallest crop area as a fraction of the image (MoCo v2: 0.2).

    Returns:
        A lightly MoCoV2Transform; calling it on a PIL image returns a list of two float
        tensors of shape (3, image_size, image_size).

    Examples:
        >>> transform = moco_v2_transform(96)
        >>> from PIL import Image
        >>> views = transform(Image.new("RGB", (96, 96)))
        >>> len(views), tuple(views[0].shape)
        (2, (3, 96, 96))
    """
    if image_size <= 0:
        raise ValueError(f"image_size must be positive, got {image_size}.")
    check_min_scale(min_scale)
    blur_prob = 0.0 if image_size <= SMALL_IMAGE_MAX_SIZE else MOCO_V2_BLUR_PROB
    return MoCoV2Transform(
        input_size=image_size,
        cj_prob=MOCO_V2_CJ_PROB,
        cj_strength=1.0,
        cj_bright=MOCO_V2_CJ_BRIGHTNESS,
        cj_contrast=MOCO_V2_CJ_CONTRAST,
        cj_sat=MOCO_V2_CJ_SATURATION,
        cj_hue=MOCO_V2_CJ_HUE,
        min_scale=min_scale,
        random_gray_scale=MOCO_V2_GRAYSCALE_PROB,
        gaussian_blur=blur_prob,
        sigmas=MOCO_V2_BLUR_SIGMAS,
        vf_prob=0.0,
        hf_prob=MOCO_V2_HFLIP_PROB,
        rr_prob=0.0,
        rr_degrees=None,
        normalize=_normalize_dict() if normalize else None,
    )


def check_min_scale(min_scale: float) -> None:
    """Raises ValueError unless 0 < min_scale <= 1 (a crop's share of the image area)."""
    if not 0.0 < min_scale <= 1.0:
        raise ValueError(
            f"crop min_scale must be in (0, 1] (the smallest crop's share of the image area), "
            f"got {min_scale}."
        )


def eval_transform(image_size: int, resize: int | None = None, normalize: bool = True) -> T.Compose:
    """Deterministic evaluation transform: resize, center crop, tensor, normalise.

    Args:
        image_size: Side length of the square output in pixels.
        resize: The shorter image side is first resized to this (e.g. 256 for a 224 crop
            on ImageNet). Defaults to `image_size`, i.e. no border is cropped from square
            images.
        normalize: Normalise with the ImageNet mean and std; if False the output is in
            [0, 1].

    Returns:
        A torchvision Compose mapping a PIL image to a float tensor of shape
        (3, image_size, image_size).

    Examples:
        >>> transform = eval_transform(224, resize=256)
        >>> from PIL import Image
        >>> tuple(transform(Image.new("RGB", (500, 375))).shape)
        (3, 224, 224)
    """
    resize = image_size if resize is None else resize
    if image_size <= 0 or resize < image_size:
        raise ValueError(
            f"Need 0 < image_size <= resize, got image_size={image_size}, resize={resize}."
        )
    steps: list[object] = [T.Resize(resize), T.CenterCrop(image_size), T.ToTensor()]
    if normalize:
        steps.append(T.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD))
    return T.Compose(steps)


CLASSIFICATION_AUGMENTS = ("crop", "resized_crop")
# Images of at most this many pixels per side are trained with padded random crops.
SMALL_CLASSIFICATION_SIZE = 64


def classification_transforms(
    image_size: int, augment: str = "auto"
) -> tuple[T.Compose, T.Compose]:
    """Train and test transforms of supervised classification (paper §4.1, "Setups").

    ``crop``: RandomCrop of ``image_size`` with 4 px reflect padding and a horizontal flip
    (CIFAR-100's setting); ``resized_crop``: RandomResizedCrop and a horizontal flip (the other
    data sets). Tests resize (the shorter side to ``image_size``, or to ``image_size · 256/224``
    for ``resized_crop``) and centre-crop. Both normalise with the ImageNet mean and std.

    Args:
        image_size: Side of the square crops.
        augment: ``crop``, ``resized_crop`` or ``auto`` (``crop`` up to 64 px).

    Returns:
        ``(train_transform, test_transform)``, each PIL image → (3, S, S) float tensor.

    Examples:
        >>> train, test = classification_transforms(32)
        >>> from PIL import Image
        >>> tuple(train(Image.new("RGB", (32, 32))).shape)
        (3, 32, 32)
    """
    if augment == "auto":
        augment = "crop" if image_size <= SMALL_CLASSIFICATION_SIZE else "resized_crop"
    if augment not in CLASSIFICATION_AUGMENTS:
        raise ValueError(
            f"Invalid augment '{augment}'. Expected auto or one of: "
            + ", ".join(CLASSIFICATION_AUGMENTS)
        )
    tail = [T.ToTensor(), T.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD)]
    if augment == "crop":
        first: list[object] = [
            T.Resize(image_size),
            T.RandomCrop(image_size, padding=4, padding_mode="reflect"),
        ]
        test = eval_transform(image_size)
    else:
        first = [T.RandomResizedCrop(image_size)]
        test = eval_transform(image_size, resize=round(image_size * 256 / 224))
    return T.Compose([*first, T.RandomHorizontalFlip(), *tail]), test


def _normalize_dict() -> dict[str, list[float]]:
    """ImageNet statistics in the form lightly's transforms expect."""
    return {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
