"""The entry point behind ``recipes/train_classifier.py``: supervised mixup classification.

Examples:
    $ python recipes/train_classifier.py --dataset cifar100 --data-root data/cifar --method amix
    $ python recipes/train_classifier.py --dataset cifar100 --method cutmix --resume auto
"""

from __future__ import annotations

import argparse
import json
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from lightly_amix.classifier_config import (
    CLASSIFIER_METHODS,
    ClassifierConfig,
    load_classifier_config,
)
from lightly_amix.cli_common import (
    EXIT_CODES,
    SAFETY,
    add_common_flags,
    cap_workers,
    common_flags,
    error,
)
from lightly_amix.config import to_dict, to_yaml
from lightly_amix.data import DATASETS, build_dataset, dataset_spec
from lightly_amix.data.datamodule import ClassifierDataModule, class_balanced_subset
from lightly_amix.data.transforms import classification_transforms
from lightly_amix.eval.last_epochs import LastEpochsMedian
from lightly_amix.models.classifier import AutoMixClassifier, MixupClassifier, build_classifier
from lightly_amix.training import (
    CheckpointWriteError,
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
  dataclass defaults < recipes/configs/classify/<dataset>.yaml (or the --config files instead)
  < flags such as --epochs < --set key=value

examples:
  # the paper's CIFAR-100 setting (R-18, 800 epochs, batch 100, lr 0.1), Mix Block+ (AMix)
  python {prog} --dataset cifar100 --data-root data/cifar --method amix
  # a 1-minute check on the CPU
  python {prog} --dataset fashion-mnist --method amix --epochs 1 --limit-batches 2 \\
      --accelerator cpu --output-dir out/sup

outputs in --output-dir: config.yaml, last.ckpt, epochNNN.ckpt, interrupted.ckpt, logs/ and
tb/ (train/* and val/* metrics, val/top1_ema for automix/amix), backbone.pt, and the paper's
metric, the median test top-1 of the last 10 epochs: classify.json and a row in results.md.

{safety}

{exit_codes}
"""
RESULTS_HEADER = (
    "| method | dataset | backbone | epochs | median top-1 (last N) | final | best |\n"
    "|---|---|---|---:|---:|---:|---:|"
)


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The command line; every flag maps to one config key."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Supervised image classification with a fixed or a learned mixup "
        "(AMix paper §4.1).",
        epilog=_EPILOG.format(
            prog=prog or "train_classifier.py", safety=SAFETY, exit_codes=EXIT_CODES
        ),  # fmt: skip
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--dataset", choices=sorted(DATASETS), help="data.dataset (default: the config's)")
    add("--method", choices=CLASSIFIER_METHODS, help="vanilla, a fixed mixup, automix or amix")
    add("--alpha", type=float, help="mixing.alpha: λ ~ Beta(α, α) (paper grid 0.2 .. 4)")
    add("--lr", type=float, help="optim.lr: initial learning rate")
    add_common_flags(parser)
    return parser


def _flags(args: argparse.Namespace) -> dict[str, Any]:
    return {
        **common_flags(args),
        "method": args.method,
        "data.dataset": args.dataset,
        "mixing.alpha": args.alpha,
        "optim.lr": args.lr,
    }


def recipe_files(config_dir: Path, args: argparse.Namespace) -> tuple[list[Path], dict[str, Any]]:
    """The recipe's config of ``--dataset`` and its default output folder."""
    if args.config:
        return [Path(c) for c in args.config], {}
    dataset = args.dataset or "cifar100"
    slug = dataset.replace("-", "_")
    method = args.method or "vanilla"
    path = config_dir / "classify" / f"{slug}.yaml"
    defaults = {"trainer.output_dir": f"out/classify/{slug}_{method}"}
    return ([path] if path.is_file() else []), defaults


def classify_main(
    argv: Sequence[str] | None = None,
    config_dir: str | Path | None = None,
    prog: str | None = None,
    callbacks: Sequence[pl.Callback] = (),
) -> int:
    """Trains a classifier from command-line arguments; returns the process exit code.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).
        config_dir: Folder holding ``classify/<dataset>.yaml`` (``recipes/configs``).
        prog: Program name shown by ``--help``.
        callbacks: Extra Lightning callbacks.
    """
    args = build_parser(prog).parse_args(argv)
    quiet_third_party()
    files, defaults = recipe_files(Path(config_dir or "recipes/configs"), args)
    try:
        cfg = load_classifier_config(files, args.overrides, _flags(args), defaults)
        check_trainer_settings(cfg.trainer)
        output_dir = Path(cfg.trainer.output_dir)
        created = prepare_output_dir(output_dir)
    except (FileNotFoundError, ValueError) as exc:
        return error(str(exc))
    try:
        return _train(cfg, output_dir, callbacks)
    finally:
        if created and output_dir.is_dir() and not any(output_dir.iterdir()):
            output_dir.rmdir()


def _train(cfg: ClassifierConfig, output_dir: Path, callbacks: Sequence[pl.Callback]) -> int:
    identity = RunIdentity(cfg.method, cfg.model.backbone, cfg.data.dataset)
    try:
        choice = open_run(cfg.trainer, output_dir, identity)
    except ResumeError as exc:
        return error(str(exc))
    pl.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
    data = cfg.data
    try:
        spec = dataset_spec(data.dataset)
        for split in (data.train_split, data.test_split):
            if split not in spec.splits:
                raise ValueError(
                    f"{data.dataset} has no split '{split}' (data.train_split / "
                    f"data.test_split); its splits: {', '.join(spec.splits)}."
                )
        train_tf, test_tf = classification_transforms(data.image_size, data.augment)
        train = build_dataset(data.dataset, data.root, data.train_split, train_tf, data.download)
        test = build_dataset(data.dataset, data.root, data.test_split, test_tf, data.download)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        return error(str(exc))
    labels = torch.as_tensor(getattr(train, "labels", [0]))
    num_classes = len(getattr(train, "classes", []) or []) or int(labels.max()) + 1
    try:
        if data.subset is not None:
            train = class_balanced_subset(train, data.subset, seed=cfg.trainer.seed)
        if data.test_subset is not None:
            test = class_balanced_subset(test, data.test_subset, seed=0)
    except ValueError as exc:
        return error(f"data.subset / data.test_subset: {exc}")
    n_train = len(train)  # type: ignore[arg-type]
    if n_train < cfg.trainer.batch_size:
        return error(
            f"the training set has {n_train} images, fewer than one batch "
            f"({cfg.trainer.batch_size}); lower --batch-size."
        )
    print(f"Writing to {output_dir.resolve()}")
    print("Effective config:\n" + textwrap.indent(to_yaml(cfg), "  "))
    print(f"Data set: {data.dataset} '{data.train_split}' ({n_train} images, {num_classes} "
          f"classes) -> '{data.test_split}' ({len(test)} images)")  # type: ignore[arg-type]  # fmt: skip
    try:
        model = build_classifier(
            cfg.method, num_classes, cfg.model, cfg.optim, cfg.mixing, cfg.block_config()
        )
        if choice.candidate is not None:
            check_compatible(choice.candidate, model, model.hparams["model"])
    except (FileNotFoundError, ValueError) as exc:
        return error(str(exc))
    datamodule = ClassifierDataModule(
        train, test, cfg.trainer.batch_size, cap_workers(data.num_workers), cfg.trainer.seed
    )
    median = LastEpochsMedian(cfg.last_epochs)
    extra: list[pl.Callback] = [RunInfo(run_record(identity, to_dict(cfg))), median, *callbacks]
    if cfg.mixing.grid_every_n_epochs > 0 and isinstance(model, AutoMixClassifier):
        extra.append(MixupGridCallback(output_dir / "grids", cfg.mixing.grid_every_n_epochs))
    try:
        atomic_write_text(output_dir / "config.yaml", to_yaml(cfg))
    except CheckpointWriteError as exc:
        return error(str(exc))
    limit = cfg.trainer.limit_batches
    trainer = build_trainer(
        cfg.trainer, output_dir, extra, check_val_every_n_epoch=1, num_sanity_val_steps=0,
        limit_val_batches=limit if limit is not None else 1.0,
    )  # fmt: skip
    code = fit(trainer, model, datamodule, choice, output_dir, identity)
    if code or trainer.global_rank != 0:
        return code
    try:
        write_results(model, median, cfg, output_dir)
    except CheckpointWriteError as exc:
        return report_failure(exc, output_dir, identity)
    return 0


def write_results(
    model: MixupClassifier, median: LastEpochsMedian, cfg: ClassifierConfig, output_dir: Path
) -> str:
    """``backbone.pt``, ``classify.json`` and a Markdown row in ``results.md``; returns the row."""
    atomic_save(model.export_backbone_state_dict(), output_dir / "backbone.pt")
    summary = median.summary()
    result = {"method": cfg.method, "dataset": cfg.data.dataset, "backbone": cfg.model.backbone,
              "epochs": cfg.trainer.epochs, "alpha": cfg.mixing.alpha, "seed": cfg.trainer.seed,
              "last_epochs": cfg.last_epochs, **summary}  # fmt: skip
    atomic_write_text(output_dir / "classify.json", json.dumps(result, indent=2))
    row = (
        f"| {cfg.method} | {cfg.data.dataset} | {cfg.model.backbone} | {cfg.trainer.epochs} | "
        f"{summary['median']:.2f} (last {len(summary['epochs'])}) | {summary['final']:.2f} | "
        f"{summary['best']:.2f} |"
    )
    results = output_dir / "results.md"
    text = results.read_text() if results.is_file() else RESULTS_HEADER + "\n"
    atomic_write_text(results, text + row + "\n")
    print(f"Saved {output_dir / 'backbone.pt'} and {output_dir / 'classify.json'}")
    print(RESULTS_HEADER + "\n" + row)
    return row
