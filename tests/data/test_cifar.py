from __future__ import annotations

import pickle
import urllib.error
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from lightly_amix.data import (
    CIFAR10,
    CIFAR100,
    DatasetFormatError,
    build_dataset,
    build_pretrain_dataset,
    dataset_spec,
)
from lightly_amix.data import cifar as cifar_module
from tests.fakes import (
    CIFAR10_CLASS_NAMES,
    CIFAR100_CLASS_NAMES,
    FakeCIFAR,
    cifar_python2_batch,
    cifar_rows,
    write_cifar10,
    write_cifar100,
    write_cifar_pickle,
)


@pytest.fixture
def cifar10(tmp_path: Path) -> FakeCIFAR:
    return write_cifar10(tmp_path / "cifar")


@pytest.fixture
def cifar100(tmp_path: Path) -> FakeCIFAR:
    return write_cifar100(tmp_path / "cifar")


def load(path: Path) -> dict[bytes, Any]:
    with open(path, "rb") as file:
        return pickle.load(file, encoding="bytes")


@pytest.mark.parametrize("split", ["train", "test"])
def test_cifar10_round_trip(cifar10: FakeCIFAR, split: str) -> None:
    dataset = CIFAR10(cifar10.root, split=split)
    expected = cifar10.images[split]
    assert len(dataset) == len(expected) == (10 if split == "train" else 3)
    assert dataset.classes == CIFAR10_CLASS_NAMES
    assert dataset.root == cifar10.folder
    for index in range(len(dataset)):
        image, label = dataset[index]
        assert isinstance(image, Image.Image) and image.mode == "RGB" and image.size == (32, 32)
        np.testing.assert_array_equal(np.asarray(image), expected[index])
        np.testing.assert_array_equal(dataset.get_uint8(index), expected[index])
        assert isinstance(label, int) and label == cifar10.labels[split][index]
    assert dataset.labels.dtype == np.int64
    np.testing.assert_array_equal(dataset.labels, cifar10.labels[split])


def test_cifar10_train_is_the_five_batches_in_order(cifar10: FakeCIFAR) -> None:
    dataset = CIFAR10(cifar10.root, split="train")
    for k in range(5):
        batch = load(cifar10.folder / f"data_batch_{k + 1}")
        np.testing.assert_array_equal(dataset.labels[2 * k : 2 * k + 2], batch[b"labels"])
    assert dataset.labels[0] == 0 and dataset.labels[1] == 9  # Both ends of the range.


def test_plane_order_is_r_g_b_row_major(cifar10: FakeCIFAR) -> None:
    # Independent of the fixture's transpose: data[i, c * 1024 + y * 32 + x] is pixel [y, x, c].
    data = load(cifar10.folder / "test_batch")[b"data"]
    dataset = CIFAR10(cifar10.root, split="test")
    for i, c, y, x in [(0, 0, 0, 1), (1, 1, 5, 2), (2, 2, 31, 0), (0, 2, 3, 30)]:
        assert data[i, c * 1024 + y * 32 + x] == dataset.get_uint8(i)[y, x, c]
        assert data[i, c * 1024 + y * 32 + x] == np.asarray(dataset[i][0])[y, x, c]


def test_get_uint8_is_a_contiguous_copy(cifar10: FakeCIFAR) -> None:
    dataset = CIFAR10(cifar10.root, split="test")
    pixels = dataset.get_uint8(-1)
    assert pixels.shape == (32, 32, 3) and pixels.dtype == np.uint8 and pixels.flags.c_contiguous
    np.testing.assert_array_equal(pixels, cifar10.images["test"][-1])
    pixels[:] = 0  # Must not write through to the data set.
    np.testing.assert_array_equal(dataset.get_uint8(2), cifar10.images["test"][2])


@pytest.mark.parametrize("split", ["train", "test"])
def test_cifar100_round_trip_with_fine_labels(cifar100: FakeCIFAR, split: str) -> None:
    dataset = CIFAR100(cifar100.root, split=split)
    assert len(dataset) == len(cifar100.images[split])
    assert dataset.classes == CIFAR100_CLASS_NAMES and len(dataset.classes) == 100
    for index in range(len(dataset)):
        image, label = dataset[index]
        np.testing.assert_array_equal(np.asarray(image), cifar100.images[split][index])
        np.testing.assert_array_equal(dataset.get_uint8(index), cifar100.images[split][index])
        assert label == cifar100.labels[split][index]
    np.testing.assert_array_equal(dataset.labels, cifar100.labels[split])
    assert dataset.labels[0] == 0 and dataset.labels[1] == 99  # Fine, not coarse, labels.


