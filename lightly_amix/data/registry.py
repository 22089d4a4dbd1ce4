"""One entry per data set: its splits, evaluation splits, image size, how to get it, its reader.

Everything that differs between data sets lives in its :class:`DatasetSpec`; code that needs
such a fact asks :func:`dataset_spec` instead of keeping its own table or ``if name == ...``
chain. Adding a data set is adding one entry to :data:`DATASETS`.

Examples:
    >>> dataset_spec("stl10").eval_splits
    ('train', 'test')
    >>> dataset_spec("tiny-imagenet").image_size
    64
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from lightly_amix.data.aircraft import AIRCRAFT_SPLITS, FGVCAircraft
from lightly_amix.data.cifar import CIFAR10, CIFAR100, CIFAR_SPLITS
from lightly_amix.data.cub import CUB200, CUB_DOWNLOAD_HINT, CUB_SPLITS
from lightly_amix.data.fashion_mnist import FASHION_MNIST_SPLITS, FashionMNIST
from lightly_amix.data.folder import (
    FOLDER_SPLITS,
    IMAGENET_SPLITS,
    folder_dataset,
    imagenet_dataset,
)
from lightly_amix.data.stl10 import STL10_SPLITS, STL10Binary
from lightly_amix.data.tiny_imagenet import TINY_IMAGENET_SPLITS, TINY_IMAGENET_URL, TinyImageNet

# (root, split, transform, download, fold) -> data set of (image, label)
Builder = Callable[[Path, str, Any, bool, "int | None"], Dataset]


@dataclass(frozen=True)
class DatasetSpec:
    """What the package knows about one data set.

    Attributes:
        name: The name used in configs and on the command line.
        splits: Valid splits; the first is the pre-training default.
        eval_splits: ``(train, test)`` splits of the kNN and linear evaluation (paper §4.2).
        image_size: Side in pixels at which it is usually trained.
        build: Makes the data set: ``build(root, split, transform, download, fold)``.
        download_hint: How to get the files when torchvision cannot download them (``None``:
            ``download=True`` works).
        fixed_size: All images have the same size, so ``augment_on=device`` crops on the
            device; otherwise the loader crops each image first.
        uint8_arrays: The reader serves raw uint8 pixels (``get_uint8``) without PIL.
        supports_folds: Has STL-10's predefined training folds.
    """

    name: str
    splits: tuple[str, ...]
    eval_splits: tuple[str, str]
    image_size: int
    build: Builder
    download_hint: str | None = None
    fixed_size: bool = False
    uint8_arrays: bool = False
    supports_folds: bool = False

    @property
    def downloadable(self) -> bool:
        """Whether ``download=True`` can fetch it (with torchvision)."""
        return self.download_hint is None


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            "stl10",
            STL10_SPLITS,
            ("train", "test"),
            96,
            lambda root, split, tf, dl, fold: STL10Binary(
                root, split=split, fold=fold, transform=tf, download=dl
            ),
            fixed_size=True,
            uint8_arrays=True,
            supports_folds=True,
        ),
        DatasetSpec(
            "tiny-imagenet",
            TINY_IMAGENET_SPLITS,
            ("train", "val"),
            64,
            lambda root, split, tf, dl, fold: TinyImageNet(root, split=split, transform=tf),
            download_hint=(
                f"download tiny-imagenet-200.zip ({TINY_IMAGENET_URL}) and unzip it under the root."
            ),
            fixed_size=True,
        ),
        DatasetSpec(
            "imagenet",
            IMAGENET_SPLITS,
            ("train", "val"),
            224,
            lambda root, split, tf, dl, fold: imagenet_dataset(root, split, transform=tf),
            download_hint=(
                "download ILSVRC2012 from https://image-net.org (registration required) and "
                "arrange it as <root>/train/<wnid>/*.JPEG and <root>/val/<wnid>/*.JPEG."
            ),
        ),
        DatasetSpec(
            "folder",
            FOLDER_SPLITS,
            ("train", "val"),
            224,
            lambda root, split, tf, dl, fold: folder_dataset(root, split, transform=tf),
            download_hint="'folder' reads your own images from <root>/<split>/<class>/<image>.",
        ),
        DatasetSpec(
            "fashion-mnist",
            FASHION_MNIST_SPLITS,
            ("train", "test"),
            28,
            lambda root, split, tf, dl, fold: FashionMNIST(
                root, split=split, transform=tf, download=dl
            ),
            fixed_size=True,
            uint8_arrays=True,
        ),
        DatasetSpec(
            "cifar10",
            CIFAR_SPLITS,
            ("train", "test"),
            32,
            lambda root, split, tf, dl, fold: CIFAR10(root, split=split, transform=tf, download=dl),
            fixed_size=True,
            uint8_arrays=True,
        ),
        DatasetSpec(
            "cifar100",
            CIFAR_SPLITS,
            ("train", "test"),
            32,
            lambda root, split, tf, dl, fold: CIFAR100(
                root, split=split, transform=tf, download=dl
            ),
            fixed_size=True,
            uint8_arrays=True,
        ),
        DatasetSpec(
            "cub200",
            CUB_SPLITS,
            ("train", "test"),
            224,
            lambda root, split, tf, dl, fold: CUB200(root, split=split, transform=tf),
            download_hint=CUB_DOWNLOAD_HINT,
        ),
        DatasetSpec(
            "aircraft",
            AIRCRAFT_SPLITS,
            ("trainval", "test"),
            224,
            # The copyright banner is kept (crop_banner=False), as in torchvision.
            lambda root, split, tf, dl, fold: FGVCAircraft(
                root, split=split, transform=tf, download=dl
            ),
        ),
    )
}


def dataset_spec(name: str) -> DatasetSpec:
    """The registry entry of data set ``name``.

    Raises:
        ValueError: If ``name`` is unknown (the message lists the known names).
    """
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"Unknown dataset {name!r}; valid names: " + ", ".join(DATASETS)) from None
