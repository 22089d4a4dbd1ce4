"""Lightning plumbing shared by the recipes: the data module and the per-epoch seeding.

Every random number of epoch ``e`` on rank ``r`` (sampler order, augmentations, batch shuffle,
later mixing coefficients) is derived from ``(seed, e, r)``. A run resumed from the checkpoint
of epoch ``e - 1`` therefore continues exactly as the uninterrupted run would have.

Examples:
    >>> datamodule = PretrainDataModule(dataset, batch_size=256, num_workers=8, seed=0)
    >>> trainer = pl.Trainer(callbacks=[EpochSeed(0)], reload_dataloaders_every_n_epochs=1,
    ...                      use_distributed_sampler=False)
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """A 32-bit seed derived from (seed, epoch, rank) with numpy's SeedSequence."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


class EpochSeed(pl.Callback):
    """Re-seeds Python, NumPy and torch at the start of every training epoch.

    Args:
        seed: The run's seed.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        value = epoch_seed(self.seed, trainer.current_epoch, trainer.global_rank)
        random.seed(value)
        np.random.seed(value)  # noqa: NPY002 (third-party code may use the legacy global RNG)
        torch.manual_seed(value)


class IndexedDataset(Dataset):
    """Wraps a ``(sample, label)`` data set to yield ``(sample, label, index)``.

    AMix-C's clustering memory is indexed by the position of each image in the training set.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Any, int, int]:
        sample, label = self.dataset[index]
        return sample, label, index


class PretrainDataModule(pl.LightningDataModule):
    """Serves one training data set with a seeded, epoch-aware sampler.

    The sampler is torch's ``DistributedSampler`` (also with one process), whose order depends
    only on ``(seed, epoch)``; the loader's generator, which seeds the worker processes, is
    re-created every epoch from ``(seed, epoch, rank)``. Use it with
    ``Trainer(reload_dataloaders_every_n_epochs=1, use_distributed_sampler=False)``.

    Args:
        dataset: Yields ``([view_q, view_k], label)``; batches are ``(views, labels, indices)``.
        batch_size: Images per device per step; incomplete batches are dropped.
        num_workers: Loader worker processes.
        seed: The run's seed.
        feature_dataset: The same images with a deterministic transform, for a pass over the
            whole set (AMix-C's k-means initialisation); see :meth:`feature_dataloader`.
        device_augment: For ``data.augment_on=device``: the dataset yields uint8 pixels and
            this module turns each training batch, once on the device, into the two views
            (:class:`lightly_amix.data.device_augment.MoCoV2DeviceAugment`).
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        num_workers: int,
        seed: int,
        feature_dataset: Dataset | None = None,
        device_augment: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.device_augment = device_augment
        self.dataset = IndexedDataset(dataset)
        self.feature_dataset = IndexedDataset(feature_dataset) if feature_dataset else None
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        world, rank, epoch = 1, 0, 0
        if trainer is not None:
            world, rank, epoch = trainer.world_size, trainer.global_rank, trainer.current_epoch
        sampler: DistributedSampler = DistributedSampler(
            self.dataset,
            num_replicas=world,
            rank=rank,
            shuffle=True,
            seed=self.seed,
            drop_last=True,
        )
        sampler.set_epoch(epoch)
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, epoch, rank))
        return DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            drop_last=True,
            pin_memory=torch.cuda.is_available(),
            generator=generator,
            persistent_workers=False,
        )

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Draws the two views on the device when the loader delivered uint8 pixels."""
        if self.device_augment is None or self.trainer is None or not self.trainer.training:
            return batch
        images, labels, indices = batch
        if self.device_augment.mean.device != images.device:
            self.device_augment.to(images.device)
        return self.device_augment(images), labels, indices

    def feature_dataloader(self) -> DataLoader:
        """Every image once, in order, split across devices: ``(image, label, index)``."""
        if self.feature_dataset is None:
            raise RuntimeError("This data module was built without a feature_dataset.")
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer else (1, 0)
        sampler: DistributedSampler = DistributedSampler(
            self.feature_dataset, num_replicas=world, rank=rank, shuffle=False, drop_last=False
        )
        return DataLoader(
            self.feature_dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=torch.cuda.is_available(),
        )
