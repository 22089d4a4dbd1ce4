"""PASCAL VOC detection data and the VOC AP evaluation, as detectron2's VOC protocol uses them.

Layout (detectron2's, without a ``VOCdevkit/`` level; spec §7)::

    <root>/VOC2007/Annotations/<id>.xml
    <root>/VOC2007/JPEGImages/<id>.jpg
    <root>/VOC2007/ImageSets/Main/<split>.txt     # one image id per line
    <root>/VOC2012/...                            # the same three folders

Every ``<object>`` of an annotation has ``<name>`` (one of the 20 :data:`VOC_CLASSES`),
``<pose>``, ``<truncated>``, ``<difficult>`` and a ``<bndbox>`` with 1-based inclusive pixel
indices ``xmin``/``ymin``/``xmax``/``ymax``. :class:`VOCDetection` turns a box into 0-based
continuous coordinates ``(xmin - 1, ymin - 1, xmax, ymax)``, as detectron2's loader does, so
that ``xmin=1, xmax=W`` covers the whole image ``[0, W]``.

Difficult objects: detectron2's VOC loader keeps them in training (its source says "We include
'difficult' samples in training ... they don't hurt accuracy"); ``keep_difficult=False`` drops
them. Evaluation always keeps them and marks them: a detection whose best match is a difficult
box is neither a true nor a false positive, and difficult boxes do not count as positives
(the VOC07 protocol).

:func:`evaluate_detections` reproduces detectron2's ``PascalVOCDetectionEvaluator`` (itself the
py-faster-rcnn port of the VOC devkit): per class and IoU threshold, greedy matching in order of
decreasing score, VOC07 11-point AP (or the area under the interpolated curve), then ``AP50``,
``AP75`` and ``AP`` (the mean over IoU 0.50:0.95 step 0.05 of the mean over classes), in
percent.

Examples:
    >>> recall = np.array([0.25, 0.5, 0.5, 0.75])
    >>> precision = np.array([1.0, 1.0, 2 / 3, 0.75])
    >>> round(voc_ap(recall, precision), 6)  # (6 * 1.0 + 2 * 0.75) / 11
    0.681818
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms.functional import pil_to_tensor

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip
"""The 20 VOC classes in the standard order; class ``VOC_CLASSES[i]`` has label ``i + 1``."""

VOC_IOU_THRESHOLDS: tuple[float, ...] = tuple(t / 100.0 for t in range(50, 100, 5))
"""IoU thresholds 0.50, 0.55, ..., 0.95 (as detectron2 builds them: ``t / 100.0``)."""

_LAYOUT = (
    "Expected the layout <root>/VOC<year>/{Annotations/<id>.xml, JPEGImages/<id>.jpg, "
    "ImageSets/Main/<split>.txt} (detectron2's, without a VOCdevkit/ level)"
)
_BOX_FIELDS = ("xmin", "ymin", "xmax", "ymax")


class VOCFormatError(ValueError):
    """A VOC file exists but its content is malformed; the message names the file and field.

    A ``ValueError`` of its own (like ``lightly_amix.data.errors.DatasetFormatError``) so that
    ``transfer/`` needs only torch, torchvision, numpy and Pillow, not the ``lightly_amix``
    package and its Lightly dependency.

    Examples:
        >>> isinstance(VOCFormatError("x.xml: object #0 has no <pose>"), ValueError)
        True
    """


Target = dict[str, Tensor]
Transform = Callable[[Tensor, Target], tuple[Tensor, Target]]


@dataclass(frozen=True)
class VOCAnnotation:
    """One parsed ``Annotations/<id>.xml``.

    Attributes:
        width: Image width from ``<size><width>``.
        height: Image height from ``<size><height>``.
        boxes: (n, 4) float32, 0-based continuous ``x1, y1, x2, y2`` (``xmin - 1, ymin - 1,
            xmax, ymax``).
        labels: (n,) int64 in 1..20 (index into :data:`VOC_CLASSES` plus one).
        difficult: (n,) bool.
    """

    width: int
    height: int
    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray


def _text(element: ET.Element, path: str, xml_path: Path, where: str) -> str:
    found = element.find(path)
    if found is None or found.text is None or not found.text.strip():
        raise VOCFormatError(
            f"{xml_path}: {where} has no <{path.replace('/', '><')}> (or it is empty). "
            "Every VOC annotation needs <size><width>/<height>, and every <object> needs "
            "<name>, <pose>, <truncated>, <difficult> and <bndbox> with xmin/ymin/xmax/ymax; "
            "add the field or re-extract the VOC archive."
        )
    return found.text.strip()


def _integer(text: str, field: str, xml_path: Path, where: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise VOCFormatError(
            f"{xml_path}: {where} <{field}> is {text!r}, expected an integer. Fix the value in "
            "the annotation file."
        ) from None


def _coordinate(text: str, field: str, xml_path: Path, where: str) -> float:
    """A 1-based pixel index: an integer, or a finite decimal (see :func:`parse_voc_xml`)."""
    try:
        return float(int(text))
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise VOCFormatError(
            f"{xml_path}: {where} <bndbox><{field}> is {text!r}, expected an integer "
            "(a 1-based pixel index). Fix the value in the annotation file."
        )
    return value


def parse_voc_xml(xml_path: str | Path) -> VOCAnnotation:
    """Parses one VOC annotation file with :mod:`xml.etree.ElementTree`.

    Box coordinates must be integers (1-based inclusive pixel indices). Two files of the real
    VOC2012 trainval set (``2011_003353.xml``, ``2011_006777.xml``) hold a decimal ``ymin``
    (e.g. ``45.70000076293945``); like detectron2 (which reads boxes with ``float``) a finite
    decimal is accepted as it is, anything else that is not a number is an error.

    Args:
        xml_path: Path of ``Annotations/<id>.xml``.

    Returns:
        The parsed :class:`VOCAnnotation` (boxes already 0-based).

    Raises:
        FileNotFoundError: The file does not exist.
        VOCFormatError: Malformed XML, a missing field, a class name outside the 20 VOC
            classes, a non-numeric coordinate or an inverted box (the message names the file,
            the object and the field).

    Examples:
        >>> import tempfile
        >>> xml = ("<annotation><size><width>50</width><height>40</height></size><object>"
        ...        "<name>dog</name><pose>Left</pose><truncated>0</truncated>"
        ...        "<difficult>1</difficult><bndbox><xmin>1</xmin><ymin>2</ymin>"
        ...        "<xmax>50</xmax><ymax>40</ymax></bndbox></object></annotation>")
        >>> with tempfile.TemporaryDirectory() as d:
        ...     _ = (Path(d) / "a.xml").write_text(xml)
        ...     ann = parse_voc_xml(Path(d) / "a.xml")
        >>> ann.boxes.tolist(), ann.labels.tolist(), ann.difficult.tolist()
        ([[0.0, 1.0, 50.0, 40.0]], [12], [True])
    """
    xml_path = Path(xml_path)
    if not xml_path.is_file():
        raise FileNotFoundError(
            f"Annotation file not found: {xml_path}. Every id listed in the split file needs "
            f"Annotations/<id>.xml. {_LAYOUT}."
        )
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as exc:
        raise VOCFormatError(
            f"{xml_path}: not well-formed XML ({exc}). Re-extract the VOC archive."
        ) from None
    width = _integer(
        _text(root, "size/width", xml_path, "<annotation>"), "width", xml_path, "<size>"
    )
    height = _integer(
        _text(root, "size/height", xml_path, "<annotation>"), "height", xml_path, "<size>"
    )
    boxes: list[list[float]] = []
    labels: list[int] = []
    difficult: list[bool] = []
    for k, obj in enumerate(root.findall("object")):
        where = f"object #{k}"
        name = _text(obj, "name", xml_path, where)
        if name not in VOC_CLASSES:
            raise VOCFormatError(
                f"{xml_path}: {where} has class {name!r}, which is not one of the 20 VOC "
                f"classes ({', '.join(VOC_CLASSES)}). Fix the name or remove the object."
            )
        where = f"object #{k} ({name})"
        _text(obj, "pose", xml_path, where)
        _integer(_text(obj, "truncated", xml_path, where), "truncated", xml_path, where)
        is_difficult = _integer(
            _text(obj, "difficult", xml_path, where), "difficult", xml_path, where
        )
        xmin, ymin, xmax, ymax = (
            _coordinate(_text(obj, f"bndbox/{f}", xml_path, where), f, xml_path, where)
            for f in _BOX_FIELDS
        )
        if xmax < xmin or ymax < ymin:
            raise VOCFormatError(
                f"{xml_path}: {where} has an inverted <bndbox> (xmin={xmin:g}, ymin={ymin:g}, "
                f"xmax={xmax:g}, ymax={ymax:g}); expected xmin <= xmax and ymin <= ymax."
            )
        boxes.append([xmin - 1.0, ymin - 1.0, xmax, ymax])
        labels.append(VOC_CLASSES.index(name) + 1)
        difficult.append(bool(is_difficult))
    return VOCAnnotation(
        width=width,
        height=height,
        boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        labels=np.asarray(labels, dtype=np.int64),
        difficult=np.asarray(difficult, dtype=bool),
    )


def read_split(voc_dir: str | Path, split: str) -> list[str]:
    """Reads the image ids of ``<voc_dir>/ImageSets/Main/<split>.txt``.

    Args:
        voc_dir: A ``VOC<year>`` folder.
        split: ``train``, ``val``, ``trainval`` or ``test``.

    Returns:
        The ids in file order (a file with a single id is fine here; detectron2's
        ``np.loadtxt`` breaks on it).

    Raises:
        FileNotFoundError: The split file does not exist (the message lists those that do).
        VOCFormatError: The split file lists no id.

    Examples:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     (Path(d) / "ImageSets" / "Main").mkdir(parents=True)
        ...     _ = (Path(d) / "ImageSets" / "Main" / "test.txt").write_text("000001\\n000004\\n")
        ...     read_split(d, "test")
        ['000001', '000004']
    """
    main = Path(voc_dir) / "ImageSets" / "Main"
    path = main / f"{split}.txt"
    if not path.is_file():
        available = sorted(p.stem for p in main.glob("*.txt") if "_" not in p.stem)
        found = f"Split files there: {', '.join(available)}" if available else "None there"
        raise FileNotFoundError(
            f"Split file not found: {path}. {found}. Use one of them (e.g. 2007:test) or "
            f"restore the file from the VOC archive. {_LAYOUT}."
        )
    ids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise VOCFormatError(f"{path} lists no image id; expected one id per line.")
    return ids


class VOCDetection(Dataset[tuple[Tensor, Target]]):
    """PASCAL VOC detection over one or more ``(year, split)`` sets, e.g. VOC07+12 trainval.

    All annotations are parsed when the data set is built, so a malformed file fails at once
    (with its name) rather than in the middle of training; images are read lazily.

    Args:
        root: The folder holding ``VOC2007/`` and/or ``VOC2012/`` (see the module docstring).
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
            raise FileNotFoundError(f"VOC root folder not found: {self.root}. {_LAYOUT}.")
        self.items: list[tuple[Path, str]] = []
        self.annotations: list[VOCAnnotation] = []
        for year, split in self.image_sets:
            voc_dir = self.root / f"VOC{year}"
            if not voc_dir.is_dir():
                hint = ""
                if (self.root / "VOCdevkit" / f"VOC{year}").is_dir():
                    hint = f" It is under {self.root / 'VOCdevkit'}: pass that folder as root."
                raise FileNotFoundError(
                    f"VOC folder not found: {voc_dir}.{hint} {_LAYOUT}; pass the folder that "
                    "holds VOC2007/ and VOC2012/."
                )
            for sub in ("Annotations", "JPEGImages"):
                if not (voc_dir / sub).is_dir():
                    raise FileNotFoundError(f"Folder not found: {voc_dir / sub}. {_LAYOUT}.")
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
            raise FileNotFoundError(f"Image not found: {path}. {_LAYOUT}.")
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


