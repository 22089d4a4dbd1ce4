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
    atomic_write_text,
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


# --- found unchecked by mutation testing ------------------------------------------------------


def test_config_text_is_written_atomically_or_not_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "config.yaml"
    atomic_write_text(str(target), "a: 1\n")  # a str path works too
    assert target.read_text() == "a: 1\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]

    def fails(src: Any, dst: Any) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(checkpoint_io.os, "replace", fails)
    with pytest.raises(CheckpointWriteError) as error:
        atomic_write_text(target, "a: 2\n")
    assert str(error.value) == (
        f"could not write {target} (Read-only file system); config.yaml is unchanged. To fix "
        "it, the file system is read-only; choose another --output-dir, then continue with "
        "--resume auto."
    )
    assert target.read_text() == "a: 1\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]  # no temporary file


@pytest.mark.parametrize(
    ("exc", "exists", "expected"),
    [
        (OSError(errno.EDQUOT, "Disk quota exceeded"), True,
         "(Disk quota exceeded); x.ckpt is unchanged. To fix it, free space within your disk "
         "quota, then"),
        (OSError(errno.EACCES, "Permission denied"), False,
         "(Permission denied); x.ckpt was not created. To fix it, check the folder's "
         "permissions or choose another --output-dir, then"),
        (OSError("no errno"), False,
         "(no errno); x.ckpt was not created. To fix it, check the output folder, then"),
    ],
)  # fmt: skip
def test_write_errors_say_what_to_do(
    exc: OSError, exists: bool, expected: str, tmp_path: Path
) -> None:
    path = tmp_path / "x.ckpt"
    if exists:
        path.write_bytes(b"")
    message = checkpoint_io._write_error(path, exc)
    assert message == f"could not write {path} {expected} continue with --resume auto."


def test_non_finite_summary_names_three_tensors_and_the_queue() -> None:
    state = {f"w{i}": torch.tensor([float("nan")]) for i in range(5)} | {"ok": torch.ones(1)}
    assert non_finite_summary({"state_dict": state}) == (
        "5 of 6 weight tensors hold NaN or inf (e.g. w0, w1, w2)"
    )
    banks = {checkpoint_io.MEMORY_BANKS_KEY: {"bank": {"bank": torch.tensor([float("inf")])}}}
    assert non_finite_summary(banks) == "its queue holds NaN or inf"  # no state_dict at all


def test_progress_of_files_that_are_not_checkpoints(tmp_path: Path) -> None:
    torch.save([1, 2], tmp_path / "list.ckpt")
    assert checkpoint_io.read_progress(tmp_path / "list.ckpt") is None
    torch.save({"global_step": 7}, tmp_path / "no_epoch.ckpt")
    assert checkpoint_io.read_progress(tmp_path / "no_epoch.ckpt") == (7, -1)


def test_kept_names_count_up_instead_of_overwriting(tmp_path: Path) -> None:
    path = tmp_path / "last.ckpt"
    assert checkpoint_io._keep_name(path, 40) == tmp_path / "last-step40.ckpt"
    (tmp_path / "last-step40.ckpt").touch()
    assert checkpoint_io._keep_name(path, 40) == tmp_path / "last-step40-2.ckpt"
    (tmp_path / "last-step40-2.ckpt").touch()
    assert checkpoint_io._keep_name(path, 40) == tmp_path / "last-step40-3.ckpt"


def test_equal_progress_is_overwritten_and_folders_are_created(tmp_path: Path) -> None:
    lines: list[str] = []
    target = tmp_path / "a" / "b" / "last.ckpt"  # missing parents are made
    SafeCheckpointIO(log=lines.append).save_checkpoint(_ckpt(12), target)
    # Another launch writing the same progress (e.g. a rerun of the same epoch): no copy kept.
    SafeCheckpointIO(log=lines.append).save_checkpoint(_ckpt(12), target)
    assert lines == [] and sorted(p.name for p in target.parent.iterdir()) == ["last.ckpt"]
    # A checkpoint without an epoch counts as epoch -1: less than epoch 1 at the same step.
    atomic_save({**_ckpt(12), "epoch": 1}, target)
    no_epoch = {k: v for k, v in _ckpt(12).items() if k != "epoch"}
    SafeCheckpointIO(log=lines.append).save_checkpoint(no_epoch, target)
    assert (target.parent / "last-step12.ckpt").is_file() and len(lines) == 1


