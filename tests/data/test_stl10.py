from __future__ import annotations

import pickle
import urllib.error
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lightly_amix.data import DatasetFormatError, STL10Binary
from lightly_amix.data import stl10 as stl10_module
from tests.fakes import STL10_CLASS_NAMES, FakeSTL10


def test_train_round_trip(stl10: FakeSTL10) -> None:
    dataset = STL10Binary(stl10.root, split="train")
    assert len(dataset) == 5
    assert dataset.classes == STL10_CLASS_NAMES
    for index in range(len(dataset)):
        image, label = dataset[index]
        assert isinstance(image, Image.Image)
        assert image.mode == "RGB" and image.size == (96, 96)
        np.testing.assert_array_equal(np.asarray(image), stl10.train_images[index])
        np.testing.assert_array_equal(dataset.get_uint8(index), stl10.train_images[index])
        assert label == int(stl10.train_labels[index]) - 1
        assert isinstance(label, int)
    assert dataset.labels.dtype == np.int64
    np.testing.assert_array_equal(dataset.labels, stl10.train_labels.astype(np.int64) - 1)
    assert dataset.labels.min() == 0 and dataset.labels.max() == 9  # 1 -> 0 and 10 -> 9.


def test_byte_order_is_column_major_planes(stl10: FakeSTL10) -> None:
    # Independent of the fixture's transpose: byte (c, x, y) of image 0 is pixel [y, x, c].
    raw = (stl10.folder / "train_X.bin").read_bytes()
    dataset = STL10Binary(stl10.root, split="train")
    pixels = dataset.get_uint8(0)
    for c, x, y in [(0, 0, 1), (1, 5, 2), (2, 95, 0), (0, 3, 94)]:
        assert raw[c * 96 * 96 + x * 96 + y] == pixels[y, x, c]


def test_get_uint8_is_contiguous_copy(stl10: FakeSTL10) -> None:
    pixels = STL10Binary(stl10.root, split="test").get_uint8(-1)
    assert pixels.shape == (96, 96, 3) and pixels.dtype == np.uint8
    assert pixels.flags.c_contiguous and not isinstance(pixels, np.memmap)
    np.testing.assert_array_equal(pixels, stl10.test_images[-1])


def test_root_may_be_the_stl10_binary_folder(stl10: FakeSTL10) -> None:
    dataset = STL10Binary(stl10.folder, split="test")
    assert len(dataset) == 3
    np.testing.assert_array_equal(np.asarray(dataset[2][0]), stl10.test_images[2])
    np.testing.assert_array_equal(dataset.labels, stl10.test_labels.astype(np.int64) - 1)


def test_unlabeled_images_have_label_minus_one(stl10: FakeSTL10) -> None:
    dataset = STL10Binary(stl10.root, split="unlabeled")
    assert len(dataset) == 4
    np.testing.assert_array_equal(dataset.labels, [-1, -1, -1, -1])
    image, label = dataset[3]
    assert label == -1
    np.testing.assert_array_equal(np.asarray(image), stl10.unlabeled_images[3])


def test_train_plus_unlabeled_is_train_then_unlabeled(stl10: FakeSTL10) -> None:
    dataset = STL10Binary(stl10.root, split="train+unlabeled")
    assert len(dataset) == 9
    expected = np.concatenate([stl10.train_images, stl10.unlabeled_images])
    for index in range(9):
        np.testing.assert_array_equal(dataset.get_uint8(index), expected[index])
    expected_labels = [int(v) - 1 for v in stl10.train_labels] + [-1] * 4
    assert [dataset[i][1] for i in range(9)] == expected_labels
    assert dataset.labels.tolist() == expected_labels


@pytest.mark.parametrize("fold", [0, 3, 9])
def test_fold_selects_the_listed_train_images(stl10: FakeSTL10, fold: int) -> None:
    dataset = STL10Binary(stl10.root, split="train", fold=fold)
    indices = stl10.folds[fold]
    assert len(dataset) == len(indices)
    for position, train_index in enumerate(indices):
        image, label = dataset[position]
        np.testing.assert_array_equal(np.asarray(image), stl10.train_images[train_index])
        assert label == int(stl10.train_labels[train_index]) - 1
    np.testing.assert_array_equal(dataset.labels, stl10.train_labels[indices].astype(np.int64) - 1)


