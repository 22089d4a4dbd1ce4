"""VOC reading (on a tiny set written in the real on-disk format) and the VOC AP evaluation."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from transfer.voc_dataset import RandomHorizontalFlip, VOCDetection
from transfer.voc_eval import VOC_IOU_THRESHOLDS, evaluate_detections, voc_ap
from transfer.voc_format import VOC_CLASSES, VOCFormatError, parse_voc_xml, read_split


@dataclass
class FakeObject:
    name: str
    box: tuple[int, int, int, int]  # 1-based inclusive xmin, ymin, xmax, ymax, as in the XML
    difficult: int = 0
    truncated: int = 0
    pose: str = "Unspecified"


@dataclass
class FakeImage:
    image_id: str
    width: int
    height: int
    objects: list[FakeObject] = field(default_factory=list)


# A tiny VOC07+12: 2 ids in every split file, small images, a difficult object, two classes.
TINY_VOC: dict[tuple[str, str], list[FakeImage]] = {
    ("2007", "trainval"): [
        FakeImage("000005", 96, 64, [FakeObject("chair", (10, 12, 40, 60), pose="Rear"),
                                     FakeObject("chair", (50, 5, 90, 30), difficult=1)]),
        FakeImage("000007", 80, 64, [FakeObject("car", (1, 1, 80, 40), truncated=1)]),
    ],
    ("2007", "test"): [
        FakeImage("000001", 96, 64, [FakeObject("dog", (20, 10, 70, 60), pose="Left"),
                                     FakeObject("person", (5, 5, 30, 64))]),
        FakeImage("000004", 64, 80, [FakeObject("car", (8, 20, 60, 70)),
                                     FakeObject("car", (40, 1, 64, 18), difficult=1)]),
    ],
    ("2012", "trainval"): [
        FakeImage("2008_000002", 96, 72, [FakeObject("tvmonitor", (30, 15, 80, 60))]),
        FakeImage("2008_000003", 72, 96, [FakeObject("person", (10, 20, 50, 90)),
                                          FakeObject("train", (2, 3, 70, 40))]),
    ],
}  # fmt: skip


def voc_xml(year: str, image: FakeImage) -> str:
    """The annotation exactly as the VOC archives lay it out (tabs, source/owner, depth)."""
    objects = "".join(
        "\t<object>\n"
        f"\t\t<name>{o.name}</name>\n"
        f"\t\t<pose>{o.pose}</pose>\n"
        f"\t\t<truncated>{o.truncated}</truncated>\n"
        f"\t\t<difficult>{o.difficult}</difficult>\n"
        "\t\t<bndbox>\n"
        f"\t\t\t<xmin>{o.box[0]}</xmin>\n"
        f"\t\t\t<ymin>{o.box[1]}</ymin>\n"
        f"\t\t\t<xmax>{o.box[2]}</xmax>\n"
        f"\t\t\t<ymax>{o.box[3]}</ymax>\n"
        "\t\t</bndbox>\n"
        "\t</object>\n"
        for o in image.objects
    )
    return (
        "<annotation>\n"
        f"\t<folder>VOC{year}</folder>\n"
        f"\t<filename>{image.image_id}.jpg</filename>\n"
        "\t<source>\n"
        f"\t\t<database>The VOC{year} Database</database>\n"
        f"\t\t<annotation>PASCAL VOC{year}</annotation>\n"
        "\t\t<image>flickr</image>\n"
        "\t</source>\n"
        "\t<size>\n"
        f"\t\t<width>{image.width}</width>\n"
        f"\t\t<height>{image.height}</height>\n"
        "\t\t<depth>3</depth>\n"
        "\t</size>\n"
        "\t<segmented>0</segmented>\n"
        f"{objects}"
        "</annotation>\n"
    )


def write_voc(root: Path, sets: dict[tuple[str, str], list[FakeImage]] = TINY_VOC) -> Path:
    """Writes ``<root>/VOC<year>/{Annotations,JPEGImages,ImageSets/Main}`` and returns root."""
    rng = np.random.default_rng(0)
    for (year, split), images in sets.items():
        voc = root / f"VOC{year}"
        for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
            (voc / sub).mkdir(parents=True, exist_ok=True)
        (voc / "ImageSets" / "Main" / f"{split}.txt").write_text(
            "".join(f"{image.image_id}\n" for image in images)
        )
        for image in images:
            pixels = rng.integers(0, 60, (image.height, image.width, 3), dtype=np.uint8)
            for k, obj in enumerate(image.objects):  # a bright patch per object
                x1, y1, x2, y2 = obj.box
                pixels[y1 - 1 : y2, x1 - 1 : x2] = (200, 40 * k, 255 - 40 * k)
            Image.fromarray(pixels).save(voc / "JPEGImages" / f"{image.image_id}.jpg", quality=90)
            (voc / "Annotations" / f"{image.image_id}.xml").write_text(voc_xml(year, image))
    # A per-class list as in the real archive; it is not a split of its own.
    (root / "VOC2007" / "ImageSets" / "Main" / "car_test.txt").write_text("000001 -1\n000004  1\n")
    return root


@pytest.fixture
def tiny_voc(tmp_path: Path) -> Path:
    return write_voc(tmp_path / "voc")


# --------------------------------------------------------------------------- voc_ap


def test_voc_ap_11_point_by_hand() -> None:
    recall = np.array([0.25, 0.5, 0.5, 0.75])
    precision = np.array([1.0, 1.0, 2 / 3, 0.75])
    # Highest precision at recall >= t for t = 0, 0.1, ..., 1.0:
    #   t = 0.0 .. 0.5 -> 1.0 (six points), t = 0.6, 0.7 -> 0.75, t = 0.8, 0.9, 1.0 -> 0
    points = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.75, 0.75, 0.0, 0.0, 0.0]
    assert voc_ap(recall, precision) == pytest.approx(sum(points) / 11)  # 7.5 / 11
    assert voc_ap(recall, precision) == pytest.approx(0.681818, abs=1e-6)


def test_voc_ap_area_by_hand() -> None:
    recall = [0.25, 0.5, 0.5, 0.75]
    precision = [1.0, 1.0, 2 / 3, 0.75]
    # Envelope: 1.0 on (0, 0.5], 0.75 on (0.5, 0.75], 0 beyond.
    assert voc_ap(recall, precision, use_07_metric=False) == pytest.approx(
        0.25 * 1.0 + 0.25 * 1.0 + 0.25 * 0.75
    )


def test_voc_ap_uses_detectron2s_recall_thresholds() -> None:
    # np.arange(0, 1.1, 0.1)[3] is 0.30000000000000004: a recall of exactly 0.3 reaches only the
    # points 0, 0.1 and 0.2, as in detectron2 / py-faster-rcnn.
    assert voc_ap([0.3], [1.0]) == pytest.approx(3 / 11)
    assert voc_ap([0.31], [1.0]) == pytest.approx(4 / 11)


def test_voc_ap_edge_cases() -> None:
    assert voc_ap([], []) == 0.0
    assert voc_ap([], [], use_07_metric=False) == 0.0
    assert voc_ap([1.0], [1.0]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="same length"):
        voc_ap([0.5, 1.0], [1.0])


# --------------------------------------------------------------------------- evaluate_detections


def _hand_built_case() -> tuple[list[dict], list[dict]]:
    """Two images, classes cat (1) and dog (2); see the test for the hand computation."""
    ground_truth = [
        {  # image 0
            "boxes": [[0, 0, 10, 10], [50, 50, 60, 60], [20, 0, 40, 20]],
            "labels": [1, 1, 2],
            "difficult": [False, True, False],
        },
        {  # image 1
            "boxes": [[0, 0, 20, 20], [30, 30, 50, 50]],
            "labels": [1, 2],
            "difficult": [False, False],
        },
    ]
    detections = [
        {
            "boxes": [[0, 0, 10, 10], [0, 0, 10, 9], [50, 50, 60, 60], [20, 0, 40, 20]],
            "scores": [0.9, 0.8, 0.7, 0.5],
            "labels": [1, 1, 1, 2],
        },
        {
            "boxes": [[0, 0, 20, 14.4], [100, 100, 110, 110]],
            "scores": [0.6, 0.99],
            "labels": [1, 2],
        },
    ]
    return detections, ground_truth


def test_evaluate_detections_by_hand() -> None:
    detections, ground_truth = _hand_built_case()
    result = evaluate_detections(detections, ground_truth, classes=("cat", "dog"))
    # cat: 2 positives (the difficult box does not count). Detections by score:
    #   0.9 IoU 1.0 with box 0 -> TP;  0.8 IoU 0.9 with the same box -> FP (duplicate);
    #   0.7 IoU 1.0 with the difficult box -> ignored (neither TP nor FP);
    #   0.6 IoU 0.72 with image 1's box -> TP while t < 0.72, FP from t = 0.75 on.
    #   t <= 0.70: recall .5 .5 .5 1, precision 1 .5 .5 2/3
    #     -> 11-point: t = 0..0.5 -> 1.0 (6 points), t = 0.6..1.0 -> 2/3 (5) = 28/33
    #   t >= 0.75: recall .5 .5 .5 .5, precision 1 .5 .5 1/3 -> 6 points of 1.0 = 18/33
    # dog: 2 positives, one never detected (a miss). Detections by score:
    #   0.99 in image 1 overlaps nothing -> FP; 0.5 IoU 1.0 -> TP (every threshold)
    #   recall 0 .5, precision 0 .5 -> t = 0..0.5 -> 0.5 (6 points) = 9/33
    cat = [28 / 33] * 5 + [18 / 33] * 5  # AP at t = 0.50, 0.55, ..., 0.95
    dog = [9 / 33] * 10
    assert result["per_class"]["cat"]["AP50"] == pytest.approx(100 * 28 / 33)
    assert result["per_class"]["cat"]["AP75"] == pytest.approx(100 * 18 / 33)
    assert result["per_class"]["dog"]["AP50"] == pytest.approx(100 * 9 / 33)
    assert result["AP50"] == pytest.approx(100 * (28 + 9) / 66)  # 56.06
    assert result["AP75"] == pytest.approx(100 * (18 + 9) / 66)  # 40.91
    per_threshold = [(c + d) / 2 for c, d in zip(cat, dog, strict=True)]
    assert result["AP"] == pytest.approx(100 * np.mean(per_threshold))
    assert result["AP"] == pytest.approx(100 * 32 / 66)  # 48.48
    assert result["AP70"] == pytest.approx(result["AP50"])
    assert sorted(k for k in result if k.startswith("AP")) == sorted(
        ["AP"] + [f"AP{round(t * 100)}" for t in VOC_IOU_THRESHOLDS]
    )
    assert result["num_ground_truth"] == {"cat": 2, "dog": 2}
    assert result["num_classes_evaluated"] == 2


def test_a_detection_of_a_difficult_box_is_neither_tp_nor_fp() -> None:
    detections, ground_truth = _hand_built_case()
    base = evaluate_detections(detections, ground_truth, classes=("cat", "dog"))
    # Without that detection: nothing changes.
    detections[0] = {k: v[:2] + v[3:] for k, v in detections[0].items()}
    assert evaluate_detections(detections, ground_truth, classes=("cat", "dog")) == base
    # The same box not marked difficult: a third positive, and the detection becomes a TP.
    ground_truth[0]["difficult"] = [False, False, False]
    detections, _ = _hand_built_case()
    result = evaluate_detections(detections, ground_truth, classes=("cat", "dog"))
    assert result["num_ground_truth"]["cat"] == 3
    assert result["per_class"]["cat"]["AP50"] != base["per_class"]["cat"]["AP50"]


def test_evaluate_detections_area_metric_and_tensors() -> None:
    detections, ground_truth = _hand_built_case()
    as_tensors = [{k: torch.tensor(v) for k, v in d.items()} for d in detections]
    result = evaluate_detections(as_tensors, ground_truth, (0.5,), ("cat", "dog"), False)
    # cat: envelope 1.0 on (0, .5], 2/3 on (.5, 1]; dog: 0.5 on (0, .5].
    assert result["per_class"]["cat"]["AP50"] == pytest.approx(100 * (0.5 + 0.5 * 2 / 3))
    assert result["AP"] == result["AP50"] == pytest.approx(100 * (0.5 + 1 / 3 + 0.25) / 2)
    assert "AP75" not in result


def test_classes_without_ground_truth_are_left_out() -> None:
    ground_truth = [{"boxes": [[0, 0, 10, 10]], "labels": [7], "difficult": [False]}]  # a car
    detections = [{"boxes": [[0, 0, 10, 10], [5, 5, 9, 9]], "scores": [0.9, 0.8], "labels": [7, 1]}]
    result = evaluate_detections(detections, ground_truth)  # the 20 VOC classes
    assert result["AP50"] == pytest.approx(100.0)  # aeroplane has no box: not averaged in
    assert result["num_classes_evaluated"] == 1
    assert result["per_class"]["aeroplane"] is None and result["per_class"]["car"]["AP50"] > 99
    assert set(result["per_class"]) == set(VOC_CLASSES)


def test_a_class_without_detections_scores_zero() -> None:
    ground_truth = [{"boxes": [[0, 0, 10, 10], [0, 0, 5, 5]], "labels": [1, 2],
                     "difficult": [False, False]}]  # fmt: skip
    detections = [{"boxes": [[0, 0, 10, 10]], "scores": [0.9], "labels": [1]}]
    result = evaluate_detections(detections, ground_truth, classes=("cat", "dog"))
    assert result["per_class"]["dog"]["AP50"] == 0.0
    assert result["AP50"] == pytest.approx(50.0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d, g: (d[:1], g), "detections for 1 images but ground truth for 2"),
        (lambda d, g: ([{**d[0], "labels": [0, 1, 1, 2]}, d[1]], g), "0; expected labels 1..2"),
        (lambda d, g: ([{**d[0], "labels": [1, 1, 1, 3]}, d[1]], g), "label 3"),
        (lambda d, g: ([{"boxes": [], "labels": []}, d[1]], g), "detections[0] has no 'scores'"),
        (lambda d, g: ([{**d[0], "scores": [0.9]}, d[1]], g), "has 4 boxes but 1 scores"),
        (lambda d, g: (d, [{**g[0], "difficult": [1, 0, 0]}, g[1]]), None),  # ints are fine
        (lambda d, g: (d, [{"boxes": [], "labels": []}, g[1]]), "truth[0] has no 'difficult'"),
    ],
)  # fmt: skip
def test_evaluate_detections_rejects_bad_input(
    change: Callable[[list[dict], list[dict]], tuple[list[dict], list[dict]]], message: str | None
) -> None:
    detections, ground_truth = change(*_hand_built_case())
    if message is None:
        evaluate_detections(detections, ground_truth, classes=("cat", "dog"))
        return
    with pytest.raises(ValueError, match=re.escape(message)):
        evaluate_detections(detections, ground_truth, classes=("cat", "dog"))


def test_evaluate_detections_needs_a_positive_and_valid_thresholds() -> None:
    detections, ground_truth = _hand_built_case()
    with pytest.raises(ValueError, match=r"iou_thresholds must be non-empty values in \(0, 1\)"):
        evaluate_detections(detections, ground_truth, iou_thresholds=(50,))
    only_difficult = [{"boxes": [[0, 0, 5, 5]], "labels": [1], "difficult": [True]}]
    with pytest.raises(ValueError, match="no non-difficult box"):
        evaluate_detections([detections[0]], only_difficult, classes=("cat", "dog"))


# --------------------------------------------------------------------------- reading VOC


def test_reads_voc07_and_voc12_in_order(tiny_voc: Path) -> None:
    data = VOCDetection(tiny_voc, [("2007", "trainval"), ("2012", "trainval")])
    assert len(data) == 4
    assert [image_id for _, image_id in data.items] == ["000005", "000007", "2008_000002",
                                                        "2008_000003"]  # fmt: skip
    image, target = data[0]
    assert image.dtype == torch.float32 and image.shape == (3, 64, 96)
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    # The first chair's patch is bright (red 200): the image is RGB, not BGR.
    assert float(image[0, 30, 20]) == pytest.approx(200 / 255, abs=0.05)
    # 1-based inclusive (10, 12, 40, 60) -> 0-based continuous (9, 11, 40, 60).
    assert target["boxes"].dtype == torch.float32
    assert target["boxes"].tolist() == [[9.0, 11.0, 40.0, 60.0], [49.0, 4.0, 90.0, 30.0]]
    chair = VOC_CLASSES.index("chair") + 1
    assert chair == 9 and target["labels"].tolist() == [chair, chair]
    assert target["labels"].dtype == torch.int64 and target["difficult"].dtype == torch.bool
    assert target["difficult"].tolist() == [False, True]
    # A box over the whole width: xmin=1, xmax=W -> [0, W].
    assert data[1][1]["boxes"].tolist() == [[0.0, 0.0, 80.0, 40.0]]
    image, target = data[3]
    assert image.shape == (3, 96, 72)
    assert target["labels"].tolist() == [15, 19]  # person, train


def test_difficult_objects_can_be_dropped(tiny_voc: Path) -> None:
    data = VOCDetection(tiny_voc, [("2007", "trainval")], keep_difficult=False)
    assert data[0][1]["boxes"].tolist() == [[9.0, 11.0, 40.0, 60.0]]
    assert data[0][1]["difficult"].tolist() == [False]
    assert data.target(0)["labels"].tolist() == [9]


def test_remove_empty_skips_images_left_without_objects(tmp_path: Path) -> None:
    only_difficult = FakeImage("000009", 64, 64, [FakeObject("cat", (1, 1, 30, 30), difficult=1)])
    sets = {("2007", "test"): [only_difficult, *TINY_VOC[("2007", "test")]]}
    root = write_voc(tmp_path / "voc", sets)
    assert len(VOCDetection(root, [("2007", "test")], keep_difficult=False)) == 3
    kept = VOCDetection(root, [("2007", "test")], keep_difficult=False, remove_empty=True)
    assert [i for _, i in kept.items] == ["000001", "000004"]
    assert len(VOCDetection(root, [("2007", "test")], remove_empty=True)) == 3


def test_read_split_and_parse_voc_xml(tiny_voc: Path) -> None:
    assert read_split(tiny_voc / "VOC2007", "test") == ["000001", "000004"]
    ann = parse_voc_xml(tiny_voc / "VOC2007" / "Annotations" / "000004.xml")
    assert (ann.width, ann.height) == (64, 80)
    assert ann.boxes.tolist() == [[7.0, 19.0, 60.0, 70.0], [39.0, 0.0, 64.0, 18.0]]
    assert ann.difficult.tolist() == [False, True]


def test_horizontal_flip_moves_boxes() -> None:
    image = torch.arange(12.0).reshape(1, 3, 4).expand(3, 3, 4)
    target = {"boxes": torch.tensor([[0.0, 0.0, 1.0, 2.0]]), "labels": torch.tensor([3])}
    flipped, new = RandomHorizontalFlip(p=1.0)(image, target)
    assert torch.equal(flipped, image.flip(-1))
    assert new["boxes"].tolist() == [[3.0, 0.0, 4.0, 2.0]] and new["labels"].tolist() == [3]
    assert target["boxes"].tolist() == [[0.0, 0.0, 1.0, 2.0]]  # the input is not modified
    same, kept = RandomHorizontalFlip(p=0.0)(image, target)
    assert same is image and kept is target


# --------------------------------------------------------------------------- bad input


def _edit_xml(root: Path, old: str, new: str, image_id: str = "000005") -> Path:
    path = root / "VOC2007" / "Annotations" / f"{image_id}.xml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    return path


def test_missing_root_and_year_folders_explain_the_layout(tiny_voc: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="VOC root folder not found"):
        VOCDetection(tmp_path / "nowhere", [("2007", "test")])
    with pytest.raises(FileNotFoundError, match=r"VOC folder not found: .*VOC2010") as info:
        VOCDetection(tiny_voc, [("2010", "trainval")])
    assert "<root>/VOC<year>/{Annotations/<id>.xml, JPEGImages/<id>.jpg" in str(info.value)
    assert "without a VOCdevkit/ level" in str(info.value)


def test_a_vocdevkit_level_gets_a_hint(tmp_path: Path) -> None:
    write_voc(tmp_path / "VOCdevkit")
    with pytest.raises(FileNotFoundError, match="It is under .*VOCdevkit: pass that folder"):
        VOCDetection(tmp_path, [("2007", "test")])


def test_missing_subfolder(tiny_voc: Path) -> None:
    (tiny_voc / "VOC2012" / "JPEGImages").rename(tiny_voc / "VOC2012" / "images")
    with pytest.raises(FileNotFoundError, match=r"Folder not found: .*VOC2012/JPEGImages"):
        VOCDetection(tiny_voc, [("2012", "trainval")])


def test_missing_split_file_lists_the_available_ones(tiny_voc: Path) -> None:
    with pytest.raises(FileNotFoundError, match="Split file not found") as info:
        VOCDetection(tiny_voc, [("2007", "val")])
    assert "Split files there: test, trainval." in str(info.value)  # not car_test
    (tiny_voc / "VOC2007" / "ImageSets" / "Main" / "test.txt").write_text("\n")
    with pytest.raises(VOCFormatError, match="lists no image id"):
        VOCDetection(tiny_voc, [("2007", "test")])


def test_missing_annotation_file(tiny_voc: Path) -> None:
    (tiny_voc / "VOC2007" / "Annotations" / "000004.xml").unlink()
    with pytest.raises(FileNotFoundError, match=r"Annotation file not found: .*000004\.xml"):
        VOCDetection(tiny_voc, [("2007", "test")])


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("<name>chair</name>", "", "<name>"),
        ("<pose>Rear</pose>", "", "<pose>"),
        ("<truncated>0</truncated>", "", "<truncated>"),
        ("<difficult>0</difficult>", "", "<difficult>"),
        ("<xmax>40</xmax>", "", "<bndbox><xmax>"),
        ("<width>96</width>", "", "<size><width>"),
        ("<name>chair</name>", "<name> </name>", "<name>"),
    ],
)
def test_a_missing_field_names_file_and_field(
    tiny_voc: Path, old: str, new: str, field: str
) -> None:
    path = _edit_xml(tiny_voc, old, new)
    with pytest.raises(VOCFormatError) as info:
        VOCDetection(tiny_voc, [("2007", "trainval")])
    message = str(info.value)
    assert str(path) in message and f"has no {field}" in message
    if field != "<size><width>":
        assert "object #0" in message


def test_unknown_class_name(tiny_voc: Path) -> None:
    _edit_xml(tiny_voc, "<name>chair</name>", "<name>Chair</name>")
    with pytest.raises(VOCFormatError, match=r"000005\.xml: object #0 has class 'Chair'") as info:
        VOCDetection(tiny_voc, [("2007", "trainval")])
    assert "not one of the 20 VOC classes (aeroplane, bicycle" in str(info.value)


@pytest.mark.parametrize("value", ["12px", "nan", "", "1e999"])
def test_non_integer_box(tiny_voc: Path, value: str) -> None:
    _edit_xml(tiny_voc, "<ymin>12</ymin>", f"<ymin>{value}</ymin>")
    expected = "has no <bndbox><ymin>" if not value else "<bndbox><ymin> is .* expected an integer"
    with pytest.raises(VOCFormatError, match=rf"000005\.xml: object #0 \(chair\) {expected}"):
        VOCDetection(tiny_voc, [("2007", "trainval")])


def test_non_integer_flag_and_inverted_box(tiny_voc: Path) -> None:
    _edit_xml(tiny_voc, "<difficult>1</difficult>", "<difficult>yes</difficult>")
    with pytest.raises(VOCFormatError, match=r"object #1 \(chair\) <difficult> is 'yes'"):
        VOCDetection(tiny_voc, [("2007", "trainval")])
    _edit_xml(tiny_voc, "<difficult>yes</difficult>", "<difficult>1</difficult>")
    _edit_xml(tiny_voc, "<xmin>10</xmin>", "<xmin>45</xmin>")
    with pytest.raises(VOCFormatError, match="inverted <bndbox> .xmin=45.*xmax=40"):
        VOCDetection(tiny_voc, [("2007", "trainval")])


def test_a_decimal_coordinate_is_read_as_detectron2_does(tiny_voc: Path) -> None:
    # Real VOC2012 files (2011_003353.xml, 2011_006777.xml) hold e.g. <ymin>45.70000076293945.
    _edit_xml(tiny_voc, "<ymin>12</ymin>", "<ymin>12.70000076293945</ymin>")
    data = VOCDetection(tiny_voc, [("2007", "trainval")])
    assert data.target(0)["boxes"][0].tolist() == pytest.approx([9.0, 11.7, 40.0, 60.0])


def test_malformed_xml(tiny_voc: Path) -> None:
    _edit_xml(tiny_voc, "</annotation>", "")
    with pytest.raises(VOCFormatError, match=r"000005\.xml: not well-formed XML"):
        VOCDetection(tiny_voc, [("2007", "trainval")])


def test_missing_or_mismatched_image(tiny_voc: Path) -> None:
    data = VOCDetection(tiny_voc, [("2007", "test")])
    (tiny_voc / "VOC2007" / "JPEGImages" / "000001.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"Image not found: .*JPEGImages/000001\.jpg"):
        data[0]
    Image.new("RGB", (50, 80)).save(tiny_voc / "VOC2007" / "JPEGImages" / "000004.jpg")
    with pytest.raises(VOCFormatError, match=r"is 50x80 \(WxH\) but its annotation says 64x80"):
        data[1]
