from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from lightly.transforms import MoCoV2Transform
from PIL import Image

from lightly_amix.data import IMAGENET_MEAN, IMAGENET_STD, eval_transform, moco_v2_transform


def random_image(height: int, width: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8))


def view_components(transform: MoCoV2Transform) -> list[list[Any]]:
    """The augmentation steps of each view, read from the constructed lightly transform."""
    views = transform.transforms
    assert len(views) == 2
    return [list(view.transform.transforms) for view in views]


def two_views(transform: MoCoV2Transform, image: Image.Image) -> list[torch.Tensor]:
    views = transform(image)
    assert isinstance(views, list) and len(views) == 2
    tensors = [view for view in views if isinstance(view, torch.Tensor)]
    assert len(tensors) == 2
    return tensors


def find(components: list[Any], class_name: str) -> Any:
    matches = [c for c in components if type(c).__name__ == class_name]
    assert len(matches) == 1, f"expected one {class_name} in {components}"
    return matches[0]


@pytest.mark.parametrize("size", [28, 64, 96])
def test_moco_v2_returns_two_normalised_views(size: int) -> None:
    torch.manual_seed(0)
    transform = moco_v2_transform(size)
    views = two_views(transform, random_image(100, 120))
    for view in views:
        assert view.shape == (3, size, size) and view.dtype == torch.float32
        # ImageNet normalisation maps [0, 1] to about [-2.12, 2.64].
        assert -2.2 < view.min() < 0 < view.max() < 2.7
        assert abs(float(view.mean())) < 1.0
    assert not torch.equal(views[0], views[1])  # Two independent random views.


@pytest.mark.parametrize("size", [28, 64, 96])
def test_moco_v2_settings(size: int) -> None:
    for components in view_components(moco_v2_transform(size)):
        crop = find(components, "RandomResizedCrop")
        assert tuple(crop.size) == (size, size)
        assert tuple(crop.scale) == (0.2, 1.0)
        assert find(components, "RandomHorizontalFlip").p == 0.5
        assert find(components, "RandomVerticalFlip").p == 0.0
        assert find(components, "RandomRotate").prob == 0.0
        apply = find(components, "RandomApply")
        assert apply.p == 0.8
        (jitter,) = apply.transforms
        assert type(jitter).__name__ == "ColorJitter"
        assert jitter.brightness == pytest.approx((0.6, 1.4))
        assert jitter.contrast == pytest.approx((0.6, 1.4))
        assert jitter.saturation == pytest.approx((0.6, 1.4))
        assert jitter.hue == pytest.approx((-0.1, 0.1))
        assert find(components, "RandomGrayscale").p == 0.2
        blur = find(components, "GaussianBlur")
        # Blur is off for images of at most 32 pixels (a 2-pixel sigma erases them).
        assert blur.prob == (0.0 if size <= 32 else 0.5)
        assert tuple(blur.sigmas) == (0.1, 2.0)
        normalize = find(components, "Normalize")
        assert list(normalize.mean) == pytest.approx(IMAGENET_MEAN)
        assert list(normalize.std) == pytest.approx(IMAGENET_STD)


def test_moco_v2_without_normalisation_is_in_unit_range() -> None:
    transform = moco_v2_transform(64, normalize=False)
    for components in view_components(transform):
        assert not [c for c in components if type(c).__name__ == "Normalize"]
    for view in two_views(transform, random_image(64, 64)):
        assert 0.0 <= view.min() and view.max() <= 1.0


def test_moco_v2_rejects_bad_size() -> None:
    with pytest.raises(ValueError, match="image_size must be positive, got 0"):
        moco_v2_transform(0)


@pytest.mark.parametrize(("size", "resize"), [(28, None), (64, None), (96, None), (224, 256)])
def test_eval_transform_shape(size: int, resize: int | None) -> None:
    output = eval_transform(size, resize=resize)(random_image(75, 100))
    assert output.shape == (3, size, size) and output.dtype == torch.float32


def test_eval_transform_values() -> None:
    # A constant image: every output pixel is (value / 255 - mean) / std.
    image = Image.new("RGB", (40, 30), color=(255, 128, 0))
    output = eval_transform(24)(image)
    expected = (torch.tensor([255, 128, 0]) / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(
        IMAGENET_STD
    )
    torch.testing.assert_close(output, expected[:, None, None].expand(3, 24, 24))
    raw = eval_transform(24, normalize=False)(image)
    torch.testing.assert_close(raw[:, 0, 0], torch.tensor([1.0, 128 / 255, 0.0]))


def test_eval_transform_is_deterministic() -> None:
    transform = eval_transform(64, resize=72)
    image = random_image(80, 90)
    assert torch.equal(transform(image), transform(image))


def test_eval_transform_rejects_resize_smaller_than_crop() -> None:
    with pytest.raises(ValueError, match="image_size=224, resize=200"):
        eval_transform(224, resize=200)
