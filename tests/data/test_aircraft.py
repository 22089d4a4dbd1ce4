from __future__ import annotations

import urllib.error
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lightly_amix.data import (
    AIRCRAFT_BANNER_HEIGHT,
    DatasetFormatError,
    FGVCAircraft,
    build_dataset,
    dataset_spec,
)
from lightly_amix.data import aircraft as aircraft_module
from tests.fakes import FakeAircraft, aircraft_variant_names, write_aircraft


@pytest.fixture
def aircraft(tmp_path: Path) -> FakeAircraft:
    return write_aircraft(tmp_path / "aircraft")


def decoded(path: Path) -> np.ndarray:
    """What any decoder must return for the fake's JPEG, as (H, W, 3) RGB."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


@pytest.mark.parametrize("split", ["trainval", "train", "val", "test"])
def test_split_round_trip(aircraft: FakeAircraft, split: str) -> None:
    dataset = FGVCAircraft(aircraft.root, split=split)
    expected = aircraft.samples[split]
    assert len(dataset) == len(expected)
    assert dataset.root == aircraft.folder
    assert dataset.classes == aircraft_variant_names() and len(dataset.classes) == 100
    assert [Path(path) for path, _ in dataset.samples] == [path for path, _ in expected]
    for index, (path, label) in enumerate(expected):
        image, got_label = dataset[index]
        assert isinstance(image, Image.Image) and image.mode == "RGB"
        assert image.size == (44, 50)  # Banner kept by default.
        np.testing.assert_array_equal(np.asarray(image), decoded(path))
        assert isinstance(got_label, int) and got_label == label
    assert dataset.labels.dtype == np.int64
    np.testing.assert_array_equal(dataset.labels, [label for _, label in expected])


def test_train_is_not_an_alias_of_trainval(aircraft: FakeAircraft) -> None:
    train = FGVCAircraft(aircraft.root, split="train")
    val = FGVCAircraft(aircraft.root, split="val")
    trainval = FGVCAircraft(aircraft.root, split="trainval")
    assert (len(train), len(val), len(trainval)) == (3, 2, 5)
    assert trainval.samples == train.samples + val.samples


def test_ids_keep_leading_zeros_and_names_keep_spaces(aircraft: FakeAircraft) -> None:
    dataset = FGVCAircraft(aircraft.root, split="train")
    assert [Path(path).name for path, _ in dataset.samples] == [
        "0034309.jpg",
        "1025794.jpg",
        "0056978.jpg",
    ]
    assert [dataset.classes[label] for label in dataset.labels] == [
        "707-320",
        "Boeing 717",
        "Variant 99",
    ]
    assert dataset.labels.tolist() == [0, 2, 99]


def test_crop_banner(aircraft: FakeAircraft) -> None:
    dataset = FGVCAircraft(
        aircraft.root, split="test", crop_banner=True, transform=lambda im: np.asarray(im)
    )
    pixels, label = dataset[1]
    path = aircraft.samples["test"][1][0]
    assert AIRCRAFT_BANNER_HEIGHT == 20 and pixels.shape == (30, 44, 3)
    np.testing.assert_array_equal(pixels, decoded(path)[:-20])  # The bottom 20 rows are cut.
    assert label == aircraft.classes.index("Global Express")


def test_crop_banner_of_a_too_small_image(aircraft: FakeAircraft) -> None:
    path = aircraft.samples["test"][0][0]
    Image.new("RGB", (30, 20)).save(path, "JPEG")
    dataset = FGVCAircraft(aircraft.root, split="test", crop_banner=True)
    with pytest.raises(DatasetFormatError) as info:
        dataset[0]
    message = str(info.value)
    assert f"'{path}' is only 20 pixels high" in message and "crop_banner=True" in message


def test_root_may_be_the_folder_itself(aircraft: FakeAircraft) -> None:
    dataset = FGVCAircraft(aircraft.folder, split="val")
    assert len(dataset) == 2 and dataset.root == aircraft.folder


def test_registry(aircraft: FakeAircraft) -> None:
    spec = dataset_spec("aircraft")
    assert spec.splits == ("trainval", "train", "val", "test")
    assert spec.eval_splits == ("trainval", "test")
    assert spec.image_size == 224 and spec.downloadable
    assert not spec.fixed_size and not spec.uint8_arrays
    dataset = build_dataset("aircraft", aircraft.root, "trainval")
    assert isinstance(dataset, FGVCAircraft) and len(dataset) == 5
    assert not dataset.crop_banner
    assert dataset[0][0].size == (44, 50)


# --------------------------------------------------------------------------- download


def test_download_is_requested_when_files_are_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []

    def fake_torchvision(root: str, split: str, download: bool) -> None:
        calls.append((root, split, download))
        write_aircraft(Path(root))  # Like the archive: creates root/fgvc-aircraft-2013b.

    monkeypatch.setattr(aircraft_module, "TorchvisionFGVCAircraft", fake_torchvision)
    dataset = FGVCAircraft(tmp_path / "new", split="test", download=True)
    assert len(dataset) == 2
    assert calls == [(str(tmp_path / "new"), "test", True)]


def test_download_is_not_called_when_files_exist(
    aircraft: FakeAircraft, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("must not download")

    monkeypatch.setattr(aircraft_module, "TorchvisionFGVCAircraft", fail)
    assert len(FGVCAircraft(aircraft.folder, split="train", download=True)) == 3


def test_download_failure_says_how_to_get_the_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(aircraft_module, "TorchvisionFGVCAircraft", offline)
    with pytest.raises(RuntimeError) as info:
        FGVCAircraft(tmp_path / "fgvc-aircraft-2013b", split="test", download=True)
    message = str(info.value)
    assert "Downloading FGVC-Aircraft with torchvision" in message and "failed" in message
    assert "Name or service not known" in message and "fgvc-aircraft-2013b.tar.gz" in message
    assert f"extract it under '{tmp_path}'" in message  # The parent of the named folder.
    assert isinstance(info.value.__cause__, urllib.error.URLError)


# --------------------------------------------------------------------------- bad input


def test_unknown_split(aircraft: FakeAircraft) -> None:
    with pytest.raises(ValueError) as info:
        FGVCAircraft(aircraft.root, split="validation")
    assert str(info.value) == (
        "Unknown split 'validation' for dataset 'aircraft'; valid splits: "
        "trainval, train, val, test"
    )


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        FGVCAircraft(tmp_path, split="test")
    message = str(info.value)
    assert f"FGVC-Aircraft folder '{tmp_path / 'fgvc-aircraft-2013b'}' not found" in message
    assert "--download" in message and "fgvc-aircraft-2013b.tar.gz" in message
    assert "robots.ox.ac.uk" in message and f"extract it under '{tmp_path}'" in message


@pytest.mark.parametrize("name", ["variants.txt", "images_variant_val.txt"])
def test_missing_file(aircraft: FakeAircraft, name: str) -> None:
    (aircraft.folder / "data" / name).unlink()
    with pytest.raises(FileNotFoundError) as info:
        FGVCAircraft(aircraft.root, split="val")
    message = str(info.value)
    assert f"'{aircraft.folder / 'data' / name}' not found (needed for split 'val')" in message
    assert "--download" in message


def test_missing_image_folder(aircraft: FakeAircraft) -> None:
    (aircraft.folder / "data" / "images").rename(aircraft.folder / "data" / "pictures")
    with pytest.raises(FileNotFoundError, match="image folder '.*images' not found"):
        FGVCAircraft(aircraft.root, split="test")


def test_missing_image(aircraft: FakeAircraft) -> None:
    path = aircraft.folder / "data" / "images" / "1514522.jpg"
    path.unlink()
    assert len(FGVCAircraft(aircraft.root, split="train")) == 3  # Not in train.
    with pytest.raises(FileNotFoundError) as info:
        FGVCAircraft(aircraft.root, split="val")
    message = str(info.value)
    assert f"FGVC-Aircraft image '{path}' not found (listed in" in message
    assert "images_variant_val.txt', line 2)" in message


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("0062765 F-16A/B\n1514522\n", "line 2: '1514522' does not parse, expected '<image id>"),
        ("0062765 F-16A/B\n1514522 747-400\n", "line 2: variant '747-400' of image 1514522 is"),
        ("0062765 F-16A/B\n0062765 707-320\n", "line 2: image 0062765 is listed twice"),
        ("0062765 f-16a/b\n", "line 1: variant 'f-16a/b' of image 0062765 is not listed"),
        ("\n\n", "lists no images, expected lines"),
    ],
)
def test_malformed_split_file(aircraft: FakeAircraft, content: str, expected: str) -> None:
    path = aircraft.folder / "data" / "images_variant_val.txt"
    path.write_text(content)
    with pytest.raises(DatasetFormatError) as info:
        FGVCAircraft(aircraft.root, split="val")
    message = str(info.value)
    assert f"FGVC-Aircraft file '{path}'" in message and expected in message
    assert "Re-extract fgvc-aircraft-2013b.tar.gz" in message


def test_wrong_class_count(aircraft: FakeAircraft) -> None:
    path = aircraft.folder / "data" / "variants.txt"
    path.write_text("\n".join(aircraft.classes[:70]) + "\n")
    with pytest.raises(DatasetFormatError) as info:
        FGVCAircraft(aircraft.root, split="test")
    assert f"'{path}' has 70 non-empty lines, expected 100 variant names" in str(info.value)


def test_duplicate_variant(aircraft: FakeAircraft) -> None:
    names = list(aircraft.classes)
    names[50] = "Boeing 717"
    (aircraft.folder / "data" / "variants.txt").write_text("\n".join(names) + "\n")
    with pytest.raises(DatasetFormatError, match="variant 51: 'Boeing 717' is listed twice"):
        FGVCAircraft(aircraft.root, split="test")
