"""The entry point behind ``recipes/pretrain_*.py``.

Examples:
    $ python recipes/pretrain_stl10.py --data-root data/stl10 --method mocov2 --epochs 400
    $ python recipes/pretrain_stl10.py --data-root data/stl10 --resume auto
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import textwrap
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from lightly_amix.config import (
    AUGMENT_ON_CHOICES,
    FIXED_MIXUPS,
    METHODS,
    PretrainConfig,
    load_config,
    to_dict,
    to_yaml,
    uses_pseudo_labels,
)
from lightly_amix.data import (
    build_dataset,
    build_pretrain_dataset,
    eval_transform,
    resolve_augment_on,
)
from lightly_amix.data.errors import DatasetFormatError
from lightly_amix.eval.cli import EVAL_SPLITS
from lightly_amix.eval.monitor import KNNMonitor
from lightly_amix.models import AMix, MixMoCo, MoCoV2, MomentumContrastMethod
from lightly_amix.training import (
    CheckpointWriteError,
    PretrainDataModule,
    ResumeError,
    RunIdentity,
    RunInfo,
    atomic_save,
    atomic_write_text,
    build_trainer,
    check_compatible,
    checkpoint_files,
    parse_devices,
    quiet_third_party,
    remove_stale_temporary_files,
    resolve_resume,
)
from lightly_amix.viz import MixupGridCallback

_EPILOG = """\
configuration precedence (lowest first):
  dataclass defaults < --config YAML < flags such as --epochs < --set key=value

examples:
  # paper settings (see recipes/configs/), on 1 GPU
  python {prog} --data-root data/stl10 --method mocov2
  # a 1-minute smoke test on the CPU
  python {prog} --data-root data/stl10 --epochs 1 --batch-size 8 --limit-batches 2 \\
      --queue-size 64 --accelerator cpu --output-dir out/smoke
  # 4 GPUs with DDP and bf16, then continue after an interruption
  python {prog} --data-root data/stl10 --devices 4 --strategy ddp --precision bf16-mixed
  python {prog} --data-root data/stl10 --devices 4 --strategy ddp --resume auto

outputs in --output-dir: config.yaml, last.ckpt (at the end of every epoch and every
trainer.checkpoint_every_minutes within one), epochNNN.ckpt (every trainer.keep_every
epochs), interrupted.ckpt (Ctrl-C finishes the step, saves it and stops), logs/version_N/
(CSV) and tb/version_N/ (TensorBoard; one version per launch), and backbone.pt: a
torchvision ResNet state_dict without fc, e.g.
  sd = torch.load("out/backbone.pt", weights_only=True)
  torchvision.models.resnet18().load_state_dict(sd, strict=False)  # only fc.* missing

checkpoints are written atomically (temp file in --output-dir, fsync, rename) and only
when finite; --resume auto continues from the valid checkpoint with the most training
progress (never the newest file) and refuses one of another method, backbone or data set.
A resumed run repeats the uninterrupted one exactly, whatever --num-workers.

