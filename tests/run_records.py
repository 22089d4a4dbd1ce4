"""What a launch did (the steps it trained, the values it logged), for tests that check more
than the state a run ends in."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytorch_lightning as pl


class StepsSeen(pl.Callback):
    """The global step at the start of every training batch of this launch.

    A run resumed from a checkpoint of step ``s`` starts at ``s``; a run that ignored the
    checkpoint starts at 0 (and, being deterministic, may still end bit-identical).
    """

    def __init__(self) -> None:
        self.steps: list[int] = []

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.steps.append(int(trainer.global_step))


def logged_per_epoch(out: Path, key: str) -> dict[int, list[float]]:
    """The values of ``key`` in the CSV logs of the run in ``out``, by epoch, in logged order."""
    values: dict[int, list[float]] = {}
    for path in sorted(out.glob("logs/version_*/metrics.csv")):
        with open(path) as file:
            for row in csv.DictReader(file):
                if row.get(key):
                    values.setdefault(int(row["epoch"]), []).append(float(row[key]))
    return values
