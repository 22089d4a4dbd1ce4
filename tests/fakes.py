"""Tiny data sets written in the exact on-disk formats of the real ones, shared by the tests."""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

STL10_CLASS_NAMES = [
    "airplane",
    "bird",
    "car",
    "cat",
    "deer",
    "dog",
    "horse",
    "monkey",
    "ship",
    "truck",
]


@dataclass
class FakeSTL10:
    root: Path  # The folder that contains stl10_binary/.
    folder: Path  # stl10_binary/ itself.
    train_images: np.ndarray  # N x H x W x C uint8, as the dataset must return them.
    train_labels: np.ndarray  # 1..10, as stored in the file.
    test_images: np.ndarray
    test_labels: np.ndarray
    unlabeled_images: np.ndarray
    folds: list[list[int]]


def stl10_bytes(images_nhwc: np.ndarray) -> bytes:
    """The real byte order of *_X.bin: (N, C, W, H), i.e. column-major colour planes."""
    return np.ascontiguousarray(images_nhwc.transpose(0, 3, 2, 1)).tobytes()


def write_stl10(
    root: Path, seed: int = 0, n_train: int = 5, n_test: int = 3, n_unlabeled: int = 4
) -> FakeSTL10:
    rng = np.random.default_rng(seed)
    folder = root / "stl10_binary"
    folder.mkdir(parents=True, exist_ok=True)

    def images(n: int) -> np.ndarray:
        return rng.integers(0, 256, size=(n, 96, 96, 3), dtype=np.uint8)

    train_images, test_images, unlabeled_images = (
        images(n_train),
        images(n_test),
        images(n_unlabeled),
    )
    train_labels = rng.integers(1, 11, size=n_train, dtype=np.uint8)
    train_labels[:2] = (1, 10)  # Both ends of the 1-based label range.
    test_labels = rng.integers(1, 11, size=n_test, dtype=np.uint8)
    (folder / "train_X.bin").write_bytes(stl10_bytes(train_images))
    (folder / "train_y.bin").write_bytes(train_labels.tobytes())
    (folder / "test_X.bin").write_bytes(stl10_bytes(test_images))
    (folder / "test_y.bin").write_bytes(test_labels.tobytes())
    (folder / "unlabeled_X.bin").write_bytes(stl10_bytes(unlabeled_images))
    (folder / "class_names.txt").write_text("\n".join(STL10_CLASS_NAMES) + "\n")
    # As in the real file: 10 lines of space-separated indices, each with a trailing space.
    folds = [[k % n_train, (k + 2) % n_train, (k + 3) % n_train] for k in range(10)]
    (folder / "fold_indices.txt").write_text(
        "".join(" ".join(str(i) for i in fold) + " \n" for fold in folds)
    )
    return FakeSTL10(
        root=root,
        folder=folder,
        train_images=train_images,
        train_labels=train_labels,
        test_images=test_images,
        test_labels=test_labels,
        unlabeled_images=unlabeled_images,
        folds=folds,
    )


# Deliberately not sorted, as in the real wnids.txt.
TINY_WNIDS = ["n02124075", "n01443537", "n04067472"]

TINY_WORDS = {"n02124075": "Egyptian cat", "n01443537": "goldfish, Carassius auratus"}


@dataclass
class FakeTinyImageNet:
    root: Path  # The folder that contains tiny-imagenet-200/.
    folder: Path  # tiny-imagenet-200/ itself.
    wnids: list[str]
    train: list[tuple[Path, str]] = field(default_factory=list)  # (path, wnid)
    val: list[tuple[Path, str]] = field(default_factory=list)
    test: list[Path] = field(default_factory=list)
    greyscale: Path | None = None


def write_jpeg(path: Path, rng: np.random.Generator, grey: bool = False, size: int = 64) -> None:
    shape = (size, size) if grey else (size, size, 3)
    Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8)).save(path, "JPEG")


