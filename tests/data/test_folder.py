from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, UnidentifiedImageError

from lightly_amix.data import (
    DatasetFormatError,
    ImageFolderDataset,
    folder_dataset,
    imagenet_dataset,
    rgb_loader,
)
from tests.fakes import FakeImageFolder


def test_pixels_labels_and_classes(image_folder: FakeImageFolder) -> None:
    dataset = ImageFolderDataset(image_folder.root / "train")
    assert dataset.classes == ["cat", "dog"]
    assert len(dataset) == 4
    for index, (path, name, expected) in enumerate(image_folder.images["train"]):
        image, label = dataset[index]
        assert isinstance(image, Image.Image) and image.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(image), expected)  # PNG is lossless.
        assert label == dataset.classes.index(name)
        assert dataset.samples[index][0] == str(path)
    assert dataset.labels.dtype == np.int64
    assert dataset.labels.tolist() == [0, 0, 1, 1]


def test_greyscale_image_is_rgb(image_folder: FakeImageFolder) -> None:
    path, _, expected = image_folder.images["val"][3]
    with Image.open(path) as raw:
        assert raw.mode == "L"
    image = rgb_loader(path)
    assert image.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(image), expected)


def test_transform_and_pickle(image_folder: FakeImageFolder) -> None:
    dataset = ImageFolderDataset(image_folder.root / "val", transform=lambda im: im.size)
    assert dataset[0] == ((8, 8), 0)
    copy = pickle.loads(pickle.dumps(ImageFolderDataset(image_folder.root / "val")))
    assert copy[3][1] == 1 and copy[3][0].mode == "RGB"


def test_folder_dataset_uses_split_folder(image_folder: FakeImageFolder) -> None:
    dataset = folder_dataset(image_folder.root, "val")
    assert Path(dataset.root) == image_folder.root / "val"
    assert dataset.classes == ["cat", "dog"]


def test_folder_dataset_without_split_folders_uses_root(image_folder: FakeImageFolder) -> None:
    dataset = folder_dataset(image_folder.root / "train", "train")
    assert Path(dataset.root) == image_folder.root / "train"
    assert len(dataset) == 4


def test_imagenet_layout(image_folder: FakeImageFolder) -> None:
    dataset = imagenet_dataset(image_folder.root, "val")
    assert len(dataset) == 4 and dataset.classes == ["cat", "dog"]


# --------------------------------------------------------------------------- bad input


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        ImageFolderDataset(tmp_path / "nope")
    message = str(info.value)
    assert f"Image folder '{tmp_path / 'nope'}' does not exist" in message
    assert f"'{tmp_path / 'nope'}/<class>/<image>'" in message


def test_folder_without_class_folders(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        ImageFolderDataset(tmp_path)
    message = str(info.value)
    assert f"Invalid image folder '{tmp_path}'" in message
    assert "Couldn't find any class folder" in message and "<class>/<image>" in message


def test_empty_class_folder(image_folder: FakeImageFolder) -> None:
    (image_folder.root / "train" / "zebra").mkdir()
    with pytest.raises(FileNotFoundError) as info:
        ImageFolderDataset(image_folder.root / "train")
    message = str(info.value)
    assert "Found no valid file for the classes zebra" in message
    assert "one sub-folder per class" in message


def test_images_without_class_folders(image_folder: FakeImageFolder, tmp_path: Path) -> None:
    flat = tmp_path / "flat"
    flat.mkdir()
    shutil.copy(image_folder.images["train"][0][0], flat / "a.png")
    with pytest.raises(FileNotFoundError, match="contains images \\(e.g. 'a.png'\\) but no class"):
        ImageFolderDataset(flat)


def test_imagenet_flat_val_folder(image_folder: FakeImageFolder, tmp_path: Path) -> None:
    val = tmp_path / "imagenet" / "val"
    val.mkdir(parents=True)
    shutil.copy(image_folder.images["train"][0][0], val / "ILSVRC2012_val_00000001.JPEG")
    with pytest.raises(FileNotFoundError) as info:
        imagenet_dataset(tmp_path / "imagenet", "val")
    message = str(info.value)
    assert f"'{val}' contains images" in message and "no class sub-folders" in message
    assert "'<root>/val/<wnid>/*.JPEG'" in message
    assert "must be sorted into one folder per class" in message and "valprep.sh" in message


def test_imagenet_missing_split(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        imagenet_dataset(tmp_path, "train")
    message = str(info.value)
    assert f"'{tmp_path / 'train'}' does not exist" in message
    assert "'<root>/train/<wnid>/*.JPEG'" in message


def test_imagenet_unknown_split(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Unknown split 'test' for dataset 'imagenet'.*train, val"):
        imagenet_dataset(tmp_path, "test")


def test_folder_missing_split_next_to_other_splits(image_folder: FakeImageFolder) -> None:
    with pytest.raises(FileNotFoundError) as info:
        folder_dataset(image_folder.root, "test")
    message = str(info.value)
    assert f"'{image_folder.root / 'test'}' not found" in message
    assert "has the split folder(s) train, val" in message


def test_folder_unknown_split(image_folder: FakeImageFolder) -> None:
    with pytest.raises(ValueError, match="valid splits: train, val, test"):
        folder_dataset(image_folder.root, "unlabeled")


def test_corrupt_image_raises_with_path(image_folder: FakeImageFolder) -> None:
    path = image_folder.images["train"][2][0]
    path.write_bytes(b"\x89PNG garbage")
    dataset = ImageFolderDataset(image_folder.root / "train")
    with pytest.raises(DatasetFormatError) as info:
        dataset[2]
    message = str(info.value)
    assert f"Cannot decode image '{path}'" in message
    assert "corrupt, truncated or not an image" in message and "re-extract" in message
    assert isinstance(info.value.__cause__, UnidentifiedImageError)


def test_loader_keeps_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        rgb_loader(tmp_path / "missing.png")
