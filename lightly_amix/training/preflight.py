"""Checks that run before any data is read: trainer settings and the output folder.

A typo in ``--precision`` or an output folder that cannot be written should cost a second and
one line, not the minute of set-up before Lightning would notice.

Examples:
    >>> world_size = check_trainer_settings(cfg)  # doctest: +SKIP
    >>> created = prepare_output_dir(Path("out/run"))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import pytorch_lightning as pl

from lightly_amix.config import TrainerConfig
from lightly_amix.training.trainer import parse_devices


def check_trainer_settings(t: TrainerConfig) -> int:
    """Checks accelerator, devices, strategy and precision by building a bare Trainer.

    Runs before any data is read, so a typo costs a second, not the set-up.

    Returns:
        The number of processes (world size) these settings give.

    Raises:
        ValueError: Naming the settings and Lightning's reason.
    """
    devices = parse_devices(t.devices)
    rank_zero_loggers = [
        logging.getLogger(n)
        for n in ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero")
    ]
    levels = [logger.level for logger in rank_zero_loggers]
    for logger in rank_zero_loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            probe = pl.Trainer(
                accelerator=t.accelerator, devices=devices, strategy=t.strategy,
                precision=t.precision,  # type: ignore[arg-type]
                logger=False, enable_checkpointing=False, enable_progress_bar=False,
                enable_model_summary=False,
            )  # fmt: skip
    except Exception as exc:  # Lightning raises MisconfigurationException, ValueError, ...
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(
            f"these trainer settings do not work here (--accelerator {t.accelerator} --devices "
            f"{t.devices} --strategy {t.strategy} --precision {t.precision}): {reason}"
        ) from None
    finally:
        for logger, level in zip(rank_zero_loggers, levels, strict=True):
            logger.setLevel(level)
    return int(probe.world_size)


def prepare_output_dir(path: Path) -> bool:
    """Creates the output folder and checks that files can be written in it.

    Returns:
        Whether this call created the folder.

    Raises:
        ValueError: If it is a file, cannot be created or is not writable.
    """
    if path.exists() and not path.is_dir():
        raise ValueError(f"--output-dir {path} is a file, not a folder; choose a folder path.")
    created = not path.exists()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(
            f"--output-dir {path} cannot be created ({exc.strerror or exc}); choose a folder on a "
            "file system you can write to."
        ) from None
    probe = path / f".write-test.{os.getpid()}"
    try:
        probe.write_bytes(b"0")
        probe.unlink()
    except OSError as exc:
        raise ValueError(
            f"--output-dir {path} is not writable ({exc.strerror or exc}); choose another "
            "folder, or fix its permissions / remount it read-write."
        ) from None
    return created
