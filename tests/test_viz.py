from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image
from torch.utils.data import DataLoader

from lightly_amix.mixing.mix_block import MixBlock
from lightly_amix.models.backbones import ResNetBackbone
from lightly_amix.viz import (
    PIXEL_MIXUPS,
    MixupGridCallback,
    default_mixups,
    denormalize,
    mixup_columns,
    mixup_grid,
    normalize,
    render_grid,
)
from tests.models.test_mocov2 import BATCH, TwoViews, tiny_model


def pairs(p: int = 2, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(p, 3, size, size, generator=g), torch.rand(p, 3, size, size, generator=g)


def test_columns_hold_the_inputs_each_mixup_and_the_mix_block() -> None:
    a, b = pairs()
    lam = torch.tensor([0.25, 0.75])
    encoder = ResNetBackbone("resnet18").eval()
    block = MixBlock(encoder.stage3_dim).eval()
    cols = mixup_columns(
        a, b, lam, default_mixups(), block, lambda x: encoder.forward_with_stage3(x)[1]
    )
    assert list(cols) == ["A", "B", *PIXEL_MIXUPS, "MB mask", "MB mix"]
    assert torch.equal(cols["A"], a) and torch.equal(cols["B"], b)
    expected = lam.view(2, 1, 1, 1) * a + (1 - lam.view(2, 1, 1, 1)) * b
    assert torch.allclose(cols["mixup"], expected, atol=1e-6)  # λ is the share of A
    mask = cols["MB mask"][:, :1]
    assert torch.allclose(cols["MB mix"], mask * a + (1 - mask) * b, atol=1e-6)
    for name, images in cols.items():
        assert images.shape == a.shape and images.min() >= 0 and images.max() <= 1, name


def test_grid_layout_and_reproducibility() -> None:
    a, b = pairs(2, 40)
    grid = mixup_grid(a, b, lams=(0.2, 0.5, 0.8))
    assert isinstance(grid, Image.Image)
    # 2 pairs x 3 λ rows; A, B and 5 mixups = 7 columns (no Mix Block given); 40 px tiles
    # are drawn at twice their size so that the labels fit.
    assert grid.height == 14 + 6 * (80 + 2) and grid.width == 60 + 7 * (80 + 2)
    assert mixup_grid(a, b, (0.2, 0.5, 0.8)).tobytes() == grid.tobytes()


def test_small_tiles_are_enlarged_pixel_for_pixel() -> None:
    image = torch.rand(1, 3, 28, 28, generator=torch.Generator().manual_seed(3))
    grid = render_grid({"A": image, "B": image}, ["row"])
    assert grid.size == (60 + 2 * (84 + 2), 14 + 84 + 2)  # 28 px x 3 = 84 px
    tile = np.asarray(grid)[14 : 14 + 84, 60 : 60 + 84]  # column A
    expected = (image[0].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    assert np.array_equal(tile[::3, ::3], expected)  # each pixel is a 3 x 3 square
    assert np.array_equal(tile[2::3, 2::3], expected)
    big = render_grid({"A": torch.rand(1, 3, 64, 64)}, ["row"])
    assert big.size == (60 + 66, 14 + 66)  # 64 px and more: drawn as they are


def test_grid_bad_arguments() -> None:
    a, b = pairs()
    with pytest.raises(ValueError, match="same shape"):
        mixup_grid(a, b[:1])
    with pytest.raises(ValueError, match="lams"):
        mixup_grid(a, b, lams=(1.5,))
    with pytest.raises(ValueError, match="stage3_fn"):
        mixup_columns(a, b, torch.tensor([0.5, 0.5]), {}, MixBlock(256), None)


def test_normalize_round_trip() -> None:
    x = torch.rand(2, 3, 4, 4)
    assert torch.allclose(denormalize(normalize(x)), x, atol=1e-6)


def test_callback_writes_a_grid_every_n_epochs(tmp_path: Path) -> None:
    model = tiny_model()
    trainer = pl.Trainer(
        max_epochs=3,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_train_batches=1,
        callbacks=[MixupGridCallback(tmp_path, every_n_epochs=2, num_pairs=2)],
    )
    trainer.fit(model, DataLoader(TwoViews(), batch_size=BATCH, drop_last=True))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "mixup_epoch000.png",
        "mixup_epoch002.png",
    ]
    assert model.training  # the callback restores the mode
