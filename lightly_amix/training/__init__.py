"""Training plumbing of the recipes: data module, seeding, safe checkpoints, resume, Trainer.

- :class:`~lightly_amix.data.datamodule.PretrainDataModule` (re-exported here) — the data
  module whose sampler resumes mid-epoch.
- :mod:`~lightly_amix.seeding` — seeds derived from (seed, epoch, rank, position/step).
- :mod:`~lightly_amix.training.checkpoint_io` — validated, atomic, progress-preserving saves.
- :mod:`~lightly_amix.training.resume` — choosing and checking the checkpoint to continue from.
- :mod:`~lightly_amix.training.callbacks` — the run's identity in checkpoints, clean
  stops, a progress bar that labels a resumed epoch.
- :mod:`~lightly_amix.training.trainer` — the Trainer the recipes use.
"""

from lightly_amix.data.datamodule import EpochSampler, IndexedDataset, PretrainDataModule
from lightly_amix.seeding import StepSeed, derive_seed, epoch_seed, seed_all
from lightly_amix.training.callbacks import InterruptCheckpoint, ProgressBar, RunInfo
from lightly_amix.training.checkpoint_io import (
    CheckpointWriteError,
    NonFiniteCheckpointError,
    SafeCheckpointIO,
    atomic_save,
    atomic_write_text,
    non_finite_summary,
    remove_stale_temporary_files,
)
from lightly_amix.training.resume import (
    ResumeChoice,
    ResumeError,
    RunIdentity,
    check_compatible,
    checkpoint_files,
    inspect_checkpoint,
    resolve_resume,
)
from lightly_amix.training.trainer import (
    INTERRUPTED_NAME,
    build_trainer,
    parse_devices,
    quiet_third_party,
)

__all__ = [
    "INTERRUPTED_NAME",
    "CheckpointWriteError",
    "EpochSampler",
    "IndexedDataset",
    "InterruptCheckpoint",
    "NonFiniteCheckpointError",
    "PretrainDataModule",
    "ProgressBar",
    "ResumeChoice",
    "ResumeError",
    "RunIdentity",
    "RunInfo",
    "SafeCheckpointIO",
    "StepSeed",
    "atomic_save",
    "atomic_write_text",
    "build_trainer",
    "check_compatible",
    "checkpoint_files",
    "derive_seed",
    "epoch_seed",
    "inspect_checkpoint",
    "non_finite_summary",
    "parse_devices",
    "quiet_third_party",
    "remove_stale_temporary_files",
    "resolve_resume",
    "seed_all",
]
