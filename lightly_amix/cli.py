"""The entry point behind ``recipes/pretrain_*.py``.

Examples:
    $ python recipes/pretrain_stl10.py --data-root data/stl10 --method mocov2 --epochs 400
    $ python recipes/pretrain_stl10.py --data-root data/stl10 --resume auto
"""

from __future__ import annotations

import argparse
import textwrap
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from lightly_amix.cli_common import (
    EXIT_CODES,
    SAFETY,
    add_common_flags,
    cap_workers,
    common_flags,
    error,
)
from lightly_amix.config import (
    AUGMENT_ON_CHOICES,
    METHODS,
    PretrainConfig,
    load_config,
    recipe_config_files,
    to_dict,
    to_yaml,
)
from lightly_amix.data import (
    build_dataset,
    build_pretrain_dataset,
    eval_transform,
    resolve_augment_on,
)
from lightly_amix.eval.monitor import build_knn_monitor
from lightly_amix.models.factory import build_model
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
    quiet_third_party,
)
from lightly_amix.training.preflight import check_trainer_settings, prepare_output_dir
from lightly_amix.training.run import fit, open_run, report_failure, run_record
from lightly_amix.viz import MixupGridCallback

_EPILOG = """\
configuration precedence (lowest first):
  dataclass defaults < recipes/configs/<dataset>.yaml < recipes/configs/methods/<method>.yaml
  (or the --config files instead) < flags such as --epochs < --set key=value

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

{safety}

{exit_codes}
"""


def build_parser(dataset: str, prog: str | None = None) -> argparse.ArgumentParser:
    """The recipes' command line; every flag maps to one config key."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=f"Self-supervised pre-training on {dataset} with MoCo v2 (+ AMix).",
        epilog=_EPILOG.format(prog=prog or "recipe.py", safety=SAFETY, exit_codes=EXIT_CODES),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common_flags(parser)
    add = parser.add_argument
    add(
        "--method",
        choices=METHODS,
        help="pre-training method; without --config the recipe merges "
        "recipes/configs/<dataset>.yaml and recipes/configs/methods/<method>.yaml "
        "(default: mocov2, or the --config's method)",
    )
    add("--queue-size", type=int, help="model.queue_size: negatives in the memory bank")
    add(
        "--augment-on",
        choices=AUGMENT_ON_CHOICES,
        help="data.augment_on: draw the two views in the loader workers (PIL), or on the "
        "device from uint8 batches; auto = device when training on a GPU (default)",
    )
    return parser


def _flags(args: argparse.Namespace) -> dict[str, Any]:
    return {
        **common_flags(args),
        "method": args.method,
        "data.augment_on": args.augment_on,
        "model.queue_size": args.queue_size,
    }


def _run_identity(cfg: PretrainConfig) -> RunIdentity:
    return RunIdentity(cfg.method, cfg.model.backbone, cfg.data.dataset)


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
    files: list[Path] = [Path(c) for c in args.config]
    defaults: dict[str, Any] = {}
    if not files and config_dir is not None:
        files, defaults = recipe_config_files(config_dir, dataset, args.method or "mocov2")
    try:
        cfg = load_config(files, overrides=args.overrides, flags=_flags(args), defaults=defaults)
        world = check_trainer_settings(cfg.trainer)
        if cfg.model.queue_size < cfg.trainer.batch_size * world:
            raise ValueError(
                f"model.queue_size {cfg.model.queue_size} is smaller than the keys of one step "
                f"({cfg.trainer.batch_size} per device x {world} processes): raise --queue-size."
            )
        output_dir = Path(cfg.trainer.output_dir)
        created = prepare_output_dir(output_dir)
    except (FileNotFoundError, ValueError) as exc:
        return error(str(exc))
    try:
        return _pretrain(cfg, output_dir, callbacks)
    finally:
        if created and output_dir.is_dir() and not any(output_dir.iterdir()):
            output_dir.rmdir()  # a launch that stopped before writing anything leaves no trace


def _pretrain(cfg: PretrainConfig, output_dir: Path, callbacks: Sequence[pl.Callback]) -> int:
    identity = _run_identity(cfg)
    try:
        choice = open_run(cfg.trainer, output_dir, identity)
    except ResumeError as exc:
        return error(str(exc))

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
        return error(str(exc))

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
        return error(
            f"the data set has {n_images} images, fewer than one batch "
            f"({cfg.trainer.batch_size}); lower --batch-size."
        )

    cfg.data.num_workers = cap_workers(cfg.data.num_workers)
    model = build_model(cfg, n_images)
    if choice.candidate is not None:
        try:
            check_compatible(choice.candidate, model, model.hparams["model"])
        except ResumeError as exc:
            return error(str(exc))
    feature_set = None
    if getattr(model, "clustering", None) is not None:  # AMix-C, PuzzleMix (C)
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
    extra: list[pl.Callback] = [RunInfo(run_record(identity, to_dict(cfg))), *callbacks]
    if cfg.mixing.grid_every_n_epochs > 0 and cfg.method != "mocov2":
        extra.append(MixupGridCallback(output_dir / "grids", cfg.mixing.grid_every_n_epochs))
    if cfg.trainer.knn_every_n_epochs > 0:
        extra.append(build_knn_monitor(cfg))
    try:
        atomic_write_text(output_dir / "config.yaml", to_yaml(cfg))
    except CheckpointWriteError as exc:
        return error(str(exc))
    trainer = build_trainer(cfg.trainer, output_dir, extra)
    code = fit(trainer, model, datamodule, choice, output_dir, identity)
    if code:
        return code

    if trainer.global_rank == 0:
        backbone_path = output_dir / "backbone.pt"
        try:
            atomic_save(model.export_backbone_state_dict(), backbone_path)
        except CheckpointWriteError as exc:
            return report_failure(exc, output_dir, identity)
        print(f"Saved {output_dir / 'last.ckpt'} and {backbone_path}")
    return 0
