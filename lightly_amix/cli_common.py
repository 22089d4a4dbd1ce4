"""Command-line flags and helpers shared by the training recipes (pre-training, classification).

Every flag maps to one config key; :func:`common_flags` returns the dotted keys of the parsed
flags for :func:`lightly_amix.config.load_config` (``None`` values are ignored there).

Examples:
    >>> parser = argparse.ArgumentParser()
    >>> add_common_flags(parser)
    >>> args = parser.parse_args(["--epochs", "2"])
    >>> common_flags(args)["trainer.epochs"]
    2
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

EXIT_CODES = """\
exit codes: 0 done; 1 training stopped (Ctrl-C, a non-finite loss, a failed write; the
message names the checkpoint to continue from); 2 bad input, reported before any set-up."""

SAFETY = """\
checkpoints are written atomically (temp file in --output-dir, fsync, rename) and only
when finite; --resume auto continues from the valid checkpoint with the most training
progress (never the newest file) and refuses one of another method, backbone or data set.
A resumed run repeats the uninterrupted one exactly, whatever --num-workers."""


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    """Adds the flags every training recipe takes (data, config, trainer)."""
    add = parser.add_argument
    add("--data-root", help="folder of the data set (data.root); see README, 'Data'")
    add(
        "--download",
        action="store_true",
        default=None,
        help="download the data set with torchvision first (needs internet)",
    )
    add(
        "--config",
        action="append",
        default=[],
        metavar="YAML",
        help="config file(s) to use instead of the recipe's (repeatable, merged in order)",
    )
    add(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config key, e.g. --set trainer.seed=3 (repeatable)",
    )
    add("--backbone", help="model.backbone: resnet18, resnet34 or resnet50")
    add("--epochs", type=int, help="trainer.epochs")
    add("--batch-size", type=int, help="trainer.batch_size: images per device per step")
    add("--limit-batches", type=int, help="trainer.limit_batches: batches per epoch, for checks")
    add("--output-dir", help="trainer.output_dir: checkpoints, logs and results")
    add(
        "--resume",
        help="checkpoint to resume from, or 'auto': the valid checkpoint in --output-dir with "
        "the most training progress (none: start fresh)",
    )
    add("--accelerator", help="trainer.accelerator: auto, cpu, gpu, ...")
    add("--devices", help="trainer.devices: auto, a count, or a comma-separated list of ids")
    add("--strategy", help="trainer.strategy: auto, ddp, ...")
    add(
        "--precision",
        help="trainer.precision: 32-true (default), bf16-mixed, 16-mixed, bf16-true, 16-true, "
        "64-true",
    )
    add("--seed", type=int, help="trainer.seed")
    add("--num-workers", type=int, help="data.num_workers: loader processes")


def common_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The config keys of the flags of :func:`add_common_flags`."""
    return {
        "data.root": args.data_root,
        "data.download": args.download,
        "data.num_workers": args.num_workers,
        "model.backbone": args.backbone,
        "trainer.epochs": args.epochs,
        "trainer.batch_size": args.batch_size,
        "trainer.limit_batches": args.limit_batches,
        "trainer.output_dir": args.output_dir,
        "trainer.resume": args.resume,
        "trainer.accelerator": args.accelerator,
        "trainer.devices": args.devices,
        "trainer.strategy": args.strategy,
        "trainer.precision": args.precision,
        "trainer.seed": args.seed,
    }


def error(message: str) -> int:
    """Prints one ``error:`` line for bad input; returns exit code 2."""
    print(f"error: {message}", file=sys.stderr)
    return 2


def cap_workers(requested: int, name: str = "data.num_workers") -> int:
    """``requested`` loader workers, at most the CPUs this process may use (with a line).

    Args:
        requested: The configured count.
        name: How the line names the setting (``data.num_workers`` or ``--num-workers``).
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if cpus and requested > cpus:
        separator = " " if name.startswith("--") else "="
        print(f"{name}{separator}{requested} > {cpus} CPUs here: using {cpus}.")
        return cpus
    return requested
