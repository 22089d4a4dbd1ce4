"""The batched MoCo v2 augmentation against torchvision's per-image semantics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats
from torchvision import transforms as T

from lightly_amix.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    FashionMNIST,
    STL10Binary,
    build_pretrain_dataset,
)
from lightly_amix.data.color_jitter import BatchColorJitter
from lightly_amix.data.device_augment import (
    MoCoV2DeviceAugment,
    UInt8ArrayImages,
    UInt8Image,
    UInt8RandomResizedCrops,
    blur_kernel_size,
    resolve_augment_on,
)
from tests.fakes import write_fashion_mnist, write_image_folder, write_stl10


def _colourful(batch: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    """uint8 (B, 1, 3, size, size) images with strong colour and structure."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, 1, 3, size, size), dtype=torch.uint8, generator=g)


def test_views_have_the_right_shape_dtype_and_normalisation() -> None:
    torch.manual_seed(0)
    images = _colourful(16)
    views = MoCoV2DeviceAugment(24)(images)
    assert len(views) == 2
    for view in views:
        assert view.shape == (16, 3, 24, 24) and view.dtype == torch.float32
    raw = MoCoV2DeviceAugment(24, normalize=False)(images)
    assert all(0.0 <= float(v.min()) and float(v.max()) <= 1.0 for v in raw)
    # Normalisation is (x - mean) / std with the ImageNet statistics: same seed, same views.
    torch.manual_seed(1)
    normed = MoCoV2DeviceAugment(24)(images)[0]
    torch.manual_seed(1)
    plain = MoCoV2DeviceAugment(24, normalize=False)(images)[0]
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(normed, (plain - mean) / std)


def test_identical_images_get_different_views_and_the_two_views_differ() -> None:
    torch.manual_seed(0)
    images = _colourful(1).expand(8, -1, -1, -1, -1).contiguous()
    view_q, view_k = MoCoV2DeviceAugment(32)(images)
    flat = view_q.flatten(1)
    distances = torch.cdist(flat, flat)
    off_diagonal = distances[~torch.eye(8, dtype=torch.bool)]
    assert float(off_diagonal.min()) > 1.0
    assert all(not torch.allclose(view_q[i], view_k[i]) for i in range(8))


def test_a_fixed_seed_gives_identical_views() -> None:
    images = _colourful(8, size=48)
    augment = MoCoV2DeviceAugment(40)
    torch.manual_seed(3)
    first = augment(images)
    torch.manual_seed(3)
    second = augment(images)
    torch.manual_seed(4)
    third = augment(images)
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert not torch.equal(first[0], third[0])


