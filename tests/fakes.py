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


# --------------------------------------------------------------------------- CIFAR

CIFAR10_CLASS_NAMES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]
# The real meta file lists 100 fine names; the first ones are real, the rest made up.
CIFAR100_CLASS_NAMES = ["apple", "aquarium_fish", "baby", "bear", "beaver"] + [
    f"fine_class_{k}" for k in range(5, 100)
]


@dataclass
class FakeCIFAR:
    root: Path  # The folder that contains cifar-10-batches-py/ or cifar-100-python/.
    folder: Path  # cifar-10-batches-py/ or cifar-100-python/ itself.
    images: dict[str, np.ndarray]  # split -> (N, 32, 32, 3) uint8, as the reader must return.
    labels: dict[str, np.ndarray]  # split -> (N,) labels 0..9 or 0..99.
    classes: list[str]


def cifar_rows(images_nhwc: np.ndarray) -> np.ndarray:
    """The real b"data" layout: (N, 3072) rows of R, G, B planes, each 32x32 row-major."""
    return np.ascontiguousarray(images_nhwc.transpose(0, 3, 1, 2)).reshape(len(images_nhwc), -1)


def write_cifar_pickle(path: Path, content: object) -> None:
    """Pickled like the originals (Python 2, protocol 2); read back with encoding="bytes"."""
    import pickle

    with open(path, "wb") as file:
        pickle.dump(content, file, protocol=2)


def write_cifar10(root: Path, per_batch: int = 2, n_test: int = 3, seed: int = 0) -> FakeCIFAR:
    """`cifar-10-batches-py/`: data_batch_1..5 (`per_batch` images each), test_batch, meta."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    fake = FakeCIFAR(root=root, folder=folder, images={}, labels={}, classes=CIFAR10_CLASS_NAMES)
    batches = {"train": [f"data_batch_{k}" for k in range(1, 6)], "test": ["test_batch"]}
    for split, names in batches.items():
        n = per_batch if split == "train" else n_test
        all_images, all_labels = [], []
        for name in names:
            images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
            labels = [int(v) for v in rng.integers(0, 10, size=n)]
            if name == "data_batch_1":
                labels[:2] = [0, 9]  # Both ends of the label range.
            write_cifar_pickle(
                folder / name,
                {
                    b"batch_label": f"{name} of 5".encode(),
                    b"labels": labels,  # A plain list of ints, as in the originals.
                    b"data": cifar_rows(images),
                    b"filenames": [f"image_{k}.png".encode() for k in range(n)],
                },
            )
            all_images.append(images)
            all_labels += labels
        fake.images[split] = np.concatenate(all_images)
        fake.labels[split] = np.array(all_labels, dtype=np.int64)
    write_cifar_pickle(
        folder / "batches.meta",
        {
            b"num_cases_per_batch": per_batch,
            b"label_names": [name.encode() for name in CIFAR10_CLASS_NAMES],
            b"num_vis": 3072,
        },
    )
    return fake


def write_cifar100(root: Path, n_train: int = 4, n_test: int = 3, seed: int = 0) -> FakeCIFAR:
    """`cifar-100-python/`: train, test and meta, with fine and coarse labels."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    fake = FakeCIFAR(root=root, folder=folder, images={}, labels={}, classes=CIFAR100_CLASS_NAMES)
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
        fine = rng.integers(0, 100, size=n)
        fine[:2] = (0, 99)
        write_cifar_pickle(
            folder / split,
            {
                b"filenames": [f"image_{k}.png".encode() for k in range(n)],
                b"batch_label": f"{split}ing batch 1 of 1".encode(),
                b"fine_labels": [int(v) for v in fine],
                b"coarse_labels": [int(v) // 5 for v in fine],
                b"data": cifar_rows(images),
            },
        )
        fake.images[split] = images
        fake.labels[split] = fine.astype(np.int64)
    write_cifar_pickle(
        folder / "meta",
        {
            b"fine_label_names": [name.encode() for name in CIFAR100_CLASS_NAMES],
            b"coarse_label_names": [f"superclass_{k}".encode() for k in range(20)],
        },
    )
    return fake


# --------------------------------------------------------------------------- CUB-200-2011


def cub_class_names() -> list[str]:
    """The 200 names of classes.txt: the first two and the last real, the rest made up."""
    names = [f"{k:03d}.Bird_{k}" for k in range(1, 201)]
    names[0], names[1] = "001.Black_footed_Albatross", "002.Laysan_Albatross"
    names[199] = "200.Common_Yellowthroat"
    return names


@dataclass
class FakeCUB:
    root: Path  # The folder that contains CUB_200_2011/.
    folder: Path  # CUB_200_2011/ itself.
    classes: list[str]
    # split -> [(path, label 0..199)] in the order of images.txt
    samples: dict[str, list[tuple[Path, int]]]


def write_cub(root: Path, seed: int = 0) -> FakeCUB:
    """Six images of classes 1, 2 and 200; ids 1..6; train/test flags mixed; one greyscale."""
    rng = np.random.default_rng(seed)
    folder = root / "CUB_200_2011"
    classes = cub_class_names()
    # (image id, class id, is_train, greyscale); sizes vary as in the real photos.
    rows = [(1, 1, 1, False), (2, 1, 0, False), (3, 1, 1, True), (4, 2, 0, False)]
    rows += [(5, 200, 1, False), (6, 200, 0, False)]
    fake = FakeCUB(root=root, folder=folder, classes=classes, samples={"train": [], "test": []})
    images_lines, split_lines, label_lines = [], [], []
    for image_id, class_id, is_train, grey in rows:
        class_dir = folder / "images" / classes[class_id - 1]
        class_dir.mkdir(parents=True, exist_ok=True)
        name = f"{classes[class_id - 1].split('.', 1)[1]}_{image_id:04d}_{100 + image_id}.jpg"
        shape = (24 + image_id, 40) if grey else (24 + image_id, 40, 3)  # (height, width)
        Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8)).save(
            class_dir / name, "JPEG"
        )
        images_lines.append(f"{image_id} {classes[class_id - 1]}/{name}\n")
        split_lines.append(f"{image_id} {is_train}\n")
        label_lines.append(f"{image_id} {class_id}\n")
        fake.samples["train" if is_train else "test"].append((class_dir / name, class_id - 1))
    (folder / "images.txt").write_text("".join(images_lines))
    # Not in id order: the reader must match lines by image id, not by position.
    (folder / "train_test_split.txt").write_text("".join(reversed(split_lines)))
    (folder / "image_class_labels.txt").write_text("".join(label_lines))
    (folder / "classes.txt").write_text("".join(f"{k} {n}\n" for k, n in enumerate(classes, 1)))
    return fake


