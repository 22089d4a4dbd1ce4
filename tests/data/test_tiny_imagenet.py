from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, UnidentifiedImageError

from lightly_amix.data import DatasetFormatError, TinyImageNet
from tests.fakes import FakeTinyImageNet

SORTED_WNIDS = ["n01443537", "n02124075", "n04067472"]


def pil_rgb(path: Path) -> np.ndarray:
    """PIL's own decode of the file; JPEG is lossy, so this is the reference."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_classes_are_sorted_wnids(tiny_imagenet: FakeTinyImageNet) -> None:
    dataset = TinyImageNet(tiny_imagenet.root, split="train")
    assert dataset.classes == SORTED_WNIDS
    assert dataset.class_names == ["goldfish", "Egyptian cat", "n04067472"]  # words.txt


def test_class_names_default_to_wnids_without_words_file(
    tiny_imagenet: FakeTinyImageNet,
) -> None:
    (tiny_imagenet.folder / "words.txt").unlink()
    assert TinyImageNet(tiny_imagenet.root, split="train").class_names == SORTED_WNIDS


def test_train(tiny_imagenet: FakeTinyImageNet) -> None:
    dataset = TinyImageNet(tiny_imagenet.root, split="train")
    assert len(dataset) == 6
    expected = sorted(tiny_imagenet.train, key=lambda item: (item[1], item[0].name))
    for index, (path, wnid) in enumerate(expected):
        image, label = dataset[index]
        assert image.mode == "RGB" and image.size == (64, 64)
        np.testing.assert_array_equal(np.asarray(image), pil_rgb(path))
        assert label == SORTED_WNIDS.index(wnid)
        assert dataset.samples[index] == (str(path), label)
    assert dataset.labels.dtype == np.int64
    assert dataset.labels.tolist() == [0, 0, 1, 1, 2, 2]


def test_val_labels_come_from_annotations(tiny_imagenet: FakeTinyImageNet) -> None:
    dataset = TinyImageNet(tiny_imagenet.root, split="val")
    assert len(dataset) == 3
    for index, (path, wnid) in enumerate(tiny_imagenet.val):
        image, label = dataset[index]
        assert label == SORTED_WNIDS.index(wnid)
        np.testing.assert_array_equal(np.asarray(image), pil_rgb(path))
    assert dataset.labels.tolist() == [2, 0, 1]


def test_greyscale_jpeg_is_converted_to_rgb(tiny_imagenet: FakeTinyImageNet) -> None:
    assert tiny_imagenet.greyscale is not None
    with Image.open(tiny_imagenet.greyscale) as raw:
        assert raw.mode == "L"
        grey = np.asarray(raw)
    image, _ = TinyImageNet(tiny_imagenet.root, split="val")[1]
    assert image.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(image), np.repeat(grey[:, :, None], 3, axis=2))


def test_test_split_is_unlabeled(tiny_imagenet: FakeTinyImageNet) -> None:
    dataset = TinyImageNet(tiny_imagenet.root, split="test")
    assert len(dataset) == 2
    assert dataset.labels.tolist() == [-1, -1]
    image, label = dataset[0]
    assert label == -1
    np.testing.assert_array_equal(np.asarray(image), pil_rgb(tiny_imagenet.test[0]))


def test_root_may_be_the_tiny_imagenet_folder(tiny_imagenet: FakeTinyImageNet) -> None:
    assert len(TinyImageNet(tiny_imagenet.folder, split="val")) == 3


def test_transform_and_pickle(tiny_imagenet: FakeTinyImageNet) -> None:
    dataset = TinyImageNet(tiny_imagenet.root, split="train", transform=lambda im: im.size)
    assert dataset[5] == ((64, 64), 2)
    copy = pickle.loads(pickle.dumps(TinyImageNet(tiny_imagenet.root, split="val")))
    assert copy.labels.tolist() == [2, 0, 1]


# --------------------------------------------------------------------------- bad input


def test_unknown_split(tiny_imagenet: FakeTinyImageNet) -> None:
    with pytest.raises(ValueError, match="valid splits: train, val, test"):
        TinyImageNet(tiny_imagenet.root, split="unlabeled")


def test_missing_wnids_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        TinyImageNet(tmp_path, split="train")
    message = str(info.value)
    assert f"'{tmp_path / 'wnids.txt'}' not found" in message
    assert "tiny-imagenet-200.zip" in message and "unzip it under" in message


def test_missing_train_folder(tiny_imagenet: FakeTinyImageNet) -> None:
    shutil.rmtree(tiny_imagenet.folder / "train")
    with pytest.raises(FileNotFoundError) as info:
        TinyImageNet(tiny_imagenet.root, split="train")
    message = str(info.value)
    assert f"'{tiny_imagenet.folder / 'train'}' not found" in message
    assert "tiny-imagenet-200.zip" in message


def test_missing_class_images_folder(tiny_imagenet: FakeTinyImageNet) -> None:
    shutil.rmtree(tiny_imagenet.folder / "train" / "n02124075" / "images")
    with pytest.raises(FileNotFoundError, match="n02124075/images' not found"):
        TinyImageNet(tiny_imagenet.root, split="train")


def test_train_folder_not_in_wnids(tiny_imagenet: FakeTinyImageNet) -> None:
    (tiny_imagenet.folder / "train" / "n09999999" / "images").mkdir(parents=True)
    with pytest.raises(DatasetFormatError) as info:
        TinyImageNet(tiny_imagenet.root, split="train")
    message = str(info.value)
    assert "n09999999" in message and "not listed in" in message and "wnids.txt" in message


def test_non_jpeg_file_in_image_folder(tiny_imagenet: FakeTinyImageNet) -> None:
    (tiny_imagenet.folder / "test" / "images" / "notes.txt").write_text("hi")
    with pytest.raises(DatasetFormatError, match="notes.txt' .*expected only JPEG files"):
        TinyImageNet(tiny_imagenet.root, split="test")


def test_duplicate_wnid(tiny_imagenet: FakeTinyImageNet) -> None:
    (tiny_imagenet.folder / "wnids.txt").write_text("n01443537\nn02124075\nn01443537\n")
    with pytest.raises(DatasetFormatError, match="wnids.txt', entry 3: 'n01443537' is a dup"):
        TinyImageNet(tiny_imagenet.root, split="train")


def test_missing_val_annotations(tiny_imagenet: FakeTinyImageNet) -> None:
    (tiny_imagenet.folder / "val" / "val_annotations.txt").unlink()
    with pytest.raises(FileNotFoundError) as info:
        TinyImageNet(tiny_imagenet.root, split="val")
    message = str(info.value)
    assert "val_annotations.txt' not found" in message and "tiny-imagenet-200.zip" in message


def test_val_annotation_with_unknown_wnid(tiny_imagenet: FakeTinyImageNet) -> None:
    annotations = tiny_imagenet.folder / "val" / "val_annotations.txt"
    lines = annotations.read_text().splitlines()
    lines[1] = lines[1].replace("n01443537", "n09999999")
    annotations.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetFormatError) as info:
        TinyImageNet(tiny_imagenet.root, split="val")
    message = str(info.value)
    assert "val_annotations.txt', line 2" in message
    assert "wnid 'n09999999' of 'val_1.JPEG' is not listed in" in message
    assert "wnids.txt" in message


def test_val_annotation_for_missing_file(tiny_imagenet: FakeTinyImageNet) -> None:
    annotations = tiny_imagenet.folder / "val" / "val_annotations.txt"
    with open(annotations, "a") as file:
        file.write("val_9.JPEG\tn01443537\t0\t0\t10\t10\n")
    with pytest.raises(FileNotFoundError) as info:
        TinyImageNet(tiny_imagenet.root, split="val")
    message = str(info.value)
    assert "val_annotations.txt', line 4 lists 'val_9.JPEG'" in message
    assert f"'{tiny_imagenet.folder / 'val' / 'images' / 'val_9.JPEG'}' does not exist" in message


def test_val_image_without_annotation(tiny_imagenet: FakeTinyImageNet) -> None:
    shutil.copy(tiny_imagenet.val[0][0], tiny_imagenet.folder / "val" / "images" / "extra.JPEG")
    with pytest.raises(DatasetFormatError) as info:
        TinyImageNet(tiny_imagenet.root, split="val")
    message = str(info.value)
    assert "extra.JPEG" in message and "not listed in" in message
    assert "val_annotations.txt" in message


@pytest.mark.parametrize(
    "line",
    ["val_0.JPEG\tn04067472\t3\t5\t60", "val_0.JPEG n04067472 3 5 60 62", "a\tb\tc\td\te\tf"],
)
def test_malformed_val_annotation(tiny_imagenet: FakeTinyImageNet, line: str) -> None:
    (tiny_imagenet.folder / "val" / "val_annotations.txt").write_text(line + "\n")
    with pytest.raises(DatasetFormatError, match="line 1: .* expected 6 tab-separated fields"):
        TinyImageNet(tiny_imagenet.root, split="val")


def test_duplicate_val_annotation(tiny_imagenet: FakeTinyImageNet) -> None:
    annotations = tiny_imagenet.folder / "val" / "val_annotations.txt"
    annotations.write_text(annotations.read_text() + "val_0.JPEG\tn04067472\t3\t5\t60\t62\n")
    with pytest.raises(DatasetFormatError, match="line 4: 'val_0.JPEG' is annotated twice"):
        TinyImageNet(tiny_imagenet.root, split="val")


def test_corrupt_image_raises_with_path_when_loaded(tiny_imagenet: FakeTinyImageNet) -> None:
    path = tiny_imagenet.val[2][0]
    path.write_bytes(b"this is not a JPEG")
    dataset = TinyImageNet(tiny_imagenet.root, split="val")  # Indexing does not decode.
    with pytest.raises(DatasetFormatError) as info:
        dataset[2]
    message = str(info.value)
    assert f"Cannot decode image '{path}'" in message and "corrupt" in message
    assert isinstance(info.value.__cause__, UnidentifiedImageError)


def test_truncated_image_raises_with_path(tiny_imagenet: FakeTinyImageNet) -> None:
    path = tiny_imagenet.train[0][0]
    path.write_bytes(path.read_bytes()[:300])
    dataset = TinyImageNet(tiny_imagenet.root, split="train")
    index = [p for p, _ in dataset.samples].index(str(path))
    with pytest.raises(DatasetFormatError, match=f"Cannot decode image '{path}' \\(OSError"):
        dataset[index]


def test_hint_names_the_parent_when_root_is_the_folder_itself(
    tiny_imagenet: FakeTinyImageNet,
) -> None:
    shutil.rmtree(tiny_imagenet.folder / "test")
    with pytest.raises(FileNotFoundError) as info:
        TinyImageNet(tiny_imagenet.folder, split="test")
    message = str(info.value)
    assert f"'{tiny_imagenet.folder / 'test' / 'images'}' not found" in message
    assert f"unzip it under '{tiny_imagenet.root}'" in message
