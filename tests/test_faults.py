"""Fault injection: every accident ends in the most advanced valid state, or in one clear line.

Each fault is followed by ``--resume auto``; the run must continue from the most advanced valid
checkpoint and end *bit for bit* where an uninterrupted run ends (2 loader workers; a
checkpoint after every step, so that kills land in the middle of an epoch).
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch

import lightly_amix.training.checkpoint_io as checkpoint_io
from lightly_amix.cli import pretrain_main
from lightly_amix.training import ResumeError, resolve_resume
from tests.fakes import write_stl10
from tests.run_records import StepsSeen

REPO = Path(__file__).resolve().parents[1]
RUNNER = REPO / "tests" / "fault_runner.py"
CONFIGS = REPO / "recipes" / "configs"
# 2 epochs of 3 steps, 2 loader workers, last.ckpt after every step.
COMMON = ["--epochs", "2", "--batch-size", "4", "--limit-batches", "3", "--queue-size", "16",
          "--accelerator", "cpu", "--num-workers", "2", "--set", "data.image_size=32",
          "--set", "trainer.checkpoint_every_n_steps=1"]  # fmt: skip
RUNS = {
    "mocov2-loader": ["--method", "mocov2", "--augment-on", "loader"],
    "amix-i-device": ["--method", "amix-i", "--augment-on", "device"],
}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("stl10")
    write_stl10(root, n_train=16, n_test=8, n_unlabeled=16)
    return root


def _argv(data: Path, out: Path, run: str, *extra: str) -> list[str]:
    return ["--data-root", str(data), "--output-dir", str(out), *COMMON, *RUNS[run], *extra]


def _main(data: Path, out: Path, run: str, *extra: str, callbacks: tuple = ()) -> int:
    return pretrain_main(
        _argv(data, out, run, *extra), dataset="stl10", config_dir=CONFIGS, callbacks=callbacks
    )


@pytest.fixture(scope="module")
def reference(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """The output folder of an uninterrupted run (made once per run kind)."""
    done: dict[str, Path] = {}

    def get(run: str) -> Path:
        if run not in done:
            out = tmp_path_factory.mktemp("reference") / run
            assert _main(data, out, run) == 0
            done[run] = out
        return done[run]

    return get


def _resume(data: Path, out: Path, run: str, *extra: str) -> list[int]:
    """``--resume auto``; returns the global step at the start of each batch it trained."""
    seen = StepsSeen()
    assert _main(data, out, run, "--resume", "auto", *extra, callbacks=(seen,)) == 0
    return seen.steps


def _load(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same_training_state(expected: Path, actual: Path) -> None:
    """Weights, buffers, queue and optimiser state are bit-identical."""
    a, b = _load(expected), _load(actual)
    assert a["global_step"] == b["global_step"] == 6 and a["epoch"] == b["epoch"]
    assert a["state_dict"].keys() == b["state_dict"].keys()
    differ = [k for k, v in a["state_dict"].items() if not torch.equal(v, b["state_dict"][k])]
    assert not differ, f"{len(differ)} tensors differ, e.g. {differ[:3]}"
    bank_a = a["lightly_amix_memory_banks"]["memory_bank"]
    bank_b = b["lightly_amix_memory_banks"]["memory_bank"]
    assert torch.equal(bank_a["bank"], bank_b["bank"])
    state_a, state_b = a["optimizer_states"][0]["state"], b["optimizer_states"][0]["state"]
    assert state_a.keys() == state_b.keys()
    for i in state_a:
        assert torch.equal(state_a[i]["momentum_buffer"], state_b[i]["momentum_buffer"])


def _run_fault(fault: str, n: int, argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(RUNNER), fault, str(n), "--", *argv],
        capture_output=True, text=True, timeout=600, cwd=REPO,
    )  # fmt: skip


def _valid_step(path: Path) -> int:
    ckpt = _load(path)
    assert all(v.isfinite().all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    return int(ckpt["global_step"])


# ----------------------------------------------------------------------------- kill -9
def test_kill_9_mid_epoch_then_resume_equals_the_uninterrupted_run(
    data: Path, reference: Callable[[str], Path], tmp_path: Path, capsys: Any
) -> None:
    """AMix-I with views drawn on the device (the other tests here use the loader path)."""
    run, out = "amix-i-device", tmp_path / "run"
    killed = _run_fault("kill-at-step", 4, _argv(data, out, run))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    ckpt = _load(out / "last.ckpt")
    assert (ckpt["global_step"], ckpt["epoch"]) == (4, 1)  # one step into the second epoch

    assert _resume(data, out, run) == [4, 5]  # not a restart from step 0
    assert f"Resuming from {out / 'last.ckpt'} (step 4, epoch 1)" in capsys.readouterr().out
    assert_same_training_state(reference(run) / "last.ckpt", out / "last.ckpt")


def test_kill_9_during_a_save_keeps_the_previous_checkpoint(
    data: Path, reference: Callable[[str], Path], tmp_path: Path, capsys: Any
) -> None:
    out = tmp_path / "run"
    killed = _run_fault("kill-in-save", 3, _argv(data, out, "mocov2-loader"))
    assert killed.returncode == -signal.SIGKILL
    torn = [p for p in out.iterdir() if p.name.startswith(".last.ckpt.")]
    assert len(torn) == 1  # the half-written temporary file of the third save
    assert _valid_step(out / "last.ckpt") == 2  # the second save, untouched

    assert _resume(data, out, "mocov2-loader") == [2, 3, 4, 5]
    printed = capsys.readouterr().out
    assert f"Removed {torn[0].name}" in printed and "(step 2, epoch 0)" in printed
    assert not torn[0].exists()
    assert_same_training_state(reference("mocov2-loader") / "last.ckpt", out / "last.ckpt")


# ----------------------------------------------------------------------------- disk full
def test_a_full_disk_keeps_the_last_checkpoint_and_says_so(
    data: Path,
    reference: Callable[[str], Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: Any,
) -> None:
    out = tmp_path / "run"
    original = checkpoint_io._write_file
    calls = {"n": 0}

    def full_after_two(obj: Any, path: Path) -> None:
        calls["n"] += 1
        if calls["n"] <= 2:
            return original(obj, path)
        path.write_bytes(b"\0" * 1000)  # the part that fitted
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_io, "_write_file", full_after_two)
    assert _main(data, out, "mocov2-loader") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: could not write ")
    assert "No space left on device" in err and "last.ckpt is unchanged" in err
    assert f"Now the newest valid checkpoint is {out / 'last.ckpt'} (step 2, epoch 0)" in err
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]  # nothing left behind
    assert not (out / "interrupted.ckpt").exists()  # could not be written either
    assert _valid_step(out / "last.ckpt") == 2

    monkeypatch.setattr(checkpoint_io, "_write_file", original)  # space freed
    assert _resume(data, out, "mocov2-loader") == [2, 3, 4, 5]
    assert_same_training_state(reference("mocov2-loader") / "last.ckpt", out / "last.ckpt")


# ----------------------------------------------------------------------------- NaN
class _PoisonAt(pl.Callback):
    """Fills the views of the batch of ``step`` with NaN (a corrupt input)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, i: int) -> None:
        if trainer.global_step == self.step:
            for view in batch[0]:
                view.fill_(float("nan"))


