#!/usr/bin/env python
"""Training-step cost of MoCo v2, fixed mixups and AMix, in one process, interleaved.

Each round trains every method for ``--steps`` steps (after ``--warmup`` untimed ones) on the
same synthetic batch shape; rounds alternate the methods so drifts of the machine hit all of
them alike. A step is forward, backward, optimiser step and momentum update, timed from
Lightning's batch-start to batch-end hooks. Prints the median ms per step, images/s, the
peak memory of a step (CUDA: ``max_memory_allocated``; CPU: the growth of the process's
resident memory over its level after `malloc_trim`, sampled every millisecond: approximate) and
the ratio to the first method (MoCo v2). AMix-C's clustering memory holds `--dataset-size`
features (STL-10: 105,000) with K = 200, initialised from random unit vectors.

Before the timed rounds, one step of each method runs under PyTorch's ``FlopCounterMode``,
which counts the floating-point operations of matrix products and convolutions, forward and
backward (not element-wise ops, normalisation or the optimiser). Its ratio to MoCo v2 is the
step's compute floor, exact and the same on every machine, against which the timed ratio can
be read (``--flops-only`` prints just that).

A method may carry config overrides after a colon, e.g. ``amix-i:mixing.block_features=online``.

Examples:
    python benchmarks/step_cost.py --preset cpu    # ResNet-18, batch 32, 64 px, 2 threads
    python benchmarks/step_cost.py --preset gpu    # ResNet-18, batch 256, 96 px, bf16,
                                                   # channels_last
    python benchmarks/step_cost.py --preset cpu --methods mocov2 amix-i \
        amix-i:mixing.block_features=online
    python benchmarks/step_cost.py --preset cpu --flops-only
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import statistics
import threading
import time
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from torch.utils.flop_counter import FlopCounterMode

from lightly_amix.config import load_config
from lightly_amix.data.datamodule import PretrainDataModule
from lightly_amix.models.base import MomentumContrastMethod
from lightly_amix.models.factory import build_model


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


def resident_bytes() -> int:
    """The process's resident memory (Linux), 0 where /proc is missing."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def release_free_memory() -> None:
    """Returns freed heap memory to the OS (glibc), so RSS growth measures this method's peak."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class StepTimer(pl.Callback):
    """Times the steps after ``warmup`` and records the peak memory of the timed steps."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.times: list[float] = []
        self.peak_bytes = 0
        self._start = 0.0
        self._base = 0
        self._sampling = False
        self._thread: threading.Thread | None = None

    def _sync(self) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def _sample(self) -> None:
        while self._sampling:
            self.peak_bytes = max(self.peak_bytes, resident_bytes() - self._base)
            time.sleep(0.001)

    def on_train_start(self, trainer: pl.Trainer, *args: Any) -> None:
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        else:
            release_free_memory()
            self._base = resident_bytes()
            self._sampling = True
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()

    def on_train_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if torch.cuda.is_available():
            self.peak_bytes = torch.cuda.max_memory_allocated()
        elif self._thread is not None:
            self._sampling = False
            self._thread.join()

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        self._sync()
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        self._sync()
        if trainer.global_step > self.warmup:
            self.times.append((time.perf_counter() - self._start) * 1000)


def make_trainer(args: argparse.Namespace, steps: int, callbacks: list[pl.Callback]) -> pl.Trainer:
    """A one-device trainer for ``steps`` steps without logs, checkpoints or progress bar."""
    return pl.Trainer(
        accelerator=args.device, devices=1, precision=args.precision, max_steps=steps,
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=callbacks, reload_dataloaders_every_n_epochs=1,
        use_distributed_sampler=False,
    )  # fmt: skip


def step_flops(model: pl.LightningModule, data: pl.LightningDataModule, trainer: pl.Trainer) -> int:
    """Floating-point operations of one training step (matrix products and convolutions,
    forward and backward, as counted by ``FlopCounterMode``); ``trainer`` runs one step."""
    with FlopCounterMode(display=False) as counter:
        trainer.fit(model, datamodule=data)
    return int(counter.get_total_flops())


def build_method(
    spec: str, backbone: str, queue_size: int, batch_size: int, n_images: int
) -> MomentumContrastMethod:
    """The model of ``spec`` (a method, optionally with ``:key=value`` overrides).

    The clustering memory of AMix-C and PuzzleMix (C) holds ``n_images`` features with K = 200
    (fewer for small ``n_images``), initialised from random unit vectors: the k-means start-up
    pass over the images is not part of a step.
    """
    method, *extra = spec.split(":")
    cfg = load_config(
        overrides=[
            f"method={method}",
            f"model.backbone={backbone}",
            f"model.queue_size={queue_size}",
            f"trainer.batch_size={batch_size}",
            "mixing.block_loss=" + ("ce_pl+bce" if method == "amix-c" else "infonce+bce"),
            f"odc.num_clusters={min(200, max(1, n_images // 20))}",
            *extra,
        ]
    )
    model = build_model(cfg, n_images)
    clustering = getattr(model, "clustering", None)  # AMix-C, PuzzleMix (C)
    if clustering is not None:
        odc = clustering.memory
        g = torch.Generator().manual_seed(0)
        odc.initialize(F.normalize(torch.randn(n_images, odc.features.shape[1], generator=g)))
    return model


