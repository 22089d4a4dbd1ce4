"""Atomic, validated, progress-preserving checkpoint writes."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest
import torch

import lightly_amix.training.checkpoint_io as checkpoint_io
from lightly_amix.training import (
    CheckpointWriteError,
    NonFiniteCheckpointError,
    SafeCheckpointIO,
    atomic_save,
    non_finite_summary,
    remove_stale_temporary_files,
)


def _ckpt(step: int, value: float = 1.0) -> dict[str, Any]:
    return {
        "global_step": step,
        "epoch": step // 10,
        "state_dict": {"w": torch.full((3,), value), "n": torch.tensor(step)},
    }


def test_the_temporary_file_is_written_beside_the_target_then_renamed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written: list[Path] = []
    original = checkpoint_io._write_file

    def record(obj: Any, path: Path) -> None:
        written.append(path)
        original(obj, path)

    monkeypatch.setattr(checkpoint_io, "_write_file", record)
    target = tmp_path / "out" / "last.ckpt"
    target.parent.mkdir()
    atomic_save(_ckpt(3), target)
    # Same folder (so the rename cannot become a copy across file systems), hidden, per pid.
    assert written == [target.parent / f".last.ckpt.{os.getpid()}.tmp"]
    assert not written[0].exists()
    assert torch.load(target, weights_only=True)["global_step"] == 3


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "last.ckpt"
    atomic_save(_ckpt(1), target)
    old = target.read_bytes()

    def disk_full(obj: Any, path: Path) -> None:
        path.write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_io, "_write_file", disk_full)
    with pytest.raises(CheckpointWriteError, match=r"No space left on device\); last.ckpt is "
                       r"unchanged. To fix it, free space on that file system"):  # fmt: skip
        atomic_save(_ckpt(2), target)
    assert target.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_non_finite_states_are_refused_and_the_file_kept(tmp_path: Path) -> None:
    io = SafeCheckpointIO(log=lambda line: None)
    target = tmp_path / "last.ckpt"
    io.save_checkpoint(_ckpt(1), target)
    with pytest.raises(NonFiniteCheckpointError, match="1 of 2 weight tensors hold NaN or inf"):
        io.save_checkpoint(_ckpt(2, value=float("nan")), target)
    momentum = {"state": {0: {"momentum_buffer": torch.tensor([float("inf")])}}}
    bad_optimizer = {**_ckpt(2), "optimizer_states": [momentum]}
    with pytest.raises(NonFiniteCheckpointError, match="optimiser state holds NaN or inf"):
        io.save_checkpoint(bad_optimizer, target)
    assert torch.load(target, weights_only=True)["global_step"] == 1
    assert non_finite_summary(_ckpt(5)) is None


def test_a_more_advanced_checkpoint_is_kept_under_a_new_name(tmp_path: Path) -> None:
    lines: list[str] = []
    target = tmp_path / "last.ckpt"
    atomic_save(_ckpt(40), target)  # written by an earlier, longer launch
    io = SafeCheckpointIO(log=lines.append)
    io.save_checkpoint(_ckpt(12), target)  # a launch resumed on purpose from step 11
    kept = tmp_path / "last-step40.ckpt"
    assert torch.load(kept, weights_only=True)["global_step"] == 40
    assert torch.load(target, weights_only=True)["global_step"] == 12
    assert lines == [
        "Kept last.ckpt of step 40 as last-step40.ckpt: it holds more training than the "
        "step-12 state that replaces it."
    ]
    io.save_checkpoint(_ckpt(13), target)  # its own later saves replace it as usual
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last-step40.ckpt", "last.ckpt"]


def test_stale_temporary_files_of_dead_processes_are_removed(tmp_path: Path) -> None:
    dead = tmp_path / ".last.ckpt.999999999.tmp"  # no such process
    dead.write_bytes(b"x" * 2048)
    alive = tmp_path / f".last.ckpt.{os.getppid()}.tmp"  # a running process: left alone
    alive.write_bytes(b"x")
    other = tmp_path / "notes.tmp"
    other.write_bytes(b"x")
    lines: list[str] = []
    assert remove_stale_temporary_files(tmp_path, log=lines.append) == [dead]
    assert alive.exists() and other.exists() and not dead.exists()
    assert lines[0].startswith(f"Removed {dead.name} (0.0 MiB): a partial save of last.ckpt")
