"""The PASCAL VOC detection data set for torch, and its horizontal-flip augmentation.

:class:`VOCDetection` reads the layout described in :mod:`transfer.voc_format` and returns
``(image, target)`` pairs in torchvision's detection format, boxes in 0-based continuous
coordinates.

Difficult objects: detectron2's VOC loader keeps them in training (its source says "We include
'difficult' samples in training ... they don't hurt accuracy"); ``keep_difficult=False`` drops
them. Evaluation always keeps them and marks them: a detection whose best match is a difficult
box is neither a true nor a false positive, and difficult boxes do not count as positives
(the VOC07 protocol; see :func:`transfer.voc_eval.evaluate_detections`).

Examples:
    >>> image = torch.zeros(3, 4, 10)
    >>> target = {"boxes": torch.tensor([[0.0, 1.0, 3.0, 4.0]])}
    >>> RandomHorizontalFlip(p=1.0)(image, target)[1]["boxes"].tolist()
    [[7.0, 1.0, 10.0, 4.0]]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms.functional import pil_to_tensor

from transfer.voc_format import (
    LAYOUT_HELP,
    VOCAnnotation,
    VOCFormatError,
    parse_voc_xml,
    read_split,
)

Target = dict[str, Tensor]
Transform = Callable[[Tensor, Target], tuple[Tensor, Target]]


class VOCDetection(Dataset[tuple[Tensor, Target]]):
    """PASCAL VOC detection over one or more ``(year, split)`` sets, e.g. VOC07+12 trainval.

    All annotations are parsed when the data set is built, so a malformed file fails at once
    (with its name) rather than in the middle of training; images are read lazily.

    Args:
        root: The folder holding ``VOC2007/`` and/or ``VOC2012/`` (the layout of
            :mod:`transfer.voc_format`).
        image_sets: ``(year, split)`` pairs, e.g. ``[("2007", "trainval"), ("2012",
            "trainval")]``; their images are concatenated in that order.
        keep_difficult: Keep objects marked ``<difficult>1``. True for evaluation (they are
            marked in ``target["difficult"]``) and, as in detectron2, for training.
        remove_empty: Leave out images without a (kept) object, as detectron2's
            ``FILTER_EMPTY_ANNOTATIONS`` does for training.
        transform: Optional ``(image, target) -> (image, target)``, e.g.
            :class:`RandomHorizontalFlip`.

    Attributes:
        items: ``(voc_dir, image_id)`` per sample.
        annotations: The parsed :class:`VOCAnnotation` per sample (difficult objects still
            included; ``keep_difficult`` applies in ``__getitem__``).

    Raises:
        FileNotFoundError: ``root``, a ``VOC<year>`` folder, a split file, an annotation or (on
            access) an image is missing; the message describes the expected layout.
        VOCFormatError: An annotation is malformed (see :func:`parse_voc_xml`).

    Examples:
        >>> data = VOCDetection("data/voc", [("2007", "test")])  # doctest: +SKIP
        >>> image, target = data[0]  # doctest: +SKIP
        >>> image.shape, target["boxes"].shape  # doctest: +SKIP
        (torch.Size([3, 500, 353]), torch.Size([2, 4]))
    """

    def __init__(
        self,
        root: str | Path,
        image_sets: Sequence[tuple[str, str]] = (("2007", "trainval"),),
        keep_difficult: bool = True,
        remove_empty: bool = False,
        transform: Transform | None = None,
    ) -> None:
        self.root = Path(root)
        self.image_sets = [(str(year), split) for year, split in image_sets]
        if not self.image_sets:
            raise ValueError(
                "image_sets is empty; expected (year, split) pairs like ('2007', 'test')."
            )
        self.keep_difficult = keep_difficult
        self.transform = transform
        if not self.root.is_dir():
            raise FileNotFoundError(f"VOC root folder not found: {self.root}. {LAYOUT_HELP}.")
        self.items: list[tuple[Path, str]] = []
        self.annotations: list[VOCAnnotation] = []
        for year, split in self.image_sets:
            voc_dir = self.root / f"VOC{year}"
            if not voc_dir.is_dir():
                hint = ""
                if (self.root / "VOCdevkit" / f"VOC{year}").is_dir():
                    hint = f" It is under {self.root / 'VOCdevkit'}: pass that folder as root."
                raise FileNotFoundError(
                    f"VOC folder not found: {voc_dir}.{hint} {LAYOUT_HELP}; pass the folder that "
                    "holds VOC2007/ and VOC2012/."
                )
            for sub in ("Annotations", "JPEGImages"):
                if not (voc_dir / sub).is_dir():
                    raise FileNotFoundError(f"Folder not found: {voc_dir / sub}. {LAYOUT_HELP}.")
            for image_id in read_split(voc_dir, split):
                ann = parse_voc_xml(voc_dir / "Annotations" / f"{image_id}.xml")
                kept = ann.labels.size if keep_difficult else int((~ann.difficult).sum())
                if remove_empty and kept == 0:
                    continue
                self.items.append((voc_dir, image_id))
                self.annotations.append(ann)

    def __len__(self) -> int:
        return len(self.items)

    def target(self, index: int) -> Target:
        """The target of sample ``index`` without reading the image (see ``__getitem__``)."""
        ann = self.annotations[index]
        keep = np.ones_like(ann.difficult) if self.keep_difficult else ~ann.difficult
        return {
            "boxes": torch.from_numpy(ann.boxes[keep]).reshape(-1, 4),  # (n, 4) float32
            "labels": torch.from_numpy(ann.labels[keep]),  # (n,) int64 in 1..20
            "difficult": torch.from_numpy(ann.difficult[keep]),  # (n,) bool
        }

    def __getitem__(self, index: int) -> tuple[Tensor, Target]:
        """Returns ``(image, target)``.

        ``image`` is float32 (3, H, W) RGB in [0, 1]; ``target`` has ``boxes`` (n, 4) float32
        0-based ``x1, y1, x2, y2`` pixels, ``labels`` (n,) int64 in 1..20 (0 is torchvision's
        background) and ``difficult`` (n,) bool.
        """
        voc_dir, image_id = self.items[index]
        path = voc_dir / "JPEGImages" / f"{image_id}.jpg"
        if not path.is_file():
            raise FileNotFoundError(f"Image not found: {path}. {LAYOUT_HELP}.")
        with Image.open(path) as pil:
            image = pil_to_tensor(pil.convert("RGB")).float().div_(255.0)  # (3, H, W)
        ann = self.annotations[index]
        if image.shape[1:] != (ann.height, ann.width):
            raise VOCFormatError(
                f"{path} is {image.shape[2]}x{image.shape[1]} (WxH) but its annotation says "
                f"{ann.width}x{ann.height}; the boxes would not fit. Re-extract the archive."
            )
        target = self.target(index)
        if self.transform is not None:
            image, target = self.transform(image, target)
        return image, target


class RandomHorizontalFlip:
    """Flips an image (3, H, W) and its boxes left-right with probability ``p``.

    A box ``x1, x2`` of an image of width ``W`` becomes ``W - x2, W - x1`` (0-based continuous
    coordinates, as detectron2's ``HFlipTransform``). Draws from torch's global generator.

    Examples:
        >>> image = torch.zeros(3, 4, 10)
        >>> target = {"boxes": torch.tensor([[0.0, 1.0, 3.0, 4.0]])}
        >>> _, flipped = RandomHorizontalFlip(p=1.0)(image, target)
        >>> flipped["boxes"].tolist()
        [[7.0, 1.0, 10.0, 4.0]]
    """

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, image: Tensor, target: Target) -> tuple[Tensor, Target]:
        if float(torch.rand(())) >= self.p:
            return image, target
        width = image.shape[-1]
        boxes = target["boxes"].clone()  # (n, 4)
        boxes[:, [0, 2]] = width - target["boxes"][:, [2, 0]]
        return image.flip(-1), {**target, "boxes": boxes}
