"""The entry point behind ``recipes/pretrain_*.py``.

Examples:
    $ python recipes/pretrain_stl10.py --data-root data/stl10 --method mocov2 --epochs 400
    $ python recipes/pretrain_stl10.py --data-root data/stl10 --resume auto
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import textwrap
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint, TQDMProgressBar
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_info

from lightly_amix.config import (
    AUGMENT_ON_CHOICES,
    FIXED_MIXUPS,
    METHODS,
    PretrainConfig,
    load_config,
    to_yaml,
    uses_pseudo_labels,
)
from lightly_amix.data import (
    build_dataset,
    build_pretrain_dataset,
    eval_transform,
    resolve_augment_on,
)
from lightly_amix.eval.cli import EVAL_SPLITS
from lightly_amix.eval.monitor import KNNMonitor
from lightly_amix.models import AMix, MixMoCo, MoCoV2, MomentumContrastMethod
from lightly_amix.training import EpochSeed, PretrainDataModule
from lightly_amix.viz import MixupGridCallback

INTERRUPTED_NAME = "interrupted"

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

outputs in --output-dir: config.yaml, last.ckpt (every epoch), epochNNN.ckpt (every
trainer.keep_every epochs), interrupted.ckpt (on Ctrl-C or an error), logs/version_N/
(CSV) and tb/version_N/ (TensorBoard; one version per launch), and backbone.pt: a
torchvision ResNet state_dict without fc, e.g.
  sd = torch.load("out/backbone.pt", weights_only=True)
  torchvision.models.resnet18().load_state_dict(sd, strict=False)  # only fc.* missing
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
    add("--resume", help="checkpoint to resume from, or 'auto' for the newest in --output-dir")
    add("--accelerator", help="trainer.accelerator: auto, cpu, gpu, ...")
    add("--devices", help="trainer.devices: auto, a count, or a comma-separated list of ids")
    add("--strategy", help="trainer.strategy: auto, ddp, ...")
    add("--precision", help="trainer.precision: 32-true, bf16-mixed, 16-mixed")
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


def parse_devices(devices: str) -> int | str | list[int]:
    """``auto`` -> ``"auto"``, ``"2"`` -> 2, ``"0,1"`` -> [0, 1]."""
    text = devices.strip()
    if text == "auto":
        return "auto"
    try:
        if "," in text:
            return [int(part) for part in text.split(",") if part.strip()]
        return int(text)
    except ValueError:
        raise ValueError(
            f"Invalid devices '{devices}': expected 'auto', a count such as 2, or ids such as 0,1."
        ) from None


def _checkpoints(output_dir: Path) -> list[Path]:
    """The checkpoints that ``--resume auto`` considers."""
    return [output_dir / "last.ckpt", output_dir / f"{INTERRUPTED_NAME}.ckpt"]


def resolve_resume(resume: str | None, output_dir: Path) -> str | None:
    """Returns the checkpoint to resume from: an explicit path, the newest one, or None."""
    if resume is None:
        return None
    if resume == "auto":
        existing = [path for path in _checkpoints(output_dir) if path.is_file()]
        if not existing:
            print(f"--resume auto: no checkpoint in {output_dir}, starting from scratch.")
            return None
        newest = max(existing, key=lambda path: path.stat().st_mtime)
        return str(newest)
    path = Path(resume)
    if not path.is_file():
        raise FileNotFoundError(
            f"--resume {resume}: no such checkpoint. Pass an existing .ckpt file, or 'auto' to "
            f"pick the newest of last.ckpt / {INTERRUPTED_NAME}.ckpt in the output directory."
        )
    return str(path)


class SaveOnInterrupt(pl.Callback):
    """Writes a checkpoint when training stops on Ctrl-C or an error.

    Lightning's ``OnExceptionCheckpoint`` does the same, but its presence makes
    ``fit(ckpt_path=None)`` silently resume from that file; resuming here is always explicit
    (``--resume``).
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        trainer.save_checkpoint(self.path)
        bar = trainer.progress_bar_callback
        if isinstance(bar, TQDMProgressBar):
            # Close the half-done bar now; left open, it is printed again at exit.
            with contextlib.suppress(TypeError, AttributeError):
                bar.train_progress_bar.close()
        rank_zero_info(f"Saved {self.path}; continue with --resume auto.")