PRESETS: dict[str, dict[str, Any]] = {
    "cpu": {"device": "cpu", "batch_size": 32, "image_size": 64, "threads": 2,
            "precision": "32-true", "channels_last": False},
    "gpu": {"device": "gpu", "batch_size": 256, "image_size": 96, "threads": 2,
            "precision": "bf16-mixed", "channels_last": True, "steps": 20, "warmup": 5},
}  # fmt: skip


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
    parser.add_argument("--dataset-size", type=int, default=105_000, help="(STL-10's)")
    parser.add_argument("--queue-size", type=int, default=4096)
    parser.add_argument("--channels-last", action="store_true", help="channels_last weights")
    parser.add_argument(
        "--flops-only", action="store_true", help="count FLOPs per step, skip the timed rounds"
    )
    parser.add_argument(
        "--preset", choices=sorted(PRESETS), help="sets the flags above; later flags win"
    )
    args = parser.parse_args()
    if args.preset:
        parser.set_defaults(**PRESETS[args.preset])
        args = parser.parse_args()
    torch.set_num_threads(args.threads)
    # A data set of STL-10's size (pixels drawn lazily): AMix-C's clustering memory holds
    # one feature per image.
    n_images = args.dataset_size
    times: dict[str, list[float]] = {m: [] for m in args.methods}
    models = {}
    for spec in args.methods:
        try:
            models[spec] = build_method(
                spec, args.backbone, args.queue_size, args.batch_size, n_images
            )
        except ValueError as exc:
            parser.error(str(exc))
        if args.channels_last:
            if models[spec].model_cfg.bn_splits > 1:
                parser.error(
                    f"{spec}: model.bn_splits needs NCHW-contiguous activations (Lightly's "
                    "SplitBatchNorm reshapes them with view); drop --channels-last or bn_splits."
                )
            models[spec] = models[spec].to(memory_format=torch.channels_last)

    def datamodule() -> PretrainDataModule:
        return PretrainDataModule(
            RandomViews(n_images, args.image_size), args.batch_size, 0, seed=0
        )

    flops = {
        spec: step_flops(model, datamodule(), make_trainer(args, 1, []))
        for spec, model in models.items()
    }
    peaks: dict[str, int] = dict.fromkeys(args.methods, 0)
    for _ in range(0 if args.flops_only else args.rounds):
        for method in args.methods:
            timer = StepTimer(args.warmup)
            trainer = make_trainer(args, args.steps + args.warmup, [timer])
            trainer.fit(models[method], datamodule=datamodule())
            times[method].extend(timer.times)
            peaks[method] = max(peaks[method], timer.peak_bytes)
    first = args.methods[0]
    where = torch.cuda.get_device_name() if args.device in ("gpu", "cuda") else "CPU"
    setting = (
        f"{args.backbone}, batch {args.batch_size}, {args.image_size} px, {args.precision}"
        f"{', channels_last' if args.channels_last else ''}"
    )
    if args.flops_only:
        print(f"{setting}; FLOPs of one training step (FlopCounterMode)")
        print(f"| method | GFLOP / step | × {first} |")
        print("|---|---:|---:|")
        for method, count in flops.items():
            print(f"| {method} | {count / 1e9:.2f} | {count / flops[first]:.3f} |")
        return
    base = statistics.median(times[first])
    print(
        f"{setting}, {where} ({torch.get_num_threads()} threads); median of "
        f"{len(times[first])} steps over {args.rounds} interleaved rounds"
    )
    memory = "peak GPU MiB" if args.device in ("gpu", "cuda") else "peak RSS growth MiB"
    print(
        f"| method | ms / step | images / s | {memory} | × {first} | GFLOP / step "
        f"| × {first} (FLOPs) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for method, values in times.items():
        median = statistics.median(values)
        print(
            f"| {method} | {median:.1f} | {args.batch_size / median * 1000:.0f} | "
            f"{peaks[method] / 2**20:.0f} | {median / base:.2f} | {flops[method] / 1e9:.2f} | "
            f"{flops[method] / flops[first]:.3f} |"
        )


if __name__ == "__main__":
    main()