def test_root_may_be_the_folder_itself(cifar10: FakeCIFAR, cifar100: FakeCIFAR) -> None:
    assert len(CIFAR10(cifar10.folder, split="test")) == 3
    assert len(CIFAR100(cifar100.folder, split="test")) == 3
    # Both archives extracted into the same root work side by side.
    assert len(CIFAR10(cifar10.root, split="test")) == len(CIFAR100(cifar100.root, "test"))


def test_transform_is_applied(cifar10: FakeCIFAR) -> None:
    dataset = CIFAR10(cifar10.root, split="test", transform=lambda image: [image.size] * 2)
    assert dataset[1] == ([(32, 32), (32, 32)], int(cifar10.labels["test"][1]))


def test_registry(cifar10: FakeCIFAR, cifar100: FakeCIFAR) -> None:
    for name, cls, num_classes in (("cifar10", CIFAR10, 10), ("cifar100", CIFAR100, 100)):
        spec = dataset_spec(name)
        assert spec.splits == ("train", "test") and spec.eval_splits == ("train", "test")
        assert spec.image_size == 32 and spec.downloadable
        assert spec.uint8_arrays and spec.fixed_size and not spec.supports_folds
        dataset = build_dataset(name, cifar10.root, "test")
        assert isinstance(dataset, cls) and len(dataset.classes) == num_classes
    images, augment = build_pretrain_dataset("cifar10", cifar10.root, "train", 32, "device")
    pixels, label = images[3]
    assert tuple(pixels.shape) == (1, 3, 32, 32) and augment is not None
    np.testing.assert_array_equal(pixels[0].permute(1, 2, 0).numpy(), cifar10.images["train"][3])
    assert label == cifar10.labels["train"][3]


# --------------------------------------------------------------------------- download


def test_download_is_requested_when_files_are_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []

    def fake_cifar10(root: str, train: bool, download: bool) -> None:
        calls.append((root, train, download))
        write_cifar10(Path(root))  # Like the archive: creates root/cifar-10-batches-py.

    monkeypatch.setattr(cifar_module, "TorchvisionCIFAR10", fake_cifar10)
    dataset = CIFAR10(tmp_path / "new", split="test", download=True)
    assert len(dataset) == 3
    assert calls == [(str(tmp_path / "new"), True, True)]


def test_download_into_the_parent_when_root_is_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []

    def fake_cifar100(root: str, train: bool, download: bool) -> None:
        calls.append(root)
        write_cifar100(Path(root))

    monkeypatch.setattr(cifar_module, "TorchvisionCIFAR100", fake_cifar100)
    dataset = CIFAR100(tmp_path / "cifar-100-python", split="train", download=True)
    assert len(dataset) == 4 and calls == [str(tmp_path)]