def test_a_non_finite_step_saves_nothing_non_finite(
    data: Path, reference: Callable[[str], Path], tmp_path: Path, capsys: Any
) -> None:
    out = tmp_path / "run"
    assert _main(data, out, "mocov2-loader", callbacks=(_PoisonAt(4),)) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: Non-finite value for 'loss' at step 4") and err.count("\n") == 1
    assert f"newest valid checkpoint is {out / 'last.ckpt'} (step 4, epoch 1)" in err
    assert "--precision 32-true" in err  # what to change
    assert not (out / "interrupted.ckpt").exists()  # the step had poisoned BatchNorm: not saved
    assert _valid_step(out / "last.ckpt") == 4

    assert _resume(data, out, "mocov2-loader") == [4, 5]  # the input is fixed
    assert_same_training_state(reference("mocov2-loader") / "last.ckpt", out / "last.ckpt")


# ----------------------------------------------------------------------------- Ctrl-C
def test_ctrl_c_finishes_the_step_saves_and_resumes_exactly(
    data: Path, reference: Callable[[str], Path], tmp_path: Path, capsys: Any
) -> None:
    out = tmp_path / "run"

    class CtrlCAt(pl.Callback):
        def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, i: int) -> None:
            if trainer.global_step == 4:
                os.kill(os.getpid(), signal.SIGINT)

    try:
        with pytest.raises(SystemExit) as stop:  # Lightning exits with 1 after Ctrl-C
            _main(data, out, "mocov2-loader", callbacks=(CtrlCAt(),))
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # Lightning ignores it after
    assert stop.value.code == 1
    printed = capsys.readouterr().out
    assert "Ctrl-C: stopping after this step" in printed
    assert _valid_step(out / "interrupted.ckpt") == 5  # the step in progress was finished
    assert _valid_step(out / "last.ckpt") == 4

    assert _resume(data, out, "mocov2-loader") == [5]
    assert f"Resuming from {out / 'interrupted.ckpt'} (step 5, epoch 1)" in capsys.readouterr().out
    assert_same_training_state(reference("mocov2-loader") / "last.ckpt", out / "last.ckpt")


