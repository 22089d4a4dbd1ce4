"""The progress bar after a resume within an epoch (``lightly_amix.training.callbacks``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import TQDMProgressBar
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightly_amix.config import TrainerConfig
from lightly_amix.training import ProgressBar, build_trainer

BATCHES = 4  # per epoch


class Linear(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(3, 1)

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self.layer(batch[0]).pow(2).mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(torch.randn(2 * BATCHES, 3)), batch_size=2)


class SaveAt(pl.Callback):
    """Saves ``path`` after global step ``step`` (as a within-epoch ``last.ckpt`` does)."""

    def __init__(self, path: Path, step: int) -> None:
        self.path, self.step = path, step

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            trainer.save_checkpoint(self.path)


class FirstBar(pl.Callback):
    """What the bar shows when the first step of this launch starts."""

    def __init__(self) -> None:
        self.seen: tuple[str, int | None, float, float] | None = None

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        bar = trainer.progress_bar_callback
        assert isinstance(bar, TQDMProgressBar)
        if self.seen is None:
            t = bar.train_progress_bar
            self.seen = (t.desc, t.total, t.n, t.initial)


def _fit(bar: TQDMProgressBar, tmp_path: Path, ckpt: Path | None, *extra: pl.Callback) -> FirstBar:
    first = FirstBar()
    trainer = pl.Trainer(
        max_epochs=2, callbacks=[bar, first, *extra], logger=False,
        enable_checkpointing=False, enable_model_summary=False, default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(Linear(), ckpt_path=ckpt)
    return first


def test_an_epoch_resumed_in_its_middle_shows_its_number_total_and_steps_done(
    tmp_path: Path,
) -> None:
    ckpt = tmp_path / "mid.ckpt"
    fresh = _fit(ProgressBar(), tmp_path, None, SaveAt(ckpt, BATCHES + 2))
    assert fresh.seen == ("Epoch 0: ", BATCHES, 0, 0)  # a fresh start is Lightning's bar

    resumed = _fit(ProgressBar(), tmp_path, ckpt)
    # Two steps of epoch 1 were done before the checkpoint.
    assert resumed.seen == ("Epoch 1: ", BATCHES, 2, 2)

    # Lightning's own bar, for comparison: no epoch, no total (``Training: 2/?``).
    plain = _fit(TQDMProgressBar(), tmp_path, ckpt)
    assert plain.seen is not None and plain.seen[:2] == ("Training", None)


def test_every_recipe_trainer_uses_this_progress_bar(tmp_path: Path) -> None:
    trainer = build_trainer(TrainerConfig(epochs=1, accelerator="cpu", devices="1"), tmp_path)
    assert isinstance(trainer.progress_bar_callback, ProgressBar)
