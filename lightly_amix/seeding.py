"""Seeds derived from where a run is, so that a resumed run repeats an uninterrupted one.

Every random number of a pre-training run comes from a seed derived from the run's seed and a
*position*: the sampler order from ``(seed, epoch)``, each sample's augmentation from
``(seed, epoch, rank, position in the epoch)`` (so it does not matter which loader worker
draws it, or whether the workers were restarted), and each training step's draws (mixing
coefficients, partners, batch shuffle, device-side augmentation) from
``(seed, rank, global step)``. A run killed at any step and resumed from a checkpoint of that
step therefore continues bit for bit as the uninterrupted run would have.

Examples:
    >>> derive_seed(0, 3, 1) == derive_seed(0, 3, 1) != derive_seed(0, 3, 2)
    True
    >>> trainer = pl.Trainer(callbacks=[StepSeed(seed=0)])  # doctest: +SKIP
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

# Tags keep the seed streams of different uses apart (same seed, step and rank).
SAMPLE_STREAM = 1  # per-sample augmentation in the loader
DEVICE_STREAM = 2  # batched augmentation on the device
STEP_STREAM = 3  # the training step


def derive_seed(*parts: int) -> int:
    """A 32-bit seed from integers (numpy's ``SeedSequence``: well mixed, order-sensitive)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def derive_seeds(count: int, *parts: int) -> np.ndarray:
    """``count`` 32-bit seeds from integers, one ``SeedSequence`` call: (count,) uint32."""
    return np.random.SeedSequence([int(p) for p in parts]).generate_state(count)


def seed_all(value: int) -> None:
    """Seeds Python's, NumPy's legacy global and torch's generators (all devices)."""
    random.seed(value)
    np.random.seed(value)  # noqa: NPY002 (torchvision / Lightly transforms use the global RNG)
    torch.manual_seed(value)


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """The seed of one epoch on one rank (kept for callers that seed per epoch)."""
    return derive_seed(seed, epoch, rank)


class StepSeed(pl.Callback):
    """Re-seeds Python, NumPy and torch before every training step from ``(seed, rank, step)``.

    Place it after every callback that may draw random numbers in ``on_train_batch_start``
    (Lightning runs callbacks in list order, then the LightningModule's hook, then
    ``training_step``), so that nothing but the step itself consumes the stream.

    Args:
        seed: The run's seed.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        seed_all(derive_seed(self.seed, STEP_STREAM, trainer.global_rank, trainer.global_step))
