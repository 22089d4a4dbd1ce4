"""STL-10 read directly from the original binary files, memory-mapped."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets import STL10 as TorchvisionSTL10
from torchvision.datasets.utils import download_and_extract_archive

from lightly_amix.data.errors import DatasetFormatError

STL10_SPLITS: tuple[str, ...] = ("train", "test", "unlabeled", "train+unlabeled")
STL10_FOLDER = "stl10_binary"
STL10_IMAGE_SIZE = 96
STL10_NUM_CLASSES = 10
STL10_NUM_FOLDS = 10
STL10_BYTES_PER_IMAGE = 3 * STL10_IMAGE_SIZE * STL10_IMAGE_SIZE  # 27,648

# Image and label files that make up each part of a split; "unlabeled" has no labels.
_PART_FILES: dict[str, tuple[str, str | None]] = {
    "train": ("train_X.bin", "train_y.bin"),
    "test": ("test_X.bin", "test_y.bin"),
    "unlabeled": ("unlabeled_X.bin", None),
}
_HOW_TO_GET = (
    "Pass --download (download=True) or fetch stl10_binary.tar.gz from the STL-10 website "
    "(https://cs.stanford.edu/~acoates/stl10/) and extract it under '{root}' (it creates "
    "'stl10_binary/' with all the files)."
)
_HOW_TO_FIX = "Re-extract stl10_binary.tar.gz, or delete the folder and pass --download."


class STL10Binary(Dataset[tuple[Any, int]]):
    """STL-10 (96x96 RGB, 10 classes) read from the original `stl10_binary/` files.

    The images are memory-mapped, never loaded into RAM as a whole (the unlabeled file
    alone is 2.76 GB). The memory map is opened lazily on first access in each process
    and is not pickled, so the dataset is cheap to send to DataLoader workers.

    File format (as distributed in `stl10_binary.tar.gz`): `*_X.bin` holds raw uint8
    pixels, 27,648 bytes per image, stored as three colour planes R, G, B, each plane in
    column-major order (the file is `images_NHWC.transpose(0, 3, 2, 1)`). `*_y.bin` holds
    one uint8 label per image in 1..10, exposed here as 0..9. `fold_indices.txt` has 10
    lines of space-separated 0-based indices into the train split, `class_names.txt` one
    class name per line.

    torchvision's `STL10` is only used to download: it reads a whole split into memory.

    Attributes:
        root: The `stl10_binary/` folder.
        split: One of STL10_SPLITS.
        fold: Selected training fold (0..9) or None for the whole split.
        classes: The 10 class names from `class_names.txt`.
        labels: Label of every sample, numpy int64 array; 0..9, or -1 for unlabeled images.
        transform: Applied to each RGB PIL image.

    Examples:
        >>> dataset = STL10Binary("/data/stl10", split="train+unlabeled")  # doctest: +SKIP
        >>> len(dataset)  # doctest: +SKIP
        105000
        >>> image, label = dataset[0]  # doctest: +SKIP
        >>> image.size, dataset.classes[label]  # doctest: +SKIP
        ((96, 96), 'airplane')
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        fold: int | None = None,
        transform: Callable[[Image.Image], Any] | None = None,
        download: bool = False,
    ) -> None:
        """Checks the files of `split` and reads the labels.

        Args:
            root: The folder containing `stl10_binary/`, or `stl10_binary/` itself.
            split: "train", "test", "unlabeled" or "train+unlabeled" (train images first).
            fold: Use only training fold `fold` (0..9) of `fold_indices.txt`; only valid
                with split "train".
            transform: Applied to each RGB PIL image; may return anything.
            download: Download and extract the archive with torchvision if the files of
                `split` are missing.

        Raises:
            ValueError: If `split` or `fold` is invalid.
            FileNotFoundError: If a required file is missing.
            DatasetFormatError: If a file is malformed.
            RuntimeError: If the download fails.
        """
        if split not in STL10_SPLITS:
            raise ValueError(
                f"Unknown split {split!r} for dataset 'stl10'; valid splits: "
                + ", ".join(STL10_SPLITS)
            )
        if fold is not None:
            if split != "train":
                raise ValueError(
                    f"fold={fold} is only valid with split 'train' (the folds of "
                    f"fold_indices.txt index the train split), got split {split!r}."
                )
            if not 0 <= fold < STL10_NUM_FOLDS:
                raise ValueError(f"fold must be in 0..{STL10_NUM_FOLDS - 1}, got {fold}.")
        part_names = split.split("+")
        required = ["class_names.txt"]
        for part in part_names:
            required += [name for name in _PART_FILES[part] if name is not None]
        if fold is not None:
            required.append("fold_indices.txt")

        found = _find_folder(Path(root))
        if download and (found is None or not all((found / f).is_file() for f in required)):
            _download(Path(root))
        folder = _resolve_folder(Path(root))
        for name in required:
            if not (folder / name).is_file():
                raise FileNotFoundError(
                    f"STL-10 file '{folder / name}' not found (needed for split {split!r}). "
                    + _HOW_TO_GET.format(root=folder.parent)
                )

        self.root = folder
        self.split = split
        self.fold = fold
        self.transform = transform
        self.classes = _read_class_names(folder / "class_names.txt")

        self._image_files: list[str] = []
        self._counts: list[int] = []
        part_labels: list[np.ndarray] = []
        for part in part_names:
            image_name, label_name = _PART_FILES[part]
            count = _count_images(folder / image_name)
            if label_name is None:
                part_labels.append(np.full(count, -1, dtype=np.int64))
            else:
                part_labels.append(_read_labels(folder / label_name, folder / image_name, count))
            self._image_files.append(str(folder / image_name))
            self._counts.append(count)
        labels = np.concatenate(part_labels)

        # Maps a dataset index to an index of the concatenated parts; None = identity.
        self._indices: np.ndarray | None = None
        if fold is not None:
            folds = _read_folds(folder / "fold_indices.txt", num_train=self._counts[0])
            self._indices = folds[fold]
            labels = labels[self._indices]
        self.labels: np.ndarray = labels
        # Opened lazily (see `_arrays`), dropped when pickled (see `__getstate__`).
        self._memmaps: list[np.memmap] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image: Any = Image.fromarray(self.get_uint8(index))  # uint8 HxWx3 -> mode "RGB".
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])

    def get_uint8(self, index: int) -> np.ndarray:
        """Returns image `index` as a (96, 96, 3) uint8 array (height, width, RGB).

        Args:
            index: Dataset index, negative values count from the end.

        Returns:
            A contiguous copy of the pixels, independent of the memory map.

        Examples:
            >>> dataset.get_uint8(0).shape  # doctest: +SKIP
            (96, 96, 3)
        """
        length = len(self)
        if not -length <= index < length:
            raise IndexError(f"Index {index} out of range for STL-10 {self.split!r} of {length}.")
        index = index % length
        if self._indices is not None:
            index = int(self._indices[index])
        part = 0
        while index >= self._counts[part]:
            index -= self._counts[part]
            part += 1
        # Stored as (channel, width, height): transpose to (height, width, channel).
        planes = self._arrays()[part][index]
        return np.ascontiguousarray(planes.transpose(2, 1, 0))

    def _arrays(self) -> list[np.memmap]:
        """The memory-mapped image files, opened on first use in the current process."""
        if self._memmaps is None:
            self._memmaps = [
                np.memmap(
                    path,
                    dtype=np.uint8,
                    mode="r",
                    shape=(count, 3, STL10_IMAGE_SIZE, STL10_IMAGE_SIZE),
                )
                for path, count in zip(self._image_files, self._counts, strict=True)
            ]
        return self._memmaps

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_memmaps"] = None  # Re-opened by each worker; never pickle the pixels.
        return state


