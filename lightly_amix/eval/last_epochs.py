"""The paper's supervised metric: the median test top-1 of the last 10 epochs (§4.1).

:class:`LastEpochsMedian` records a validation metric at the end of every epoch's validation
and keeps the history in the checkpoint (a resumed run continues it), so the summary after the
last epoch covers the whole run.

Examples:
    >>> median = LastEpochsMedian(last=10)
    >>> trainer = pl.Trainer(callbacks=[median])  # doctest: +SKIP
    >>> median.summary()["median"]  # doctest: +SKIP
    81.3
"""

from __future__ import annotations

import statistics
from typing import Any

import pytorch_lightning as pl


class LastEpochsMedian(pl.Callback):
    """Records ``key`` after each validation and reports the median of the last ``last`` epochs.

    Args:
        last: How many final epochs the median covers (paper: 10).
        key: The logged metric (``val/top1``).

    Raises:
        ValueError: If ``last`` is not positive.
    """

    def __init__(self, last: int = 10, key: str = "val/top1") -> None:
        if last <= 0:
            raise ValueError(f"last must be > 0, got {last}.")
        self.last = last
        self.key = key
        self.history: dict[int, float] = {}  # epoch -> value

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self.key not in trainer.callback_metrics:
            return
        self.history[int(trainer.current_epoch)] = float(trainer.callback_metrics[self.key])

    def state_dict(self) -> dict[str, Any]:
        return {"history": {str(k): v for k, v in self.history.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = {int(k): float(v) for k, v in state_dict.get("history", {}).items()}

    def summary(self) -> dict[str, Any]:
        """``median`` of the last epochs, the epochs it covers, their values and the last one.

        Raises:
            ValueError: If no epoch was validated.
        """
        if not self.history:
            raise ValueError(f"No '{self.key}' was recorded: no validation epoch ran.")
        epochs = sorted(self.history)[-self.last :]
        values = [self.history[e] for e in epochs]
        return {
            "metric": self.key,
            "median": statistics.median(values),
            "epochs": epochs,
            "values": values,
            "final": self.history[max(self.history)],
            "best": max(self.history.values()),
        }
