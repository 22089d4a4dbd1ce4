"""Choosing the checkpoint to resume from, on small synthetic checkpoint files."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from lightly.models.modules.memory_bank import MemoryBankModule
from torch import nn

from lightly_amix.training import (
    ResumeError,
    RunIdentity,
    check_compatible,
    inspect_checkpoint,
    resolve_resume,
)
from lightly_amix.training.resume import RUN_KEY

AMIX_I = RunIdentity("amix-i", "resnet18", "stl10")


def _save(path: Path, step: int, epoch: int, run: dict[str, Any] | None = None,
          hparams: dict[str, Any] | None = None, weight: float = 1.0) -> Path:  # fmt: skip
    ckpt: dict[str, Any] = {
        "global_step": step,
        "epoch": epoch,
        "state_dict": {"layer.weight": torch.full((2, 3), weight), "layer.bias": torch.zeros(2)},
        "hyper_parameters": hparams or {"model": {"backbone": "resnet18", "queue_size": 8}},
        "lightly_amix_memory_banks": {
            "bank": {"bank": torch.zeros(8, 4), "bank_ptr": torch.zeros(1)}
        },
    }
    if run is not None:
        ckpt[RUN_KEY] = run
    torch.save(ckpt, path)
    return path


RUN = {"method": "amix-i", "backbone": "resnet18", "dataset": "stl10"}


def test_auto_takes_the_most_progress_not_the_newest_file(tmp_path: Path) -> None:
    _save(tmp_path / "last.ckpt", 40, 3, RUN)
    _save(tmp_path / "epoch001.ckpt", 20, 1, RUN)
    time.sleep(0.01)
    _save(tmp_path / "interrupted.ckpt", 0, 0, RUN)  # newest, untrained
    os.utime(tmp_path / "interrupted.ckpt")
    choice = resolve_resume("auto", tmp_path, AMIX_I)
    assert choice.path == str(tmp_path / "last.ckpt")
    assert choice.message == (
        f"Resuming from {tmp_path / 'last.ckpt'} (step 40, epoch 3): the most training "
        "progress of the 3 checkpoints there."
    )


def test_equal_progress_prefers_last_then_interrupted(tmp_path: Path) -> None:
    _save(tmp_path / "epoch003.ckpt", 40, 3, RUN)
    _save(tmp_path / "interrupted.ckpt", 40, 3, RUN)
    assert resolve_resume("auto", tmp_path, AMIX_I).path == str(tmp_path / "interrupted.ckpt")
    _save(tmp_path / "last.ckpt", 40, 3, RUN)
    assert resolve_resume("auto", tmp_path, AMIX_I).path == str(tmp_path / "last.ckpt")


def test_no_checkpoint_starts_fresh_and_no_valid_one_is_an_error(tmp_path: Path) -> None:
    assert resolve_resume("auto", tmp_path, AMIX_I).candidate is None
    assert resolve_resume(None, tmp_path, AMIX_I).candidate is None
    (tmp_path / "last.ckpt").write_bytes(b"\x00" * 10)
    with pytest.raises(ResumeError, match=r"none of the 1 checkpoints .* last.ckpt: it cannot"):
        resolve_resume("auto", tmp_path, AMIX_I)


def test_another_method_backbone_or_dataset_is_refused_naming_both(tmp_path: Path) -> None:
    path = _save(tmp_path / "last.ckpt", 4, 0, RUN)
    for expected in (RunIdentity("mocov2", "resnet18", "stl10"),
                     RunIdentity("amix-i", "resnet50", "stl10"),
                     RunIdentity("amix-i", "resnet18", "tiny-imagenet")):  # fmt: skip
        with pytest.raises(ResumeError) as error:
            resolve_resume(str(path), tmp_path, expected)
        assert "is from a run of amix-i on resnet18 / stl10" in str(error.value)
        assert f"asks for {expected.describe()}" in str(error.value)


def test_checkpoints_of_older_versions_are_identified_by_their_hparams(tmp_path: Path) -> None:
    hparams = {
        "model": {"backbone": "resnet34"},
        "mix_block": {},
        "mixing": {"block_loss": "ce_pl+bce"},
    }
    candidate = inspect_checkpoint(_save(tmp_path / "old.ckpt", 4, 0, None, hparams))
    assert candidate.identity == RunIdentity("amix-c", "resnet34", None)
    # The data set is unknown: not held against the run.
    resolve_resume(str(tmp_path / "old.ckpt"), tmp_path, RunIdentity("amix-c", "resnet34", "x"))


def test_non_finite_weights_are_a_problem(tmp_path: Path) -> None:
    candidate = inspect_checkpoint(_save(tmp_path / "nan.ckpt", 4, 0, RUN, weight=float("inf")))
    assert candidate.problem is not None
    assert candidate.problem.startswith("1 of 2 weight tensors hold NaN or inf (e.g. layer.weight)")


class Tiny(nn.Module):
    def __init__(self, queue: int = 8, width: int = 3) -> None:
        super().__init__()
        self.layer = nn.Linear(width, 2)
        self.bank = MemoryBankModule(size=(queue, 4))


def test_tensors_and_queues_must_fit_the_new_model(tmp_path: Path) -> None:
    candidate = inspect_checkpoint(_save(tmp_path / "last.ckpt", 4, 0, RUN))
    check_compatible(candidate, Tiny(), {"queue_size": 8})
    with pytest.raises(ResumeError, match=r"model.queue_size 8 in the checkpoint, 16 now\): shape:"
                       r" bank.bank: \(8, 4\) in the file, \(16, 4\) in the model"):  # fmt: skip
        check_compatible(candidate, Tiny(queue=16), {"queue_size": 16, "backbone": "resnet18"})
    with pytest.raises(ResumeError, match=r"shape: layer.weight: \(2, 3\) in the file, \(2, 5\)"):
        check_compatible(candidate, Tiny(width=5), {"queue_size": 8})