def _find_folder(root: Path) -> Path | None:
    """Returns `root/stl10_binary` if it exists, `root` if it is that folder, else None."""
    if (root / STL10_FOLDER).is_dir():
        return root / STL10_FOLDER
    if root.is_dir() and (root.name == STL10_FOLDER or any(root.glob("*_X.bin"))):
        return root
    return None


def _resolve_folder(root: Path) -> Path:
    """Like `_find_folder` but raises a FileNotFoundError explaining how to get the data."""
    folder = _find_folder(root)
    if folder is not None:
        return folder
    raise FileNotFoundError(
        f"STL-10 folder '{root / STL10_FOLDER}' not found (expected '{root}' to contain "
        f"'{STL10_FOLDER}/', or to be that folder). " + _HOW_TO_GET.format(root=root)
    )


def _download(root: Path) -> None:
    """Downloads and extracts stl10_binary.tar.gz into `root` with torchvision."""
    # torchvision's `STL10(root, download=True)` would afterwards load the whole split
    # into RAM (2.76 GB for "unlabeled"), so only its download step is reused here: the
    # same URL, file name and checksum, through torchvision's own download utility.
    try:
        download_and_extract_archive(
            TorchvisionSTL10.url,
            download_root=str(root),
            filename=TorchvisionSTL10.filename,
            md5=TorchvisionSTL10.tgz_md5,
        )
    except Exception as error:
        raise RuntimeError(
            f"Downloading STL-10 from {TorchvisionSTL10.url} to '{root}' failed "
            f"({type(error).__name__}: {error}). Without internet access, fetch "
            "stl10_binary.tar.gz from the STL-10 website (https://cs.stanford.edu/~acoates/"
            f"stl10/) on another machine and extract it under '{root}'."
        ) from error


