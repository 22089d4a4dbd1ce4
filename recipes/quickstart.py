#!/usr/bin/env python
"""Quickstart: a few minutes of AMix-I on a CPU, then kNN accuracy and a picture of the mixes.

Pre-trains a ResNet-18 with AMix-I (MoCo v2 + Mix Block+) on Fashion-MNIST for ``--steps``
steps, evaluates it with weighted kNN (k = 200, t = 0.1) on the test split, and saves a PNG
of mixed samples with their Mix Block masks. With STL-10 under ``data/stl10`` and no
Fashion-MNIST, it uses STL-10 (96 px, slower) instead.

Fashion-MNIST: ``sudo apt-get install dataset-fashion-mnist`` (Debian/Ubuntu) or ``--download``.

Examples:
    python recipes/quickstart.py
    python recipes/quickstart.py --data-root ~/data/fashion-mnist --steps 300
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from lightly_amix.cli import pretrain_main
from lightly_amix.data import FASHION_MNIST_DEFAULT_ROOT, build_dataset, eval_transform
from lightly_amix.data.fashion_mnist import FashionMNIST
from lightly_amix.eval.features import extract_features, load_encoder
from lightly_amix.eval.knn import knn_accuracy

CONFIGS = Path(__file__).resolve().parent / "configs"
STL10_ROOT = "data/stl10"

# Short-run settings for 28 px images (benchmarks/RESULTS.md, "Fashion-MNIST"): the standard
# ResNet stem (the CIFAR stem is 9x slower at 28 px), a key encoder that follows within a
# few hundred steps, crops of at least half the image (the class of a Fashion-MNIST image is
# its whole outline), and views drawn batch-wise.
QUICK_OVERRIDES = ["model.cifar_stem=false", "model.momentum=0.99", "optim.base_lr=0.12",
                   "data.crop_min_scale=0.5", "data.augment_on=device",
                   "mixing.grid_every_n_epochs=1"]  # fmt: skip


def find_data(data_root: str | None, download: bool) -> tuple[str, str] | None:
    """(dataset name, root) of the first data set found, or None."""
    if data_root is not None or download:
        return "fashion-mnist", data_root or FASHION_MNIST_DEFAULT_ROOT
    try:
        FashionMNIST(FASHION_MNIST_DEFAULT_ROOT, split="test")
        return "fashion-mnist", FASHION_MNIST_DEFAULT_ROOT
    except (FileNotFoundError, ValueError):
        pass
    if (Path(STL10_ROOT) / "stl10_binary").is_dir():
        return "stl10", STL10_ROOT
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="Fashion-MNIST: 'sudo apt-get install dataset-fashion-mnist' or --download.",
    )
    add = parser.add_argument
    add("--data-root", help=f"Fashion-MNIST folder (default: {FASHION_MNIST_DEFAULT_ROOT})")
    add("--download", action="store_true", help="fetch Fashion-MNIST with torchvision first")
    add("--steps", type=int, default=150, help="training steps (about 0.5 s each on 2 cores)")
    add("--batch-size", type=int, default=128)
    add("--output-dir", default="out/quickstart")
    add("--num-workers", type=int, default=1)
    args = parser.parse_args(argv)

    found = find_data(args.data_root, args.download)
    if found is None:
        print(
            "error: no data set found. Install Fashion-MNIST ('sudo apt-get install "
            f"dataset-fashion-mnist' puts it in {FASHION_MNIST_DEFAULT_ROOT}), pass "
            "--download to fetch it (needs internet), pass --data-root with the folder that "
            f"holds its idx files, or put STL-10 under {STL10_ROOT}/stl10_binary.",
            file=sys.stderr,
        )
        return 2
    dataset, root = found
    out = Path(args.output_dir)
    if (out / "last.ckpt").exists():
        print(f"error: {out} holds an earlier quickstart; pass another --output-dir or "
              "delete it.", file=sys.stderr)  # fmt: skip
        return 2
    print(f"Quickstart: AMix-I on {dataset} in {root}, {args.steps} steps of "
          f"{args.batch_size} images, writing to {out}")  # fmt: skip
    start = time.perf_counter()
    argv_pretrain = [
        "--data-root", root, "--method", "amix-i", "--epochs", "1",
        "--limit-batches", str(args.steps), "--batch-size", str(args.batch_size),
        "--queue-size", "4096", "--output-dir", str(out), "--accelerator", "cpu",
        "--num-workers", str(args.num_workers),
        *(["--download"] if args.download else []),
        *[item for value in QUICK_OVERRIDES for item in ("--set", value)],
    ]  # fmt: skip
    code = pretrain_main(argv_pretrain, dataset=dataset, config_dir=CONFIGS)
    if code != 0:
        return code
    trained = time.perf_counter() - start

    encoder, _ = load_encoder(out / "backbone.pt")
    transform = eval_transform(28 if dataset == "fashion-mnist" else 96)
    train = build_dataset(dataset, root, "train", transform=transform)
    test = build_dataset(dataset, root, "test", transform=transform)
    train_f, train_y = extract_features(encoder, train, batch_size=512, desc="train features")
    test_f, test_y = extract_features(encoder, test, batch_size=512, desc="test features")
    acc = knn_accuracy(train_f, train_y, test_f, test_y, num_classes=10, k=200, t=0.1)
    grid = out / "grids" / "mixup_epoch000.png"
    print(f"\nTrained {args.steps} steps in {trained:.0f} s.")
    print(f"kNN accuracy (k=200, t=0.1) on the test split: top-1 {acc['top1']:.1f} %, "
          f"top-5 {acc['top5']:.1f} % ({len(train_y)} labelled bank images).")  # fmt: skip
    print(f"Mixed samples and Mix Block masks: {grid}")
    print(f"Backbone for downstream use: {out / 'backbone.pt'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
