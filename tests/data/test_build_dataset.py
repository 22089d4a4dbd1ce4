from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from lightly_amix.data import (
    CIFAR10,
    CIFAR100,
    CUB200,
    DATASET_SPLITS,
    FashionMNIST,
    FGVCAircraft,
    ImageFolderDataset,
    STL10Binary,
    TinyImageNet,
    build_dataset,
    default_image_size,
)
from tests.fakes import (
    FakeFashionMNIST,
    FakeImageFolder,
    FakeSTL10,
    FakeTinyImageNet,
    write_aircraft,
    write_cifar10,
    write_cifar100,
    write_cub,
)


def check_common_interface(dataset: Any, expected_length: int) -> None:
    assert len(dataset) == expected_length
    classes = dataset.classes
    assert isinstance(classes, list) and all(isinstance(c, str) for c in classes)
    labels = dataset.labels
    assert isinstance(labels, np.ndarray) and labels.dtype == np.int64
    assert labels.shape == (expected_length,)
    image, label = dataset[0]
    assert isinstance(image, Image.Image) and image.mode == "RGB"
    assert isinstance(label, int) and label == labels[0]


def test_splits_and_image_sizes() -> None:
    assert DATASET_SPLITS == {
        "stl10": ("train", "test", "unlabeled", "train+unlabeled"),
        "tiny-imagenet": ("train", "val", "test"),
        "imagenet": ("train", "val"),
        "folder": ("train", "val", "test"),
        "fashion-mnist": ("train", "test"),
        "cifar10": ("train", "test"),
        "cifar100": ("train", "test"),
        "cub200": ("train", "test"),
        "aircraft": ("trainval", "train", "val", "test"),
    }
    sizes = {name: default_image_size(name) for name in DATASET_SPLITS}
    assert sizes == {
        "stl10": 96,
        "tiny-imagenet": 64,
        "imagenet": 224,
        "folder": 224,
        "fashion-mnist": 28,
        "cifar10": 32,
        "cifar100": 32,
        "cub200": 224,
        "aircraft": 224,
    }


def test_stl10(stl10: FakeSTL10) -> None:
    dataset = build_dataset("stl10", stl10.root, "train+unlabeled")
    assert isinstance(dataset, STL10Binary)
    check_common_interface(dataset, 9)
    fold = build_dataset("stl10", stl10.root, "train", fold=2)
    assert isinstance(fold, STL10Binary) and fold.fold == 2 and len(fold) == 3


def test_tiny_imagenet(tiny_imagenet: FakeTinyImageNet) -> None:
    dataset = build_dataset("tiny-imagenet", tiny_imagenet.root, "val")
    assert isinstance(dataset, TinyImageNet)
    check_common_interface(dataset, 3)


def test_imagenet(image_folder: FakeImageFolder) -> None:
    dataset = build_dataset("imagenet", image_folder.root, "train")
    assert isinstance(dataset, ImageFolderDataset)
    assert Path(dataset.root) == image_folder.root / "train"
    check_common_interface(dataset, 4)


def test_folder(image_folder: FakeImageFolder) -> None:
    dataset = build_dataset("folder", image_folder.root, "val")
    assert isinstance(dataset, ImageFolderDataset)
    assert Path(dataset.root) == image_folder.root / "val"
    check_common_interface(dataset, 4)
    # Without split folders the root itself is the dataset.
    flat = build_dataset("folder", image_folder.root / "train", "test")
    assert isinstance(flat, ImageFolderDataset) and flat.classes == ["cat", "dog"]


@pytest.mark.parametrize(
    ("name", "split", "writer", "cls", "length"),
    [
        ("cifar10", "test", write_cifar10, CIFAR10, 3),
        ("cifar100", "train", write_cifar100, CIFAR100, 4),
        ("cub200", "test", write_cub, CUB200, 3),
        ("aircraft", "trainval", write_aircraft, FGVCAircraft, 5),
    ],
)
def test_classification_datasets(
    tmp_path: Path, name: str, split: str, writer: Any, cls: type, length: int
) -> None:
    writer(tmp_path)
    dataset = build_dataset(name, tmp_path, split)
    assert isinstance(dataset, cls)
    check_common_interface(dataset, length)


def test_fashion_mnist(fashion_mnist: FakeFashionMNIST) -> None:
    dataset = build_dataset(
        "fashion-mnist", fashion_mnist.root, "test", transform=lambda im: np.asarray(im)
    )
    assert isinstance(dataset, FashionMNIST)
    assert len(dataset) == 4 and dataset.labels.dtype == np.int64
    pixels, _ = dataset[0]
    assert pixels.shape == (28, 28, 3)


# --------------------------------------------------------------------------- bad input


def test_unknown_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as info:
        build_dataset("svhn", tmp_path, "train")
    assert str(info.value) == (
        "Unknown dataset 'svhn'; valid names: stl10, tiny-imagenet, imagenet, folder, "
        "fashion-mnist, cifar10, cifar100, cub200, aircraft"
    )
    with pytest.raises(ValueError, match="Unknown dataset 'mnist'; valid names: stl10"):
        default_image_size("mnist")


@pytest.mark.parametrize("name", list(DATASET_SPLITS))
def test_unknown_split(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError) as info:
        build_dataset(name, tmp_path, "validation")
    assert str(info.value) == (
        f"Unknown split 'validation' for dataset {name!r}; valid splits: "
        + ", ".join(DATASET_SPLITS[name])
    )


def test_fold_only_for_stl10(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fold is only supported for dataset 'stl10'"):
        build_dataset("tiny-imagenet", tmp_path, "train", fold=0)


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("tiny-imagenet", "tiny-imagenet-200.zip"),
        ("imagenet", "image-net.org"),
        ("folder", "your own images"),
        ("cub200", "CUB_200_2011.tgz"),
    ],
)
def test_download_only_for_datasets_torchvision_can_fetch(
    tmp_path: Path, name: str, hint: str
) -> None:
    with pytest.raises(ValueError) as info:
        build_dataset(name, tmp_path, "train", download=True)
    message = str(info.value)
    assert (
        "download=True is only supported for 'stl10', 'fashion-mnist', 'cifar10', 'cifar100' "
        f"and 'aircraft', not {name!r}: " in message
    )
    assert hint in message
