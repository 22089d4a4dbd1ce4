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


# PIL modes by how `rgb_loader` turns them into RGB (see its docstring for the rules).
_SIXTEEN_BIT_GREY_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N"})
_STRAIGHT_ALPHA_MODES = frozenset({"RGBA", "LA", "PA"})
_PREMULTIPLIED_ALPHA_MODES = frozenset({"RGBa", "La"})
_COLOUR_KEY_MODES = frozenset({"1", "L", "P", "RGB"})  # Transparency in `info`, if any.
_OPAQUE_MODES = frozenset({"1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr"})
_SUPPORTED_MODES = ", ".join(
    sorted(
        _SIXTEEN_BIT_GREY_MODES
        | _STRAIGHT_ALPHA_MODES
        | _PREMULTIPLIED_ALPHA_MODES
        | _OPAQUE_MODES
        | {"I"}
    )
)
_RESAVE_HINT = "Re-save the image as 8-bit RGB (e.g. PNG or JPEG) and load it again."


def rgb_loader(path: str | Path) -> Image.Image:
    """Loads an image file as an 8-bit RGB PIL image.

    Every PIL mode is either converted by one fixed rule or refused with an error:

    - "RGB" (e.g. any 8-bit colour JPEG) is returned as decoded. PIL reads 16-bit colour
      PNGs (48-bit RGB, 64-bit RGBA) and 16-bit greyscale-with-alpha PNGs as 8-bit "RGB"
      or "RGBA" holding the high byte of every sample, i.e. the 8-bit value truncated
      (at most 1 below the rounded value used for 16-bit greyscale below).
    - "1", "L", "P", "RGBX", "YCbCr" and "CMYK" use PIL's conversion: greyscale is copied to
      the three channels, palette indices are looked up, YCbCr uses ITU-R BT.601 and CMYK
      the naive `R = round((255 - C) * (255 - K) / 255)` (likewise G with M, B with Y),
      without colour management (an embedded ICC profile is ignored).
    - 16-bit greyscale ("I;16", "I;16B", "I;16L", "I;16N") is scaled, not clipped:
      `round(value * 255 / 65535)`, so 0 -> 0, 32768 -> 128, 65535 -> 255. Mode "I"
      (32-bit integer greyscale, e.g. a 16-bit PNG in older Pillow or a signed 16-bit
      TIFF) is scaled the same way when all its values lie in 0..65535, else refused.
    - Transparency is composited onto a white background: every channel becomes
      `round((value * alpha + 255 * (255 - alpha)) / 255)`, so an opaque pixel keeps its
      colour and a fully transparent one becomes (255, 255, 255). This applies to images
      with an alpha band ("RGBA", "LA", "PA"), to a "P" image with a `transparency`
      entry or an RGBA palette, and to "1", "L", "RGB" and 16-bit greyscale images with a
      transparent colour key (pixels of that colour become white). Premultiplied alpha
      ("RGBa", "La") is composited the same way: `min(255, value + 255 - alpha)`.
    - "F" (32-bit float) is refused, as it has no defined range; so is any other mode
      (e.g. "LAB", "HSV", or multi-band modes PIL cannot convert), naming the mode.

    A file that PIL cannot decode raises a DatasetFormatError naming the file; a missing or
    unreadable file raises the usual OSError (e.g. FileNotFoundError) from `open`.

    Args:
        path: Path of the image file.

    Returns:
        The decoded image in mode "RGB".

    Raises:
        DatasetFormatError: If the file is corrupt, truncated or not an image, or if its
            mode cannot be converted to RGB by the rules above (the message names the file
            and the mode and says how to fix the file).

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
            image.load()  # Decodes the whole file (the mode of some formats is final only now).
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
            raise DatasetFormatError(
                f"Cannot decode image '{path}' ({type(error).__name__}: {error}). The file is "
                "corrupt, truncated or not an image; replace it with a valid copy (e.g. "
                "re-extract the dataset archive) or delete it."
            ) from error
        if image.mode == "RGB" and "transparency" not in image.info:  # A JPEG has no key.
            return image.convert("RGB")  # A copy that no longer refers to the file.
        return _to_rgb(image, path)


def _to_rgb(image: Image.Image, path: str | Path) -> Image.Image:
    """Converts a decoded image of any mode to RGB by the rules of `rgb_loader`."""
    mode = image.mode
    if mode in _SIXTEEN_BIT_GREY_MODES or mode == "I":
        return _sixteen_bit_grey_to_rgb(image, path)
    if mode in _PREMULTIPLIED_ALPHA_MODES:
        return _premultiplied_on_white(image)
    if mode in _STRAIGHT_ALPHA_MODES or (mode in _COLOUR_KEY_MODES and _has_transparency(image)):
        return _composite_on_white(image.convert("RGBA"))  # PIL applies keys and palettes.
    if mode in _OPAQUE_MODES:
        return image.convert("RGB")
    if mode == "F":
        raise DatasetFormatError(
            f"Image '{path}' has PIL mode 'F' (32-bit floating-point greyscale), which has no "
            "defined range of values to map to 8-bit RGB. Convert the file to an 8- or 16-bit "
            "image (e.g. scale it to 0..255 or 0..65535 and save it as an 8-bit RGB PNG/JPEG "
            "or a 16-bit greyscale PNG)."
        )
    raise DatasetFormatError(
        f"Image '{path}' has PIL mode {mode!r}, which cannot be converted to RGB reliably "
        f"(supported modes: {_SUPPORTED_MODES}). {_RESAVE_HINT}"
    )


def _has_transparency(image: Image.Image) -> bool:
    """Whether a "1", "L", "P" or "RGB" image has a colour key or an RGBA palette."""
    if "transparency" in image.info:
        return True
    return image.mode == "P" and image.palette is not None and image.palette.mode == "RGBA"


def _sixteen_bit_grey_to_rgb(image: Image.Image, path: str | Path) -> Image.Image:
    """Scales 16-bit greyscale (or mode "I" within 0..65535) to 8 bit, keys to white."""
    values = np.asarray(image)  # (H, W) uint16 in any byte order, or int32 for mode "I"
    if image.mode == "I" and values.size:
        low, high = int(values.min()), int(values.max())
        if low < 0 or high > 65535:
            raise DatasetFormatError(
                f"Image '{path}' has PIL mode 'I' (32-bit integer greyscale) with values "
                f"{low}..{high}, outside the 16-bit range 0..65535, so it cannot be scaled to "
                "8 bit like a 16-bit image. Re-save it as an 8-bit RGB image (or as a 16-bit "
                "greyscale PNG with values in 0..65535)."
            )
    wide = values.astype(np.uint32)  # (H, W) native uint32: room for the + 128 below
    # (H, W) uint8 round(v * 255 / 65535) = round(v / 257); 257 is odd, so there are no ties.
    grey = ((wide + 128) // 257).astype(np.uint8)
    key = image.info.get("transparency")
    if isinstance(key, int):
        grey[values == key] = 255  # (H, W) transparent colour key -> white background
    return Image.fromarray(grey).convert("RGB")  # "L" (H, W) -> "RGB" (H, W, 3)


def _composite_on_white(rgba: Image.Image) -> Image.Image:
    """Composites a straight-alpha "RGBA" image onto white, rounding to nearest."""
    pixels = np.asarray(rgba)  # (H, W, 4) uint8
    colour = pixels[..., :3].astype(np.uint16)  # (H, W, 3)
    alpha = pixels[..., 3:].astype(np.uint16)  # (H, W, 1), broadcast over the 3 channels
    # (H, W, 3): at most 255 * 255 + 127 = 65152, fits uint16; + 127 rounds (255 is odd: no ties).
    rgb = (colour * alpha + 255 * (255 - alpha) + 127) // 255
    return Image.fromarray(rgb.astype(np.uint8))  # (H, W, 3) uint8 -> mode "RGB"


def _premultiplied_on_white(image: Image.Image) -> Image.Image:
    """Composites premultiplied "RGBa" or "La" onto white: `min(255, value + 255 - alpha)`."""
    bands = np.asarray(image)  # (H, W, 4) "RGBa" or (H, W, 2) "La", uint8
    colour = bands[..., :-1].astype(np.uint16)  # (H, W, 3) or (H, W, 1), already * alpha / 255
    alpha = bands[..., -1:].astype(np.uint16)  # (H, W, 1)
    out = np.minimum(colour + (255 - alpha), 255).astype(np.uint8)  # (H, W, 3) or (H, W, 1)
    if out.shape[-1] == 1:
        out = np.repeat(out, 3, axis=-1)  # (H, W, 1) greyscale -> (H, W, 3)
    return Image.fromarray(out)  # (H, W, 3) uint8 -> mode "RGB"


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