def test_transform_is_applied(stl10: FakeSTL10) -> None:
    dataset = STL10Binary(stl10.root, split="test", transform=lambda image: [image.size] * 2)
    assert dataset[0] == ([(96, 96), (96, 96)], int(stl10.test_labels[0]) - 1)


def test_index_out_of_range(stl10: FakeSTL10) -> None:
    dataset = STL10Binary(stl10.root, split="test")
    with pytest.raises(IndexError, match="Index 3 out of range"):
        dataset[3]


def test_images_are_memory_mapped_lazily(stl10: FakeSTL10) -> None:
    dataset = STL10Binary(stl10.root, split="train+unlabeled")
    assert dataset._memmaps is None  # Nothing opened before the first access.
    dataset[0]
    arrays = dataset._memmaps
    assert arrays is not None and len(arrays) == 2
    assert all(isinstance(array, np.memmap) for array in arrays)
    assert arrays[1].shape == (4, 3, 96, 96)


def test_pickles_cheaply_without_the_memmap(stl10: FakeSTL10) -> None:
    dataset = STL10Binary(stl10.root, split="train+unlabeled")
    dataset[0]  # Open the memory map; it must not be pickled.
    data = pickle.dumps(dataset)
    assert len(data) < 4_000  # The 9 images alone are 248,832 bytes.
    copy = pickle.loads(data)
    assert copy._memmaps is None
    np.testing.assert_array_equal(copy.get_uint8(8), stl10.unlabeled_images[3])


def test_download_is_not_called_when_files_exist(
    stl10: FakeSTL10, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("must not download")

    monkeypatch.setattr(stl10_module, "download_and_extract_archive", fail)
    assert len(STL10Binary(stl10.root, split="train", download=True)) == 5


def test_download_extracts_into_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stl10_writer: Callable[..., FakeSTL10]
) -> None:
    calls = []

    def fake_download(url: str, download_root: str, filename: str, md5: str) -> None:
        calls.append((url, filename))
        stl10_writer(Path(download_root))  # Like the archive: creates root/stl10_binary.

    monkeypatch.setattr(stl10_module, "download_and_extract_archive", fake_download)
    dataset = STL10Binary(tmp_path / "new", split="unlabeled", download=True)
    assert len(dataset) == 4
    assert calls == [(stl10_module.TorchvisionSTL10.url, "stl10_binary.tar.gz")]


def test_download_failure_says_how_to_get_the_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(stl10_module, "download_and_extract_archive", offline)
    with pytest.raises(RuntimeError) as info:
        STL10Binary(tmp_path, split="train", download=True)
    message = str(info.value)
    assert "Downloading STL-10" in message and "failed" in message
    assert "Name or service not known" in message
    assert "stl10_binary.tar.gz" in message and str(tmp_path) in message
    assert isinstance(info.value.__cause__, urllib.error.URLError)


# --------------------------------------------------------------------------- bad input


def test_unknown_split(stl10: FakeSTL10) -> None:
    with pytest.raises(ValueError, match="valid splits: train, test, unlabeled, train\\+unlabeled"):
        STL10Binary(stl10.root, split="val")


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        STL10Binary(tmp_path, split="train")
    message = str(info.value)
    assert f"'{tmp_path / 'stl10_binary'}' not found" in message
    assert "--download" in message and "stl10_binary.tar.gz" in message
    assert "STL-10 website" in message and "extract it under" in message


def test_missing_file(stl10: FakeSTL10) -> None:
    (stl10.folder / "test_y.bin").unlink()
    with pytest.raises(FileNotFoundError) as info:
        STL10Binary(stl10.root, split="test")
    message = str(info.value)
    assert f"'{stl10.folder / 'test_y.bin'}' not found" in message
    assert "--download" in message and "stl10_binary.tar.gz" in message


def test_missing_class_names(stl10: FakeSTL10) -> None:
    (stl10.folder / "class_names.txt").unlink()
    with pytest.raises(FileNotFoundError, match="class_names.txt' not found"):
        STL10Binary(stl10.root, split="train")