def voc_ap(recall: Any, precision: Any, use_07_metric: bool = True) -> float:
    """Average precision from a precision/recall curve, as the VOC devkit (py-faster-rcnn port).

    Args:
        recall: (k,) cumulative recall of the detections sorted by decreasing score.
        precision: (k,) cumulative precision at the same points.
        use_07_metric: VOC07's 11-point interpolated AP: the mean over recall thresholds
            ``np.arange(0.0, 1.1, 0.1)`` of the highest precision at a recall >= the threshold
            (0 when none). The thresholds are built exactly as detectron2 does, so 0.3, 0.6 and
            0.7 are one ulp above their decimal values (a recall of exactly 3/10 does not reach
            the 0.3 point). False: the area under the monotone precision envelope (VOC 2010+).

    Returns:
        AP in [0, 1] (0.0 for an empty curve).

    Raises:
        ValueError: ``recall`` and ``precision`` are not 1-D of the same length.

    Examples:
        >>> recall, precision = np.array([0.5, 1.0]), np.array([1.0, 0.5])
        >>> round(voc_ap(recall, precision), 6)  # (6 * 1.0 + 5 * 0.5) / 11
        0.772727
        >>> float(voc_ap(recall, precision, use_07_metric=False))  # 0.5 * 1.0 + 0.5 * 0.5
        0.75
    """
    rec = np.asarray(recall, dtype=np.float64)
    prec = np.asarray(precision, dtype=np.float64)
    if rec.ndim != 1 or rec.shape != prec.shape:
        raise ValueError(
            f"recall and precision must be 1-D arrays of the same length, got shapes "
            f"{rec.shape} and {prec.shape}."
        )
    if use_07_metric:
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            reached = rec >= t
            ap += (float(prec[reached].max()) if reached.any() else 0.0) / 11.0
        return ap
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # precision envelope, non-increasing
    steps = np.where(mrec[1:] != mrec[:-1])[0]  # points where recall changes
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def _as_numpy(value: Any, dtype: Any) -> np.ndarray:
    if isinstance(value, Tensor):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=dtype)


