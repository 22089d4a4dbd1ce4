"""CUB-200-2011 (Caltech-UCSD Birds) in the layout of the original `CUB_200_2011.tgz`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from lightly_amix.data.errors import DatasetFormatError
from lightly_amix.data.folder import rgb_loader

CUB_SPLITS: tuple[str, ...] = ("train", "test")
CUB_FOLDER = "CUB_200_2011"
CUB_NUM_CLASSES = 200
CUB_URL = "https://data.caltech.edu/records/65de6-vp158"
CUB_DOWNLOAD_HINT = (
    f"download CUB_200_2011.tgz from the Caltech data repository ({CUB_URL}) and extract it "
    "under the root (it creates 'CUB_200_2011/' with images.txt, classes.txt and images/)."
)
_HOW_TO_GET = (
    f"Download CUB_200_2011.tgz from the Caltech data repository ({CUB_URL}) and extract it "
    "under '{root}' (it creates 'CUB_200_2011/' with images.txt, train_test_split.txt, "
    "image_class_labels.txt, classes.txt and images/). torchvision has no downloader for it."
)
_HOW_TO_FIX = "Re-extract CUB_200_2011.tgz."
_SPLIT_FLAGS = {"train": 1, "test": 0}  # The value of `train_test_split.txt` per split.


class CUB200(Dataset[tuple[Any, int]]):
    """CUB-200-2011 (11,788 bird photos of varying size, 200 species) with the official split.

    Files in `CUB_200_2011/` (all lines `<id> <value>`, separated by one space):
    `images.txt` (image id, path relative to `images/`), `train_test_split.txt` (image id,
    `1` for train or `0` for test: 5,994 / 5,794 images), `image_class_labels.txt` (image
    id, class id 1..200) and `classes.txt` (class id, name such as
    `001.Black_footed_Albatross`). Bounding boxes, parts and attributes are not used.

    The label of an image is its class id minus one (0..199) and `classes[label]` is the
    name from `classes.txt`, unchanged (the number prefix included, as in the folder
    names). Samples are in the order of `images.txt`. All four files are checked when the
    data set is built (every line parses, the same image ids in every file, class ids in
    range, 200 classes), and so is the existence of every image of the split; an image
    that cannot be decoded raises a DatasetFormatError naming the file when it is loaded.
    The few greyscale photos are converted to RGB. No download: the archive has to be
    fetched by hand.

    Attributes:
        root: The `CUB_200_2011/` folder.
        split: "train" or "test".
        classes: The 200 class names, ordered by class id.
        samples: `(path, label)` of every image of the split.
        labels: Label of every sample, numpy int64 array.
        transform: Applied to each RGB PIL image.

    Examples:
        >>> dataset = CUB200("/data/cub", split="test")  # doctest: +SKIP
        >>> len(dataset), len(dataset.classes)  # doctest: +SKIP
        (5794, 200)
        >>> image, label = dataset[0]  # doctest: +SKIP
        >>> image.mode, dataset.classes[label]  # doctest: +SKIP
        ('RGB', '001.Black_footed_Albatross')
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transform: Callable[[Image.Image], Any] | None = None,
    ) -> None:
        """Reads and checks the metadata files and indexes the images of `split`.

        Args:
            root: The folder containing `CUB_200_2011/`, or that folder itself.
            split: "train" or "test" (the official `train_test_split.txt`).
            transform: Applied to each RGB PIL image; may return anything.

        Raises:
            ValueError: If `split` is invalid.
            FileNotFoundError: If a required file, folder or image is missing.
            DatasetFormatError: If a file is malformed or the files are inconsistent.
        """
        if split not in CUB_SPLITS:
            raise ValueError(
                f"Unknown split {split!r} for dataset 'cub200'; valid splits: "
                + ", ".join(CUB_SPLITS)
            )
        root = Path(root)
        if (root / CUB_FOLDER).is_dir():
            folder = root / CUB_FOLDER
        elif root.name == CUB_FOLDER or (root / "images.txt").is_file():
            folder = root
        else:
            raise FileNotFoundError(
                f"CUB-200-2011 folder '{root / CUB_FOLDER}' not found (expected '{root}' to "
                f"contain '{CUB_FOLDER}/', or to be that folder). " + _HOW_TO_GET.format(root=root)
            )
        extract_root = folder.parent if folder.name == CUB_FOLDER else folder
        for name in ("images.txt", "train_test_split.txt", "image_class_labels.txt", "classes.txt"):
            if not (folder / name).is_file():
                raise FileNotFoundError(
                    f"CUB-200-2011 file '{folder / name}' not found. "
                    + _HOW_TO_GET.format(root=extract_root)
                )
        images_dir = folder / "images"
        if not images_dir.is_dir():
            raise FileNotFoundError(
                f"CUB-200-2011 image folder '{images_dir}' not found. "
                + _HOW_TO_GET.format(root=extract_root)
            )

        self.root = folder
        self.split = split
        self.transform = transform
        self.classes = _read_classes(folder / "classes.txt")
        paths = _read_table(folder / "images.txt", "image id", "relative image path")
        flags = _read_table(folder / "train_test_split.txt", "image id", "1 (train) or 0 (test)")
        class_ids = _read_table(
            folder / "image_class_labels.txt", "image id", f"class id 1..{CUB_NUM_CLASSES}"
        )
        _check_same_ids(folder / "images.txt", paths, folder / "train_test_split.txt", flags)
        _check_same_ids(folder / "images.txt", paths, folder / "image_class_labels.txt", class_ids)

        wanted = _SPLIT_FLAGS[split]
        samples = []
        for image_id, (line_number, relative) in paths.items():
            flag = _parse_int(flags[image_id], folder / "train_test_split.txt", "split flag")
            if flag not in (0, 1):
                raise DatasetFormatError(
                    f"CUB-200-2011 file '{folder / 'train_test_split.txt'}', line "
                    f"{flags[image_id][0]}: image {image_id} has split flag {flag}, expected "
                    "1 (train) or 0 (test). " + _HOW_TO_FIX
                )
            class_id = _parse_int(
                class_ids[image_id], folder / "image_class_labels.txt", "class id"
            )
            if not 1 <= class_id <= CUB_NUM_CLASSES:
                raise DatasetFormatError(
                    f"CUB-200-2011 file '{folder / 'image_class_labels.txt'}', line "
                    f"{class_ids[image_id][0]}: image {image_id} has class id {class_id}, "
                    f"expected a class id in 1..{CUB_NUM_CLASSES} (as in classes.txt). "
                    + _HOW_TO_FIX
                )
            if flag != wanted:
                continue
            path = images_dir / relative
            if not path.is_file():
                raise FileNotFoundError(
                    f"CUB-200-2011 image '{path}' not found (image {image_id}, listed in "
                    f"'{folder / 'images.txt'}', line {line_number}). " + _HOW_TO_FIX
                )
            samples.append((str(path), class_id - 1))
        self.samples: list[tuple[str, int]] = samples
        self.labels: np.ndarray = np.array([label for _, label in samples], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        path, label = self.samples[index]
        image: Any = rgb_loader(path)
        if self.transform is not None:
            image = self.transform(image)
        return image, label


def _read_table(path: Path, key: str, value: str) -> dict[int, tuple[int, str]]:
    """Parses `<int id> <value>` lines into `{id: (line number, value)}`, checking ids."""
    table: dict[int, tuple[int, str]] = {}
    for line_number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.strip().split(maxsplit=1)
        where = f"CUB-200-2011 file '{path}', line {line_number}"
        if len(fields) != 2 or not (fields[0].isascii() and fields[0].isdigit()):
            raise DatasetFormatError(
                f"{where}: {line!r} does not parse, expected '<{key}> <{value}>' (a positive "
                "integer, a space and the value). " + _HOW_TO_FIX
            )
        item_id = int(fields[0])
        if item_id in table:
            raise DatasetFormatError(
                f"{where}: {key} {item_id} is listed twice (first on line "
                f"{table[item_id][0]}), expected one line per {key.split()[0]}. " + _HOW_TO_FIX
            )
        table[item_id] = (line_number, fields[1].strip())
    if not table:
        raise DatasetFormatError(
            f"CUB-200-2011 file '{path}' has no lines, expected '<{key}> <{value}>' lines. "
            + _HOW_TO_FIX
        )
    return table


def _parse_int(entry: tuple[int, str], path: Path, what: str) -> int:
    line_number, text = entry
    if not (text.isascii() and text.isdigit()):
        raise DatasetFormatError(
            f"CUB-200-2011 file '{path}', line {line_number}: {what} {text!r} is not a "
            "non-negative integer. " + _HOW_TO_FIX
        )
    return int(text)


def _check_same_ids(
    reference_path: Path,
    reference: dict[int, tuple[int, str]],
    other_path: Path,
    other: dict[int, tuple[int, str]],
) -> None:
    """Raises if an image id of one file has no line in the other."""
    missing = sorted(reference.keys() - other.keys())
    if missing:
        raise DatasetFormatError(
            f"CUB-200-2011 image id {missing[0]} of '{reference_path}' (line "
            f"{reference[missing[0]][0]}) has no line in '{other_path}' ({len(missing)} id(s) "
            "missing in total); every image must be listed in every file. " + _HOW_TO_FIX
        )
    extra = sorted(other.keys() - reference.keys())
    if extra:
        raise DatasetFormatError(
            f"CUB-200-2011 image id {extra[0]} of '{other_path}' (line {other[extra[0]][0]}) "
            f"is not listed in '{reference_path}' ({len(extra)} unknown id(s) in total); every "
            "image must be listed in every file. " + _HOW_TO_FIX
        )


def _read_classes(path: Path) -> list[str]:
    """The class names of `classes.txt`, ordered by class id, which must be 1..200."""
    table = _read_table(path, "class id", "class name")
    if len(table) != CUB_NUM_CLASSES:
        raise DatasetFormatError(
            f"CUB-200-2011 file '{path}' lists {len(table)} classes, expected "
            f"{CUB_NUM_CLASSES} lines '<class id> <name>' (class ids 1..{CUB_NUM_CLASSES}). "
            + _HOW_TO_FIX
        )
    bad = sorted(class_id for class_id in table if not 1 <= class_id <= CUB_NUM_CLASSES)
    if bad:
        raise DatasetFormatError(
            f"CUB-200-2011 file '{path}', line {table[bad[0]][0]}: class id {bad[0]} is out of "
            f"range, expected class ids 1..{CUB_NUM_CLASSES}. " + _HOW_TO_FIX
        )
    return [table[class_id][1] for class_id in range(1, CUB_NUM_CLASSES + 1)]
