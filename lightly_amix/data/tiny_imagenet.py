"""Tiny-ImageNet-200 in the layout of the original `tiny-imagenet-200.zip`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from lightly_amix.data.errors import DatasetFormatError
from lightly_amix.data.folder import rgb_loader

TINY_IMAGENET_SPLITS: tuple[str, ...] = ("train", "val", "test")
TINY_IMAGENET_FOLDER = "tiny-imagenet-200"
TINY_IMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
_JPEG_SUFFIXES = (".jpeg", ".jpg")
_HOW_TO_GET = (
    "Download tiny-imagenet-200.zip (" + TINY_IMAGENET_URL + ") and unzip it under '{root}' "
    "(it creates 'tiny-imagenet-200/' with wnids.txt, train/, val/ and test/)."
)
_HOW_TO_FIX = "Re-extract tiny-imagenet-200.zip."


class TinyImageNet(Dataset[tuple[Any, int]]):
    """Tiny-ImageNet-200 (64x64 RGB, 200 classes) read from the unzipped original archive.

    Layout: `wnids.txt` (200 wnids, one per line), optional `words.txt` (`wnid<TAB>names`),
    `train/<wnid>/images/*.JPEG`, `val/images/*.JPEG` with labels in
    `val/val_annotations.txt` (tab-separated: file, wnid, x0, y0, x1, y1) and unlabeled
    `test/images/*.JPEG`.

    The label of a wnid is its position in `sorted(wnids)` (the order of `classes`), as in
    torchvision's ImageFolder on `train/`; `wnids.txt` itself is not sorted. Greyscale
    JPEGs (a few hundred in the archive) are converted to RGB. Test images have label -1.
    The whole folder is checked when the dataset is built (missing or unlisted files,
    unknown wnids); an image that cannot be decoded raises a DatasetFormatError naming
    the file when it is loaded. Hidden files (names starting with ".") are ignored.

    Attributes:
        root: The `tiny-imagenet-200/` folder.
        split: "train", "val" or "test".
        classes: The 200 wnids, sorted; `classes[label]` is the wnid of an image.
        class_names: Human-readable name of each class (first name in `words.txt`, or the
            wnid when `words.txt` is absent or lacks it).
        samples: `(path, label)` of every image.
        labels: Label of every sample, numpy int64 array (-1 for the test split).
        transform: Applied to each RGB PIL image.

    Examples:
        >>> val = TinyImageNet("/data", split="val")  # doctest: +SKIP
        >>> len(val), len(val.classes)  # doctest: +SKIP
        (10000, 200)
        >>> image, label = val[0]  # doctest: +SKIP
        >>> image.mode, image.size  # doctest: +SKIP
        ('RGB', (64, 64))
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transform: Callable[[Image.Image], Any] | None = None,
    ) -> None:
        """Reads the class list and indexes (and checks) the images of `split`.

        Args:
            root: The folder containing `tiny-imagenet-200/`, or that folder itself.
            split: "train", "val" or "test".
            transform: Applied to each RGB PIL image; may return anything.

        Raises:
            ValueError: If `split` is invalid.
            FileNotFoundError: If a required file or folder is missing.
            DatasetFormatError: If a file is malformed or the files are inconsistent.
        """
        if split not in TINY_IMAGENET_SPLITS:
            raise ValueError(
                f"Unknown split {split!r} for dataset 'tiny-imagenet'; valid splits: "
                + ", ".join(TINY_IMAGENET_SPLITS)
            )
        root = Path(root)
        folder = root / TINY_IMAGENET_FOLDER if (root / TINY_IMAGENET_FOLDER).is_dir() else root
        # Where the archive is to be unzipped, for the error messages.
        unzip_root = root.parent if folder.name == TINY_IMAGENET_FOLDER == root.name else root
        wnids_file = folder / "wnids.txt"
        if not wnids_file.is_file():
            raise FileNotFoundError(
                f"Tiny-ImageNet file '{wnids_file}' not found (expected '{root}' to contain "
                f"'{TINY_IMAGENET_FOLDER}/' or to be that folder). "
                + _HOW_TO_GET.format(root=unzip_root)
            )
        self.root = folder
        self.split = split
        self.transform = transform
        self.classes = sorted(_read_wnids(wnids_file))
        self.class_names = _read_class_names(folder / "words.txt", self.classes)
        class_to_idx = {wnid: index for index, wnid in enumerate(self.classes)}

        if split == "train":
            self.samples = _train_samples(folder, class_to_idx, unzip_root)
        elif split == "val":
            self.samples = _val_samples(folder, class_to_idx, unzip_root)
        else:
            self.samples = _test_samples(folder, unzip_root)
        self.labels: np.ndarray = np.array([label for _, label in self.samples], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        path, label = self.samples[index]
        image: Any = rgb_loader(path)
        if self.transform is not None:
            image = self.transform(image)
        return image, label


def _read_wnids(path: Path) -> list[str]:
    wnids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not wnids:
        raise DatasetFormatError(
            f"Tiny-ImageNet file '{path}' lists no wnids, expected one wnid (e.g. n01443537) "
            "per line. " + _HOW_TO_FIX
        )
    seen: set[str] = set()
    for line_number, wnid in enumerate(wnids, start=1):
        if wnid in seen or len(wnid.split()) != 1:
            raise DatasetFormatError(
                f"Tiny-ImageNet file '{path}', entry {line_number}: {wnid!r} is a duplicate "
                "or contains whitespace, expected one unique wnid per line. " + _HOW_TO_FIX
            )
        seen.add(wnid)
    return wnids


def _read_class_names(path: Path, wnids: list[str]) -> list[str]:
    """First human-readable name of each wnid from the optional `words.txt`."""
    if not path.is_file():
        return list(wnids)
    names: dict[str, str] = {}
    for line_number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        wnid, tab, words = line.partition("\t")
        if not tab:
            raise DatasetFormatError(
                f"Tiny-ImageNet file '{path}', line {line_number}: {line!r} has no tab, "
                "expected 'wnid<TAB>comma-separated names'. " + _HOW_TO_FIX
            )
        names[wnid.strip()] = words.split(",")[0].strip()
    return [names.get(wnid) or wnid for wnid in wnids]


def _list_jpegs(folder: Path) -> list[Path]:
    """The JPEG files of `folder`, sorted; any other (non-hidden) entry is an error."""
    images = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if not (path.is_file() and path.suffix.lower() in _JPEG_SUFFIXES):
            raise DatasetFormatError(
                f"Unexpected entry '{path}' in Tiny-ImageNet image folder '{folder}', expected "
                "only JPEG files (*.JPEG). Remove it or re-extract tiny-imagenet-200.zip."
            )
        images.append(path)
    return images


def _require_dir(path: Path, root: Path) -> None:
    if not path.is_dir():
        raise FileNotFoundError(
            f"Tiny-ImageNet folder '{path}' not found. " + _HOW_TO_GET.format(root=root)
        )


def _train_samples(folder: Path, class_to_idx: dict[str, int], root: Path) -> list[tuple[str, int]]:
    train_dir = folder / "train"
    _require_dir(train_dir, root)
    unknown = sorted(
        p.name for p in train_dir.iterdir() if p.is_dir() and p.name not in class_to_idx
    )
    if unknown:
        raise DatasetFormatError(
            f"Tiny-ImageNet train folder '{train_dir}' has class folder(s) not listed in "
            f"'{folder / 'wnids.txt'}': {', '.join(unknown[:5])}. Every train/<wnid> folder "
            "must be listed in wnids.txt. " + _HOW_TO_FIX
        )
    samples = []
    for wnid, label in class_to_idx.items():
        images_dir = train_dir / wnid / "images"
        _require_dir(images_dir, root)
        images = _list_jpegs(images_dir)
        if not images:
            raise DatasetFormatError(
                f"Tiny-ImageNet folder '{images_dir}' has no JPEG images, expected the "
                f"training images of class {wnid}. " + _HOW_TO_FIX
            )
        samples += [(str(path), label) for path in images]
    return samples


def _val_samples(folder: Path, class_to_idx: dict[str, int], root: Path) -> list[tuple[str, int]]:
    annotations = folder / "val" / "val_annotations.txt"
    if not annotations.is_file():
        raise FileNotFoundError(
            f"Tiny-ImageNet validation labels '{annotations}' not found. "
            + _HOW_TO_GET.format(root=root)
        )
    images_dir = folder / "val" / "images"
    _require_dir(images_dir, root)
    samples = []
    listed: set[str] = set()
    for line_number, line in enumerate(annotations.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        where = f"Tiny-ImageNet annotation file '{annotations}', line {line_number}"
        fields = line.split("\t")
        if len(fields) != 6 or not all(f.strip().lstrip("-").isdigit() for f in fields[2:]):
            raise DatasetFormatError(
                f"{where}: {line!r} is malformed, expected 6 tab-separated fields: "
                "file, wnid, x0, y0, x1, y1 (integers). " + _HOW_TO_FIX
            )
        name, wnid = fields[0].strip(), fields[1].strip()
        if wnid not in class_to_idx:
            raise DatasetFormatError(
                f"{where}: wnid {wnid!r} of '{name}' is not listed in "
                f"'{folder / 'wnids.txt'}', expected one of the {len(class_to_idx)} wnids. "
                + _HOW_TO_FIX
            )
        if name in listed:
            raise DatasetFormatError(
                f"{where}: '{name}' is annotated twice, expected one line per image. " + _HOW_TO_FIX
            )
        path = images_dir / name
        if not path.is_file():
            raise FileNotFoundError(
                f"{where} lists '{name}', but the image '{path}' does not exist. " + _HOW_TO_FIX
            )
        listed.add(name)
        samples.append((str(path), class_to_idx[wnid]))
    unlisted = [p.name for p in _list_jpegs(images_dir) if p.name not in listed]
    if unlisted:
        raise DatasetFormatError(
            f"Tiny-ImageNet validation image(s) {', '.join(unlisted[:5])} in '{images_dir}' "
            f"({len(unlisted)} in total) are not listed in '{annotations}', so their labels "
            "are unknown. Every val image must have an annotation line. " + _HOW_TO_FIX
        )
    return samples


def _test_samples(folder: Path, root: Path) -> list[tuple[str, int]]:
    images_dir = folder / "test" / "images"
    _require_dir(images_dir, root)
    images = _list_jpegs(images_dir)
    if not images:
        raise DatasetFormatError(
            f"Tiny-ImageNet folder '{images_dir}' has no JPEG images, expected the unlabeled "
            "test images. " + _HOW_TO_FIX
        )
    return [(str(path), -1) for path in images]
