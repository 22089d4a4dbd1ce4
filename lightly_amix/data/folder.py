"""Image folders (`root/<class>/<image>`), including ImageNet, on top of torchvision."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS

from lightly_amix.data.errors import DatasetFormatError

FOLDER_SPLITS: tuple[str, ...] = ("train", "val", "test")
IMAGENET_SPLITS: tuple[str, ...] = ("train", "val")

_GENERIC_LAYOUT = (
    "Expected one sub-folder per class with the images inside: '{root}/<class>/<image>' "
    "(e.g. '{root}/cat/0001.jpg'); supported extensions: " + ", ".join(IMG_EXTENSIONS) + "."
)
_IMAGENET_LAYOUT = (
    "Expected the ImageNet layout '<root>/train/<wnid>/*.JPEG' and '<root>/val/<wnid>/*.JPEG'. "
    "The validation images must be sorted into one folder per class: the official ILSVRC2012 "
    "validation archive is flat, sort it first (e.g. with the widely used valprep.sh script "
    "or the ground-truth labels of the devkit)."
)


def rgb_loader(path: str | Path) -> Image.Image:
    """Loads an image file as an RGB PIL image.

    Greyscale, palette and CMYK images are converted to RGB. A file that PIL cannot decode
    raises a DatasetFormatError naming the file; a missing or unreadable file raises the
    usual OSError (e.g. FileNotFoundError) from `open`.

    Args:
        path: Path of the image file.

    Returns:
        The decoded image in mode "RGB".

    Raises:
        DatasetFormatError: If the file is corrupt, truncated or not an image.

    Examples:
        >>> image = rgb_loader("data/train/cat/0001.jpg")  # doctest: +SKIP
        >>> image.mode  # doctest: +SKIP
        'RGB'
    """
    # Opened outside the `try` so that a missing file or a permission problem keeps its
    # own, accurate exception instead of being reported as a corrupt image.
    with open(path, "rb") as file:
        try:
            image = Image.open(file)
            return image.convert("RGB")  # `convert` decodes the whole file.
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
            raise DatasetFormatError(
                f"Cannot decode image '{path}' ({type(error).__name__}: {error}). The file is "
                "corrupt, truncated or not an image; replace it with a valid copy (e.g. "
                "re-extract the dataset archive) or delete it."
            ) from error


class ImageFolderDataset(ImageFolder):
    """An image-classification folder `root/<class>/<image>` returning RGB images.

    A thin layer over `torchvision.datasets.ImageFolder` that decodes every image to RGB
    with `rgb_loader` (corrupt files raise a DatasetFormatError naming the file), exposes
    the labels as a numpy array and explains the expected layout when the folder is
    missing or empty. As in torchvision, class indices follow the sorted class folder
    names and only files with an image extension (`IMG_EXTENSIONS`) are samples.

    Attributes:
        classes: Class folder names, sorted; the label of an image is its index here.
        labels: Label of every sample, numpy int64 array of length `len(self)`.
        samples: List of `(path, label)` pairs (from torchvision).

    Examples:
        >>> dataset = ImageFolderDataset("data/train")  # doctest: +SKIP
        >>> image, label = dataset[0]  # doctest: +SKIP
        >>> dataset.classes[label]  # doctest: +SKIP
        'cat'
    """

    labels: np.ndarray

    def __init__(
        self,
        root: str | Path,
        transform: Callable[[Image.Image], Any] | None = None,
        layout_hint: str | None = None,
    ) -> None:
        """Indexes the images below `root`.

        Args:
            root: Folder that contains one sub-folder per class.
            transform: Applied to each RGB PIL image; may return anything.
            layout_hint: Sentence describing the expected layout, appended to error
                messages. Defaults to the generic `root/<class>/<image>` description.

        Raises:
            FileNotFoundError: If `root` does not exist or holds no class folder with
                images.
        """
        root = Path(root)
        hint = layout_hint or _GENERIC_LAYOUT.format(root=root)
        if not root.is_dir():
            raise FileNotFoundError(f"Image folder '{root}' does not exist. {hint}")
        flat_images = sorted(
            p.name for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMG_EXTENSIONS
        )
        if flat_images and not any(p.is_dir() for p in root.iterdir()):
            raise FileNotFoundError(
                f"Image folder '{root}' contains images (e.g. '{flat_images[0]}') but no class "
                f"sub-folders, so the images have no labels. {hint}"
            )
        try:
            super().__init__(str(root), transform=transform, loader=rgb_loader)
        except FileNotFoundError as error:
            # torchvision's messages ("Couldn't find any class folder in ...", "Found no
            # valid file for the classes ...") do not say what layout is expected.
            reason = str(error).strip().rstrip(".")
            raise FileNotFoundError(f"Invalid image folder '{root}': {reason}. {hint}") from error
        self.labels = np.asarray(self.targets, dtype=np.int64)


def imagenet_dataset(
    root: str | Path,
    split: str,
    transform: Callable[[Image.Image], Any] | None = None,
) -> ImageFolderDataset:
    """ImageNet (ILSVRC2012) stored as `root/train/<wnid>/*.JPEG` and `root/val/<wnid>/*.JPEG`.

    Args:
        root: Folder that contains `train/` and `val/`.
        split: "train" or "val".
        transform: Applied to each RGB PIL image.

    Returns:
        The split as an ImageFolderDataset; classes are the sorted wnids.

    Raises:
        ValueError: If `split` is not "train" or "val".
        FileNotFoundError: If the split folder is missing or has no class folders.

    Examples:
        >>> val = imagenet_dataset("/data/imagenet", "val")  # doctest: +SKIP
        >>> len(val.classes)  # doctest: +SKIP
        1000
    """
    if split not in IMAGENET_SPLITS:
        raise ValueError(
            f"Unknown split {split!r} for dataset 'imagenet'; valid splits: "
            + ", ".join(IMAGENET_SPLITS)
        )
    return ImageFolderDataset(Path(root) / split, transform=transform, layout_hint=_IMAGENET_LAYOUT)


def folder_dataset(
    root: str | Path,
    split: str,
    transform: Callable[[Image.Image], Any] | None = None,
) -> ImageFolderDataset:
    """A generic image folder: `root/<split>/<class>/<image>`, or `root/<class>/<image>`.

    If `root/<split>` exists it is used; otherwise `root` itself is the dataset (for a
    folder without splits). If `root` has other split folders but not `split`, an error is
    raised instead of silently treating the split folders as classes.

    Args:
        root: Dataset folder.
        split: "train", "val" or "test".
        transform: Applied to each RGB PIL image.

    Returns:
        The split as an ImageFolderDataset.

    Raises:
        ValueError: If `split` is not one of FOLDER_SPLITS.
        FileNotFoundError: If the folder is missing, has no class folders, or has other
            split folders but not `split`.

    Examples:
        >>> train = folder_dataset("data/flowers", "train")  # doctest: +SKIP
    """
    if split not in FOLDER_SPLITS:
        raise ValueError(
            f"Unknown split {split!r} for dataset 'folder'; valid splits: "
            + ", ".join(FOLDER_SPLITS)
        )
    root = Path(root)
    split_dir = root / split
    if split_dir.is_dir():
        return ImageFolderDataset(split_dir, transform=transform)
    other_splits = [s for s in FOLDER_SPLITS if (root / s).is_dir()]
    if other_splits:
        raise FileNotFoundError(
            f"Split folder '{split_dir}' not found, but '{root}' has the split folder(s) "
            f"{', '.join(other_splits)}. Create '{split_dir}/<class>/<image>' or choose one "
            "of the existing splits."
        )
    return ImageFolderDataset(root, transform=transform)