exit codes: 0 done; 1 training stopped (Ctrl-C, a non-finite loss, a failed write; the
message names the checkpoint to continue from); 2 bad input, reported before any set-up.
"""


def build_parser(dataset: str, prog: str | None = None) -> argparse.ArgumentParser:
    """The recipes' command line; every flag maps to one config key."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=f"Self-supervised pre-training on {dataset} with MoCo v2 (+ AMix).",
        epilog=_EPILOG.format(prog=prog or "recipe.py"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--data-root", help="folder of the data set (data.root); see README, 'Data'")
    add(
        "--download",
        action="store_true",
        default=None,
        help="download the data set with torchvision first (needs internet)",
    )
    add(
        "--method",
        choices=METHODS,
        help="pre-training method; without --config it selects "
        "recipes/configs/<dataset>_<method>.yaml (default: mocov2, or the --config's method)",
    )
    add("--config", help="YAML config to use instead of the recipe's default one")
    add(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config key, e.g. --set model.temperature=0.1 (repeatable)",
    )
    add("--backbone", help="model.backbone: resnet18, resnet34 or resnet50")
    add("--epochs", type=int, help="trainer.epochs")
    add("--batch-size", type=int, help="trainer.batch_size: images per device per step")
    add(
        "--limit-batches",
        type=int,
        help="trainer.limit_batches: batches per epoch, for quick checks",
    )
    add("--queue-size", type=int, help="model.queue_size: negatives in the memory bank")
    add("--output-dir", help="trainer.output_dir: checkpoints, logs and backbone.pt")
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
    add(
        "--augment-on",
        choices=AUGMENT_ON_CHOICES,
        help="data.augment_on: draw the two views in the loader workers (PIL), or on the "
        "device from uint8 batches; auto = device when training on a GPU (default)",
    )
    return parser


def _flags(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "method": args.method,
        "data.root": args.data_root,
        "data.download": args.download,
        "data.num_workers": args.num_workers,
        "data.augment_on": args.augment_on,
        "model.backbone": args.backbone,
        "model.queue_size": args.queue_size,
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


def build_model(cfg: PretrainConfig, num_samples: int) -> MomentumContrastMethod:
    """The LightningModule of ``cfg.method``."""
    batch = cfg.trainer.batch_size
    if cfg.method == "mocov2":
        return MoCoV2(cfg.model, cfg.optim, batch_size=batch)
    if cfg.method in FIXED_MIXUPS:
        return MixMoCo(cfg.model, cfg.optim, batch, cfg.mixing, mixup=cfg.method)
    expected = "ce_pl" if cfg.method == "amix-c" else "infonce"
    if cfg.method == "amix-c" and not uses_pseudo_labels(cfg.mixing.block_loss):
        warnings.warn(
            f"--method amix-c with mixing.block_loss={cfg.mixing.block_loss} uses no "
            f"pseudo-labels; AMix-C is {expected}+bce.",
            stacklevel=2,
        )
    return AMix(cfg.model, cfg.optim, batch, cfg.mixing, cfg.mix_block, cfg.odc, num_samples)


def build_knn_monitor(cfg: PretrainConfig) -> KNNMonitor:
    """A kNN monitor on the data set's labelled splits (see ``EVAL_SPLITS``)."""
    train_split, test_split = EVAL_SPLITS[cfg.data.dataset]
    transform = eval_transform(cfg.data.image_size)
    data = cfg.data
    bank = build_dataset(data.dataset, data.root, train_split, transform=transform)
    test = build_dataset(data.dataset, data.root, test_split, transform=transform)
    classes = getattr(bank, "classes", None) or []
    num_classes = len(classes) or int(max(getattr(bank, "labels", [0]))) + 1
    return KNNMonitor(
        bank,
        test,
        num_classes,
        every_n_epochs=cfg.trainer.knn_every_n_epochs,
        batch_size=cfg.trainer.batch_size,
        limit_batches=cfg.trainer.knn_limit_batches,
    )


def _error(message: str) -> int:
    """Prints one ``error:`` line for bad input; returns exit code 2."""
    print(f"error: {message}", file=sys.stderr)
    return 2


def check_trainer_settings(cfg: PretrainConfig) -> int:
    """Checks accelerator, devices, strategy and precision by building a bare Trainer.

    Runs before any data is read, so a typo costs a second, not the set-up.

    Returns:
        The number of processes (world size) these settings give.

    Raises:
        ValueError: Naming the settings and Lightning's reason.
    """
    t = cfg.trainer
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
    world = int(probe.world_size)
    if cfg.model.queue_size < cfg.trainer.batch_size * world:
        raise ValueError(
            f"model.queue_size {cfg.model.queue_size} is smaller than the keys of one step "
            f"({cfg.trainer.batch_size} per device x {world} processes): raise --queue-size."
        )
    return world


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


def _run_identity(cfg: PretrainConfig) -> RunIdentity:
    return RunIdentity(cfg.method, cfg.model.backbone, cfg.data.dataset)


def _training_failed(exc: BaseException, output_dir: Path, cfg: PretrainConfig) -> int:
    """One line on why training stopped and which checkpoint holds the run now; exit code 1."""
    try:
        latest = resolve_resume("auto", output_dir, _run_identity(cfg)).candidate
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
            "data first (a lower optim.base_lr needs a new run: a resumed run keeps its schedule), "
            "then continue with --resume auto."
        )
    elif isinstance(exc, CheckpointWriteError):
        advice = ""
    else:
        advice = "Fix the cause, then continue with --resume auto."
    print(f"error: {exc} Now {where}. {advice}".rstrip(), file=sys.stderr)
    return 1


def pretrain_main(
    argv: Sequence[str] | None = None,
    dataset: str = "stl10",
    config_dir: str | Path | None = None,
    prog: str | None = None,
    callbacks: Sequence[pl.Callback] = (),
) -> int:
    """Runs pre-training from command-line arguments; returns the process exit code.

    Exit codes: 0 done; 1 training stopped (interrupted, a non-finite loss, a failed write;
    the message says what was saved); 2 bad input, found before any heavy set-up.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).
        dataset: Data set name; with ``--method`` it selects ``<dataset>_<method>.yaml``.
        config_dir: Folder of the default configs (``recipes/configs``).
        prog: Program name shown by ``--help``.
        callbacks: Extra Lightning callbacks (e.g. for monitoring when embedding the recipe).
    """
    args = build_parser(dataset, prog).parse_args(argv)
    quiet_third_party()
    config_path: Path | None = Path(args.config) if args.config else None
    if config_path is None and config_dir is not None:
        slug = dataset.replace("-", "_")
        config_path = Path(config_dir) / f"{slug}_{args.method or 'mocov2'}.yaml"
    try:
        cfg = load_config(config_path, overrides=args.overrides, flags=_flags(args))
        check_trainer_settings(cfg)
        output_dir = Path(cfg.trainer.output_dir)
        created = prepare_output_dir(output_dir)
    except (FileNotFoundError, ValueError) as exc:
        return _error(str(exc))
    try:
        return _pretrain(cfg, output_dir, callbacks)
    finally:
        if created and output_dir.is_dir() and not any(output_dir.iterdir()):
            output_dir.rmdir()  # a launch that stopped before writing anything leaves no trace


def _pretrain(cfg: PretrainConfig, output_dir: Path, callbacks: Sequence[pl.Callback]) -> int:
    remove_stale_temporary_files(output_dir)
    existing = [p.name for p in checkpoint_files(output_dir)]
    if cfg.trainer.resume is None and existing:
        return _error(
            f"{output_dir} already holds {', '.join(existing)} from an earlier run. Pass "
            "--resume auto to continue it, or choose another --output-dir."
        )
    identity = _run_identity(cfg)
    try:
        choice = resolve_resume(cfg.trainer.resume, output_dir, identity)
    except ResumeError as exc:
        return _error(str(exc))

    pl.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
    try:
        augment_on = resolve_augment_on(cfg.data.augment_on, cfg.trainer.accelerator)
        train_set, device_augment = build_pretrain_dataset(
            cfg.data.dataset,
            cfg.data.root,
            cfg.data.split,
            cfg.data.image_size,
            augment_on=augment_on,
            download=cfg.data.download,
            min_scale=cfg.data.crop_min_scale,
        )
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        return _error(str(exc))

    n_images = len(train_set)  # type: ignore[arg-type]
    print(f"Writing to {output_dir.resolve()}")
    print("Effective config:\n" + textwrap.indent(to_yaml(cfg), "  "))
    print(f"Data set: {cfg.data.dataset} '{cfg.data.split}' in {cfg.data.root}: {n_images} images")
    where = "in the loader workers (PIL)" if device_augment is None else "on the device, batched"
    print(f"Two-view augmentation: {augment_on} ({where})")
    if cfg.model.queue_size > n_images:
        warnings.warn(
            f"model.queue_size ({cfg.model.queue_size}) is larger than the data set "
            f"({n_images} images): the queue will hold several keys of the same image. "
            f"Use --queue-size {n_images} or less.",
            stacklevel=1,
        )
    if n_images < cfg.trainer.batch_size:
        return _error(
            f"the data set has {n_images} images, fewer than one batch "
            f"({cfg.trainer.batch_size}); lower --batch-size."
        )

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if cpus and cfg.data.num_workers > cpus:
        print(f"data.num_workers={cfg.data.num_workers} > {cpus} CPUs here: using {cpus}.")
        cfg.data.num_workers = cpus
    model = build_model(cfg, n_images)
    if choice.candidate is not None:
        try:
            check_compatible(choice.candidate, model, model.hparams["model"])
        except ResumeError as exc:
            return _error(str(exc))
    feature_set = None
    if isinstance(model, AMix) and model.odc is not None:
        feature_set = build_dataset(
            cfg.data.dataset,
            cfg.data.root,
            cfg.data.split,
            transform=eval_transform(cfg.data.image_size),
        )
    datamodule = PretrainDataModule(
        train_set,
        cfg.trainer.batch_size,
        cfg.data.num_workers,
        cfg.trainer.seed,
        feature_set,
        device_augment=device_augment,
    )
    run = {
        "method": identity.method,
        "backbone": identity.backbone,
        "dataset": identity.dataset,
        "config": to_dict(cfg),
    }
    extra: list[pl.Callback] = [RunInfo(run), *callbacks]
    if cfg.mixing.grid_every_n_epochs > 0 and cfg.method != "mocov2":
        extra.append(MixupGridCallback(output_dir / "grids", cfg.mixing.grid_every_n_epochs))
    if cfg.trainer.knn_every_n_epochs > 0:
        extra.append(build_knn_monitor(cfg))
    try:
        atomic_write_text(output_dir / "config.yaml", to_yaml(cfg))
    except CheckpointWriteError as exc:
        return _error(str(exc))
    trainer = build_trainer(cfg, output_dir, extra)
    if choice.message:
        print(choice.message)
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=choice.path)
    except (FloatingPointError, CheckpointWriteError, DatasetFormatError, OSError) as exc:
        return _training_failed(exc, output_dir, cfg)

    if trainer.global_rank == 0:
        backbone_path = output_dir / "backbone.pt"
        try:
            atomic_save(model.export_backbone_state_dict(), backbone_path)
        except CheckpointWriteError as exc:
            return _training_failed(exc, output_dir, cfg)
        print(f"Saved {output_dir / 'last.ckpt'} and {backbone_path}")
    return 0