def test_the_refusal_names_the_step_and_the_remedy(tmp_path: Path) -> None:
    io = SafeCheckpointIO(log=lambda line: None)
    target = tmp_path / "last.ckpt"
    with pytest.raises(NonFiniteCheckpointError) as error:
        io.save_checkpoint(_ckpt(7, value=float("nan")), target)
    assert str(error.value) == (
        f"refusing to write {target} at step 7: 1 of 2 weight tensors hold NaN or inf (e.g. w). "
        "last.ckpt is unchanged. Training has diverged: use --precision 32-true or a lower "
        "optim.base_lr, and resume from the last valid checkpoint or start again."
    )
    with pytest.raises(TypeError, match="^SafeCheckpointIO takes no storage_options.$"):
        io.save_checkpoint(_ckpt(1), target, storage_options={})


def test_loads_are_tensors_only_on_the_cpu_and_memory_mapped_for_the_zip_format(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[dict[str, Any]] = []
    original = torch.load

    def recording(path: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return original(path, **kwargs)

    monkeypatch.setattr(checkpoint_io.torch, "load", recording)
    torch.save(_ckpt(3), tmp_path / "zip.ckpt")
    torch.save(_ckpt(4), tmp_path / "old.ckpt", _use_new_zipfile_serialization=False)
    assert checkpoint_io.read_progress(tmp_path / "zip.ckpt") == (3, 0)
    assert checkpoint_io.read_progress(tmp_path / "old.ckpt") == (4, 0)
    assert calls == [
        {"map_location": "cpu", "weights_only": True, "mmap": True},
        {"map_location": "cpu", "weights_only": True, "mmap": False},
    ]


def test_progress_of_a_dict_without_a_step_is_unknown(tmp_path: Path) -> None:
    torch.save({"epoch": 3}, tmp_path / "x.ckpt")
    assert checkpoint_io.read_progress(tmp_path / "x.ckpt") is None


def test_equal_progress_without_epochs_is_overwritten(tmp_path: Path) -> None:
    target = tmp_path / "last.ckpt"
    no_epoch = {k: v for k, v in _ckpt(12).items() if k != "epoch"}
    atomic_save(no_epoch, target)
    lines: list[str] = []
    SafeCheckpointIO(log=lines.append).save_checkpoint(no_epoch, target)
    assert lines == [] and sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_every_stale_file_is_found_whatever_comes_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Files that are not temporary saves come first in the listing; the scan goes on past them.
    (tmp_path / "-notes.tmp").write_bytes(b"x")
    (tmp_path / ".cache").mkdir()
    dead = tmp_path / ".last.ckpt.999999999.tmp"
    dead.write_bytes(b"x" * 3 * 2**20)
    listing = Path.iterdir
    monkeypatch.setattr(Path, "iterdir", lambda self: iter(sorted(listing(self))))
    lines: list[str] = []
    assert remove_stale_temporary_files(tmp_path, log=lines.append) == [dead]
    assert lines == [
        f"Removed {dead.name} (3.0 MiB): a partial save of last.ckpt left by an interrupted "
        "process."
    ]


def test_cleanup_errors_do_not_hide_the_write_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The temporary file cannot be removed either (e.g. the disk went read-only): the user
    # still gets the write error that says what to do, not the cleanup's OSError.
    def disk_full(obj: Any, path: Path) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    def cannot_unlink(self: Path, missing_ok: bool = False) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(checkpoint_io, "_write_file", disk_full)
    monkeypatch.setattr(Path, "unlink", cannot_unlink)
    with pytest.raises(CheckpointWriteError, match="No space left on device"):
        atomic_save(_ckpt(1), tmp_path / "last.ckpt")
    monkeypatch.setattr(checkpoint_io.Path, "write_text", lambda self, text: disk_full(0, self))
    with pytest.raises(CheckpointWriteError, match="No space left on device"):
        atomic_write_text(tmp_path / "config.yaml", "a: 1\n")
    stale = tmp_path / ".last.ckpt.999999999.tmp"
    stale.touch()
    assert remove_stale_temporary_files(tmp_path, log=lambda line: None) == []  # not removed


def test_a_folder_that_cannot_be_synced_still_gets_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened = os.open

    def no_directories(path: Any, flags: int, *args: Any) -> int:
        if Path(path).is_dir():
            raise OSError(errno.EINVAL, "Invalid argument")  # e.g. some network file systems
        return opened(path, flags, *args)

    monkeypatch.setattr(checkpoint_io.os, "open", no_directories)
    atomic_save(_ckpt(2), tmp_path / "last.ckpt")
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["global_step"] == 2
