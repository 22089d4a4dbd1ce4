"""The Lightning Trainer of the pre-training recipes: safe checkpoints, logs, seeding, quiet.

Examples:
    >>> trainer = build_trainer(cfg.trainer, Path("out/stl10_amix_i"))  # doctest: +SKIP
    >>> trainer.fit(model, datamodule=datamodule, ckpt_path=None)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

from lightly_amix.config import TrainerConfig
from lightly_amix.seeding import StepSeed
from lightly_amix.training.callbacks import InterruptCheckpoint, ProgressBar
from lightly_amix.training.checkpoint_io import SafeCheckpointIO

INTERRUPTED_NAME = "interrupted"

# Messages of Lightning and its dependencies that say nothing to a user of these recipes.
_NOISE = (
    "💡 Tip:",  # advertisements for Lightning's cloud services
    "TPU available:",
    "HPU available:",
    "Loading `train_dataloader` to estimate number of stepping batches.",
)
_NOISY_WARNINGS = (
    # The recipes refuse to write into a folder with another run's checkpoints themselves.
    r"Checkpoint directory .* exists and is not empty",
    # The data module resumes mid-epoch exactly (its state is in the checkpoint).
    r"You're resuming from a checkpoint that ended before the epoch ended",
    # The worker count is the user's --num-workers, capped at the cores.
    r"The '\w+_dataloader' does not have many workers",
    r".*isinstance\(treespec, LeafSpec\)` is deprecated",
)


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(message.lstrip().startswith(prefix) for prefix in _NOISE)


def quiet_third_party() -> None:
    """Filters Lightning's tips, irrelevant hardware lines and known-harmless warnings."""
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNoise) for f in logger.filters):
            logger.addFilter(_DropNoise())
    for pattern in _NOISY_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)


def build_trainer(
    t: TrainerConfig,
    output_dir: Path,
    extra_callbacks: Sequence[pl.Callback] = (),
    **trainer_kwargs: Any,
) -> pl.Trainer:
    """A Lightning Trainer with safe checkpoints, CSV/TensorBoard logs and per-step seeding.

    Checkpoints: ``last.ckpt`` at the end of every epoch and, within epochs, every
    ``trainer.checkpoint_every_n_steps`` steps or else every ``trainer.checkpoint_every_minutes``
    minutes; ``epochNNN.ckpt`` every ``trainer.keep_every`` epochs; ``interrupted.ckpt`` on
    Ctrl-C (see :class:`InterruptCheckpoint`). All are written by :class:`SafeCheckpointIO`.
    ``trainer_kwargs`` go to ``pl.Trainer`` (e.g. validation settings).
    """
    checkpoints: list[pl.Callback] = [
        # last.ckpt, overwritten at the end of every epoch (Lightning's save_last only writes
        # when a top-k checkpoint was written at the same step).
        ModelCheckpoint(
            dirpath=output_dir,
            filename="last",
            save_top_k=1,
            every_n_epochs=1,
            enable_version_counter=False,
        ),  # fmt: skip
        ModelCheckpoint(
            dirpath=output_dir,
            filename="epoch{epoch:03d}",
            auto_insert_metric_name=False,
            save_top_k=-1,
            every_n_epochs=t.keep_every,
        ),
    ]
    within_epoch: dict[str, object] = {}
    if t.checkpoint_every_n_steps > 0:
        within_epoch["every_n_train_steps"] = t.checkpoint_every_n_steps
    elif t.checkpoint_every_minutes > 0:
        within_epoch["train_time_interval"] = timedelta(minutes=t.checkpoint_every_minutes)
    if within_epoch:
        checkpoints.append(
            ModelCheckpoint(
                dirpath=output_dir,
                filename="last",
                save_top_k=1,
                enable_version_counter=False,
                **within_epoch,  # type: ignore[arg-type]
            )  # fmt: skip
        )
    callbacks: list[pl.Callback] = [
        *checkpoints,
        *extra_callbacks,
        # After the others: an error in their on_train_batch_start is still between steps.
        InterruptCheckpoint(output_dir / f"{INTERRUPTED_NAME}.ckpt"),
        ProgressBar(),
        # Last, so that no other callback draws from the step's random stream after seeding.
        StepSeed(t.seed),
    ]
    # One version_N folder per launch, so a resumed run never overwrites earlier logs.
    loggers = [CSVLogger(output_dir, name="logs"), TensorBoardLogger(output_dir, name="tb")]
    log_every = t.log_every_n_steps
    if t.limit_batches is not None:
        log_every = min(log_every, t.limit_batches)
    quiet_third_party()
    return pl.Trainer(
        max_epochs=t.epochs,
        limit_train_batches=t.limit_batches if t.limit_batches is not None else 1.0,
        accelerator=t.accelerator,
        devices=parse_devices(t.devices),
        strategy=t.strategy,
        precision=t.precision,  # type: ignore[arg-type]
        sync_batchnorm=t.sync_batchnorm,
        callbacks=callbacks,
        logger=loggers,
        log_every_n_steps=log_every,
        reload_dataloaders_every_n_epochs=1,
        use_distributed_sampler=False,
        enable_progress_bar=True,
        plugins=[SafeCheckpointIO()],
        **trainer_kwargs,
    )


def parse_devices(devices: str) -> int | str | list[int]:
    """``auto`` -> ``"auto"``, ``"2"`` -> 2, ``"0,1"`` -> [0, 1]."""
    text = devices.strip()
    if text == "auto":
        return "auto"
    try:
        if "," in text:
            return [int(part) for part in text.split(",") if part.strip()]
        return int(text)
    except ValueError:
        raise ValueError(
            f"Invalid devices '{devices}': expected 'auto', a count such as 2, or ids such as 0,1."
        ) from None
