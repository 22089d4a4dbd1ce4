from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lightly_amix.data import CUB200, DatasetFormatError, build_dataset, dataset_spec
from tests.fakes import FakeCUB, write_cub


@pytest.fixture
def cub(tmp_path: Path) -> FakeCUB:
    return write_cub(tmp_path / "cub")


def decoded(path: Path) -> np.ndarray:
    """What any decoder must return for the fake's JPEG, as (H, W, 3) RGB."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


@pytest.mark.parametrize(("split", "ids"), [("train", [1, 3, 5]), ("test", [2, 4, 6])])
def test_split_round_trip(cub: FakeCUB, split: str, ids: list[int]) -> None:
    dataset = CUB200(cub.root, split=split)
    expected = cub.samples[split]
    assert len(dataset) == len(expected) == 3
    assert dataset.root == cub.folder
    assert [Path(path) for path, _ in dataset.samples] == [path for path, _ in expected]
    # Image ids of the split, in the order of images.txt (names end with _<id>_<100 + id>.jpg).
    assert [int(Path(p).stem.split("_")[-2]) for p, _ in dataset.samples] == ids
    for index, (path, label) in enumerate(expected):
        image, got_label = dataset[index]
        assert isinstance(image, Image.Image) and image.mode == "RGB"
        assert image.size == (40, 24 + ids[index])  # (width, height) of varying photos.
        np.testing.assert_array_equal(np.asarray(image), decoded(path))
        assert isinstance(got_label, int) and got_label == label
    assert dataset.labels.dtype == np.int64
    np.testing.assert_array_equal(dataset.labels, [label for _, label in expected])


def test_labels_are_class_ids_minus_one(cub: FakeCUB) -> None:
    train = CUB200(cub.root, split="train")
    test = CUB200(cub.root, split="test")
    assert train.labels.tolist() == [0, 0, 199] and test.labels.tolist() == [0, 1, 199]
    assert train.classes[0] == "001.Black_footed_Albatross"
    assert train.classes[199] == "200.Common_Yellowthroat"
    assert train.classes == cub.classes and len(train.classes) == 200


def test_greyscale_photo_becomes_rgb(cub: FakeCUB) -> None:
    image = np.asarray(CUB200(cub.root, split="train")[1][0])  # Image 3 is greyscale.
    assert image.shape == (27, 40, 3)
    np.testing.assert_array_equal(image[..., 0], image[..., 2])


def test_root_may_be_the_folder_itself(cub: FakeCUB) -> None:
    dataset = CUB200(cub.folder, split="test")
    assert len(dataset) == 3 and dataset.root == cub.folder


def test_transform_is_applied(cub: FakeCUB) -> None:
    dataset = CUB200(cub.root, split="test", transform=lambda image: image.size)
    assert dataset[2] == ((40, 30), 199)


def test_registry(cub: FakeCUB) -> None:
    spec = dataset_spec("cub200")
    assert spec.splits == ("train", "test") and spec.eval_splits == ("train", "test")
    assert spec.image_size == 224 and not spec.downloadable
    assert not spec.fixed_size and not spec.uint8_arrays
    dataset = build_dataset("cub200", cub.root, "train")
    assert isinstance(dataset, CUB200) and len(dataset) == 3
    with pytest.raises(ValueError) as info:
        build_dataset("cub200", cub.root, "train", download=True)
    assert "CUB_200_2011.tgz" in str(info.value) and "data.caltech.edu" in str(info.value)


# --------------------------------------------------------------------------- bad input


def test_unknown_split(cub: FakeCUB) -> None:
    with pytest.raises(ValueError, match="Unknown split 'val' for dataset 'cub200'"):
        CUB200(cub.root, split="val")


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        CUB200(tmp_path, split="train")
    message = str(info.value)
    assert f"CUB-200-2011 folder '{tmp_path / 'CUB_200_2011'}' not found" in message
    assert "CUB_200_2011.tgz" in message and "data.caltech.edu" in message
    assert f"extract it under '{tmp_path}'" in message
    assert "torchvision has no downloader" in message


@pytest.mark.parametrize(
    "name", ["images.txt", "train_test_split.txt", "image_class_labels.txt", "classes.txt"]
)
def test_missing_file(cub: FakeCUB, name: str) -> None:
    (cub.folder / name).unlink()
    with pytest.raises(FileNotFoundError) as info:
        CUB200(cub.folder, split="train")
    message = str(info.value)
    assert f"CUB-200-2011 file '{cub.folder / name}' not found" in message
    assert f"extract it under '{cub.root}'" in message


def test_missing_image_folder(cub: FakeCUB) -> None:
    (cub.folder / "images").rename(cub.folder / "pictures")
    with pytest.raises(FileNotFoundError, match="image folder '.*images' not found"):
        CUB200(cub.root, split="train")


def test_missing_image(cub: FakeCUB) -> None:
    path = cub.samples["test"][1][0]
    path.unlink()
    assert len(CUB200(cub.root, split="train")) == 3  # Only the split's images are checked.
    with pytest.raises(FileNotFoundError) as info:
        CUB200(cub.root, split="test")
    message = str(info.value)
    assert f"image '{path}' not found (image 4, listed in" in message and "line 4" in message


def rewrite_line(path: Path, line_number: int, new: str | None) -> None:
    """Replaces (or with None, deletes) line `line_number` (1-based) of `path`."""
    lines = path.read_text().splitlines()
    if new is None:
        del lines[line_number - 1]
    else:
        lines[line_number - 1] = new
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    ("name", "line", "new", "expected"),
    [
        ("images.txt", 2, "2", "line 2: '2' does not parse, expected '<image id> <relative"),
        ("images.txt", 2, "two x.jpg", "line 2: 'two x.jpg' does not parse"),
        ("image_class_labels.txt", 3, "3\t", "line 3: '3\\t' does not parse"),
        ("train_test_split.txt", 1, "6 2", "image 6 has split flag 2, expected 1 (train) or 0"),
        ("train_test_split.txt", 1, "6 yes", "line 1: split flag 'yes' is not a non-negative"),
        ("image_class_labels.txt", 5, "5 201", "line 5: image 5 has class id 201, expected"),
        ("image_class_labels.txt", 1, "1 0", "line 1: image 1 has class id 0, expected"),
        ("images.txt", 3, "2 a/b.jpg", "line 3: image id 2 is listed twice (first on line 2)"),
        ("classes.txt", 7, "3 007.Bird_7", "line 7: class id 3 is listed twice"),
    ],
)
def test_malformed_line(cub: FakeCUB, name: str, line: int, new: str, expected: str) -> None:
    rewrite_line(cub.folder / name, line, new)
    with pytest.raises(DatasetFormatError) as info:
        CUB200(cub.root, split="train")
    message = str(info.value)
    assert f"CUB-200-2011 file '{cub.folder / name}'" in message and expected in message
    assert "Re-extract CUB_200_2011.tgz" in message


def test_class_id_error_is_found_in_the_other_split_too(cub: FakeCUB) -> None:
    rewrite_line(cub.folder / "image_class_labels.txt", 6, "6 999")  # Image 6 is a test image.
    with pytest.raises(DatasetFormatError, match="image 6 has class id 999"):
        CUB200(cub.root, split="train")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("image_class_labels.txt", "image id 4 of '{images}' (line 4) has no line in '{other}'"),
        ("train_test_split.txt", "image id 4 of '{images}' (line 4) has no line in '{other}'"),
    ],
)
def test_id_missing_from_another_file(cub: FakeCUB, name: str, expected: str) -> None:
    rewrite_line(cub.folder / name, 3 if name == "train_test_split.txt" else 4, None)
    with pytest.raises(DatasetFormatError) as info:
        CUB200(cub.root, split="train")
    message = str(info.value)
    assert expected.format(images=cub.folder / "images.txt", other=cub.folder / name) in message
    assert "every image must be listed in every file" in message


def test_id_unknown_to_images_txt(cub: FakeCUB) -> None:
    path = cub.folder / "image_class_labels.txt"
    path.write_text(path.read_text() + "7 3\n")
    with pytest.raises(DatasetFormatError) as info:
        CUB200(cub.root, split="test")
    message = str(info.value)
    assert f"image id 7 of '{path}' (line 7) is not listed in" in message
    assert "images.txt" in message


def test_wrong_class_count(cub: FakeCUB) -> None:
    rewrite_line(cub.folder / "classes.txt", 200, None)
    with pytest.raises(DatasetFormatError) as info:
        CUB200(cub.root, split="train")
    message = str(info.value)
    assert "classes.txt' lists 199 classes, expected 200 lines" in message


def test_class_id_out_of_range_in_classes_txt(cub: FakeCUB) -> None:
    rewrite_line(cub.folder / "classes.txt", 200, "201 201.Extra")
    with pytest.raises(DatasetFormatError, match="line 200: class id 201 is out of range"):
        CUB200(cub.root, split="train")


def test_empty_file(cub: FakeCUB) -> None:
    (cub.folder / "images.txt").write_text("\n")
    with pytest.raises(DatasetFormatError, match="images.txt' has no lines, expected"):
        CUB200(cub.root, split="train")


def test_corrupt_image_is_reported_when_loaded(cub: FakeCUB) -> None:
    path = cub.samples["train"][0][0]
    path.write_bytes(b"not a jpeg")
    dataset = CUB200(cub.root, split="train")
    with pytest.raises(DatasetFormatError, match="Cannot decode image"):
        dataset[0]