def _pairwise_iou(boxes: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """IoU (d, g) of x1y1x2y2 boxes (d, 4) and (g, 4) in continuous coordinates."""
    ix1 = np.maximum(boxes[:, None, 0], gt[None, :, 0])
    iy1 = np.maximum(boxes[:, None, 1], gt[None, :, 1])
    ix2 = np.minimum(boxes[:, None, 2], gt[None, :, 2])
    iy2 = np.minimum(boxes[:, None, 3], gt[None, :, 3])
    inter = np.maximum(ix2 - ix1, 0.0) * np.maximum(iy2 - iy1, 0.0)  # (d, g)
    area_d = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])  # (d,)
    area_g = (gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1])  # (g,)
    return inter / (area_d[:, None] + area_g[None, :] - inter)


def _check_image(
    kind: str, i: int, item: Mapping[str, Any], keys: tuple[str, ...], num_classes: int
) -> dict[str, np.ndarray]:
    missing = [k for k in keys if k not in item]
    if missing:
        raise ValueError(
            f"{kind}[{i}] has no {', '.join(repr(k) for k in missing)}; expected a mapping with "
            f"{', '.join(repr(k) for k in keys)}."
        )
    out: dict[str, np.ndarray] = {"boxes": _as_numpy(item["boxes"], np.float64).reshape(-1, 4)}
    out["labels"] = _as_numpy(item["labels"], np.int64).reshape(-1)
    n = len(out["boxes"])
    for key in keys[2:]:
        out[key] = _as_numpy(item[key], np.float64 if key == "scores" else bool).reshape(-1)
    for key, value in out.items():
        if len(value) != n:
            raise ValueError(f"{kind}[{i}] has {n} boxes but {len(value)} {key}.")
    bad = out["labels"][(out["labels"] < 1) | (out["labels"] > num_classes)]
    if bad.size:
        raise ValueError(
            f"{kind}[{i}] has label {int(bad[0])}; expected labels 1..{num_classes} (label i is "
            f"classes[i - 1]; 0 is the background and never a detection)."
        )
    return out


