"""Fixtures that write tiny datasets in the exact on-disk formats of the real ones."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fakes import (
    FakeFashionMNIST,
    FakeImageFolder,
    FakeSTL10,
    FakeTinyImageNet,
    write_fashion_mnist,
    write_image_folder,
    write_stl10,
    write_tiny_imagenet,
)


@pytest.fixture
def stl10(tmp_path: Path) -> FakeSTL10:
    return write_stl10(tmp_path / "stl10")


@pytest.fixture
def stl10_writer() -> Callable[..., FakeSTL10]:
    return write_stl10


@pytest.fixture
def tiny_imagenet(tmp_path: Path) -> FakeTinyImageNet:
    return write_tiny_imagenet(tmp_path / "tiny")


@pytest.fixture
def image_folder(tmp_path: Path) -> FakeImageFolder:
    return write_image_folder(tmp_path / "folder")


@pytest.fixture
def fashion_mnist(tmp_path: Path) -> FakeFashionMNIST:
    return write_fashion_mnist(tmp_path / "fashion")


@pytest.fixture
def fashion_mnist_writer() -> Callable[..., FakeFashionMNIST]:
    return write_fashion_mnist
