from __future__ import annotations

from pathlib import Path

import pytest

from tests.fakes import write_stl10


@pytest.fixture
def fake_stl10(tmp_path: Path) -> Path:
    """A root folder holding a tiny ``stl10_binary/`` (16 train, 8 test, 16 unlabeled)."""
    root = tmp_path / "stl10"
    write_stl10(root, n_train=16, n_test=8, n_unlabeled=16)
    return root