def evaluate_detections(
    detections: Sequence[Mapping[str, Any]],
    ground_truth: Sequence[Mapping[str, Any]],
    iou_thresholds: Sequence[float] = VOC_IOU_THRESHOLDS,
    classes: Sequence[str] = VOC_CLASSES,
    use_07_metric: bool = True,
) -> dict[str, Any]:
    """VOC detection AP as detectron2's ``PascalVOCDetectionEvaluator`` computes it.

    For each class and IoU threshold ``t``: the detections of the class over all images are
    sorted by decreasing score (stable sort: ties keep their input order); each takes the
    ground-truth box of its class in its image with the highest IoU. If that IoU is ``> t``
    (strictly, as detectron2 and py-faster-rcnn; the MATLAB devkit uses ``>=``): a difficult box
    makes the detection neither TP nor FP, an unclaimed box makes it a TP and claims the box, a
    claimed one makes it a FP (no fall-back to the next-best box); otherwise it is a FP.
    Recall is over the non-difficult boxes; AP is :func:`voc_ap`.

    Boxes are 0-based continuous ``x1, y1, x2, y2`` on both sides, and IoU has no "+1": this is
    exactly detectron2's "+1" IoU on its 1-based inclusive boxes (it writes detections with
    ``x1 + 1, y1 + 1`` and reads the XML boxes unshifted).

    Classes without a non-difficult ground-truth box are left out of the means (their entry in
    ``per_class`` is None). detectron2 counts them as AP 0; on VOC07 test every class has boxes,
    so the numbers agree there.

    Args:
        detections: Per image, a mapping with ``boxes`` (k, 4), ``scores`` (k,) and ``labels``
            (k,) in 1..len(classes) (tensors or arrays), e.g. torchvision's detector output.
        ground_truth: Per image (same order), ``boxes`` (n, 4), ``labels`` (n,) and
            ``difficult`` (n,), e.g. :meth:`VOCDetection.target`.
        iou_thresholds: IoU thresholds in (0, 1); default 0.50:0.95 step 0.05.
        classes: Class names; label ``i`` is ``classes[i - 1]``.
        use_07_metric: 11-point AP (VOC07 test, what detectron2 uses for 2007) or the area
            metric (detectron2 for 2012).

    Returns:
        In percent: ``AP`` (mean over thresholds of the mean over classes), ``AP<t>`` for every
        threshold (``AP50``, ``AP55``, ..., ``AP95`` by default), ``per_class`` (class name ->
        ``{"AP": ..., "AP50": ..., ...}`` or None), ``num_ground_truth`` (class name ->
        non-difficult boxes) and ``num_classes_evaluated``.

    Raises:
        ValueError: Different numbers of images, a missing key, inconsistent lengths, a label
            outside 1..len(classes), a threshold outside (0, 1), or no non-difficult
            ground-truth box at all.

    Examples:
        >>> gt = [{"boxes": [[0, 0, 10, 10]], "labels": [1], "difficult": [False]}]
        >>> det = [{"boxes": [[0, 0, 10, 8], [30, 30, 40, 40]], "scores": [0.9, 0.8],
        ...         "labels": [1, 1]}]
        >>> result = evaluate_detections(det, gt, classes=("cat",))
        >>> [round(result[k], 2) for k in ("AP50", "AP75", "AP")]  # IoU 0.8: TP while t < 0.8
        [100.0, 100.0, 60.0]
    """
    if len(detections) != len(ground_truth):
        raise ValueError(
            f"Got detections for {len(detections)} images but ground truth for "
            f"{len(ground_truth)}; expected one entry per image in the same order."
        )
    thresholds = [float(t) for t in iou_thresholds]
    if not thresholds or any(not 0.0 < t < 1.0 for t in thresholds):
        raise ValueError(f"iou_thresholds must be non-empty values in (0, 1), got {thresholds}.")
    num_classes = len(classes)
    dets = [
        _check_image("detections", i, d, ("boxes", "labels", "scores"), num_classes)
        for i, d in enumerate(detections)
    ]
    gts = [
        _check_image("ground_truth", i, g, ("boxes", "labels", "difficult"), num_classes)
        for i, g in enumerate(ground_truth)
    ]

    ap = np.full((num_classes, len(thresholds)), np.nan)  # (C, T), NaN: no positives
    npos_per_class: dict[str, int] = {}
    for c, name in enumerate(classes, start=1):
        gt_difficult = [g["difficult"][g["labels"] == c] for g in gts]  # per image (n_i,)
        npos = int(sum(int((~d).sum()) for d in gt_difficult))
        npos_per_class[name] = npos
        if npos == 0:
            continue
        # Per detection: image, score, best IoU and index of that ground-truth box.
        image_idx, scores, ovmax, jmax = [], [], [], []
        for i, (d, g) in enumerate(zip(dets, gts, strict=True)):
            mask = d["labels"] == c
            if not mask.any():
                continue
            boxes = d["boxes"][mask]  # (k, 4)
            gt_boxes = g["boxes"][g["labels"] == c]  # (n, 4)
            image_idx.append(np.full(len(boxes), i))
            scores.append(d["scores"][mask])
            if len(gt_boxes):
                iou = _pairwise_iou(boxes, gt_boxes)  # (k, n)
                ovmax.append(iou.max(axis=1))
                jmax.append(iou.argmax(axis=1))
            else:
                ovmax.append(np.full(len(boxes), -np.inf))
                jmax.append(np.zeros(len(boxes), dtype=np.int64))
        if not scores:
            ap[c - 1] = 0.0
            continue
        order = np.argsort(-np.concatenate(scores), kind="stable")
        image_sorted = np.concatenate(image_idx)[order].tolist()
        ov_sorted = np.concatenate(ovmax)[order].tolist()
        j_sorted = np.concatenate(jmax)[order].tolist()
        difficult_lists = [d.tolist() for d in gt_difficult]
        for t_idx, t in enumerate(thresholds):
            claimed = [[False] * len(d) for d in difficult_lists]
            tp = np.zeros(len(order))
            fp = np.zeros(len(order))
            for k, (i, ov, j) in enumerate(zip(image_sorted, ov_sorted, j_sorted, strict=True)):
                if ov > t:
                    if difficult_lists[i][j]:
                        continue
                    if claimed[i][j]:
                        fp[k] = 1.0
                    else:
                        tp[k] = 1.0
                        claimed[i][j] = True
                else:
                    fp[k] = 1.0
            tp_cum, fp_cum = np.cumsum(tp), np.cumsum(fp)
            recall = tp_cum / npos
            precision = tp_cum / np.maximum(tp_cum + fp_cum, np.finfo(np.float64).eps)
            ap[c - 1, t_idx] = voc_ap(recall, precision, use_07_metric)

    evaluated = ~np.isnan(ap[:, 0])  # (C,)
    if not evaluated.any():
        raise ValueError(
            "The ground truth holds no non-difficult box of any class, so AP is undefined; "
            "evaluate on images with annotated objects."
        )
    keys = [f"AP{round(t * 100)}" for t in thresholds]
    per_threshold = 100.0 * ap[evaluated].mean(axis=0)  # (T,) mean over classes
    result: dict[str, Any] = {"AP": float(per_threshold.mean())}
    result.update({key: float(v) for key, v in zip(keys, per_threshold, strict=True)})
    result["per_class"] = {
        name: (
            {"AP": float(100.0 * ap[c].mean())}
            | {key: float(100.0 * v) for key, v in zip(keys, ap[c], strict=True)}
            if evaluated[c]
            else None
        )
        for c, name in enumerate(classes)
    }
    result["num_ground_truth"] = npos_per_class
    result["num_classes_evaluated"] = int(evaluated.sum())
    return result
