"""The PASCAL VOC files on disk: layout, annotation XML, split lists and the 20 classes.

Layout (detectron2's, without a ``VOCdevkit/`` level)::

    <root>/VOC2007/Annotations/<id>.xml
    <root>/VOC2007/JPEGImages/<id>.jpg
    <root>/VOC2007/ImageSets/Main/<split>.txt     # one image id per line
    <root>/VOC2012/...                            # the same three folders

Every ``<object>`` of an annotation has ``<name>`` (one of the 20 :data:`VOC_CLASSES`),
``<pose>``, ``<truncated>``, ``<difficult>`` and a ``<bndbox>`` with 1-based inclusive pixel
indices ``xmin``/``ymin``/``xmax``/``ymax``. :func:`parse_voc_xml` turns a box into 0-based
continuous coordinates ``(xmin - 1, ymin - 1, xmax, ymax)``, as detectron2's loader does, so
that ``xmin=1, xmax=W`` covers the whole image ``[0, W]``.

The torch data set over these files is :class:`transfer.voc_dataset.VOCDetection`; the AP
evaluation is :mod:`transfer.voc_eval`.

Examples:
    >>> VOC_CLASSES.index("dog") + 1  # the label of a dog
    12
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip
"""The 20 VOC classes in the standard order; class ``VOC_CLASSES[i]`` has label ``i + 1``."""

LAYOUT_HELP = (
    "Expected the layout <root>/VOC<year>/{Annotations/<id>.xml, JPEGImages/<id>.jpg, "
    "ImageSets/Main/<split>.txt} (detectron2's, without a VOCdevkit/ level)"
)
"""The expected layout, as the error messages about missing files state it."""
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
            f"Annotations/<id>.xml. {LAYOUT_HELP}."
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
            f"restore the file from the VOC archive. {LAYOUT_HELP}."
        )
    ids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise VOCFormatError(f"{path} lists no image id; expected one id per line.")
    return ids