def build_trainer(
    cfg: PretrainConfig, output_dir: Path, extra_callbacks: Sequence[pl.Callback] = ()
) -> pl.Trainer:
    """A Lightning Trainer with checkpoints, CSV/TensorBoard logs and per-epoch seeding."""
    t = cfg.trainer
    callbacks: list[pl.Callback] = [
        # last.ckpt, overwritten at the end of every epoch (Lightning's save_last only writes
        # when a top-k checkpoint was written at the same step).
        ModelCheckpoint(
            dirpath=output_dir,
            filename="last",
            save_top_k=1,
            every_n_epochs=1,
            enable_version_counter=False,
        ),  # fmt: skip
        ModelCheckpoint(
            dirpath=output_dir,
            filename="epoch{epoch:03d}",
            auto_insert_metric_name=False,
            save_top_k=-1,
            every_n_epochs=t.keep_every,
        ),
        SaveOnInterrupt(output_dir / f"{INTERRUPTED_NAME}.ckpt"),
        EpochSeed(t.seed),
        *extra_callbacks,
    ]
    # One version_N folder per launch, so a resumed run never overwrites earlier logs.
    loggers = [CSVLogger(output_dir, name="logs"), TensorBoardLogger(output_dir, name="tb")]
    log_every = t.log_every_n_steps
    if t.limit_batches is not None:
        log_every = min(log_every, t.limit_batches)
    return pl.Trainer(
        max_epochs=t.epochs,
        limit_train_batches=t.limit_batches if t.limit_batches is not None else 1.0,
        accelerator=t.accelerator,
        devices=parse_devices(t.devices),
        strategy=t.strategy,
        precision=t.precision,  # type: ignore[arg-type]
        sync_batchnorm=t.sync_batchnorm,
        callbacks=callbacks,
        logger=loggers,
        log_every_n_steps=log_every,
        reload_dataloaders_every_n_epochs=1,
        use_distributed_sampler=False,
        enable_progress_bar=True,
    )


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
    print(f"error: {message}", file=sys.stderr)
    return 2


def pretrain_main(
    argv: Sequence[str] | None = None,
    dataset: str = "stl10",
    config_dir: str | Path | None = None,
    prog: str | None = None,
    callbacks: Sequence[pl.Callback] = (),
) -> int:
    """Runs pre-training from command-line arguments; returns the process exit code.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).
        dataset: Data set name; with ``--method`` it selects ``<dataset>_<method>.yaml``.
        config_dir: Folder of the default configs (``recipes/configs``).
        prog: Program name shown by ``--help``.
        callbacks: Extra Lightning callbacks (e.g. for monitoring when embedding the recipe).
    """
    args = build_parser(dataset, prog).parse_args(argv)
    config_path: Path | None = Path(args.config) if args.config else None
    if config_path is None and config_dir is not None:
        slug = dataset.replace("-", "_")
        config_path = Path(config_dir) / f"{slug}_{args.method or 'mocov2'}.yaml"
    try:
        cfg = load_config(config_path, overrides=args.overrides, flags=_flags(args))
    except (FileNotFoundError, ValueError) as exc:
        return _error(str(exc))
    output_dir = Path(cfg.trainer.output_dir)
    existing = [p.name for p in _checkpoints(output_dir) if p.is_file()]
    if cfg.trainer.resume is None and existing:
        return _error(
            f"{output_dir} already holds {', '.join(existing)} from an earlier run. Pass "
            "--resume auto to continue it, or choose another --output-dir."
        )
    try:
        ckpt_path = resolve_resume(cfg.trainer.resume, output_dir)
        parse_devices(cfg.trainer.devices)
    except (FileNotFoundError, ValueError) as exc:
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
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "config.yaml").write_text(to_yaml(cfg))

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if cpus and cfg.data.num_workers > cpus:
        print(f"data.num_workers={cfg.data.num_workers} > {cpus} CPUs here: using {cpus}.")
        cfg.data.num_workers = cpus
    model = build_model(cfg, n_images)
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
    extra = list(callbacks)
    if cfg.mixing.grid_every_n_epochs > 0 and cfg.method != "mocov2":
        extra.append(MixupGridCallback(output_dir / "grids", cfg.mixing.grid_every_n_epochs))
    if cfg.trainer.knn_every_n_epochs > 0:
        extra.append(build_knn_monitor(cfg))
    trainer = build_trainer(cfg, output_dir, extra)
    if ckpt_path:
        print(f"Resuming from {ckpt_path}")
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)

    if trainer.global_rank == 0:
        backbone_path = output_dir / "backbone.pt"
        torch.save(model.export_backbone_state_dict(), backbone_path)
        print(f"Saved {output_dir / 'last.ckpt'} and {backbone_path}")
    return 0
