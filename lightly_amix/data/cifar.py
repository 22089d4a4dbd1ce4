"""CIFAR-10 and CIFAR-100 read from the official *python* pickle batches."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets import CIFAR10 as TorchvisionCIFAR10
from torchvision.datasets import CIFAR100 as TorchvisionCIFAR100

from lightly_amix.data.errors import DatasetFormatError

CIFAR_SPLITS: tuple[str, ...] = ("train", "test")
CIFAR_IMAGE_SIZE = 32
CIFAR_BYTES_PER_IMAGE = 3 * CIFAR_IMAGE_SIZE * CIFAR_IMAGE_SIZE  # 3,072


@dataclass(frozen=True)
class _CIFARFormat:
    """Where and how one of the two CIFAR data sets stores its batches."""

    name: str  # "cifar10", the registry name.
    title: str  # "CIFAR-10", for messages.
    folder: str  # Created by extracting the archive.
    archive: str  # The archive's file name.
    url: str
    split_files: dict[str, tuple[str, ...]]
    meta_file: str
    names_key: bytes  # Key of the class-name list in `meta_file`.
    labels_key: bytes  # Key of the label list in every batch.
    other_labels_key: bytes  # The label key of the other CIFAR, to recognise a mix-up.
    num_classes: int


_CIFAR10 = _CIFARFormat(
    name="cifar10",
    title="CIFAR-10",
    folder="cifar-10-batches-py",
    archive=TorchvisionCIFAR10.filename,  # cifar-10-python.tar.gz
    url=TorchvisionCIFAR10.url,
    split_files={
        "train": tuple(f"data_batch_{k}" for k in range(1, 6)),
        "test": ("test_batch",),
    },
    meta_file="batches.meta",
    names_key=b"label_names",
    labels_key=b"labels",
    other_labels_key=b"fine_labels",
    num_classes=10,
)
_CIFAR100 = _CIFARFormat(
    name="cifar100",
    title="CIFAR-100",
    folder="cifar-100-python",
    archive=TorchvisionCIFAR100.filename,  # cifar-100-python.tar.gz
    url=TorchvisionCIFAR100.url,
    split_files={"train": ("train",), "test": ("test",)},
    meta_file="meta",
    names_key=b"fine_label_names",
    labels_key=b"fine_labels",
    other_labels_key=b"labels",
    num_classes=100,
)


class _CIFAR(Dataset[tuple[Any, int]]):
    """Shared reader of CIFAR-10 and CIFAR-100; see those classes."""

    _format: ClassVar[_CIFARFormat]

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transform: Callable[[Image.Image], Any] | None = None,
        download: bool = False,
    ) -> None:
        fmt = self._format
        if split not in CIFAR_SPLITS:
            raise ValueError(
                f"Unknown split {split!r} for dataset {fmt.name!r}; valid splits: "
                + ", ".join(CIFAR_SPLITS)
            )
        root = Path(root)
        # Where the archive is (to be) extracted: the parent when `root` is the folder itself.
        extract_root = root.parent if root.name == fmt.folder else root
        required = [*fmt.split_files[split], fmt.meta_file]
        found = _find_folder(root, fmt)
        if download and (found is None or not all((found / f).is_file() for f in required)):
            _download(extract_root, fmt)
            found = _find_folder(root, fmt)
        if found is None:
            raise FileNotFoundError(
                f"{fmt.title} folder '{extract_root / fmt.folder}' not found (expected '{root}' "
                f"to contain '{fmt.folder}/', or to be that folder). "
                + _how_to_get(fmt, extract_root)
            )
        for name in required:
            if not (found / name).is_file():
                raise FileNotFoundError(
                    f"{fmt.title} file '{found / name}' not found (needed for split {split!r}). "
                    + _how_to_get(fmt, extract_root)
                )

        self.root = found
        self.split = split
        self.transform = transform
        self.classes = _read_class_names(found / fmt.meta_file, fmt)
        batches = [_read_batch(found / name, fmt) for name in fmt.split_files[split]]
        # Each batch: (N_k, 32, 32, 3); concatenated into one contiguous (N, 32, 32, 3).
        self.images: np.ndarray = np.concatenate([images for images, _ in batches])
        self.labels: np.ndarray = np.concatenate([labels for _, labels in batches])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image: Any = Image.fromarray(self.images[index])  # uint8 (32, 32, 3) -> mode "RGB".
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])

    def get_uint8(self, index: int) -> np.ndarray:
        """Returns image `index` as a (32, 32, 3) uint8 array (height, width, RGB).

        Args:
            index: Dataset index, negative values count from the end.

        Returns:
            A contiguous copy of the pixels.

        Examples:
            >>> dataset.get_uint8(0).shape  # doctest: +SKIP
            (32, 32, 3)
        """
        return self.images[index].copy()


class CIFAR10(_CIFAR):
    """CIFAR-10 (32x32 RGB, 10 classes) read from the official `cifar-10-batches-py/`.

    Files (as extracted from `cifar-10-python.tar.gz`): `data_batch_1` .. `data_batch_5`
    (train, 10,000 images each), `test_batch` (10,000 images) and `batches.meta`. Each is
    a Python pickle of a dict with bytes keys: `b"data"` is a (N, 3072) uint8 array whose
    rows hold the R, G and B planes of a 32x32 image one after the other, each plane
    row-major; `b"labels"` is a list of N labels in 0..9; `batches.meta` has the class
    names under `b"label_names"`. The split is loaded into memory (150 MB for train) and
    checked: keys, array shape and dtype, label count and range, number of classes.

    The pickles are read with `pickle`, which can run code stored in a file: read only
    files from the official archive. torchvision's `CIFAR10` is only used to download.

    Attributes:
        root: The `cifar-10-batches-py/` folder.
        split: "train" or "test".
        classes: The 10 class names from `batches.meta`.
        images: Pixels, numpy uint8 array of shape (N, 32, 32, 3) (height, width, RGB).
        labels: Labels 0..9, numpy int64 array of length N.
        transform: Applied to each RGB PIL image.

    Examples:
        >>> dataset = CIFAR10("/data/cifar", split="test")  # doctest: +SKIP
        >>> len(dataset)  # doctest: +SKIP
        10000
        >>> image, label = dataset[0]  # doctest: +SKIP
        >>> image.size, dataset.classes[label]  # doctest: +SKIP
        ((32, 32), 'cat')
    """

    _format = _CIFAR10

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transform: Callable[[Image.Image], Any] | None = None,
        download: bool = False,
    ) -> None:
        """Loads and checks the batches of `split`.

        Args:
            root: The folder containing `cifar-10-batches-py/`, or that folder itself.
            split: "train" (the five data batches, in order) or "test".
            transform: Applied to each RGB PIL image; may return anything.
            download: If files are missing, download and extract `cifar-10-python.tar.gz`
                with torchvision into `root` (the parent of `root` if `root` is named
                `cifar-10-batches-py`).

        Raises:
            ValueError: If `split` is invalid.
            FileNotFoundError: If a required file is missing.
            DatasetFormatError: If a file is malformed.
            RuntimeError: If the download fails.
        """
        super().__init__(root, split=split, transform=transform, download=download)


class CIFAR100(_CIFAR):
    """CIFAR-100 (32x32 RGB, 100 fine classes) read from the official `cifar-100-python/`.

    Files (as extracted from `cifar-100-python.tar.gz`): `train` (50,000 images), `test`
    (10,000 images) and `meta`, pickles like CIFAR-10's (see :class:`CIFAR10`) with the
    fine labels 0..99 under `b"fine_labels"` and their names under `b"fine_label_names"`
    in `meta`. The 20 coarse super-classes are not used.

    The pickles are read with `pickle`, which can run code stored in a file: read only
    files from the official archive. torchvision's `CIFAR100` is only used to download.

    Attributes:
        root: The `cifar-100-python/` folder.
        split: "train" or "test".
        classes: The 100 fine class names from `meta`.
        images: Pixels, numpy uint8 array of shape (N, 32, 32, 3) (height, width, RGB).
        labels: Fine labels 0..99, numpy int64 array of length N.
        transform: Applied to each RGB PIL image.

    Examples:
        >>> dataset = CIFAR100("/data/cifar", split="train")  # doctest: +SKIP
        >>> len(dataset), len(dataset.classes)  # doctest: +SKIP
        (50000, 100)
        >>> dataset.get_uint8(0).shape  # doctest: +SKIP
        (32, 32, 3)
    """

    _format = _CIFAR100

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transform: Callable[[Image.Image], Any] | None = None,
        download: bool = False,
    ) -> None:
        """Loads and checks the batch of `split`.

        Args:
            root: The folder containing `cifar-100-python/`, or that folder itself.
            split: "train" or "test".
            transform: Applied to each RGB PIL image; may return anything.
            download: If files are missing, download and extract `cifar-100-python.tar.gz`
                with torchvision into `root` (the parent of `root` if `root` is named
                `cifar-100-python`).

        Raises:
            ValueError: If `split` is invalid.
            FileNotFoundError: If a required file is missing.
            DatasetFormatError: If a file is malformed.
            RuntimeError: If the download fails.
        """
        super().__init__(root, split=split, transform=transform, download=download)


def _how_to_get(fmt: _CIFARFormat, root: Path) -> str:
    return (
        f"Pass --download (download=True) to fetch it with torchvision, or download "
        f"{fmt.archive} ({fmt.url}) and extract it under '{root}' (it creates "
        f"'{fmt.folder}/' with all the files)."
    )


def _how_to_fix(fmt: _CIFARFormat) -> str:
    return f"Re-extract {fmt.archive}, or delete the '{fmt.folder}/' folder and pass --download."


def _find_folder(root: Path, fmt: _CIFARFormat) -> Path | None:
    """`root/<folder>` if it exists, `root` if it is that folder, else None."""
    if (root / fmt.folder).is_dir():
        return root / fmt.folder
    if root.is_dir() and (root.name == fmt.folder or (root / fmt.meta_file).is_file()):
        return root
    return None


def _download(root: Path, fmt: _CIFARFormat) -> None:
    """Downloads and extracts the archive into `root` with torchvision (checks its MD5)."""
    downloader = TorchvisionCIFAR10 if fmt is _CIFAR10 else TorchvisionCIFAR100
    try:
        downloader(str(root), train=True, download=True)
    except Exception as error:
        raise RuntimeError(
            f"Downloading {fmt.title} with torchvision to '{root / fmt.folder}' failed "
            f"({type(error).__name__}: {error}). Without internet access, download "
            f"{fmt.archive} ({fmt.url}) on another machine and extract it under '{root}'."
        ) from error


def _load_pickle(path: Path, fmt: _CIFARFormat) -> dict[Any, Any]:
    """Unpickles `path` (Python 2 pickle: bytes keys) and checks that it holds a dict."""
    with open(path, "rb") as file:
        try:
            content = pickle.load(file, encoding="bytes")
        except Exception as error:  # Corrupt pickles raise almost any exception type.
            raise DatasetFormatError(
                f"Cannot unpickle {fmt.title} file '{path}' ({type(error).__name__}: {error}); "
                f"expected a Python pickle of a dict from {fmt.archive}. The file is truncated "
                "or corrupt, or it is not from the python version of the data set (there are "
                f"also binary and MATLAB versions). {_how_to_fix(fmt)}"
            ) from error
    if not isinstance(content, dict):
        raise DatasetFormatError(
            f"{fmt.title} file '{path}' holds a pickled {type(content).__name__}, expected a "
            f"dict with bytes keys. {_how_to_fix(fmt)}"
        )
    return content


def _require_keys(
    content: dict[Any, Any], keys: tuple[bytes, ...], path: Path, fmt: _CIFARFormat
) -> None:
    missing = [key for key in keys if key not in content]
    if not missing:
        return
    found = ", ".join(repr(key) for key in sorted(content, key=repr)) or "none"
    other = _CIFAR100 if fmt is _CIFAR10 else _CIFAR10
    mix_up = (
        f" It looks like a {other.title} file: use dataset {other.name!r} for it."
        if fmt.other_labels_key in content
        else ""
    )
    raise DatasetFormatError(
        f"{fmt.title} file '{path}' has no key(s) {', '.join(repr(key) for key in missing)}; "
        f"expected a dict with bytes keys {', '.join(repr(key) for key in keys)}, found keys: "
        f"{found}.{mix_up} {_how_to_fix(fmt)}"
    )


def _read_batch(path: Path, fmt: _CIFARFormat) -> tuple[np.ndarray, np.ndarray]:
    """Reads one batch: (N, 32, 32, 3) uint8 pixels and (N,) int64 labels, checked."""
    content = _load_pickle(path, fmt)
    _require_keys(content, (b"data", fmt.labels_key), path, fmt)
    data = content[b"data"]
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != CIFAR_BYTES_PER_IMAGE
    ):
        described = (
            f"an array of dtype {data.dtype} and shape {data.shape}"
            if isinstance(data, np.ndarray)
            else f"a {type(data).__name__}"
        )
        raise DatasetFormatError(
            f"{fmt.title} file '{path}': b'data' is {described}, expected a uint8 array of "
            f"shape (N, {CIFAR_BYTES_PER_IMAGE}) (one row of 3 x 32 x 32 bytes per image). "
            + _how_to_fix(fmt)
        )
    num_images = len(data)
    raw_labels = content[fmt.labels_key]
    try:
        labels = np.asarray(raw_labels)
        flat_integers = labels.ndim == 1 and (
            len(labels) == 0 or np.issubdtype(labels.dtype, np.integer)
        )
    except (TypeError, ValueError):  # E.g. a ragged nested list.
        flat_integers = False
    if not flat_integers:
        raise DatasetFormatError(
            f"{fmt.title} file '{path}': {fmt.labels_key!r} is not a flat list of integers "
            f"(got {type(raw_labels).__name__}), expected one label in "
            f"0..{fmt.num_classes - 1} per image. " + _how_to_fix(fmt)
        )
    if len(labels) != num_images:
        raise DatasetFormatError(
            f"{fmt.title} file '{path}' has {len(labels)} labels ({fmt.labels_key!r}) but "
            f"{num_images} images (b'data'); both must describe the same images. "
            + _how_to_fix(fmt)
        )
    bad = np.flatnonzero((labels < 0) | (labels >= fmt.num_classes))
    if len(bad) > 0:
        first = int(bad[0])
        raise DatasetFormatError(
            f"{fmt.title} file '{path}' has label {int(labels[first])} at index {first} "
            f"({fmt.labels_key!r}), expected labels in 0..{fmt.num_classes - 1}. "
            + _how_to_fix(fmt)
        )
    # (N, 3072) rows of R, G, B planes -> (N, 3, 32, 32) = (image, channel, row, column)
    # -> (N, 32, 32, 3) = (image, row, column, channel), the layout PIL expects.
    planes = data.reshape(num_images, 3, CIFAR_IMAGE_SIZE, CIFAR_IMAGE_SIZE)
    images = np.ascontiguousarray(planes.transpose(0, 2, 3, 1))
    return images, labels.astype(np.int64)


def _read_class_names(path: Path, fmt: _CIFARFormat) -> list[str]:
    """The class names stored under `fmt.names_key` in the meta file, as str."""
    content = _load_pickle(path, fmt)
    _require_keys(content, (fmt.names_key,), path, fmt)
    raw_names = content[fmt.names_key]
    names: list[str] = []
    if isinstance(raw_names, list | tuple):
        for raw in raw_names:
            if isinstance(raw, bytes):
                names.append(raw.decode("utf-8", errors="replace"))
            elif isinstance(raw, str):
                names.append(raw)
            else:
                break
    if not isinstance(raw_names, list | tuple) or len(names) != len(raw_names):
        raise DatasetFormatError(
            f"{fmt.title} file '{path}': {fmt.names_key!r} is not a list of strings, expected "
            f"the {fmt.num_classes} class names. " + _how_to_fix(fmt)
        )
    if len(names) != fmt.num_classes:
        raise DatasetFormatError(
            f"{fmt.title} file '{path}' lists {len(names)} class names ({fmt.names_key!r}), "
            f"expected {fmt.num_classes}. " + _how_to_fix(fmt)
        )
    return names
