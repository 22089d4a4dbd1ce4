from __future__ import annotations

import gzip
import urllib.error
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from lightly_amix.data import FASHION_MNIST_CLASSES, DatasetFormatError, FashionMNIST
from lightly_amix.data import fashion_mnist as fashion_module
from lightly_amix.data.fashion_mnist import IDX_UINT8_1D_MAGIC, read_idx_ubyte
from tests.fakes import FakeFashionMNIST, idx_bytes, write_idx


@pytest.mark.parametrize("split", ["train", "test"])
def test_round_trip(fashion_mnist: FakeFashionMNIST, split: str) -> None:
    dataset = FashionMNIST(fashion_mnist.root, split=split)
    images, labels = fashion_mnist.images[split], fashion_mnist.labels[split]
    assert len(dataset) == len(images)
    for index in range(len(dataset)):
        image, label = dataset[index]
        assert image.mode == "RGB" and image.size == (28, 28)
        pixels = np.asarray(image)
        for channel in range(3):
            np.testing.assert_array_equal(pixels[:, :, channel], images[index])
        assert label == int(labels[index]) and isinstance(label, int)
    assert dataset.labels.dtype == np.int64
    np.testing.assert_array_equal(dataset.labels, labels)
    assert dataset.classes == list(FASHION_MNIST_CLASSES) and len(dataset.classes) == 10
    assert dataset.classes[0] == "T-shirt/top" and dataset.classes[9] == "Ankle boot"


def test_uncompressed_files_in_torchvision_layout(
    tmp_path: Path, fashion_mnist_writer: Callable[..., FakeFashionMNIST]
) -> None:
    fake = fashion_mnist_writer(tmp_path, gz=False, subfolder="FashionMNIST/raw")
    dataset = FashionMNIST(tmp_path, split="test")
    assert dataset.root == tmp_path / "FashionMNIST" / "raw"
    np.testing.assert_array_equal(dataset.images, fake.images["test"])


def test_transform_is_applied(fashion_mnist: FakeFashionMNIST) -> None:
    dataset = FashionMNIST(fashion_mnist.root, split="train", transform=lambda im: im.mode)
    assert dataset[1] == ("RGB", 9)


def test_read_idx_ubyte(fashion_mnist: FakeFashionMNIST) -> None:
    labels = read_idx_ubyte(fashion_mnist.path("test", 1), IDX_UINT8_1D_MAGIC)
    assert labels.shape == (4,) and labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, fashion_mnist.labels["test"])


def test_download_is_not_called_when_files_exist(
    fashion_mnist: FakeFashionMNIST, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("must not download")

    monkeypatch.setattr(fashion_module, "TorchvisionFashionMNIST", fail)
    assert len(FashionMNIST(fashion_mnist.root, download=True)) == 6


def test_download_reads_torchvision_raw_folder(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fashion_mnist_writer: Callable[..., FakeFashionMNIST],
) -> None:
    def fake_torchvision(root: str, train: bool, download: bool) -> None:
        assert download
        # torchvision keeps the .gz files and extracts them next to them.
        fashion_mnist_writer(Path(root), gz=True, subfolder="FashionMNIST/raw")
        fashion_mnist_writer(Path(root), gz=False, subfolder="FashionMNIST/raw")

    monkeypatch.setattr(fashion_module, "TorchvisionFashionMNIST", fake_torchvision)
    dataset = FashionMNIST(tmp_path, split="test", download=True)
    assert len(dataset) == 4
    assert dataset.root == tmp_path / "FashionMNIST" / "raw"


def test_download_failure_says_how_to_get_the_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz") from (
            urllib.error.URLError("Name or service not known")
        )

    monkeypatch.setattr(fashion_module, "TorchvisionFashionMNIST", offline)
    with pytest.raises(RuntimeError) as info:
        FashionMNIST(tmp_path, download=True)
    message = str(info.value)
    assert "Downloading Fashion-MNIST with torchvision" in message and "failed" in message
    assert "dataset-fashion-mnist" in message and "/usr/share/datasets/fashion-mnist/" in message
    assert isinstance(info.value.__cause__, RuntimeError)


# --------------------------------------------------------------------------- bad input


def test_unknown_split(fashion_mnist: FakeFashionMNIST) -> None:
    with pytest.raises(ValueError, match="Unknown split 'val' .*valid splits: train, test"):
        FashionMNIST(fashion_mnist.root, split="val")


def test_missing_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        FashionMNIST(tmp_path, split="train")
    message = str(info.value)
    assert "'train-images-idx3-ubyte' (or 'train-images-idx3-ubyte.gz')" in message
    assert "'train-labels-idx1-ubyte' (or 'train-labels-idx1-ubyte.gz')" in message
    assert f"'{tmp_path}'" in message and f"'{tmp_path / 'FashionMNIST' / 'raw'}'" in message
    assert "Debian package dataset-fashion-mnist" in message
    assert "/usr/share/datasets/fashion-mnist/" in message
    assert "--download" in message and "torchvision's FashionMNIST downloader" in message


