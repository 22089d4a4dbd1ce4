"""Datasets and image transforms for pre-training and evaluation.

Every dataset returns `(image, label)`: an RGB PIL image passed through the optional
`transform`, and an int label (-1 when unknown). Every dataset has `__len__`, `classes`
(list of class names, empty when unknown) and `labels` (numpy int64 array with the label
of every sample, readable without decoding images).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image
from torch.utils.data import Dataset

from lightly_amix.data.aircraft import AIRCRAFT_BANNER_HEIGHT, FGVCAircraft
from lightly_amix.data.cifar import CIFAR10, CIFAR100
from lightly_amix.data.cub import CUB200
from lightly_amix.data.device_augment import (
    MoCoV2DeviceAugment,
    UInt8ArrayImages,
    device_augment_for,
    loader_transform,
    resolve_augment_on,
)
from lightly_amix.data.errors import DatasetFormatError
from lightly_amix.data.fashion_mnist import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_DEFAULT_ROOT,
    FashionMNIST,
    read_idx_ubyte,
)
from lightly_amix.data.folder import (
    ImageFolderDataset,
    folder_dataset,
    imagenet_dataset,
    rgb_loader,
)
from lightly_amix.data.registry import DATASETS, DatasetSpec, dataset_spec
from lightly_amix.data.stl10 import STL10Binary
from lightly_amix.data.tiny_imagenet import TinyImageNet
from lightly_amix.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MOCO_V2_MIN_SCALE,
    eval_transform,
    moco_v2_transform,
)

__all__ = [
    "AIRCRAFT_BANNER_HEIGHT",
    "CIFAR10",
    "CIFAR100",
    "CUB200",
    "FGVCAircraft",
    "DATASETS",
    "DATASET_SPLITS",
    "EVAL_SPLITS",
    "DatasetSpec",
    "dataset_spec",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DEFAULT_ROOT",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DatasetFormatError",
    "FashionMNIST",
    "MoCoV2DeviceAugment",
    "ImageFolderDataset",
    "STL10Binary",
    "TinyImageNet",
    "build_dataset",
    "build_pretrain_dataset",
    "default_image_size",
    "eval_transform",
    "folder_dataset",
    "imagenet_dataset",
    "moco_v2_transform",
    "read_idx_ubyte",
    "resolve_augment_on",
    "rgb_loader",
]

# Derived from the registry (kept for callers of earlier versions).
DATASET_SPLITS: dict[str, tuple[str, ...]] = {name: spec.splits for name, spec in DATASETS.items()}
EVAL_SPLITS: dict[str, tuple[str, str]] = {
    name: spec.eval_splits for name, spec in DATASETS.items()
}


def _downloadable() -> str:
    names = [repr(name) for name, spec in DATASETS.items() if spec.downloadable]
    return " and ".join([", ".join(names[:-1]), names[-1]]) if len(names) > 1 else names[0]


def default_image_size(name: str) -> int:
    """The side length in pixels at which dataset `name` is usually trained.

    Args:
        name: A dataset name, one of the keys of DATASET_SPLITS.

    Returns:
        96 for stl10, 64 for tiny-imagenet, 224 for imagenet, folder, cub200 and
        aircraft, 28 for fashion-mnist, 32 for cifar10 and cifar100.

    Raises:
        ValueError: If `name` is unknown.

    Examples:
        >>> default_image_size("stl10")
        96
    """
    return dataset_spec(name).image_size


def build_dataset(
    name: str,
    root: str | Path,
    split: str,
    transform: Callable[[Image.Image], Any] | None = None,
    download: bool = False,
    fold: int | None = None,
) -> Dataset[tuple[Any, int]]:
    """Builds dataset `name` from the files under `root`.

    Names: "stl10" (STL10Binary), "tiny-imagenet" (TinyImageNet), "imagenet"
    (`root/train` and `root/val` image folders), "folder" (`root/<split>` if it exists,
    else `root`, as an image folder), "fashion-mnist" (FashionMNIST), "cifar10" (CIFAR10),
    "cifar100" (CIFAR100), "cub200" (CUB200) and "aircraft" (FGVCAircraft).

    Args:
        name: The dataset name, one of the keys of DATASET_SPLITS.
        root: The dataset folder; see the dataset classes for what it may contain.
        split: One of DATASET_SPLITS[name].
        transform: Applied to each RGB PIL image; may return anything (e.g. two views).
        download: Fetch missing files with torchvision; only "stl10", "fashion-mnist",
            "cifar10", "cifar100" and "aircraft".
        fold: STL-10 training fold 0..9 (split "train" only); None for all images.

    Returns:
        A dataset of `(image, label)` pairs with `classes` and `labels` attributes.

    Raises:
        ValueError: If the name, split or fold is invalid, or `download` is requested for a
            dataset that cannot be downloaded.
        FileNotFoundError: If files are missing (the message says how to get them).
        DatasetFormatError: If files are malformed.

    Examples:
        >>> from lightly_amix.data import build_dataset, moco_v2_transform
        >>> dataset = build_dataset(
        ...     "stl10", "/data/stl10", "train+unlabeled", transform=moco_v2_transform(96)
        ... )  # doctest: +SKIP
        >>> views, label = dataset[0]  # doctest: +SKIP
    """
    spec = dataset_spec(name)
    if split not in spec.splits:
        raise ValueError(
            f"Unknown split {split!r} for dataset {name!r}; valid splits: " + ", ".join(spec.splits)
        )
    if fold is not None and not spec.supports_folds:
        raise ValueError(
            f"fold is only supported for dataset 'stl10', got fold={fold} for {name!r}."
        )
    if download and not spec.downloadable:
        raise ValueError(
            f"download=True is only supported for {_downloadable()}, not {name!r}: "
            + str(spec.download_hint)
        )
    return spec.build(Path(root), split, transform, download, fold)


def build_pretrain_dataset(
    name: str,
    root: str | Path,
    split: str,
    image_size: int,
    augment_on: str = "loader",
    download: bool = False,
    min_scale: float = MOCO_V2_MIN_SCALE,
) -> tuple[Dataset[tuple[Any, int]], MoCoV2DeviceAugment | None]:
    """The pre-training data set of `name`, for views drawn in the loader or on the device.

    Args:
        name: The dataset name, one of the keys of DATASET_SPLITS.
        root: The dataset folder.
        split: One of DATASET_SPLITS[name].
        image_size: Side length of the views.
        augment_on: ``loader``: the data set yields the two views (``moco_v2_transform``)
            and the second return value is None. ``device``: it yields uint8 pixels, read
            without PIL for STL-10 and Fashion-MNIST, cropped on the CPU for data sets of
            varying image sizes, and the second return value draws the views from a batch
            of them. ``auto`` must be resolved first (``resolve_augment_on``).
        download: As in :func:`build_dataset`.
        min_scale: Smallest crop area as a fraction of the image (MoCo v2: 0.2).

    Returns:
        ``(dataset, device_augment)``.

    Examples:
        >>> dataset, augment = build_pretrain_dataset(
        ...     "stl10", "data/stl10", "train+unlabeled", 96, augment_on="device"
        ... )  # doctest: +SKIP
    """
    if augment_on == "loader":
        transform = moco_v2_transform(image_size, min_scale=min_scale)
        return build_dataset(name, root, split, transform, download=download), None
    if augment_on != "device":
        raise ValueError(
            f"augment_on must be 'loader' or 'device' here, got {augment_on!r} "
            "(resolve 'auto' with resolve_augment_on first)."
        )
    if dataset_spec(name).uint8_arrays:
        dataset: Dataset[tuple[Any, int]] = UInt8ArrayImages(
            build_dataset(name, root, split, download=download)
        )
    else:
        transform = loader_transform(name, image_size, min_scale)
        dataset = build_dataset(name, root, split, transform, download=download)
    return dataset, device_augment_for(name, image_size, min_scale)
