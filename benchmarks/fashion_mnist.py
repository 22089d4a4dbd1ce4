#!/usr/bin/env python
"""A small real-data accuracy benchmark on Fashion-MNIST: equal budget per method.

Every method pre-trains with the same backbone, epochs, batch and MoCo hyper-parameters (the
recipe's ``recipes/configs/fashion_mnist.yaml`` + ``methods/<method>.yaml`` plus ``--set``
overrides shared by all methods) on a class-balanced subset of the training split, written as
real idx files. Then the backbone's pooled features are evaluated on the test split: weighted
kNN (k = 200 and k = 20, t = 0.1; the bank is the pre-training subset) and a linear probe on
cached features.
Two reference rows calibrate the table: kNN on raw pixels, and a randomly initialised encoder.

Each run's result is saved as ``<output-dir>/<method>_seed<s>.json``; runs that already have
one are skipped, so the benchmark can be extended (more seeds, more methods) and re-run, and
the table always shows everything measured so far. A run that was interrupted (Ctrl-C saves
a checkpoint) is resumed from its newest checkpoint when the same command is run again.

Examples:
    python benchmarks/fashion_mnist.py --methods mocov2 mixup amix-i --seeds 0 1
    python benchmarks/fashion_mnist.py --references-only
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import struct
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightly_amix.cli import pretrain_main
from lightly_amix.data import FASHION_MNIST_DEFAULT_ROOT, FashionMNIST, build_dataset
from lightly_amix.data import eval_transform as make_eval_transform
from lightly_amix.eval.features import extract_features, load_encoder
from lightly_amix.eval.knn import knn_accuracy
from lightly_amix.eval.linear import MoCoLinearClassifier
from lightly_amix.models.backbones import ResNetBackbone
from lightly_amix.training import resolve_resume

CONFIGS = Path(__file__).resolve().parents[1] / "recipes" / "configs"
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">I", 0x00000800 | array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    path.write_bytes(gzip.compress(header + np.ascontiguousarray(array).tobytes(), 1))


def write_subset(source: Path, target: Path, train_size: int, test_size: int) -> None:
    """Class-balanced first images of each class, as Fashion-MNIST idx files under target."""
    target.mkdir(parents=True, exist_ok=True)
    for split, size in (("train", train_size), ("test", test_size)):
        data = FashionMNIST(source, split=split)
        per_class = size // 10
        keep = np.sort(
            np.concatenate([np.flatnonzero(data.labels == c)[:per_class] for c in range(10)])
        )
        images, labels = FILES[split]
        _write_idx(target / images, data.images[keep])
        _write_idx(target / labels, data.labels[keep].astype(np.uint8))


def evaluate(
    encoder: torch.nn.Module, root: Path, image_size: int, probe_epochs: int
) -> dict[str, float]:
    """kNN (k = 200 and 20, t = 0.1) and a linear probe on the test split."""
    transform = make_eval_transform(image_size)
    train = build_dataset("fashion-mnist", root, "train", transform=transform)
    test = build_dataset("fashion-mnist", root, "test", transform=transform)
    train_f, train_y = extract_features(encoder, train, batch_size=512, desc="train features")
    test_f, test_y = extract_features(encoder, test, batch_size=512, desc="test features")
    return features_scores(train_f, train_y, test_f, test_y, probe_epochs)


def features_scores(
    train_f: torch.Tensor,
    train_y: torch.Tensor,
    test_f: torch.Tensor,
    test_y: torch.Tensor,
    probe_epochs: int,
) -> dict[str, float]:
    scores = {
        "knn200": knn_accuracy(train_f, train_y, test_f, test_y, 10, k=200, t=0.1)["top1"],
        "knn20": knn_accuracy(train_f, train_y, test_f, test_y, 10, k=20, t=0.1)["top1"],
    }
    if probe_epochs > 0:
        # Standardised features: one learning rate suits raw pixels and every encoder.
        mean, std = train_f.mean(0), train_f.std(0) + 1e-6
        train_loader = DataLoader(
            TensorDataset((train_f - mean) / std, train_y), batch_size=256, shuffle=True
        )
        test_loader = DataLoader(TensorDataset((test_f - mean) / std, test_y), batch_size=1024)
        probe = MoCoLinearClassifier(torch.nn.Identity(), 256, 0.1, train_f.shape[1], 10,
                                     epochs=probe_epochs)  # fmt: skip
        trainer = pl.Trainer(
            max_epochs=probe_epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False,
            check_val_every_n_epoch=probe_epochs,
        )  # fmt: skip
        trainer.fit(probe, train_loader, test_loader)
        metrics = trainer.validate(probe, test_loader, verbose=False)[0]
        scores["linear"] = 100.0 * float(metrics["val_top1"])
    return scores


def references(root: Path, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    transform = make_eval_transform(28)
    train = build_dataset("fashion-mnist", root, "train", transform=transform)
    test = build_dataset("fashion-mnist", root, "test", transform=transform)
    pixels = [extract_features(torch.nn.Flatten(), d, batch_size=1024) for d in (train, test)]
    rows = {"raw pixels": features_scores(*pixels[0], *pixels[1], args.probe_epochs)}
    torch.manual_seed(0)
    encoder = ResNetBackbone(args.backbone, cifar_stem=args.cifar_stem)
    rows["random encoder"] = evaluate(encoder, root, args.image_size, args.probe_epochs)
    return {name: {"method": name, "seed": 0, **scores} for name, scores in rows.items()}


def pretrain(method: str, seed: int, root: Path, out: Path, args: argparse.Namespace) -> float:
    """Pre-trains one method and seed (resuming an interrupted run); returns seconds per epoch."""
    argv = [
        "--data-root", str(root), "--method", method, "--epochs", str(args.epochs),
        "--batch-size", str(args.batch_size), "--queue-size", str(args.queue_size),
        "--seed", str(seed), "--output-dir", str(out), "--accelerator", args.accelerator,
        # One device: the budget (--batch-size per step, steps per epoch) assumes one process.
        "--devices", "1",
        "--num-workers", str(args.workers), "--augment-on", args.augment_on,
        "--backbone", args.backbone, "--set", f"model.cifar_stem={args.cifar_stem}",
        "--set", f"data.image_size={args.image_size}",
        *[item for value in args.overrides for item in ("--set", value)],
    ]  # fmt: skip
    done = 0.0  # epochs already trained
    found = resolve_resume("auto", out).candidate if out.is_dir() else None
    resume = str(found.path) if found is not None else None
    if found is not None and resume is not None:
        steps_per_epoch = args.train_size // args.batch_size  # the loader drops the last batch
        done = int(found.step or 0) / steps_per_epoch
        print(f"Resuming the interrupted {method} run (seed {seed}) from {resume} after "
              f"{done:.1f} epochs.")  # fmt: skip
        argv += ["--resume", resume]
    start = time.perf_counter()
    if pretrain_main(argv, dataset="fashion-mnist", config_dir=CONFIGS) != 0:
        raise SystemExit(f"pre-training {method} (seed {seed}) failed; see the messages above.")
    return (time.perf_counter() - start) / max(1.0, args.epochs - done)


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| method | seeds | kNN k=200 | kNN k=20 | linear | s / epoch |",
             "|---|---|---:|---:|---:|---:|"]  # fmt: skip
    names = list(dict.fromkeys(r["method"] for r in results))
    for name in names:
        rows = [r for r in results if r["method"] == name]

        def cell(key: str, rows: list[dict[str, Any]] = rows) -> str:
            values = [r[key] for r in rows if key in r]
            if not values:
                return "–"
            each = " / ".join(f"{v:.1f}" for v in values)
            return each if len(values) == 1 else f"{statistics.fmean(values):.1f} ({each})"

        seeds = ", ".join(str(r["seed"]) for r in rows)
        epoch = cell("seconds_per_epoch") if "seconds_per_epoch" in rows[0] else "–"
        lines.append(f"| {name} | {seeds} | {cell('knn200')} | {cell('knn20')} | "
                     f"{cell('linear')} | {epoch} |")  # fmt: skip
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    add = parser.add_argument
    add("--data-root", default=FASHION_MNIST_DEFAULT_ROOT, help="the Fashion-MNIST idx files")
    add("--output-dir", default="out/fashion_mnist_benchmark")
    add("--methods", nargs="*", default=["mocov2", "mixup", "amix-i"])
    add("--seeds", nargs="+", type=int, default=[0])
    add("--train-size", type=int, default=10000, help="class-balanced pre-training subset")
    add("--test-size", type=int, default=10000)
    add("--epochs", type=int, default=15)
    add("--batch-size", type=int, default=128)
    add("--queue-size", type=int, default=4096)
    add("--backbone", default="resnet18")
    add("--cifar-stem", action="store_true", help="3x3 stem (9x slower at 28 px)")
    add("--image-size", type=int, default=28, help="views are resized to this (28: native)")
    add("--workers", type=int, default=1)
    add("--accelerator", default="auto", help="pre-training device: auto, cpu, gpu")
    add("--threads", type=int, default=2, help="torch CPU threads")
    add("--augment-on", default="device", choices=["loader", "device"])
    add("--probe-epochs", type=int, default=30)
    add("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="config override shared by every method (repeatable)")  # fmt: skip
    add("--references-only", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.output_dir)
    root = out / "data"
    if not (root / FILES["train"][0]).is_file():
        try:
            write_subset(Path(args.data_root), root, args.train_size, args.test_size)
        except FileNotFoundError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    results: list[dict[str, Any]] = []
    ref_file = out / "references.json"
    if not ref_file.is_file():
        ref_file.write_text(json.dumps(references(root, args), indent=1))
    results += json.loads(ref_file.read_text()).values()
    for method in [] if args.references_only else args.methods:
        for seed in args.seeds:
            result_file = out / f"{method}_seed{seed}.json"
            if not result_file.is_file():
                run_dir = out / "runs" / f"{method}_seed{seed}"
                per_epoch = pretrain(method, seed, root, run_dir, args)
                encoder, _ = load_encoder(run_dir / "backbone.pt")
                scores = evaluate(encoder, root, args.image_size, args.probe_epochs)
                record = {"method": method, "seed": seed, **scores,
                          "seconds_per_epoch": per_epoch, "argv": sys.argv[1:]}  # fmt: skip
                result_file.write_text(json.dumps(record, indent=1))
            results.append(json.loads(result_file.read_text()))
    print(f"Fashion-MNIST: {args.train_size} training images (class-balanced), test "
          f"{args.test_size}; {args.backbone}{' CIFAR stem' if args.cifar_stem else ''}, "
          f"{args.image_size} px, "
          f"{args.epochs} epochs, batch {args.batch_size}, queue {args.queue_size}; "
          f"top-1 % (mean (per seed))")  # fmt: skip
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
