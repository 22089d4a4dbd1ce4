"""The paper's supervised metric: median of the last epochs' test top-1, kept across resumes."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from lightly_amix.eval.last_epochs import LastEpochsMedian


def _validate(callback: LastEpochsMedian, epoch: int, top1: float, sanity: bool = False) -> None:
    trainer = SimpleNamespace(
        sanity_checking=sanity,
        current_epoch=epoch,
        callback_metrics={"val/top1": torch.tensor(top1)},
    )
    callback.on_validation_end(trainer, None)  # type: ignore[arg-type]


def test_the_median_covers_the_last_epochs_only() -> None:
    median = LastEpochsMedian(last=3)
    for epoch, value in enumerate([10.0, 90.0, 50.0, 60.0, 40.0]):
        _validate(median, epoch, value)
    _validate(median, 5, 99.0, sanity=True)  # a sanity check is not an epoch
    summary = median.summary()
    assert summary["epochs"] == [2, 3, 4] and summary["values"] == [50.0, 60.0, 40.0]
    assert summary["median"] == 50.0 and summary["final"] == 40.0 and summary["best"] == 90.0


def test_the_history_survives_a_resume_and_a_repeated_epoch_counts_once() -> None:
    first = LastEpochsMedian(last=10)
    _validate(first, 0, 20.0)
    _validate(first, 1, 30.0)
    resumed = LastEpochsMedian(last=10)
    resumed.load_state_dict(first.state_dict())
    _validate(resumed, 1, 31.0)  # epoch 1 validated again after a mid-epoch resume
    _validate(resumed, 2, 40.0)
    assert resumed.summary()["values"] == [20.0, 31.0, 40.0]


def test_no_epoch_and_a_bad_length_are_errors() -> None:
    with pytest.raises(ValueError, match="no validation epoch ran"):
        LastEpochsMedian().summary()
    with pytest.raises(ValueError, match="last must be > 0"):
        LastEpochsMedian(last=0)
