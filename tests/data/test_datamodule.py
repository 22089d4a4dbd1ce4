"""The resumable sampler and per-sample seeding of the pre-training data module."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from lightly_amix.data.datamodule import EpochSampler, IndexedDataset, PretrainDataModule
from lightly_amix.seeding import derive_seed


class RandomDraws(Dataset):
    """Each item is what the three global generators give right now (an 'augmentation')."""

    def __len__(self) -> int:
        return 20

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        draws = [random.random(), float(np.random.rand()), float(torch.rand(()))]  # noqa: NPY002
        return torch.tensor(draws), index


def test_the_order_is_torchs_distributed_sampler_and_start_skips_a_prefix() -> None:
    for world, rank in ((1, 0), (2, 1)):
        full = list(EpochSampler(20, world, rank, seed=3, epoch=2))
        reference = DistributedSampler(range(20), world, rank, shuffle=True, seed=3, drop_last=True)  # type: ignore[arg-type]
        reference.set_epoch(2)
        assert [index for _, index in full] == list(reference)
        tail = list(EpochSampler(20, world, rank, seed=3, epoch=2, start=4))
        assert tail == full[4:]  # same indices and the same per-sample seeds
        assert len(EpochSampler(20, world, rank, seed=3, epoch=2, start=4)) == len(full)
    other_epoch = list(EpochSampler(20, 1, 0, seed=3, epoch=3))
    assert [s for s, _ in other_epoch] != [s for s, _ in full]


def test_a_sample_draws_the_same_numbers_whichever_worker_loads_it() -> None:
    dataset = IndexedDataset(RandomDraws())
    sampler = EpochSampler(20, 1, 0, seed=0, epoch=0)
    one = DataLoader(dataset, batch_size=4, sampler=sampler, num_workers=0)
    two = DataLoader(dataset, batch_size=4, sampler=sampler, num_workers=2)
    for (a, _, ia), (b, _, ib) in zip(one, two, strict=True):
        assert torch.equal(ia, ib) and torch.equal(a, b)
    # A plain index (the feature pass) draws without re-seeding.
    assert dataset[3][2] == 3


def test_the_data_module_restarts_an_epoch_after_the_trained_batches() -> None:
    module = PretrainDataModule(RandomDraws(), batch_size=4, num_workers=0, seed=1)
    full = [batch[2].tolist() for batch in module.train_dataloader()]
    module.load_state_dict({"epoch": 0, "batches_done": 2})
    resumed = [batch[2].tolist() for batch in module.train_dataloader()]
    assert resumed == full[2:]
    module.load_state_dict({"epoch": 5, "batches_done": 2})  # another epoch: from the start
    assert [batch[2].tolist() for batch in module.train_dataloader()] == full


def test_derived_seeds_depend_on_every_part() -> None:
    seeds = {derive_seed(0, 1, 2), derive_seed(0, 2, 1), derive_seed(1, 1, 2), derive_seed(0, 1)}
    assert len(seeds) == 4
    assert derive_seed(0, 1, 2) == derive_seed(0, 1, 2)


def test_a_negative_start_is_refused() -> None:
    with pytest.raises(ValueError, match="start must be >= 0"):
        EpochSampler(10, 1, 0, seed=0, epoch=0, start=-4)