def test_download_is_not_called_when_files_exist(
    cifar10: FakeCIFAR, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("must not download")

    monkeypatch.setattr(cifar_module, "TorchvisionCIFAR10", fail)
    assert len(CIFAR10(cifar10.root, split="train", download=True)) == 10


def test_download_failure_says_how_to_get_the_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(cifar_module, "TorchvisionCIFAR10", offline)
    with pytest.raises(RuntimeError) as info:
        CIFAR10(tmp_path, split="train", download=True)
    message = str(info.value)
    assert "Downloading CIFAR-10 with torchvision" in message and "failed" in message
    assert "Name or service not known" in message and "cifar-10-python.tar.gz" in message
    assert f"extract it under '{tmp_path}'" in message
    assert isinstance(info.value.__cause__, urllib.error.URLError)


# --------------------------------------------------------------------------- bad input


def test_unknown_split(cifar10: FakeCIFAR) -> None:
    with pytest.raises(ValueError) as info:
        CIFAR10(cifar10.root, split="val")
    assert str(info.value) == "Unknown split 'val' for dataset 'cifar10'; valid splits: train, test"


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        CIFAR100(tmp_path, split="train")
    message = str(info.value)
    assert f"CIFAR-100 folder '{tmp_path / 'cifar-100-python'}' not found" in message
    assert "--download" in message and "cifar-100-python.tar.gz" in message
    assert "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz" in message
    assert f"extract it under '{tmp_path}'" in message


def test_missing_file(cifar10: FakeCIFAR) -> None:
    (cifar10.folder / "data_batch_3").unlink()
    assert len(CIFAR10(cifar10.root, split="test")) == 3  # Test does not need it.
    with pytest.raises(FileNotFoundError) as info:
        CIFAR10(cifar10.root, split="train")
    message = str(info.value)
    assert f"'{cifar10.folder / 'data_batch_3'}' not found (needed for split 'train')" in message
    assert "--download" in message


def test_missing_meta_file(cifar10: FakeCIFAR) -> None:
    (cifar10.folder / "batches.meta").unlink()
    with pytest.raises(FileNotFoundError, match="batches.meta' not found"):
        CIFAR10(cifar10.root, split="test")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"not a pickle at all", "Cannot unpickle CIFAR-10 file"),
        (None, "Cannot unpickle CIFAR-10 file"),  # Truncated: see below.
        ([1, 2, 3], "holds a pickled list, expected a dict with bytes keys"),
    ],
)
def test_not_a_pickled_dict(cifar10: FakeCIFAR, content: object, expected: str) -> None:
    path = cifar10.folder / "test_batch"
    if content is None:
        path.write_bytes(path.read_bytes()[:100])
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        write_cifar_pickle(path, content)
    with pytest.raises(DatasetFormatError) as info:
        CIFAR10(cifar10.root, split="test")
    message = str(info.value)
    assert str(path) in message and expected in message and "Re-extract" in message


def test_wrong_keys(cifar10: FakeCIFAR) -> None:
    path = cifar10.folder / "test_batch"
    batch = load(path)
    del batch[b"labels"]
    write_cifar_pickle(path, batch)
    with pytest.raises(DatasetFormatError) as info:
        CIFAR10(cifar10.root, split="test")
    message = str(info.value)
    assert f"'{path}' has no key(s) b'labels'" in message
    assert "expected a dict with bytes keys b'data', b'labels'" in message
    assert "found keys: b'batch_label', b'data', b'filenames'" in message


def test_cifar100_file_given_as_cifar10(cifar10: FakeCIFAR, tmp_path: Path) -> None:
    other = write_cifar100(tmp_path / "other")
    (cifar10.folder / "test_batch").write_bytes((other.folder / "test").read_bytes())
    with pytest.raises(DatasetFormatError) as info:
        CIFAR10(cifar10.root, split="test")
    assert "It looks like a CIFAR-100 file: use dataset 'cifar100'" in str(info.value)


def test_string_keys_are_rejected(cifar100: FakeCIFAR) -> None:
    # Unpickled without encoding="bytes" and re-pickled: str keys instead of bytes keys.
    path = cifar100.folder / "test"
    write_cifar_pickle(path, {key.decode(): value for key, value in load(path).items()})
    with pytest.raises(DatasetFormatError, match="has no key\\(s\\) b'data', b'fine_labels'"):
        CIFAR100(cifar100.root, split="test")


@pytest.mark.parametrize(
    ("data", "described"),
    [
        (np.zeros((3, 3000), dtype=np.uint8), "an array of dtype uint8 and shape (3, 3000)"),
        (np.zeros((3, 3072), dtype=np.int64), "an array of dtype int64 and shape (3, 3072)"),
        (
            np.zeros((3, 3, 32, 32), dtype=np.uint8),
            "an array of dtype uint8 and shape (3, 3, 32, 32)",
        ),
        ([[0] * 3072] * 3, "a list"),
    ],
)
def test_data_array_of_the_wrong_size_or_type(
    cifar10: FakeCIFAR, data: object, described: str
) -> None:
    path = cifar10.folder / "test_batch"
    batch = load(path)
    batch[b"data"] = data
    write_cifar_pickle(path, batch)
    with pytest.raises(DatasetFormatError) as info:
        CIFAR10(cifar10.root, split="test")
    message = str(info.value)
    assert f"'{path}': b'data' is {described}" in message
    assert "expected a uint8 array of shape (N, 3072)" in message