# --------------------------------------------------------------------------- FGVC-Aircraft


def aircraft_variant_names() -> list[str]:
    """The 100 lines of variants.txt: a few real names (some with spaces), the rest made up."""
    real = ["707-320", "727-200", "Boeing 717", "Cessna 172", "F-16A/B", "Global Express"]
    return real + [f"Variant {k}" for k in range(len(real), 100)]


@dataclass
class FakeAircraft:
    root: Path  # The folder that contains fgvc-aircraft-2013b/.
    folder: Path  # fgvc-aircraft-2013b/ itself.
    classes: list[str]
    samples: dict[str, list[tuple[Path, int]]]  # split -> [(path, label)] in file order


def write_aircraft(root: Path, seed: int = 0) -> FakeAircraft:
    """Train 3, val 2 (trainval = both), test 2 images; ids with leading zeros; banner rows."""
    rng = np.random.default_rng(seed)
    folder = root / "fgvc-aircraft-2013b"
    data = folder / "data"
    (data / "images").mkdir(parents=True)
    classes = aircraft_variant_names()
    (data / "variants.txt").write_text("".join(f"{name}\n" for name in classes))
    rows = {
        "train": [("0034309", "707-320"), ("1025794", "Boeing 717"), ("0056978", "Variant 99")],
        "val": [("0062765", "F-16A/B"), ("1514522", "707-320")],
        "test": [("0004345", "Cessna 172"), ("2217401", "Global Express")],
    }
    rows["trainval"] = rows["train"] + rows["val"]
    fake = FakeAircraft(root=root, folder=folder, classes=classes, samples={})
    for split, entries in rows.items():
        lines = []
        fake.samples[split] = []
        for image_id, variant in entries:
            path = data / "images" / f"{image_id}.jpg"
            if not path.exists():
                # (height, width, 3): the last 20 rows stand for the copyright banner.
                pixels = rng.integers(0, 256, size=(30 + 20, 44, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(path, "JPEG")
            lines.append(f"{image_id} {variant}\n")
            fake.samples[split].append((path, classes.index(variant)))
        (data / f"images_variant_{split}.txt").write_text("".join(lines))
    return fake


def cifar_python2_batch(images_nhwc: np.ndarray, labels: list[int], labels_key: bytes) -> bytes:
    """A batch pickled opcode by opcode as Python 2's cPickle (protocol 2) wrote the originals.

    Keys and the pixel buffer are Python 2 `str` (SHORT_BINSTRING / BINSTRING opcodes) and
    the array refers to `numpy.core.multiarray`, so this checks what `pickle.dumps` in
    Python 3 cannot produce.
    """

    def short_str(value: bytes) -> bytes:  # SHORT_BINSTRING
        return b"U" + bytes([len(value)]) + value

    def long_str(value: bytes) -> bytes:  # BINSTRING
        return b"T" + struct.pack("<i", len(value)) + value

    def small_int(value: int) -> bytes:  # BININT1 (0..255) or BININT2 (..65535)
        return b"K" + bytes([value]) if value < 256 else b"M" + struct.pack("<H", value)

    rows = cifar_rows(images_nhwc)  # (N, 3072)
    return (
        b"\x80\x02}("  # PROTO 2, EMPTY_DICT, MARK
        + short_str(b"data")
        + b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85"
        + short_str(b"b")
        + b"\x87R("  # _reconstruct(ndarray, (0,), 'b'), then the state tuple:
        + b"K\x01"
        + small_int(rows.shape[0])
        + small_int(rows.shape[1])
        + b"\x86cnumpy\ndtype\n"  # shape (N, 3072), dtype('u1', 0, 1) with its state:
        + short_str(b"u1")
        + b"K\x00K\x01\x87R(K\x03"
        + short_str(b"|")
        + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
        + b"\x89"  # not Fortran order
        + long_str(rows.tobytes())
        + b"tb"
        + short_str(labels_key)
        + b"]("
        + b"".join(small_int(label) for label in labels)
        + b"eu."  # APPENDS, SETITEMS, STOP
    )