def test_missing_label_file_is_named(fashion_mnist: FakeFashionMNIST) -> None:
    fashion_mnist.path("test", 1).unlink()
    with pytest.raises(FileNotFoundError) as info:
        FashionMNIST(fashion_mnist.root, split="test")
    message = str(info.value)
    assert "test file 't10k-labels-idx1-ubyte' (or 't10k-labels-idx1-ubyte.gz')" in message
    assert "t10k-images" not in message


def test_wrong_magic_number(fashion_mnist: FakeFashionMNIST) -> None:
    # A labels file where the images file should be.
    write_idx(fashion_mnist.path("train", 0), fashion_mnist.labels["train"])
    with pytest.raises(DatasetFormatError) as info:
        FashionMNIST(fashion_mnist.root, split="train")
    message = str(info.value)
    assert "train-images-idx3-ubyte.gz' has magic number 0x00000801" in message
    assert "expected 0x00000803 (uint8 images" in message
    assert "not a Fashion-MNIST images file" in message


def test_file_shorter_than_magic(fashion_mnist: FakeFashionMNIST) -> None:
    fashion_mnist.path("test", 1).write_bytes(gzip.compress(b"\x00\x00"))
    with pytest.raises(DatasetFormatError, match="labels-idx1-ubyte.gz' is only 2 bytes long"):
        FashionMNIST(fashion_mnist.root, split="test")


def test_header_too_short(fashion_mnist: FakeFashionMNIST) -> None:
    fashion_mnist.path("test", 0).write_bytes(gzip.compress(b"\x00\x00\x08\x03\x00\x00\x00\x04"))
    with pytest.raises(DatasetFormatError, match="is 8 bytes long, too short for its 16-byte"):
        FashionMNIST(fashion_mnist.root, split="test")


def test_wrong_image_dimensions(fashion_mnist: FakeFashionMNIST) -> None:
    write_idx(fashion_mnist.path("train", 0), np.zeros((6, 27, 28), dtype=np.uint8))
    with pytest.raises(DatasetFormatError) as info:
        FashionMNIST(fashion_mnist.root, split="train")
    message = str(info.value)
    assert "train-images-idx3-ubyte.gz' has dimensions (6, 27, 28)" in message
    assert "expected (N, 28, 28)" in message


@pytest.mark.parametrize("delta", [-1, 1])
def test_file_length_differs_from_header(fashion_mnist: FakeFashionMNIST, delta: int) -> None:
    data = idx_bytes(fashion_mnist.images["test"])
    data = data[:-1] if delta < 0 else data + b"\x00"
    fashion_mnist.path("test", 0).write_bytes(gzip.compress(data))
    with pytest.raises(DatasetFormatError) as info:
        FashionMNIST(fashion_mnist.root, split="test")
    message = str(info.value)
    assert "t10k-images-idx3-ubyte.gz" in message
    assert f"has {16 + 4 * 784 + delta} bytes (uncompressed)" in message
    assert f"(dimensions (4, 28, 28)) implies {16 + 4 * 784} bytes" in message


def test_label_out_of_range(fashion_mnist: FakeFashionMNIST) -> None:
    labels = fashion_mnist.labels["train"].copy()
    labels[4] = 10
    write_idx(fashion_mnist.path("train", 1), labels)
    with pytest.raises(DatasetFormatError) as info:
        FashionMNIST(fashion_mnist.root, split="train")
    message = str(info.value)
    assert "train-labels-idx1-ubyte.gz' has value 10 at index 4" in message
    assert "expected labels in 0..9" in message


def test_label_count_differs_from_image_count(fashion_mnist: FakeFashionMNIST) -> None:
    write_idx(fashion_mnist.path("train", 1), fashion_mnist.labels["train"][:5])
    with pytest.raises(DatasetFormatError) as info:
        FashionMNIST(fashion_mnist.root, split="train")
    message = str(info.value)
    assert "train-labels-idx1-ubyte.gz' has 5 labels" in message
    assert "train-images-idx3-ubyte.gz' has 6 images" in message


def test_corrupt_gzip(fashion_mnist: FakeFashionMNIST) -> None:
    path = fashion_mnist.path("test", 0)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(DatasetFormatError) as info:
        FashionMNIST(fashion_mnist.root, split="test")
    message = str(info.value)
    assert f"Cannot decompress gzipped idx file '{path}'" in message
    assert "truncated or corrupt" in message
    assert "Reinstall dataset-fashion-mnist, or delete the file and pass --download" in message


REAL_ROOT = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(
    not (REAL_ROOT / "train-images-idx3-ubyte.gz").is_file(),
    reason="the Debian package dataset-fashion-mnist is not installed",
)
def test_reads_the_real_debian_files() -> None:
    train = FashionMNIST(REAL_ROOT, split="train")
    test = FashionMNIST(REAL_ROOT, split="test")
    assert (len(train), len(test)) == (60000, 10000)
    assert np.bincount(train.labels).tolist() == [6000] * 10
    assert np.bincount(test.labels).tolist() == [1000] * 10
    image, label = train[0]
    assert image.size == (28, 28) and image.mode == "RGB" and label == 9  # an ankle boot