def test_label_count_differs_from_image_count(cifar10: FakeCIFAR) -> None:
    path = cifar10.folder / "data_batch_2"
    batch = load(path)
    batch[b"labels"] = batch[b"labels"][:1]
    write_cifar_pickle(path, batch)
    with pytest.raises(DatasetFormatError, match="data_batch_2' has 1 labels .* but 2 images"):
        CIFAR10(cifar10.root, split="train")


@pytest.mark.parametrize("bad_value", [-1, 100, 1000])
def test_label_out_of_range(cifar100: FakeCIFAR, bad_value: int) -> None:
    path = cifar100.folder / "train"
    batch = load(path)
    batch[b"fine_labels"][2] = bad_value
    write_cifar_pickle(path, batch)
    with pytest.raises(DatasetFormatError) as info:
        CIFAR100(cifar100.root, split="train")
    message = str(info.value)
    assert f"has label {bad_value} at index 2 (b'fine_labels')" in message
    assert "expected labels in 0..99" in message


@pytest.mark.parametrize("labels", [["a", "b", "c"], [[1], [2, 3], [4]], 7, [0.0, 1.0, 2.0]])
def test_labels_not_a_list_of_integers(cifar10: FakeCIFAR, labels: object) -> None:
    path = cifar10.folder / "test_batch"
    batch = load(path)
    batch[b"labels"] = labels
    write_cifar_pickle(path, batch)
    with pytest.raises(DatasetFormatError, match="b'labels' is not a flat list of integers"):
        CIFAR10(cifar10.root, split="test")


def test_wrong_class_count(cifar10: FakeCIFAR) -> None:
    path = cifar10.folder / "batches.meta"
    meta = load(path)
    meta[b"label_names"] = meta[b"label_names"][:9]
    write_cifar_pickle(path, meta)
    with pytest.raises(DatasetFormatError) as info:
        CIFAR10(cifar10.root, split="test")
    assert f"'{path}' lists 9 class names (b'label_names'), expected 10" in str(info.value)


def test_meta_without_fine_label_names(cifar100: FakeCIFAR) -> None:
    path = cifar100.folder / "meta"
    meta = load(path)
    del meta[b"fine_label_names"]
    write_cifar_pickle(path, meta)
    with pytest.raises(DatasetFormatError) as info:
        CIFAR100(cifar100.root, split="test")
    message = str(info.value)
    assert "has no key(s) b'fine_label_names'" in message and "b'coarse_label_names'" in message


def test_class_names_not_strings(cifar10: FakeCIFAR) -> None:
    path = cifar10.folder / "batches.meta"
    meta = load(path)
    meta[b"label_names"] = list(range(10))
    write_cifar_pickle(path, meta)
    with pytest.raises(DatasetFormatError, match="b'label_names' is not a list of strings"):
        CIFAR10(cifar10.root, split="test")


def test_rows_helper_matches_the_documented_layout() -> None:
    # The fake's writer itself: R plane first, row-major.
    images = np.arange(2 * 32 * 32 * 3, dtype=np.int64).reshape(2, 32, 32, 3) % 251
    rows = cifar_rows(images.astype(np.uint8))
    assert rows.shape == (2, 3072)
    assert rows[1, 1024 + 32 * 4 + 7] == images[1, 4, 7, 1]


def test_reads_a_python2_pickle_like_the_originals(cifar10: FakeCIFAR, cifar100: FakeCIFAR) -> None:
    images = cifar10.images["test"]
    labels = [int(v) for v in cifar10.labels["test"]]
    (cifar10.folder / "test_batch").write_bytes(cifar_python2_batch(images, labels, b"labels"))
    dataset = CIFAR10(cifar10.root, split="test")
    for index in range(3):
        np.testing.assert_array_equal(dataset.get_uint8(index), images[index])
    assert dataset.labels.tolist() == labels
    fine = [0, 99, 42]
    (cifar100.folder / "test").write_bytes(cifar_python2_batch(images, fine, b"fine_labels"))
    assert CIFAR100(cifar100.root, split="test").labels.tolist() == fine
