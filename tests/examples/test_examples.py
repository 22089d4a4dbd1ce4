"""The examples in examples/ run as a user runs them: two steps on a folder of generated images."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = {
    "examples/pytorch/amix_i.py": "amix_i_backbone.pt",
    "examples/pytorch_lightning/amix_i.py": "amix_i_backbone.pt",
    "examples/pytorch/amix_simclr.py": "amix_simclr_backbone.pt",
    "examples/pytorch_lightning/amix_simclr.py": "amix_simclr_backbone.pt",
    "examples/pytorch/amix_byol.py": "amix_byol_backbone.pt",
    "examples/pytorch_lightning/amix_byol.py": "amix_byol_backbone.pt",
}


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(12):
        pixels = rng.integers(0, 256, size=(48, 48, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img_{i:02d}.png")
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("example", EXAMPLES)
def test_example_trains_two_steps_and_saves_the_backbone(
    example: str, image_folder: Path, tmp_path: Path
) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        [sys.executable, str(REPO / example), "--data", str(image_folder), "--epochs", "1",
         "--max-steps", "2", "--batch-size", "4", "--input-size", "32", "--queue-size", "16"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    state = torch.load(tmp_path / EXAMPLES[example], weights_only=True)
    assert any(key.endswith("conv1.weight") for key in state)
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
