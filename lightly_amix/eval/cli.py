"""The entry points behind ``recipes/linear_eval.py`` and ``recipes/knn_eval.py``.

Examples:
    $ python recipes/knn_eval.py --checkpoint out/stl10_amix_i/last.ckpt --data-root data/stl10
    $ python recipes/linear_eval.py --checkpoint out/stl10_amix_i/backbone.pt --data-root data/stl10
    $ python recipes/linear_eval.py --compare out/stl10_mocov2/eval out/stl10_amix_i/eval
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchvision.transforms import v2 as T

from lightly_amix.cli_common import cap_workers
from lightly_amix.data import (
    DATASET_SPLITS,
    EVAL_SPLITS,
    build_dataset,
    default_image_size,
    eval_transform,
)
from lightly_amix.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from lightly_amix.eval.features import EncoderInfo, extract_features, load_encoder
from lightly_amix.eval.knn import knn_accuracy
from lightly_amix.eval.linear import MoCoLinearClassifier

HEADER = (
    "| method | dataset | backbone | epochs | eval | top-1 | top-5 |\n"
    "|---|---|---|---:|---|---:|---:|"
)


def _parser(kind: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=f"{kind} evaluation of a pre-trained backbone (last.ckpt or backbone.pt).",
        epilog="Writes <output-dir>/<eval>.json and appends a Markdown row to "
        "<output-dir>/results.md; --compare DIR ... prints the rows of several runs.",
    )
    add = parser.add_argument
    add("--checkpoint", help="last.ckpt (query encoder) or backbone.pt")
    add("--data-root", help="data set folder (as for pre-training)")
    add("--dataset", default="stl10", choices=sorted(EVAL_SPLITS))
    add("--batch-size", type=int, default=256)
    add("--limit-batches", type=int, help="batches per pass, for quick checks")
    add("--accelerator", default="auto", help="auto, cpu, gpu")
    add("--num-workers", type=int, default=4)
    add("--output-dir", help="default: an 'eval' folder beside the checkpoint")
    add("--image-size", type=int, help="default: the data set's")
    add("--compare", nargs="+", metavar="DIR", help="print the results table of these folders")
    add("--allow-partial", action="store_true", help="load a checkpoint that lacks some weights, "
        "keeping the model's initial values for them (not recommended)")  # fmt: skip
    return parser


def _cap_num_workers(args: argparse.Namespace) -> None:
    """Lowers ``--num-workers`` to the CPU cores this process may use, saying so."""
    args.num_workers = cap_workers(args.num_workers, "--num-workers")


def _device(accelerator: str) -> torch.device:
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def _num_classes(dataset: Any, labels: torch.Tensor) -> int:
    classes = getattr(dataset, "classes", None)
    return len(classes) if classes else int(labels.max()) + 1


def _eval_name(name: str, result: dict[str, Any]) -> str:
    """The table's eval column: ``knn`` or ``linear``, marked when weights were partial."""
    return f"{name} (partial weights)" if result.get("partial") else name


def _write(result: dict[str, Any], output_dir: Path, name: str) -> str:
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / f"{name}.json").write_text(json.dumps(result, indent=2))
    row = (
        f"| {result['method']} | {result['dataset']} | {result['backbone']} | "
        f"{result['epochs'] if result['epochs'] is not None else '?'} | "
        f"{_eval_name(name, result)} | {result['top1']:.2f} | {result['top5']:.2f} |"
    )
    results = output_dir / "results.md"
    if not results.exists():
        results.write_text(HEADER + "\n")
    with results.open("a") as f:
        f.write(row + "\n")
    return row


def compare(folders: Sequence[str]) -> int:
    """Prints one table of the ``*.json`` results found in ``folders``."""
    rows = [HEADER]
    for folder in folders:
        files = sorted(Path(folder).glob("*.json"))
        if not files:
            print(f"error: no result .json in {folder}", file=sys.stderr)
            return 2
        for file in files:
            r = json.loads(file.read_text())
            epochs = r["epochs"] if r["epochs"] is not None else "?"
            rows.append(
                f"| {r['method']} | {r['dataset']} | {r['backbone']} | {epochs} | "
                f"{_eval_name(file.stem, r)} | {r['top1']:.2f} | {r['top5']:.2f} |"
            )
    print("\n".join(rows))
    return 0


def _setup(args: argparse.Namespace) -> tuple[nn.Module, EncoderInfo, Any, Any, int, Path]:
    if not args.checkpoint or not args.data_root:
        raise ValueError("--checkpoint and --data-root are required (or use --compare).")
    encoder, info = load_encoder(args.checkpoint, allow_partial=args.allow_partial)
    size = args.image_size or default_image_size(args.dataset)
    resize = 256 if args.dataset == "imagenet" and size == 224 else None
    transform = eval_transform(size, resize=resize)
    train_split, test_split = EVAL_SPLITS[args.dataset]
    if train_split not in DATASET_SPLITS[args.dataset]:
        raise ValueError(f"{args.dataset} has no '{train_split}' split.")
    train = build_dataset(args.dataset, args.data_root, train_split, transform=transform)
    test = build_dataset(args.dataset, args.data_root, test_split, transform=transform)
    output = Path(args.output_dir) if args.output_dir else Path(args.checkpoint).parent / "eval"
    return encoder, info, train, test, size, output


