#!/usr/bin/env python
"""Training-step cost of MoCo v2, fixed mixups and AMix, in one process, interleaved.

Each round trains every method for ``--steps`` steps (after ``--warmup`` untimed ones) on the
same synthetic batch shape; rounds alternate the methods so drifts of the machine hit all of
them alike. A step is forward, backward, optimiser step and momentum update, timed from
Lightning's batch-start to batch-end hooks. Prints the median ms per step and the ratio to
MoCo v2.

Examples:
    python benchmarks/step_cost.py           # CPU preset: ResNet-18, batch 32, 64 px
    python benchmarks/step_cost.py --device gpu --batch-size 256 --image-size 96 \
        --precision bf16-mixed
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import Dataset

from lightly_amix.cli import build_model
from lightly_amix.config import load_config
from lightly_amix.training import PretrainDataModule


class RandomViews(Dataset):
    """Random two-view images (the cost does not depend on the pixels)."""

    def __init__(self, n: int, size: int, single: bool = False) -> None:
        self.n, self.size, self.single = n, size, single

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Any:
        g = torch.Generator().manual_seed(i)
        x = torch.randn(3, self.size, self.size, generator=g)
        return (x, -1) if self.single else ([x, x.flip(-1)], -1)


class StepTimer(pl.Callback):
    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.times: list[float] = []
        self._start = 0.0

    def _sync(self) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        self._sync()
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        self._sync()
        if trainer.global_step > self.warmup:
            self.times.append((time.perf_counter() - self._start) * 1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--methods", nargs="+", default=["mocov2", "mixup", "cutmix", "amix-i", "amix-c"]
    )
    parser.add_argument("--device", default="cpu", help="Lightning accelerator")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--precision", default="32-true")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    n_images = args.batch_size * (args.steps + args.warmup) * 2
    times: dict[str, list[float]] = {m: [] for m in args.methods}
    models = {}
    for method in args.methods:
        cfg = load_config(
            overrides=[
                f"method={method}",
                f"model.backbone={args.backbone}",
                f"model.queue_size={min(4096, n_images)}",
                f"trainer.batch_size={args.batch_size}",
                "mixing.block_loss=" + ("ce_pl+bce" if method == "amix-c" else "infonce+bce"),
                f"odc.num_clusters={max(2, n_images // 20)}",
            ]
        )
        models[method] = build_model(cfg, n_images)
    for _ in range(args.rounds):
        for method in args.methods:
            timer = StepTimer(args.warmup)
            data = PretrainDataModule(
                RandomViews(n_images, args.image_size), args.batch_size, 0, seed=0,
                feature_dataset=RandomViews(n_images, args.image_size, single=True),
            )  # fmt: skip
            trainer = pl.Trainer(
                accelerator=args.device, devices=1, precision=args.precision,
                max_steps=args.steps + args.warmup, logger=False, enable_checkpointing=False,
                enable_progress_bar=False, enable_model_summary=False, callbacks=[timer],
                reload_dataloaders_every_n_epochs=1, use_distributed_sampler=False,
            )  # fmt: skip
            trainer.fit(models[method], datamodule=data)
            times[method].extend(timer.times)
    base = statistics.median(times[args.methods[0]])
    print(
        f"{args.backbone}, batch {args.batch_size}, {args.image_size} px, {args.precision}, "
        f"{args.device} ({torch.get_num_threads()} threads); median of "
        f"{len(times[args.methods[0]])} steps over {args.rounds} interleaved rounds"
    )
    print(f"| method | ms / step | × {args.methods[0]} |")
    print("|---|---:|---:|")
    for method, values in times.items():
        median = statistics.median(values)
        print(f"| {method} | {median:.1f} | {median / base:.2f} |")


if __name__ == "__main__":
    main()
