"""Callbacks that keep a run's state safe (its identity in every checkpoint, clean stops) and
a progress bar that stays informative after a resume.

Examples:
    >>> callbacks = [RunInfo({"method": "amix-i", ...}),
    ...              InterruptCheckpoint(Path("out/interrupted.ckpt")),
    ...              ProgressBar()]  # doctest: +SKIP
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import TQDMProgressBar
from pytorch_lightning.utilities import rank_zero_only

from lightly_amix.training.checkpoint_io import CheckpointWriteError
from lightly_amix.training.resume import RUN_KEY


def print_rank_zero(line: str) -> None:
    """Prints on the process of global rank 0 only (stdout, flushed)."""
    if getattr(rank_zero_only, "rank", 0) == 0:
        print(line, flush=True)


class RunInfo(pl.Callback):
    """Stores the run's identity and whole config in every checkpoint (``lightly_amix_run``).

    ``--resume`` uses it to refuse a checkpoint of another method, backbone or data set.

    Args:
        run: At least ``method``, ``backbone`` and ``dataset``; the config may be added as
            ``config`` (plain types only).
    """

    def __init__(self, run: Mapping[str, Any]) -> None:
        missing = {"method", "backbone", "dataset"} - set(run)
        if missing:
            raise ValueError(f"run is missing {sorted(missing)}.")
        self.run = dict(run)

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint[RUN_KEY] = self.run


class InterruptCheckpoint(pl.Callback):
    """Ctrl-C stops at the next step boundary and saves; errors save only an exact state.

    Every checkpoint this callback writes is a state that an uninterrupted run passes through,
    so resuming from it repeats the uninterrupted run exactly:

    - The first Ctrl-C (SIGINT) lets the current step finish, saves ``path`` and stops (under
      DDP the ranks agree on the step); after an epoch's last step it lets the epoch end as
      usual (validation, logs, ``last.ckpt``) and stops then, with :attr:`stopped_early` set.
      A second Ctrl-C stops at once without saving. SIGTERM (``kill``, a scheduler's
      pre-emption), which Lightning only records, does the same.
    - Errors raised *between* steps (reading the next batch, epoch-end hooks) also save
      ``path``.
    - An error *inside* a step saves nothing: the step has already moved the BatchNorm
      statistics, the queue and the momentum encoder, so that state is not one the run would
      pass through. A non-finite loss is such an error. The newest regular checkpoint stays
      the one to resume from.
    - Nothing is saved when this launch has not trained a step (a failed start must not leave
      a file that looks newer than the real progress).

    Args:
        path: Where to save (``<output-dir>/interrupted.ckpt``).
        report: Called with one line describing what was (not) saved (not ``log``: Lightning
            replaces every callback's ``log`` with the module's).
    """

    def __init__(self, path: Path, report: Callable[[str], None] = print_rank_zero) -> None:
        self.path = Path(path)
        self.report = report
        self.start_step: int | None = None
        self.in_step = False
        self.stop_requested = False
        self.saved = False
        self._previous_handler: Any = None
        # Set (to "Ctrl-C" or "SIGTERM") when the run stopped at an epoch's end on request.
        self.stopped_early: str | None = None
        self._owner_pid = os.getpid()

    # ----------------------------------------------------------------- Ctrl-C
    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        if os.getpid() != self._owner_pid or self.stop_requested:
            # A loader worker forked from the trainer (it inherits this handler; torch's
            # worker loop ends quietly on KeyboardInterrupt), or the second Ctrl-C: stop now.
            raise KeyboardInterrupt
        self.stop_requested = True
        self.report(
            "\nCtrl-C: stopping after this step and saving a checkpoint "
            "(press Ctrl-C again to stop at once without saving)."
        )

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start_step = trainer.global_step
        self.saved = self.stop_requested = False
        self.stopped_early = None
        if threading.current_thread() is threading.main_thread():
            self._owner_pid = os.getpid()
            self._previous_handler = signal.signal(signal.SIGINT, self._on_sigint)

    def _restore_handler(self) -> None:
        if self._previous_handler is not None:
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGINT, self._previous_handler)
            self._previous_handler = None

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.in_step = True

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        self.in_step = False
        sigterm = bool(getattr(trainer, "received_sigterm", False))
        # Under DDP every rank must stop at the same step: stop if any rank was asked to.
        stop = self.stop_requested or sigterm
        if trainer.world_size > 1:
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if not stop:
            return
        why = "SIGTERM" if sigterm else "Ctrl-C"
        if batch_idx + 1 >= trainer.num_training_batches:
            # The epoch's last step: let the epoch end as usual (validation, logs, last.ckpt),
            # then stop; the recipe reports that the run is not finished.
            trainer.should_stop = True
            self.stopped_early = why
            self.saved = True
            self.report(f"{why}: stopping at the end of this epoch; last.ckpt will hold it.")
            return
        self._save(trainer, why)
        raise KeyboardInterrupt

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore_handler()

    # ----------------------------------------------------------------- errors
    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._restore_handler()
        self._close_progress_bar(trainer)
        if self.saved:
            return
        if self.start_step is None or trainer.global_step == self.start_step:
            self.report(
                f"Nothing saved: this launch stopped before it trained a step "
                f"({type(exception).__name__}); the checkpoints in {self.path.parent} are as "
                "they were."
            )
            return
        if self.in_step:
            self.report(
                f"Nothing saved from step {trainer.global_step}: it stopped in the middle of the "
                "step, whose partial state is not one the run would pass through. Continue from "
                "the newest regular checkpoint (--resume auto picks it)."
            )
            return
        self._save(trainer, type(exception).__name__)

    def _save(self, trainer: pl.Trainer, why: str) -> None:
        try:
            trainer.save_checkpoint(self.path)
        except CheckpointWriteError as exc:
            self.report(f"Could not save {self.path.name}: {exc}")
            return
        self.saved = True
        self.report(
            f"{why}: saved {self.path} (step {trainer.global_step}); continue with --resume auto."
        )

    @staticmethod
    def _close_progress_bar(trainer: pl.Trainer) -> None:
        bar = trainer.progress_bar_callback
        if isinstance(bar, TQDMProgressBar):
            # Close the half-done bar now; left open, it is printed again at exit.
            try:
                bar.train_progress_bar.close()
            except (TypeError, AttributeError):
                pass


class ProgressBar(TQDMProgressBar):
    """Lightning's progress bar, which also labels an epoch that was resumed in its middle.

    Resuming from a checkpoint saved within an epoch (``last.ckpt`` every
    ``trainer.checkpoint_every_n_steps`` steps or ``checkpoint_every_minutes``, or
    ``interrupted.ckpt``), Lightning skips ``on_train_epoch_start`` for the rest of that epoch,
    so its bar reads ``Training: 17/?``: no epoch, no total, no time left, until the next epoch.
    This bar reads ``Epoch 6: 17/78`` with the time left, counting its rate from the steps this
    launch ran. Written here because Lightning has no option for it (2.6).

    Examples:
        >>> trainer = pl.Trainer(callbacks=[ProgressBar()])  # doctest: +SKIP
    """

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        if not trainer.fit_loop.restarted_mid_epoch:
            return
        self.on_train_epoch_start(trainer, pl_module)
        bar = self.train_progress_bar
        done = trainer.fit_loop.epoch_loop.batch_progress.current.ready
        # The steps of the earlier launch count as done, not towards this launch's rate.
        bar.initial = bar.n = done
        bar.refresh()