def _count_images(path: Path) -> int:
    """Number of images in an `*_X.bin` file, checked from the file size."""
    size = path.stat().st_size
    if size == 0 or size % STL10_BYTES_PER_IMAGE != 0:
        raise DatasetFormatError(
            f"STL-10 image file '{path}' has {size} bytes, expected a non-zero multiple of "
            f"{STL10_BYTES_PER_IMAGE} (3 x 96 x 96 bytes per image); the file is truncated "
            f"or not an STL-10 image file. {_HOW_TO_FIX}"
        )
    return size // STL10_BYTES_PER_IMAGE


def _read_labels(path: Path, image_path: Path, num_images: int) -> np.ndarray:
    """Reads an `*_y.bin` file (uint8, 1..10) and returns 0-based int64 labels."""
    raw = np.fromfile(path, dtype=np.uint8)
    if len(raw) != num_images:
        raise DatasetFormatError(
            f"STL-10 label file '{path}' has {len(raw)} labels but image file "
            f"'{image_path}' has {num_images} images; both must describe the same images. "
            + _HOW_TO_FIX
        )
    bad = np.flatnonzero((raw < 1) | (raw > STL10_NUM_CLASSES))
    if len(bad) > 0:
        first = int(bad[0])
        raise DatasetFormatError(
            f"STL-10 label file '{path}' has value {int(raw[first])} at index {first}, "
            f"expected labels in 1..{STL10_NUM_CLASSES} (one byte per image). " + _HOW_TO_FIX
        )
    return raw.astype(np.int64) - 1


def _read_class_names(path: Path) -> list[str]:
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if len(names) != STL10_NUM_CLASSES:
        raise DatasetFormatError(
            f"STL-10 class name file '{path}' has {len(names)} non-empty lines, expected "
            f"{STL10_NUM_CLASSES} class names, one per line. " + _HOW_TO_FIX
        )
    return names


def _read_folds(path: Path, num_train: int) -> list[np.ndarray]:
    """Parses `fold_indices.txt`: 10 lines of space-separated indices into the train split."""
    lines = path.read_text().splitlines()
    while lines and not lines[-1].strip():
        lines.pop()  # A trailing newline at the end of the file is not a fold.
    if len(lines) != STL10_NUM_FOLDS:
        raise DatasetFormatError(
            f"STL-10 fold file '{path}' has {len(lines)} lines, expected {STL10_NUM_FOLDS} "
            "lines of space-separated training-image indices. " + _HOW_TO_FIX
        )
    folds = []
    for line_number, line in enumerate(lines, start=1):
        tokens = line.split()
        if not tokens:
            raise DatasetFormatError(
                f"STL-10 fold file '{path}', line {line_number} is empty, expected "
                "space-separated training-image indices. " + _HOW_TO_FIX
            )
        try:
            indices = np.array([int(token) for token in tokens], dtype=np.int64)
        except ValueError as error:
            raise DatasetFormatError(
                f"STL-10 fold file '{path}', line {line_number}: {error}; expected "
                "space-separated integer indices. " + _HOW_TO_FIX
            ) from error
        bad = np.flatnonzero((indices < 0) | (indices >= num_train))
        if len(bad) > 0:
            raise DatasetFormatError(
                f"STL-10 fold file '{path}', line {line_number} has index "
                f"{int(indices[bad[0]])}, expected 0-based indices in 0..{num_train - 1} "
                f"(the train split has {num_train} images). " + _HOW_TO_FIX
            )
        folds.append(indices)
    return folds