def _features(args: argparse.Namespace, encoder: nn.Module, train: Any, test: Any) -> tuple:
    device = _device(args.accelerator)
    kw = {"batch_size": args.batch_size, "num_workers": args.num_workers, "device": device}
    train_f, train_y = extract_features(encoder, train, limit_batches=args.limit_batches,
                                        desc="train features", **kw)  # fmt: skip
    test_f, test_y = extract_features(encoder, test, limit_batches=args.limit_batches,
                                      desc="test features", **kw)  # fmt: skip
    return train_f, train_y, test_f, test_y


def knn_main(argv: Sequence[str] | None = None) -> int:
    """Weighted kNN (k = 200, t = 0.1 by default) on normalised backbone features."""
    parser = _parser("kNN")
    parser.add_argument("--k", type=int, default=200)
    parser.add_argument("--temperature", type=float, default=0.1)
    args = parser.parse_args(argv)
    if args.compare:
        return compare(args.compare)
    _cap_num_workers(args)
    try:
        encoder, info, train, test, _, output = _setup(args)
        train_f, train_y, test_f, test_y = _features(args, encoder, train, test)
        num_classes = _num_classes(train, train_y)
        acc = knn_accuracy(train_f, train_y, test_f, test_y, num_classes, args.k, args.temperature)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    sizes = {"train_size": int(train_f.shape[0]), "test_size": int(test_f.shape[0])}
    result = {**vars(info), "dataset": args.dataset, "k": args.k, "t": args.temperature,
              **sizes, **acc}  # fmt: skip
    print(_write(result, output, "knn"))
    return 0


def linear_main(argv: Sequence[str] | None = None) -> int:
    """Linear probe, MoCo protocol: 100 epochs, SGD, lr 0.1 (ImageNet 30), ×0.1 at 30 and 60."""
    parser = _parser("Linear")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--lr", type=float, help="default: 30 for ImageNet, else 0.1")
    parser.add_argument(
        "--augment",
        action="store_true",
        help="random-resized-crop + flip every epoch (runs the backbone each step) instead of "
        "features computed once and cached",
    )
    args = parser.parse_args(argv)
    if args.compare:
        return compare(args.compare)
    _cap_num_workers(args)
    lr = args.lr if args.lr is not None else (30.0 if args.dataset == "imagenet" else 0.1)
    try:
        encoder, info, train, test, size, output = _setup(args)
        if args.augment:
            augment = T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.ToImage(),
                                 T.ToDtype(torch.float32, scale=True),
                                 T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])  # fmt: skip
            train_aug = build_dataset(args.dataset, args.data_root, EVAL_SPLITS[args.dataset][0],
                                      transform=augment)  # fmt: skip
            model: nn.Module = encoder
            train_loader: DataLoader[Any] = DataLoader(train_aug, args.batch_size, shuffle=True,
                                      num_workers=args.num_workers, drop_last=False)  # fmt: skip
            test_loader: DataLoader[Any] = DataLoader(
                test, args.batch_size, num_workers=args.num_workers
            )
            labels = torch.as_tensor(getattr(train, "labels", [0]))
            num_classes = _num_classes(train, labels)
        else:
            train_f, train_y, test_f, test_y = _features(args, encoder, train, test)
            model = nn.Identity()
            train_loader = DataLoader(
                TensorDataset(train_f, train_y), args.batch_size, shuffle=True
            )
            test_loader = DataLoader(TensorDataset(test_f, test_y), args.batch_size)
            num_classes = _num_classes(train, train_y)
        probe = MoCoLinearClassifier(model, args.batch_size, lr, encoder.out_dim,  # type: ignore[arg-type]
                                     num_classes, epochs=args.epochs)  # fmt: skip
        trainer = pl.Trainer(
            max_epochs=args.epochs,
            accelerator=args.accelerator,
            devices=1,
            limit_train_batches=args.limit_batches or 1.0,
            limit_val_batches=args.limit_batches or 1.0,
            logger=False,
            enable_checkpointing=False,
            check_val_every_n_epoch=args.epochs,
        )
        trainer.fit(probe, train_loader, test_loader)
        metrics = trainer.validate(probe, test_loader, verbose=False)[0]
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    top5 = metrics[f"val_top{min(5, num_classes)}"]  # top-5 of fewer classes is top-K
    acc = {"top1": 100.0 * float(metrics["val_top1"]), "top5": 100.0 * float(top5)}
    result = {**vars(info), "dataset": args.dataset, "linear_epochs": args.epochs, "lr": lr,
              "cached_features": not args.augment, **acc}  # fmt: skip
    print(_write(result, output, "linear"))
    return 0