# ----------------------------------------------------------------------------- bad files
def test_torn_random_empty_and_nan_checkpoints_are_skipped_by_resume_auto(
    reference: Callable[[str], Path], tmp_path: Path
) -> None:
    good = reference("mocov2-loader") / "last.ckpt"
    out = tmp_path / "run"
    out.mkdir()
    shutil.copy(good, out / "last.ckpt")
    data = good.read_bytes()
    (out / "interrupted.ckpt").write_bytes(data[: len(data) // 2])  # torn, and the newest file
    (out / "epoch009.ckpt").write_bytes(os.urandom(4096))
    (out / "empty.ckpt").write_bytes(b"")
    nan = _load(good)
    nan["global_step"] = 100  # more progress than any other, but diverged
    nan["state_dict"]["backbone.resnet.conv1.weight"].fill_(float("nan"))
    torch.save(nan, out / "diverged.ckpt")

    choice = resolve_resume("auto", out)
    assert choice.path == str(out / "last.ckpt")
    assert "(step 6, epoch 1): the most training progress of the 5 checkpoints" in choice.message
    assert "diverged.ckpt: 1 of" in choice.message and "hold NaN or inf" in choice.message
    for name in ("interrupted.ckpt", "epoch009.ckpt", "empty.ckpt"):
        assert f"{name}: it cannot be read" in choice.message, name
    with pytest.raises(ResumeError, match="interrupted.ckpt: it cannot be read"):
        resolve_resume(str(out / "interrupted.ckpt"), out)


# ----------------------------------------------------------------------------- wrong resumes
class _FailAtStart(pl.Callback):
    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        raise RuntimeError("failed during start-up")


def test_failed_resumes_never_replace_the_trained_run(
    data: Path, reference: Callable[[str], Path], tmp_path: Path, capsys: Any
) -> None:
    """The reproduction of the report: a wrong --method, then twice the right one."""
    out = tmp_path / "copy"
    shutil.copytree(reference("mocov2-loader"), out)
    before = sorted(p.name for p in out.iterdir())

    # Another method: refused in one line naming both, before any set-up; nothing written.
    assert _main(data, out, "amix-i-device", "--resume", "auto") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is from a run of mocov2 on resnet18 / stl10" in err
    assert "asks for amix-i on resnet18 / stl10" in err
    # Tensors of another shape (a larger queue): refused, naming the setting.
    assert _main(data, out, "mocov2-loader", "--resume", "auto", "--queue-size", "32") == 2
    assert "model.queue_size 16 in the checkpoint, 32 now" in capsys.readouterr().err
    # A launch that fails before its first step writes no checkpoint.
    with pytest.raises(RuntimeError, match="failed during start-up"):
        _main(data, out, "mocov2-loader", "--resume", "auto", "--epochs", "3",
              callbacks=(_FailAtStart(),))  # fmt: skip
    assert "Nothing saved: this launch stopped before it trained a step" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == before
    # An untrained checkpoint that is newer than last.ckpt does not win.
    untrained = _load(out / "last.ckpt")
    untrained["global_step"], untrained["epoch"] = 0, 0
    torch.save(untrained, out / "interrupted.ckpt")

    # Continue to 3 epochs (the third one only), then once more (nothing left to train).
    for expected in ([6, 7, 8], []):
        assert _resume(data, out, "mocov2-loader", "--epochs", "3") == expected
        assert f"Resuming from {out / 'last.ckpt'}" in capsys.readouterr().out
    assert _valid_step(out / "last.ckpt") == 9
