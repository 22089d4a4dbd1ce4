"""The pre-training data module: a seeded, resumable sampler and per-sample seeding.

Examples:
    >>> datamodule = PretrainDataModule(dataset, batch_size=256, num_workers=8, seed=0)
    >>> trainer = pl.Trainer(callbacks=[StepSeed(0)], reload_dataloaders_every_n_epochs=1,
    ...                      use_distributed_sampler=False)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, Subset

from lightly_amix.seeding import (
    DEVICE_STREAM,
    SAMPLE_STREAM,
    derive_seed,
    derive_seeds,
    seed_all,
)


class IndexedDataset(Dataset):
    """Wraps a ``(sample, label)`` data set to yield ``(sample, label, index)``.

    AMix-C's clustering memory is indexed by the position of each image in the training set.
    A key may be a plain index, or ``(seed, index)`` from :class:`EpochSampler`: the global
    random generators are then seeded with ``seed`` before the sample (and its random
    augmentation) is drawn, so the views do not depend on which loader process draws them.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[Any, int, int]:
        if isinstance(key, tuple):
            seed, index = key
            seed_all(seed)
        else:
            index = key
        sample, label = self.dataset[index]
        return sample, label, index


class EpochSampler(Sampler[tuple[int, int]]):
    """One epoch of ``(sample seed, index)`` keys for one rank, from a given position on.

    The order is that of torch's ``DistributedSampler`` (shuffled with ``(seed, epoch)``, the
    ranks' shares interleaved, the tail dropped so that every rank has the same count); the
    sample seeds come from ``(seed, epoch, rank, position)``. ``start`` skips the samples that a
    resumed run has already trained on, so a resumed epoch sees exactly the remaining keys.
    ``len()`` stays the full epoch's length, which Lightning uses for the schedule.

    Args:
        size: Number of samples in the data set.
        world_size: Number of ranks.
        rank: This rank.
        seed: The run's seed.
        epoch: The epoch.
        start: Position (in this rank's share) of the first key to yield.

    Examples:
        >>> keys = list(EpochSampler(10, 1, 0, seed=0, epoch=0, start=8))
        >>> len(keys), len(EpochSampler(10, 1, 0, seed=0, epoch=0, start=8))
        (2, 10)
    """

    def __init__(
        self, size: int, world_size: int, rank: int, seed: int, epoch: int, start: int = 0
    ) -> None:
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}.")
        order: DistributedSampler = DistributedSampler(
            range(size),  # type: ignore[arg-type]  # only len() is used
            num_replicas=world_size,
            rank=rank,
            shuffle=True,
            seed=seed,
            drop_last=True,
        )
        order.set_epoch(epoch)
        self.indices: list[int] = list(order)
        self.seeds = derive_seeds(len(self.indices), seed, SAMPLE_STREAM, epoch, rank)  # (n,)
        self.start = start

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for position in range(self.start, len(self.indices)):
            yield int(self.seeds[position]), self.indices[position]


