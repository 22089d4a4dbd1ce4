"""recipes/visualize_mixup.py on scikit-image's photos, a fake STL-10 and a checkpoint."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from lightly_amix.cli import pretrain_main

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "visualize_mixup.py"


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(RECIPE), *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_default_run_draws_the_sample_photos(tmp_path: Path) -> None:
    result = run("--image-size", "64", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Wrote mixup_grid.png" in result.stdout
    grid = Image.open(tmp_path / "mixup_grid.png")
    # 3 pairs x 3 λ rows; A, B, 5 mixups, Mix Block mask and mix = 9 columns of 64 px.
    assert grid.size == (60 + 9 * 66, 14 + 9 * 66)


@pytest.mark.slow
def test_dataset_and_checkpoint(fake_stl10: Path, tmp_path: Path) -> None:
    code = pretrain_main(
        ["--data-root", str(fake_stl10), "--output-dir", str(tmp_path / "run"), "--epochs", "1",
         "--batch-size", "4", "--limit-batches", "1", "--queue-size", "16", "--accelerator", "cpu",
         "--num-workers", "0", "--set", "data.image_size=32"],
        dataset="stl10", config_dir=REPO / "recipes" / "configs",
    )  # fmt: skip
    assert code == 0
    result = run(
        "--data-root", str(fake_stl10), "--dataset", "stl10", "--split", "test", "--pairs", "2",
        "--lams", "0.4", "--checkpoint", str(tmp_path / "run" / "last.ckpt"), "-o", "g/x.png",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "no Mix Block" in result.stdout
    assert Image.open(tmp_path / "g" / "x.png").size == (60 + 9 * 98, 14 + 2 * 98)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--checkpoint", "missing.ckpt"], "does not exist"),
        (["--data-root", "nowhere", "--dataset", "stl10"], "--download"),
        (["--pairs", "4"], "Only 6 photos"),
    ],
)
def test_bad_input(args: list[str], message: str, tmp_path: Path) -> None:
    result = run(*args, cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr
