#!/usr/bin/env python
"""Images per second of the two MoCo v2 data paths, and whether training is loader-bound.

Two ways of producing two normalised views per image from STL-10 (the real binary files with
``--data-root``, else a synthetic set written in the same format):

- ``loader``: lightly's ``MoCoV2Transform`` on PIL images in ``--workers`` loader processes;
- ``device``: uint8 batches from the memory map (no PIL), pinned, then
  ``MoCoV2DeviceAugment`` on the training device (``--device``).

Then the training throughput of ``--method`` with each path, and with views that are already
on the device (``model only``), so the table shows how far each path is from the model's own
speed. Every figure is a median over ``--batches`` batches after one warm-up batch.

Examples:
    python benchmarks/data_path.py --workers 2                          # CPU
    python benchmarks/data_path.py --device cuda --workers 16 --precision bf16-mixed
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from lightly_amix.config import load_config
from lightly_amix.data import STL10Binary, build_pretrain_dataset
from lightly_amix.data.datamodule import PretrainDataModule
from lightly_amix.models.factory import build_model


def write_synthetic_stl10(root: Path, n_images: int, seed: int = 0) -> None:
    """Random pixels in STL-10's binary layout (only the cost matters here)."""
    rng = np.random.default_rng(seed)
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    pixels = rng.integers(0, 256, (n_images, 3, 96, 96), dtype=np.uint8)
    pixels.tofile(folder / "unlabeled_X.bin")
    for split, n in (("train", 10), ("test", 10)):
        rng.integers(0, 256, (n, 3, 96, 96), dtype=np.uint8).tofile(folder / f"{split}_X.bin")
        (np.arange(n, dtype=np.uint8) % 10 + 1).tofile(folder / f"{split}_y.bin")
    (folder / "class_names.txt").write_text("\n".join(f"class{i}" for i in range(10)) + "\n")
    (folder / "fold_indices.txt").write_text("0\n" * 10)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def images_per_second(
    batches: Iterator[Any], produce: Callable[[Any], Any], n: int, warmup: int, device: torch.device
) -> float:
    """Images/s of ``produce`` over n batches after ``warmup`` (worker start-up) batches."""
    count = 0
    for i, batch in enumerate(batches):
        if i == warmup:
            _sync(device)
            start = time.perf_counter()
        views = produce(batch)
        if i >= warmup:
            count += views[0].shape[0]
        if i == warmup + n - 1:
            break
    _sync(device)
    return count / (time.perf_counter() - start)


def loader(dataset: Dataset, args: argparse.Namespace, device: torch.device) -> DataLoader:
    return DataLoader(
        dataset, batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
        drop_last=True, pin_memory=device.type == "cuda",
    )  # fmt: skip


class PreparedViews(Dataset):
    """Views made once and served by indexing: the model-only baseline."""

    def __init__(self, views: list[torch.Tensor]) -> None:
        self.views = views

    def __len__(self) -> int:
        return self.views[0].shape[0]

    def __getitem__(self, i: int) -> Any:
        return [self.views[0][i], self.views[1][i]], -1


class Throughput(pl.Callback):
    """Images/s of the training loop, batch end to batch end (includes loading)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.last = 0.0

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, *args: Any) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize()
        now = time.perf_counter()
        if trainer.global_step > 1:
            self.times.append(now - self.last)
        self.last = now


def train_throughput(
    dataset: Dataset, augment: Any, args: argparse.Namespace, n_images: int, workers: int
) -> float:
    cfg = load_config(overrides=[
        f"method={args.method}", f"trainer.batch_size={args.batch_size}",
        f"model.queue_size={min(4096, n_images)}",
    ])  # fmt: skip
    model = build_model(cfg, n_images)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    data = PretrainDataModule(dataset, args.batch_size, workers, seed=0, device_augment=augment)
    timer = Throughput()
    trainer = pl.Trainer(
        accelerator="gpu" if args.device.startswith("cuda") else "cpu", devices=1,
        precision=args.precision, max_steps=args.batches + 2, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[timer], reload_dataloaders_every_n_epochs=1, use_distributed_sampler=False,
    )  # fmt: skip
    trainer.fit(model, datamodule=data)
    return args.batch_size / statistics.median(timer.times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    add = parser.add_argument
    add("--data-root", help="STL-10 folder (default: a synthetic set in a temporary folder)")
    add("--images", type=int, default=4096, help="size of the synthetic set")
    add("--device", default="cpu", help="where the batched path runs: cpu or cuda")
    add("--workers", type=int, default=2, help="loader worker processes")
    add("--batch-size", type=int, default=256)
    add("--image-size", type=int, default=96)
    add("--batches", type=int, default=8, help="timed batches per figure")
    add("--threads", type=int, default=2, help="torch threads of the main process")
    add("--method", default="amix-i", help="model of the training rows")
    add("--precision", default="32-true")
    add("--channels-last", action="store_true")
    add("--skip-training", action="store_true", help="only the data paths")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.data_root) if args.data_root else Path(tmp)
        if not args.data_root:
            write_synthetic_stl10(root, args.images)
        split = "unlabeled"
        n_images = len(STL10Binary(root, split=split))
        pil_set, _ = build_pretrain_dataset("stl10", root, split, args.image_size, "loader")
        raw_set, augment = build_pretrain_dataset("stl10", root, split, args.image_size, "device")
        assert augment is not None
        augment = augment.to(device)

        def on_device(batch: Any) -> list[torch.Tensor]:
            return augment(batch[0].to(device, non_blocking=True))

        rows: list[tuple[str, float]] = []
        warmup = args.workers + 1  # every worker has started and delivered once
        cpu = torch.device("cpu")

        def rate(dataset: Dataset, produce: Callable[[Any], Any], where: torch.device) -> float:
            # The iterator dies on return, which joins its workers: no leftover prefetching
            # competes with the next figure.
            batches = iter(loader(dataset, args, device))
            return images_per_second(batches, produce, args.batches, warmup, where)

        pil = rate(pil_set, lambda b: b[0], cpu)
        rows.append((f"loader: MoCoV2Transform (PIL), {args.workers} workers", pil))
        raw = rate(raw_set, lambda b: [b[0]], cpu)
        rows.append((f"device: uint8 batches only, {args.workers} workers", raw))
        batched = rate(raw_set, on_device, device)
        rows.append((f"device: uint8 batches + MoCoV2DeviceAugment on {args.device}", batched))
        if not args.skip_training:
            views = on_device((torch.stack([raw_set[i][0] for i in range(args.batch_size)]),))
            # Already on the device: the loop only indexes them (no loader processes).
            model_only = train_throughput(PreparedViews(views), None, args, n_images, 0)
            rows.append((f"train {args.method}: model only (views ready)", model_only))
            via_loader = train_throughput(pil_set, None, args, n_images, args.workers)
            rows.append((f"train {args.method}: loader path", via_loader))
            via_device = train_throughput(raw_set, augment, args, n_images, args.workers)
            rows.append((f"train {args.method}: device path", via_device))

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"STL-10 {'(real)' if args.data_root else '(synthetic)'} {n_images} images, batch "
        f"{args.batch_size}, {args.image_size} px, {name}, {torch.get_num_threads()} threads, "
        f"{args.precision}"
    )
    print("| path | two-view images / s |")
    print("|---|---:|")
    for label, value in rows:
        print(f"| {label} | {value:.0f} |")


if __name__ == "__main__":
    main()
