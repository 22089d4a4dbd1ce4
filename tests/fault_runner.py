"""Runs the STL-10 recipe with one injected fault (launched by tests/test_faults.py).

Usage: python tests/fault_runner.py FAULT N -- <recipe arguments>

Faults (N counts from 1 for saves, is a global step for the others):
- ``none``: no fault.
- ``kill-at-step``: SIGKILL this process when step N is about to start.
- ``kill-in-save``: SIGKILL this process half-way through writing the N-th checkpoint file.
- ``sigint-at-step``: send this process SIGINT (Ctrl-C) when step N is about to start.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

import lightly_amix.training.checkpoint_io as checkpoint_io
from lightly_amix.cli import pretrain_main

CONFIGS = Path(__file__).resolve().parents[1] / "recipes" / "configs"


class SignalAtStep(pl.Callback):
    def __init__(self, step: int, signum: int) -> None:
        self.step, self.signum = step, signum

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, batch: Any, i: int) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


def kill_in_save(n: int) -> None:
    """Replaces the checkpoint writer: the n-th save writes half a file, then SIGKILL."""
    original = checkpoint_io._write_file
    calls = {"n": 0}

    def writer(obj: Any, path: Path) -> None:
        calls["n"] += 1
        if calls["n"] < n:
            original(obj, path)
            return
        original(obj, path)
        size = path.stat().st_size
        with open(path, "r+b") as file:  # a torn temporary file, as a kill part-way leaves it
            file.truncate(size // 2)
        os.kill(os.getpid(), signal.SIGKILL)

    checkpoint_io._write_file = writer  # type: ignore[assignment]


if __name__ == "__main__":
    fault, n, sep, *argv = sys.argv[1:]
    assert sep == "--", "usage: fault_runner.py FAULT N -- <recipe arguments>"
    callbacks: list[pl.Callback] = []
    if fault == "kill-at-step":
        callbacks.append(SignalAtStep(int(n), signal.SIGKILL))
    elif fault == "sigint-at-step":
        callbacks.append(SignalAtStep(int(n), signal.SIGINT))
    elif fault == "kill-in-save":
        kill_in_save(int(n))
    elif fault != "none":
        raise SystemExit(f"unknown fault {fault!r}")
    sys.exit(pretrain_main(argv, dataset="stl10", config_dir=CONFIGS, callbacks=callbacks))