def write_tiny_imagenet(root: Path, seed: int = 0) -> FakeTinyImageNet:
    rng = np.random.default_rng(seed)
    folder = root / "tiny-imagenet-200"
    folder.mkdir(parents=True)
    (folder / "wnids.txt").write_text("\n".join(TINY_WNIDS) + "\n")
    (folder / "words.txt").write_text(
        "n00001740\tentity\n" + "".join(f"{w}\t{n}\n" for w, n in TINY_WORDS.items())
    )
    fake = FakeTinyImageNet(root=root, folder=folder, wnids=TINY_WNIDS)
    for wnid in TINY_WNIDS:
        images = folder / "train" / wnid / "images"
        images.mkdir(parents=True)
        boxes = []
        for k in range(2):
            path = images / f"{wnid}_{k}.JPEG"
            write_jpeg(path, rng)
            fake.train.append((path, wnid))
            boxes.append(f"{path.name}\t0\t0\t63\t63\n")
        (folder / "train" / wnid / f"{wnid}_boxes.txt").write_text("".join(boxes))
    val_images = folder / "val" / "images"
    val_images.mkdir(parents=True)
    annotations = []
    for k, wnid in enumerate(["n04067472", "n01443537", "n02124075"]):
        path = val_images / f"val_{k}.JPEG"
        write_jpeg(path, rng, grey=k == 1)
        fake.val.append((path, wnid))
        annotations.append(f"{path.name}\t{wnid}\t3\t5\t60\t62\n")
    fake.greyscale = fake.val[1][0]
    (folder / "val" / "val_annotations.txt").write_text("".join(annotations))
    test_images = folder / "test" / "images"
    test_images.mkdir(parents=True)
    for k in range(2):
        path = test_images / f"test_{k}.JPEG"
        write_jpeg(path, rng)
        fake.test.append(path)
    return fake


@dataclass
class FakeImageFolder:
    root: Path
    # split -> list of (path, class name, expected RGB pixels)
    images: dict[str, list[tuple[Path, str, np.ndarray]]]


def write_image_folder(root: Path, splits: tuple[str, ...] = ("train", "val")) -> FakeImageFolder:
    rng = np.random.default_rng(0)
    images: dict[str, list[tuple[Path, str, np.ndarray]]] = {}
    for split in splits:
        images[split] = []
        for name in ("cat", "dog"):
            class_dir = root / split / name
            class_dir.mkdir(parents=True)
            for k in range(2):
                path = class_dir / f"{name}_{k}.png"
                if k == 1 and name == "dog":  # One greyscale image: must come back as RGB.
                    grey = rng.integers(0, 256, size=(8, 8), dtype=np.uint8)
                    Image.fromarray(grey).save(path)
                    expected = np.repeat(grey[:, :, None], 3, axis=2)
                else:
                    expected = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
                    Image.fromarray(expected).save(path)
                images[split].append((path, name, expected))
    return FakeImageFolder(root=root, images=images)


FASHION_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def idx_bytes(array: np.ndarray) -> bytes:
    """An idx file of uint8 values: magic 0x000008NN, NN dims as big-endian uint32, data."""
    header = struct.pack(">I", 0x00000800 | array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_idx(path: Path, array: np.ndarray) -> None:
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


@dataclass
class FakeFashionMNIST:
    root: Path
    folder: Path  # Where the files are.
    images: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    gz: bool

    def path(self, split: str, which: int) -> Path:
        """which: 0 = images file, 1 = labels file."""
        return self.folder / (FASHION_FILES[split][which] + (".gz" if self.gz else ""))


def write_fashion_mnist(
    root: Path, gz: bool = True, subfolder: str | None = None, sizes: tuple[int, int] = (6, 4)
) -> FakeFashionMNIST:
    rng = np.random.default_rng(0)
    folder = root / subfolder if subfolder else root
    folder.mkdir(parents=True, exist_ok=True)
    fake = FakeFashionMNIST(root=root, folder=folder, images={}, labels={}, gz=gz)
    for split, n in zip(("train", "test"), sizes, strict=True):
        fake.images[split] = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        labels[:2] = (0, 9)
        fake.labels[split] = labels
        write_idx(fake.path(split, 0), fake.images[split])
        write_idx(fake.path(split, 1), labels)
    return fake
