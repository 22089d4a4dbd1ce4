"""The life of one training launch, shared by the pre-training and classification recipes.

:func:`open_run` checks the output folder and chooses the checkpoint to continue from (before
any data is read); :func:`fit` trains with the recipes' Trainer and turns the ways a launch can
stop into one line and an exit code; :func:`report_failure` says which checkpoint holds the
run afterwards.

Examples:
    >>> choice = open_run(cfg.trainer, output_dir, identity)  # doctest: +SKIP
    >>> code = fit(trainer, model, datamodule, choice, output_dir, identity)  # doctest: +SKIP
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from lightly_amix.config import TrainerConfig
from lightly_amix.data.errors import DatasetFormatError
from lightly_amix.training.callbacks import InterruptCheckpoint
from lightly_amix.training.checkpoint_io import CheckpointWriteError, remove_stale_temporary_files
from lightly_amix.training.resume import (
    ResumeChoice,
    ResumeError,
    RunIdentity,
    checkpoint_files,
    resolve_resume,
)


def open_run(t: TrainerConfig, output_dir: Path, identity: RunIdentity) -> ResumeChoice:
    """Prepares the output folder of a launch and chooses where it starts.

    Removes temporary files of interrupted saves, refuses a folder with another run's
    checkpoints unless ``trainer.resume`` is set, and resolves ``trainer.resume``.

    Raises:
        ResumeError: With the message to print (exit code 2).
    """
    remove_stale_temporary_files(output_dir)
    existing = [p.name for p in checkpoint_files(output_dir)]
    if t.resume is None and existing:
        raise ResumeError(
            f"{output_dir} already holds {', '.join(existing)} from an earlier run. Pass "
            "--resume auto to continue it, or choose another --output-dir."
        )
    return resolve_resume(t.resume, output_dir, identity)


def report_failure(exc: BaseException, output_dir: Path, identity: RunIdentity) -> int:
    """One line on why training stopped and which checkpoint holds the run now; exit code 1."""
    try:
        latest = resolve_resume("auto", output_dir, identity).candidate
    except ResumeError:
        latest = None
    where = (
        f"the newest valid checkpoint is {latest.path} ({latest.where()})"
        if latest is not None
        else f"no valid checkpoint of this run is in {output_dir}"
    )
    if isinstance(exc, FloatingPointError):
        advice = (
            "Nothing from the failing step was saved. The run is deterministic, so a resume with "
            "the same settings stops at the same step: switch to --precision 32-true or fix the "
            "data first (a lower learning rate needs a new run: a resumed run keeps its "
            "schedule), then continue with --resume auto."
        )
    elif isinstance(exc, CheckpointWriteError):
        advice = ""
    else:
        advice = "Fix the cause, then continue with --resume auto."
    print(f"error: {exc} Now {where}. {advice}".rstrip(), file=sys.stderr)
    return 1


def fit(
    trainer: pl.Trainer,
    model: pl.LightningModule,
    datamodule: pl.LightningDataModule,
    choice: ResumeChoice,
    output_dir: Path,
    identity: RunIdentity,
) -> int:
    """``trainer.fit`` from the chosen checkpoint; 0 when done, 1 (and one line) when it stops.

    Ctrl-C in the middle of an epoch ends the process with Lightning's exit code 1 after
    ``interrupted.ckpt`` is saved; at an epoch's last step the epoch ends first and this
    returns 1.
    """
    if choice.message:
        print(choice.message)
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=choice.path)
    except (FloatingPointError, CheckpointWriteError, DatasetFormatError, OSError) as exc:
        return report_failure(exc, output_dir, identity)
    for callback in trainer.callbacks:  # type: ignore[attr-defined]
        stopped = isinstance(callback, InterruptCheckpoint) and callback.stopped_early
        if stopped and trainer.current_epoch < (trainer.max_epochs or 0):
            print(
                f"Stopped by {stopped} after epoch {trainer.current_epoch} of "
                f"{trainer.max_epochs}: {output_dir / 'last.ckpt'} holds it; continue with "
                "--resume auto."
            )
            return 1
    return 0


def run_record(identity: RunIdentity, config: dict[str, Any]) -> dict[str, Any]:
    """What :class:`~lightly_amix.training.RunInfo` stores in every checkpoint."""
    return {
        "method": identity.method,
        "backbone": identity.backbone,
        "dataset": identity.dataset,
        "config": config,
    }