class PretrainDataModule(pl.LightningDataModule):
    """Serves one training data set with a seeded sampler that resumes mid-epoch.

    The checkpoint holds the epoch and the number of batches of it already trained on
    (:meth:`state_dict`); a run resumed from it skips those batches, and every sample's
    augmentation is seeded by its position, so kill + resume gives the same batches and views
    as an uninterrupted run, whatever ``num_workers``. Use it with
    ``Trainer(reload_dataloaders_every_n_epochs=1, use_distributed_sampler=False)`` and
    :class:`~lightly_amix.seeding.StepSeed`.

    Args:
        dataset: Yields ``([view_q, view_k], label)``; batches are ``(views, labels, indices)``.
        batch_size: Images per device per step; incomplete batches are dropped.
        num_workers: Loader worker processes.
        seed: The run's seed.
        feature_dataset: The same images with a deterministic transform, for a pass over the
            whole set (AMix-C's k-means initialisation); see :meth:`feature_dataloader`.
        device_augment: For ``data.augment_on=device``: the dataset yields uint8 pixels and
            this module turns each training batch, once on the device, into the two views
            (:class:`lightly_amix.data.device_augment.MoCoV2DeviceAugment`), seeded with
            ``(seed, rank, global step)``.
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
        # (epoch, batches already trained in it), from a checkpoint being resumed.
        self._resume_point: tuple[int, int] | None = None

    # ----------------------------------------------------------------- resume state
    def state_dict(self) -> dict[str, Any]:
        """Where the run is: the epoch and the batches of it already trained on."""
        trainer = self.trainer
        if trainer is None:
            return {}
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed  # type: ignore[attr-defined]
        return {"epoch": int(trainer.current_epoch), "batches_done": int(done)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Remembers the resume point; the loader of that epoch starts after it."""
        if "epoch" in state_dict:
            self._resume_point = (int(state_dict["epoch"]), int(state_dict["batches_done"]))

    # ----------------------------------------------------------------- loaders
    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        world, rank, epoch = 1, 0, 0
        if trainer is not None:
            world, rank, epoch = trainer.world_size, trainer.global_rank, trainer.current_epoch
        start = 0
        if self._resume_point is not None and self._resume_point[0] == epoch:
            start = self._resume_point[1] * self.batch_size
        sampler = EpochSampler(len(self.dataset), world, rank, self.seed, epoch, start)
        return DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            drop_last=True,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=False,
        )

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Draws the two views on the device when the loader delivered uint8 pixels."""
        trainer = self.trainer
        if self.device_augment is None or trainer is None or not trainer.training:
            return batch
        images, labels, indices = batch
        if self.device_augment.mean.device != images.device:
            self.device_augment.to(images.device)
        seed_all(derive_seed(self.seed, DEVICE_STREAM, trainer.global_rank, trainer.global_step))
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


class ClassifierDataModule(PretrainDataModule):
    """:class:`PretrainDataModule` plus a test set evaluated after every epoch.

    The training set yields ``(image, label)``; batches are ``(images, labels, indices)``, with
    the same resumable, per-sample-seeded order as pre-training. The test loader reads every
    image once, in order (under DDP each rank a share; ``DistributedSampler`` repeats a few
    images to even the shares, as Lightning's own sampler does).

    Args:
        train: Training set with its augmentation.
        test: Test set with the deterministic transform.
        batch_size: Images per device per step (test batches are as large).
        num_workers: Loader worker processes.
        seed: The run's seed.
    """

    def __init__(
        self, train: Dataset, test: Dataset, batch_size: int, num_workers: int, seed: int
    ) -> None:
        super().__init__(train, batch_size, num_workers, seed)
        self.test_dataset = IndexedDataset(test)

    def val_dataloader(self) -> DataLoader:
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer else (1, 0)
        sampler: DistributedSampler = DistributedSampler(
            self.test_dataset, num_replicas=world, rank=rank, shuffle=False, drop_last=False
        )
        return DataLoader(
            self.test_dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=torch.cuda.is_available(),
        )


def class_balanced_subset(dataset: Dataset, size: int, seed: int = 0) -> Subset:
    """``size`` images of ``dataset`` with (nearly) the same count per class, drawn with ``seed``.

    Args:
        dataset: Has a ``labels`` array (every reader of :mod:`lightly_amix.data` has).
        size: Images to keep; at most the data set's size.
        seed: Seed of the draw within each class.

    Returns:
        A ``torch.utils.data.Subset`` whose ``labels`` and ``classes`` are those of the kept
        images and of ``dataset``.

    Raises:
        ValueError: If ``size`` is not in 1 .. len(dataset) or ``dataset`` has no ``labels``.

    Examples:
        >>> subset = class_balanced_subset(fashion_train, 10_000)  # doctest: +SKIP
        >>> np.bincount(subset.labels)  # doctest: +SKIP
        array([1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000])
    """
    labels = np.asarray(getattr(dataset, "labels", None))
    if labels.ndim != 1 or labels.size == 0:
        raise ValueError("class_balanced_subset needs a data set with a labels array.")
    if not 0 < size <= labels.size:
        raise ValueError(f"subset size must be in 1..{labels.size}, got {size}.")
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in classes]
    quota = np.full(len(classes), size // len(classes))  # (C,)
    quota[: size % len(classes)] += 1
    chosen: list[int] = []
    spare = 0
    for members, want in zip(per_class, quota, strict=True):
        take = min(want + spare, len(members))
        spare = want + spare - take  # a small class's shortfall goes to the next one
        chosen.extend(members[:take].tolist())
    indices = sorted(chosen)
    subset = Subset(dataset, indices)
    subset.labels = labels[indices]  # type: ignore[attr-defined]
    subset.classes = getattr(dataset, "classes", [])  # type: ignore[attr-defined]
    return subset
