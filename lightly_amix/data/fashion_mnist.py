"""Fashion-MNIST read from the original idx files (optionally gzipped)."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets import FashionMNIST as TorchvisionFashionMNIST

from lightly_amix.data.errors import DatasetFormatError

FASHION_MNIST_SPLITS: tuple[str, ...] = ("train", "test")
# Where the Debian package `dataset-fashion-mnist` installs the files.
FASHION_MNIST_DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
FASHION_MNIST_IMAGE_SIZE = 28
IDX_UINT8_1D_MAGIC = 0x00000801  # Labels.
IDX_UINT8_3D_MAGIC = 0x00000803  # Images.

_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# Sub-folder where torchvision's FashionMNIST(root, download=True) puts the files.
_TORCHVISION_RAW = Path("FashionMNIST") / "raw"
_HOW_TO_GET = (
    "Install the Debian package dataset-fashion-mnist (it installs the files under "
    f"{FASHION_MNIST_DEFAULT_ROOT}/) and pass that folder as root, or pass --download "
    "(download=True) to fetch them with torchvision's FashionMNIST downloader into "
    "'<root>/FashionMNIST/raw/'."
)
_HOW_TO_FIX = "Reinstall dataset-fashion-mnist, or delete the file and pass --download."


class FashionMNIST(Dataset[tuple[Any, int]]):
    """Fashion-MNIST (28x28 greyscale, 10 classes) returned as RGB PIL images.

    Reads the four idx files `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
    `t10k-images-idx3-ubyte` and `t10k-labels-idx1-ubyte`, each optionally gzipped
    (`.gz`), from `root` or from torchvision's layout `root/FashionMNIST/raw/`. The split is
    loaded into memory (47 MB for train) and checked: magic numbers, dimensions, file
    length against the header, label range and image/label count.

    Attributes:
        root: The folder the files were read from.
        split: "train" or "test".
        classes: The 10 class names.
        images: Pixels, numpy uint8 array of shape (N, 28, 28).
        labels: Labels 0..9, numpy int64 array of length N.
        transform: Applied to each RGB PIL image.

    Examples:
        >>> dataset = FashionMNIST("/usr/share/datasets/fashion-mnist")  # doctest: +SKIP
        >>> len(dataset)  # doctest: +SKIP
        60000
        >>> image, label = dataset[0]  # doctest: +SKIP
        >>> image.mode, image.size, dataset.classes[label]  # doctest: +SKIP
        ('RGB', (28, 28), 'Ankle boot')
    """

    def __init__(
        self,
        root: str | Path = FASHION_MNIST_DEFAULT_ROOT,
        split: str = "train",
        transform: Callable[[Image.Image], Any] | None = None,
        download: bool = False,
    ) -> None:
        """Loads and checks the idx files of `split`.

        Args:
            root: Folder with the idx files, or with torchvision's `FashionMNIST/raw/`.
            split: "train" or "test".
            transform: Applied to each RGB PIL image; may return anything.
            download: If the files are missing, download them with torchvision into
                `root/FashionMNIST/raw/`.

        Raises:
            ValueError: If `split` is invalid.
            FileNotFoundError: If the files are missing.
            DatasetFormatError: If a file is malformed.
            RuntimeError: If the download fails.
        """
        if split not in FASHION_MNIST_SPLITS:
            raise ValueError(
                f"Unknown split {split!r} for dataset 'fashion-mnist'; valid splits: "
                + ", ".join(FASHION_MNIST_SPLITS)
            )
        root = Path(root)
        found = _find_files(root, split)
        if found is None and download:
            _download(root)
            found = _find_files(root, split)
        if found is None:
            folders = (root, root / _TORCHVISION_RAW)
            missing = [
                name
                for name in _FILES[split]
                if not any((f / n).is_file() for f in folders for n in (name, f"{name}.gz"))
            ] or list(_FILES[split])  # All when the two files lie in different folders.
            names = " and ".join(f"'{name}' (or '{name}.gz')" for name in missing)
            raise FileNotFoundError(
                f"Fashion-MNIST {split} file {names} not found in '{root}' or "
                f"'{root / _TORCHVISION_RAW}'. " + _HOW_TO_GET
            )
        images_file, labels_file = found
        images = read_idx_ubyte(images_file, IDX_UINT8_3D_MAGIC)
        labels = read_idx_ubyte(labels_file, IDX_UINT8_1D_MAGIC)
        if images.shape[1:] != (FASHION_MNIST_IMAGE_SIZE, FASHION_MNIST_IMAGE_SIZE):
            raise DatasetFormatError(
                f"Fashion-MNIST image file '{images_file}' has dimensions {images.shape}, "
                f"expected (N, {FASHION_MNIST_IMAGE_SIZE}, {FASHION_MNIST_IMAGE_SIZE}); it is "
                "not a Fashion-MNIST image file. " + _HOW_TO_FIX
            )
        if len(labels) != len(images):
            raise DatasetFormatError(
                f"Fashion-MNIST label file '{labels_file}' has {len(labels)} labels but image "
                f"file '{images_file}' has {len(images)} images; both must describe the same "
                "images; a file is truncated or they come from different splits. " + _HOW_TO_FIX
            )
        bad = np.flatnonzero(labels >= len(FASHION_MNIST_CLASSES))
        if len(bad) > 0:
            first = int(bad[0])
            raise DatasetFormatError(
                f"Fashion-MNIST label file '{labels_file}' has value {int(labels[first])} at "
                f"index {first}, expected labels in 0..{len(FASHION_MNIST_CLASSES) - 1}; the "
                "file is corrupt. " + _HOW_TO_FIX
            )
        self.root = images_file.parent
        self.split = split
        self.transform = transform
        self.classes = list(FASHION_MNIST_CLASSES)
        self.images: np.ndarray = images
        self.labels: np.ndarray = labels.astype(np.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image: Any = Image.fromarray(self.images[index]).convert("RGB")
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])

    def get_uint8(self, index: int) -> np.ndarray:
        """Returns image `index` as a (28, 28, 1) uint8 array (height, width, grey).

        Examples:
            >>> dataset.get_uint8(0).shape  # doctest: +SKIP
            (28, 28, 1)
        """
        return self.images[index][:, :, None].copy()


def read_idx_ubyte(path: Path, expected_magic: int) -> np.ndarray:
    """Reads an idx file of uint8 values, gzipped or not, and checks its header.

    The idx format is a big-endian header, the magic number `0x000008NN` (0x08 = uint8,
    NN = number of dimensions) followed by one uint32 per dimension, then the raw data.
    Written by hand because torchvision's reader (`torchvision.datasets.mnist`) is not
    public API, does not read gzipped files and reports bad files with bare assertions.

    Args:
        path: The file; gzip compression is detected from its first bytes.
        expected_magic: IDX_UINT8_3D_MAGIC for images, IDX_UINT8_1D_MAGIC for labels.

    Returns:
        Read-only uint8 array with the dimensions from the header.

    Raises:
        DatasetFormatError: If the file cannot be decompressed, has another magic number or
            its length does not match the header.

    Examples:
        >>> labels = read_idx_ubyte(Path("train-labels-idx1-ubyte.gz"), IDX_UINT8_1D_MAGIC)
        ... # doctest: +SKIP
        >>> labels.shape  # doctest: +SKIP
        (60000,)
    """
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":  # gzip signature; an idx file starts with two zero bytes.
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as error:
            raise DatasetFormatError(
                f"Cannot decompress gzipped idx file '{path}' ({type(error).__name__}: "
                f"{error}); the file is truncated or corrupt. " + _HOW_TO_FIX
            ) from error
    kind = "images" if expected_magic == IDX_UINT8_3D_MAGIC else "labels"
    if len(data) < 4:
        raise DatasetFormatError(
            f"idx file '{path}' is only {len(data)} bytes long, expected at least the 4-byte "
            f"magic number 0x{expected_magic:08X}; the file is truncated. " + _HOW_TO_FIX
        )
    magic = int.from_bytes(data[:4], "big")
    if magic != expected_magic:
        raise DatasetFormatError(
            f"idx file '{path}' has magic number 0x{magic:08X}, expected "
            f"0x{expected_magic:08X} (uint8 {kind}, big-endian header); it is not a "
            f"Fashion-MNIST {kind} file or it is corrupt. " + _HOW_TO_FIX
        )
    num_dims = expected_magic & 0xFF
    header_size = 4 + 4 * num_dims
    if len(data) < header_size:
        raise DatasetFormatError(
            f"idx file '{path}' is {len(data)} bytes long, too short for its {header_size}-byte "
            "header; the file is truncated. " + _HOW_TO_FIX
        )
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=num_dims, offset=4))
    expected_size = header_size + int(np.prod(dims))
    if len(data) != expected_size:
        raise DatasetFormatError(
            f"idx file '{path}' has {len(data)} bytes (uncompressed), but its header "
            f"(dimensions {dims}) implies {expected_size} bytes; the file is truncated or "
            "padded. " + _HOW_TO_FIX
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(dims)


def _find_files(root: Path, split: str) -> tuple[Path, Path] | None:
    """Images and labels file of `split` in `root` or `root/FashionMNIST/raw`, else None."""
    for folder in (root, root / _TORCHVISION_RAW):
        paths = []
        for name in _FILES[split]:
            # Prefer the uncompressed file: torchvision keeps both after extracting.
            candidates = [folder / name, folder / f"{name}.gz"]
            paths.append(next((p for p in candidates if p.is_file()), None))
        images_file, labels_file = paths
        if images_file is not None and labels_file is not None:
            return images_file, labels_file
    return None


def _download(root: Path) -> None:
    """Downloads all four files with torchvision into `root/FashionMNIST/raw`."""
    try:
        TorchvisionFashionMNIST(str(root), train=True, download=True)
    except Exception as error:
        raise RuntimeError(
            f"Downloading Fashion-MNIST with torchvision to '{root / _TORCHVISION_RAW}' failed "
            f"({type(error).__name__}: {error}). Without internet access, install the Debian "
            f"package dataset-fashion-mnist (files under {FASHION_MNIST_DEFAULT_ROOT}/) or copy "
            f"the four idx files into '{root}'."
        ) from error
