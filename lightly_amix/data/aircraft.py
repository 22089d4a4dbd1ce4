"""FGVC-Aircraft (2013b) in the layout of the original `fgvc-aircraft-2013b.tar.gz`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets import FGVCAircraft as TorchvisionFGVCAircraft

from lightly_amix.data.errors import DatasetFormatError
from lightly_amix.data.folder import rgb_loader

# "trainval" = "train" + "val"; "train" is the official 3,334-image half, NOT an alias.
AIRCRAFT_SPLITS: tuple[str, ...] = ("trainval", "train", "val", "test")
AIRCRAFT_FOLDER = "fgvc-aircraft-2013b"
AIRCRAFT_NUM_CLASSES = 100
AIRCRAFT_BANNER_HEIGHT = 20  # Rows of the copyright banner at the bottom of every image.
_ARCHIVE = "fgvc-aircraft-2013b.tar.gz"
AIRCRAFT_URL = f"https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/archives/{_ARCHIVE}"
_HOW_TO_GET = (
    "Pass --download (download=True) to fetch it with torchvision, or download "
    f"{_ARCHIVE} ({AIRCRAFT_URL}) and extract it under '{{root}}' (it creates "
    f"'{AIRCRAFT_FOLDER}/data/' with variants.txt, images_variant_*.txt and images/)."
)
_HOW_TO_FIX = f"Re-extract {_ARCHIVE}."


class FGVCAircraft(Dataset[tuple[Any, int]]):
    """FGVC-Aircraft 2013b (10,000 photos of varying size, 100 aircraft variants).

    Files in `fgvc-aircraft-2013b/data/`: `variants.txt` (the 100 variant names, one per
    line; the label of a variant is its line index 0..99), `images_variant_<split>.txt`
    (lines `<image id> <variant name>`, the name may contain spaces, e.g.
    `1025794 Boeing 737-200`) and `images/<image id>.jpg`. Image ids are kept as strings
    (they have leading zeros). The family and manufacturer annotations are not used.

    Splits are the official ones: "trainval" (6,667 images) is "train" (3,334) plus "val"
    (3,333); "test" has 3,333. "train" is therefore *not* an alias of "trainval": the
    usual fine-grained protocol trains on "trainval" and tests on "test".

    Every image has a 20-pixel copyright banner at the bottom. It is kept by default, as
    in torchvision's `FGVCAircraft`; `crop_banner=True` removes it (common in
    fine-grained code), before the transform. The split file and `variants.txt` are
    checked when the data set is built, and so is the existence of every image of the
    split; an image that cannot be decoded raises a DatasetFormatError naming the file
    when it is loaded. torchvision's `FGVCAircraft` is only used to download.

    Attributes:
        root: The `fgvc-aircraft-2013b/` folder.
        split: "trainval", "train", "val" or "test".
        classes: The 100 variant names, in the order of `variants.txt`.
        samples: `(path, label)` of every image of the split, in the order of its file.
        labels: Label of every sample, numpy int64 array.
        crop_banner: Whether the bottom 20 rows are cut off.
        transform: Applied to each RGB PIL image.

    Examples:
        >>> dataset = FGVCAircraft("/data/aircraft", split="test")  # doctest: +SKIP
        >>> len(dataset), len(dataset.classes)  # doctest: +SKIP
        (3333, 100)
        >>> image, label = dataset[0]  # doctest: +SKIP
        >>> image.mode, dataset.classes[label]  # doctest: +SKIP
        ('RGB', '707-320')
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "trainval",
        transform: Callable[[Image.Image], Any] | None = None,
        download: bool = False,
        crop_banner: bool = False,
    ) -> None:
        """Reads and checks `variants.txt` and the split file and indexes the images.

        Args:
            root: The folder containing `fgvc-aircraft-2013b/`, or that folder itself.
            split: "trainval", "train", "val" or "test".
            transform: Applied to each RGB PIL image; may return anything.
            download: If the folder is missing, download and extract the archive (2.6 GB)
                with torchvision's `FGVCAircraft` into `root` (the parent of `root` if
                `root` is named `fgvc-aircraft-2013b`).
            crop_banner: Cut the 20-pixel copyright banner off the bottom of every image.

        Raises:
            ValueError: If `split` is invalid.
            FileNotFoundError: If a required file, folder or image is missing.
            DatasetFormatError: If a file is malformed or the files are inconsistent.
            RuntimeError: If the download fails.
        """
        if split not in AIRCRAFT_SPLITS:
            raise ValueError(
                f"Unknown split {split!r} for dataset 'aircraft'; valid splits: "
                + ", ".join(AIRCRAFT_SPLITS)
            )
        root = Path(root)
        extract_root = root.parent if root.name == AIRCRAFT_FOLDER else root
        split_name = f"images_variant_{split}.txt"
        required = ("variants.txt", split_name)
        folder = _find_folder(root)
        if download and (
            folder is None or not all((folder / "data" / name).is_file() for name in required)
        ):
            _download(extract_root, split)
            folder = _find_folder(root)
        if folder is None:
            raise FileNotFoundError(
                f"FGVC-Aircraft folder '{extract_root / AIRCRAFT_FOLDER}' not found (expected "
                f"'{root}' to contain '{AIRCRAFT_FOLDER}/', or to be that folder). "
                + _HOW_TO_GET.format(root=extract_root)
            )
        data = folder / "data"
        for name in required:
            if not (data / name).is_file():
                raise FileNotFoundError(
                    f"FGVC-Aircraft file '{data / name}' not found (needed for split "
                    f"{split!r}). " + _HOW_TO_GET.format(root=extract_root)
                )
        images_dir = data / "images"
        if not images_dir.is_dir():
            raise FileNotFoundError(
                f"FGVC-Aircraft image folder '{images_dir}' not found. "
                + _HOW_TO_GET.format(root=extract_root)
            )

        self.root = folder
        self.split = split
        self.transform = transform
        self.crop_banner = crop_banner
        self.classes = _read_variants(data / "variants.txt")
        self.samples: list[tuple[str, int]] = _read_split(
            data / split_name, images_dir, {name: label for label, name in enumerate(self.classes)}
        )
        self.labels: np.ndarray = np.array([label for _, label in self.samples], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        path, label = self.samples[index]
        image: Any = rgb_loader(path)
        if self.crop_banner:
            image = _crop_banner(image, path)
        if self.transform is not None:
            image = self.transform(image)
        return image, label


def _find_folder(root: Path) -> Path | None:
    """`root/fgvc-aircraft-2013b` if it exists, `root` if it is that folder, else None."""
    if (root / AIRCRAFT_FOLDER).is_dir():
        return root / AIRCRAFT_FOLDER
    if root.is_dir() and (
        root.name == AIRCRAFT_FOLDER or (root / "data" / "variants.txt").is_file()
    ):
        return root
    return None


def _download(root: Path, split: str) -> None:
    """Downloads and extracts the archive into `root` with torchvision."""
    try:
        TorchvisionFGVCAircraft(str(root), split=split, download=True)
    except Exception as error:
        raise RuntimeError(
            f"Downloading FGVC-Aircraft with torchvision to '{root / AIRCRAFT_FOLDER}' failed "
            f"({type(error).__name__}: {error}). Without internet access, download {_ARCHIVE} "
            f"({AIRCRAFT_URL}) on another machine and extract it under '{root}'."
        ) from error


def _crop_banner(image: Image.Image, path: str) -> Image.Image:
    """Cuts the bottom AIRCRAFT_BANNER_HEIGHT rows off `image`."""
    width, height = image.size
    if height <= AIRCRAFT_BANNER_HEIGHT:
        raise DatasetFormatError(
            f"FGVC-Aircraft image '{path}' is only {height} pixels high, cannot cut off the "
            f"{AIRCRAFT_BANNER_HEIGHT}-pixel copyright banner (crop_banner=True); the file is "
            f"not an original FGVC-Aircraft image. {_HOW_TO_FIX}"
        )
    return image.crop((0, 0, width, height - AIRCRAFT_BANNER_HEIGHT))  # (left, top, right, bottom)


def _read_variants(path: Path) -> list[str]:
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if len(names) != AIRCRAFT_NUM_CLASSES:
        raise DatasetFormatError(
            f"FGVC-Aircraft file '{path}' has {len(names)} non-empty lines, expected "
            f"{AIRCRAFT_NUM_CLASSES} variant names, one per line. " + _HOW_TO_FIX
        )
    seen: set[str] = set()
    for line_number, name in enumerate(names, start=1):
        if name in seen:
            raise DatasetFormatError(
                f"FGVC-Aircraft file '{path}', variant {line_number}: {name!r} is listed twice, "
                "expected 100 distinct variant names. " + _HOW_TO_FIX
            )
        seen.add(name)
    return names


def _read_split(
    path: Path, images_dir: Path, class_to_idx: dict[str, int]
) -> list[tuple[str, int]]:
    """Parses `<image id> <variant name>` lines into `(image path, label)` pairs."""
    samples = []
    seen: dict[str, int] = {}
    for line_number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        where = f"FGVC-Aircraft file '{path}', line {line_number}"
        image_id, _, variant = line.strip().partition(" ")
        variant = variant.strip()
        if not variant:
            raise DatasetFormatError(
                f"{where}: {line!r} does not parse, expected '<image id> <variant name>' "
                "(e.g. '1025794 707-320'). " + _HOW_TO_FIX
            )
        if variant not in class_to_idx:
            raise DatasetFormatError(
                f"{where}: variant {variant!r} of image {image_id} is not listed in "
                f"'{path.parent / 'variants.txt'}', expected one of its "
                f"{len(class_to_idx)} names. " + _HOW_TO_FIX
            )
        if image_id in seen:
            raise DatasetFormatError(
                f"{where}: image {image_id} is listed twice (first on line {seen[image_id]}), "
                "expected one line per image. " + _HOW_TO_FIX
            )
        image_path = images_dir / f"{image_id}.jpg"
        if not image_path.is_file():
            raise FileNotFoundError(
                f"FGVC-Aircraft image '{image_path}' not found (listed in '{path}', line "
                f"{line_number}). " + _HOW_TO_FIX
            )
        seen[image_id] = line_number
        samples.append((str(image_path), class_to_idx[variant]))
    if not samples:
        raise DatasetFormatError(
            f"FGVC-Aircraft file '{path}' lists no images, expected lines "
            "'<image id> <variant name>'. " + _HOW_TO_FIX
        )
    return samples