def test_image_file_size_not_a_multiple(stl10: FakeSTL10) -> None:
    with open(stl10.folder / "train_X.bin", "ab") as file:
        file.write(b"12345")
    with pytest.raises(DatasetFormatError) as info:
        STL10Binary(stl10.root, split="train")
    message = str(info.value)
    assert "train_X.bin" in message and f"has {5 * 27648 + 5} bytes" in message
    assert "multiple of 27648" in message and "Re-extract" in message


def test_empty_image_file(stl10: FakeSTL10) -> None:
    (stl10.folder / "unlabeled_X.bin").write_bytes(b"")
    with pytest.raises(DatasetFormatError, match="unlabeled_X.bin' has 0 bytes"):
        STL10Binary(stl10.root, split="unlabeled")


@pytest.mark.parametrize("bad_value", [0, 11, 255])
def test_label_out_of_range(stl10: FakeSTL10, bad_value: int) -> None:
    labels = stl10.train_labels.copy()
    labels[3] = bad_value
    (stl10.folder / "train_y.bin").write_bytes(labels.tobytes())
    with pytest.raises(DatasetFormatError) as info:
        STL10Binary(stl10.root, split="train")
    message = str(info.value)
    assert "train_y.bin" in message and f"value {bad_value} at index 3" in message
    assert "expected labels in 1..10" in message


def test_label_count_differs_from_image_count(stl10: FakeSTL10) -> None:
    (stl10.folder / "train_y.bin").write_bytes(stl10.train_labels[:4].tobytes())
    with pytest.raises(DatasetFormatError) as info:
        STL10Binary(stl10.root, split="train+unlabeled")
    message = str(info.value)
    assert "train_y.bin' has 4 labels" in message and "train_X.bin' has 5 images" in message


@pytest.mark.parametrize("fold", [-1, 10])
def test_fold_out_of_range(stl10: FakeSTL10, fold: int) -> None:
    with pytest.raises(ValueError, match=f"fold must be in 0..9, got {fold}"):
        STL10Binary(stl10.root, split="train", fold=fold)


def test_fold_needs_train_split(stl10: FakeSTL10) -> None:
    with pytest.raises(ValueError, match="fold=1 is only valid with split 'train'.*'test'"):
        STL10Binary(stl10.root, split="test", fold=1)


def test_missing_fold_file(stl10: FakeSTL10) -> None:
    (stl10.folder / "fold_indices.txt").unlink()
    with pytest.raises(FileNotFoundError, match="fold_indices.txt' not found"):
        STL10Binary(stl10.root, split="train", fold=0)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("0 1\n" * 9, "has 9 lines, expected 10 lines"),
        ("0 1\n" * 4 + "0 x 2\n" + "0 1\n" * 5, "line 5: invalid literal for int()"),
        ("0 1\n" * 9 + "0 7\n", "line 10 has index 7, expected 0-based indices in 0..4"),
        ("0 1\n" * 2 + "\n" + "0 1\n" * 7, "line 3 is empty"),
    ],
)
def test_malformed_fold_file(stl10: FakeSTL10, content: str, expected: str) -> None:
    (stl10.folder / "fold_indices.txt").write_text(content)
    with pytest.raises(DatasetFormatError) as info:
        STL10Binary(stl10.root, split="train", fold=0)
    assert "fold_indices.txt" in str(info.value) and expected in str(info.value)


def test_malformed_class_names(stl10: FakeSTL10) -> None:
    (stl10.folder / "class_names.txt").write_text("airplane\nbird\n")
    with pytest.raises(DatasetFormatError, match="class_names.txt' has 2 non-empty lines"):
        STL10Binary(stl10.root, split="test")


def test_missing_file_hint_names_the_parent_of_stl10_binary(stl10: FakeSTL10) -> None:
    (stl10.folder / "unlabeled_X.bin").unlink()
    with pytest.raises(FileNotFoundError) as info:
        STL10Binary(stl10.folder, split="train+unlabeled")
    message = str(info.value)
    assert "unlabeled_X.bin' not found (needed for split 'train+unlabeled')" in message
    assert f"extract it under '{stl10.root}'" in message