def _kornia_boxes(n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Areas (as a fraction of the image) and aspect ratios of n crops of kornia's sampler."""
    crop = MoCoV2DeviceAugment(size).crop
    assert crop is not None
    params = crop.forward_parameters(torch.Size([n, 3, size, size]))
    src = params["src"]  # (n, 4, 2) corners (x, y)
    width = (src[:, 1, 0] - src[:, 0, 0] + 1).numpy()
    height = (src[:, 2, 1] - src[:, 1, 1] + 1).numpy()
    return width * height / size**2, width / height


def _torchvision_boxes(n: int, size: int, min_scale: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    image = torch.zeros(3, size, size)
    areas, ratios = [], []
    for _ in range(n):
        _, _, h, w = T.RandomResizedCrop.get_params(
            image, scale=(min_scale, 1.0), ratio=(3 / 4, 4 / 3)
        )
        areas.append(w * h / size**2)
        ratios.append(w / h)
    return np.array(areas), np.array(ratios)


def test_crop_boxes_follow_torchvisions_sampler() -> None:
    torch.manual_seed(0)
    size, n = 96, 4000
    areas, ratios = _kornia_boxes(n, size)
    tv_areas, tv_ratios = _torchvision_boxes(n, size)
    # Ranges: pixel rounding lets the area dip a little under 0.2 and the ratio leave
    # [3/4, 4/3] by one pixel, in both samplers alike.
    assert areas.min() >= 0.19 and areas.max() <= 1.0
    assert ratios.min() >= 0.74 and ratios.max() <= 1.36
    assert stats.ks_2samp(areas, tv_areas).pvalue > 0.01
    assert stats.ks_2samp(ratios, tv_ratios).pvalue > 0.01
    # The test has power: a sampler with another scale range is told apart.
    other = np.array(
        [
            (lambda b: b[2] * b[3] / size**2)(
                T.RandomResizedCrop.get_params(
                    torch.zeros(3, size, size), (0.08, 1.0), (3 / 4, 4 / 3)
                )
            )
            for _ in range(n)
        ]
    )
    assert stats.ks_2samp(areas, other).pvalue < 1e-6


def test_crop_output_is_the_box_resized() -> None:
    """The crop samples the drawn box: a horizontal ramp stays a ramp over the box's columns."""
    torch.manual_seed(0)
    size = 64
    ramp = torch.arange(size, dtype=torch.float32).view(1, 1, 1, size).expand(4, 3, size, size)
    crop = MoCoV2DeviceAugment(size).crop
    assert crop is not None
    out = crop(ramp.contiguous())
    src = crop._params["src"]
    for i in range(4):
        x0, x1 = float(src[i, 0, 0]), float(src[i, 1, 0])
        row = out[i, 0, size // 2]
        assert float(row[0]) == pytest.approx(x0, abs=1.0)
        assert float(row[-1]) == pytest.approx(x1, abs=1.0)


def _fraction_grey(views: torch.Tensor) -> float:
    spread = views.amax(dim=1) - views.amin(dim=1)  # (B, H, W) channel spread
    return float((spread.flatten(1).amax(dim=1) < 1e-6).float().mean())


def test_greyscale_and_blur_probabilities() -> None:
    torch.manual_seed(0)
    n = 4000
    images = _colourful(n, size=40)
    views = MoCoV2DeviceAugment(40, normalize=False)(images)
    grey = _fraction_grey(torch.cat(views))
    assert abs(grey - 0.2) < 0.02
    augment = MoCoV2DeviceAugment(40)
    assert augment.blur is not None
    params = augment.blur.forward_parameters(torch.Size([n, 3, 40, 40]))
    assert abs(float(params["batch_prob"].float().mean()) - 0.5) < 0.03
    sigma = params["sigma"].numpy()
    assert sigma.min() >= 0.1 and sigma.max() <= 2.0
    assert stats.kstest(sigma, stats.uniform(0.1, 1.9).cdf).pvalue > 0.01


def test_blur_is_off_for_small_images_as_on_the_cpu_path() -> None:
    assert MoCoV2DeviceAugment(28).blur is None
    assert MoCoV2DeviceAugment(32).blur is None
    assert MoCoV2DeviceAugment(33).blur is not None
    assert blur_kernel_size(96) == 13 and blur_kernel_size(40) == 13 and blur_kernel_size(8) == 7


def test_greyscale_input_is_repeated_to_rgb() -> None:
    torch.manual_seed(0)
    images = torch.randint(0, 256, (6, 1, 1, 28, 28), dtype=torch.uint8)
    views = MoCoV2DeviceAugment(28, normalize=False)(images)
    assert views[0].shape == (6, 3, 28, 28)
    # Grey in, grey out: colour jitter cannot create colour from grey (hue and saturation act
    # on chroma only).
    assert _fraction_grey(torch.cat(views)) == 1.0


def test_precropped_views_skip_the_crop() -> None:
    torch.manual_seed(0)
    images = _colourful(4, size=24).expand(-1, 2, -1, -1, -1).contiguous()
    images[:, 1] = 255 - images[:, 1]
    augment = MoCoV2DeviceAugment(24, crop=False, normalize=False)
    assert augment.crop is None
    view_q, view_k = augment(images)
    assert view_q.shape == view_k.shape == (4, 3, 24, 24)
    with pytest.raises(ValueError, match="Pre-cropped views must be 32x32"):
        MoCoV2DeviceAugment(32, crop=False)(images)


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (torch.rand(2, 1, 3, 8, 8), "expects uint8 images"),
        (torch.zeros(2, 3, 3, 8, 8, dtype=torch.uint8), r"V in \{1, 2\}"),
        (torch.zeros(2, 1, 4, 8, 8, dtype=torch.uint8), r"C in \{1, 3\}"),
    ],
)
def test_bad_batches_are_refused_with_a_clear_message(images: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MoCoV2DeviceAugment(8)(images)


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="image_size"):
        MoCoV2DeviceAugment(0)
    with pytest.raises(ValueError, match="hue"):
        BatchColorJitter(hue=0.7)
    with pytest.raises(ValueError, match="p must be"):
        BatchColorJitter(p=1.5)
    with pytest.raises(ValueError, match="Expected one of: auto, loader, device"):
        resolve_augment_on("gpu", "cpu")


def test_auto_picks_device_only_on_a_gpu() -> None:
    assert resolve_augment_on("auto", "cpu") == "loader"
    assert resolve_augment_on("auto", "gpu") == "device"
    assert resolve_augment_on("auto", "auto") == (
        "device" if torch.cuda.is_available() else "loader"
    )
    assert resolve_augment_on("device", "cpu") == "device"
    assert resolve_augment_on("loader", "gpu") == "loader"


def test_stl10_pixels_reach_the_batch_without_pil(tmp_path: Path) -> None:
    write_stl10(tmp_path, n_train=4, n_test=2, n_unlabeled=3)
    stl = STL10Binary(tmp_path, split="train+unlabeled")
    images = UInt8ArrayImages(stl)
    assert len(images) == 7
    for index in (0, 5):
        image, label = images[index]
        assert image.dtype == torch.uint8 and image.shape == (1, 3, 96, 96)
        assert torch.equal(image[0].permute(1, 2, 0), torch.from_numpy(stl.get_uint8(index)))
        assert label == stl[index][1]
    with pytest.raises(ValueError, match="get_uint8"):
        UInt8ArrayImages([1, 2, 3])


def test_fashion_mnist_pixels_are_grey_uint8(tmp_path: Path) -> None:
    write_fashion_mnist(tmp_path, sizes=(5, 2))
    dataset, augment = build_pretrain_dataset(
        "fashion-mnist", tmp_path, "train", 28, augment_on="device"
    )
    image, label = dataset[2]
    assert image.shape == (1, 1, 28, 28) and image.dtype == torch.uint8
    fmnist = FashionMNIST(tmp_path, split="train")
    assert torch.equal(image[0, 0], torch.from_numpy(fmnist.images[2]))
    assert augment is not None and augment.crop is not None and augment.blur is None


def test_image_folders_are_cropped_on_the_cpu(tmp_path: Path) -> None:
    write_image_folder(tmp_path, splits=("train",))  # 8x8 images, one greyscale
    dataset, augment = build_pretrain_dataset("folder", tmp_path, "train", 32, augment_on="device")
    crops, _ = dataset[0]
    assert crops.shape == (2, 3, 32, 32) and crops.dtype == torch.uint8
    assert augment is not None and augment.crop is None
    views = augment(torch.stack([crops, dataset[1][0]]))
    assert views[0].shape == (2, 3, 32, 32)


def test_loader_transforms_keep_the_pixels() -> None:
    array = np.random.default_rng(0).integers(0, 256, (10, 12, 3), dtype=np.uint8)
    image = UInt8Image()(Image.fromarray(array))
    assert image.shape == (1, 3, 10, 12)
    assert torch.equal(image[0].permute(1, 2, 0), torch.from_numpy(array))
    # A crop of the whole image at its own size is the image.
    crops = UInt8RandomResizedCrops(10)
    crops.crop.scale = (1.0, 1.0)
    crops.crop.ratio = (1.0, 1.0)
    square = Image.fromarray(array[:, :10])
    assert torch.equal(crops(square)[0].permute(1, 2, 0), torch.from_numpy(array[:, :10].copy()))


def test_loader_mode_returns_two_view_transform(tmp_path: Path) -> None:
    write_stl10(tmp_path, n_train=2, n_test=1, n_unlabeled=1)
    dataset, augment = build_pretrain_dataset("stl10", tmp_path, "train", 32, augment_on="loader")
    views, _ = dataset[0]
    assert augment is None and len(views) == 2 and views[0].shape == (3, 32, 32)
    with pytest.raises(ValueError, match="resolve 'auto'"):
        build_pretrain_dataset("stl10", tmp_path, "train", 32, augment_on="auto")


@pytest.mark.parametrize("min_scale", [0.5, 0.9])
def test_crop_min_scale_is_honoured_by_both_paths(min_scale: float, tmp_path: Path) -> None:
    torch.manual_seed(0)
    crop = MoCoV2DeviceAugment(64, min_scale=min_scale).crop
    assert crop is not None
    src = crop.forward_parameters(torch.Size([2000, 3, 64, 64]))["src"]
    areas = ((src[:, 1, 0] - src[:, 0, 0] + 1) * (src[:, 2, 1] - src[:, 1, 1] + 1)) / 64**2
    assert float(areas.min()) >= min_scale - 0.03
    tv_areas, _ = _torchvision_boxes(2000, 64, min_scale)
    assert stats.ks_2samp(areas.numpy(), tv_areas).pvalue > 0.01
    write_stl10(tmp_path, n_train=2, n_test=1, n_unlabeled=1)
    dataset, _ = build_pretrain_dataset(
        "stl10", tmp_path, "train", 32, augment_on="loader", min_scale=min_scale
    )
    loader_crop = dataset.transform.transforms[0].transform.transforms[0]  # type: ignore[attr-defined]
    assert type(loader_crop).__name__ == "RandomResizedCrop"
    assert tuple(loader_crop.scale) == (min_scale, 1.0)
    assert UInt8RandomResizedCrops(32, min_scale).crop.scale == (min_scale, 1.0)
    with pytest.raises(ValueError, match=r"min_scale must be in \(0, 1\]"):
        MoCoV2DeviceAugment(32, min_scale=0.0)
