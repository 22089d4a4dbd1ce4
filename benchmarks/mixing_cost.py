#!/usr/bin/env python
"""Cost of the Mix Block and of each fixed mixup, relative to one ResNet-18 forward.

Times, on the same batch: one ResNet-18 forward (no grad, the unit), the Mix Block's forward
+ backward on stage-3 features (the default Mix Block+ and the AutoMix one), and each fixed
mixup. Prints a Markdown table of median milliseconds and the ratio to the forward.

Examples:
    python benchmarks/mixing_cost.py                           # CPU, batch 256, 96 px
    python benchmarks/mixing_cost.py --device cuda --precision bf16 --channels-last
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor

from lightly_amix.mixing.base import random_partner, sample_lambda
from lightly_amix.mixing.manifold import manifold_features
from lightly_amix.mixing.mix_block import MixBlock, MixBlockConfig
from lightly_amix.mixing.registry import MIXUPS, build_mixup
from lightly_amix.models.backbones import ResNetBackbone


def timeit(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int) -> float:
    """Median wall time of ``fn`` in milliseconds (CUDA-synchronised)."""
    times = []
    for i in range(warmup + repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= warmup:
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def kernel_time(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """GPU busy time per call in ms and kernels per call, from torch.profiler.

    In isolation a small module is bound by kernel launches (wall time ≫ GPU time); inside a
    GPU-bound training step those launches overlap with the backbone's kernels, so its cost
    there is close to its GPU time.
    """
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(repeats):
            fn()
        torch.cuda.synchronize()
    events = [e for e in prof.events() if e.device_type == DeviceType.CUDA]
    busy_us = sum(e.device_time for e in events)
    return busy_us / repeats / 1000, len(events) / repeats


class Bench:
    """One batch, one backbone and the callables to time."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.device = torch.device(args.device)
        self.bf16 = args.precision == "bf16"
        self.compile = args.compile
        fmt = torch.channels_last if args.channels_last else torch.contiguous_format
        torch.manual_seed(0)
        n, self.size = args.batch_size, args.image_size
        self.images = torch.randn(n, 3, self.size, self.size, device=self.device)
        self.images = self.images.contiguous(memory_format=fmt)
        self.backbone = ResNetBackbone("resnet18").to(self.device).to(memory_format=fmt)
        self.perm = random_partner(n, device=self.device)
        self.lam = sample_lambda(n, 2.0, device=self.device)
        self.generator = torch.Generator().manual_seed(0)
        with torch.no_grad(), self.autocast():
            self.z: Tensor = self.backbone.forward_with_stage3(self.images)[1].float()

    def autocast(self) -> contextlib.AbstractContextManager[object]:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def forward(self) -> None:
        with torch.no_grad(), self.autocast():
            self.backbone(self.images)

    def mix_block(self, cfg: MixBlockConfig) -> Callable[[], None]:
        block = MixBlock(self.z.shape[1], cfg).to(self.device)
        forward = torch.compile(block) if self.compile else block

        def step() -> None:
            with self.autocast():
                mask = forward(self.z, self.z[self.perm], self.lam, (self.size, self.size))
            mask.mean().backward()

        return step

    def mixup(self, name: str) -> Callable[[], None]:
        mixup = build_mixup(name)

        def step() -> None:
            out = mixup(self.images, self.perm, self.lam, generator=self.generator)
            if name == "manifoldmix":  # the mixing happens inside the forward
                with torch.no_grad(), self.autocast():
                    manifold_features(self.backbone, out, self.perm)

        return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--compile", action="store_true", help="torch.compile the Mix Block")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    bench = Bench(args)
    device = bench.device

    def run(fn: Callable[[], object]) -> float:
        return timeit(fn, device, args.repeats, args.warmup)

    parts: list[tuple[str, Callable[[], object]]] = [
        ("ResNet-18 forward (the unit)", bench.forward),
        ("Mix Block+ forward+backward", bench.mix_block(MixBlockConfig())),
        ("AutoMix Mix Block fwd+bwd", bench.mix_block(MixBlockConfig.automix())),
    ]
    for name in MIXUPS:
        label = "manifoldmix (incl. its forward)" if name == "manifoldmix" else name
        parts.append((label, bench.mixup(name)))
    rows = [(label, run(fn)) for label, fn in parts]
    unit = rows[0][1]
    gpu = (
        {label: kernel_time(fn, args.repeats) for label, fn in parts}
        if device.type == "cuda"
        else {}
    )

    if device.type == "cuda":
        where = torch.cuda.get_device_name(device)
    else:
        where = f"CPU, {torch.get_num_threads()} threads"
    print(
        f"device: {where}; batch {args.batch_size}, {args.image_size} px, {args.precision}, "
        f"channels_last={args.channels_last}, compiled Mix Block={args.compile}, "
        f"stage-3 {tuple(bench.z.shape[1:])}; "
        f"median of {args.repeats} runs after {args.warmup} warm-up"
    )
    if not gpu:
        print("| part | ms / batch | × ResNet-18 forward |")
        print("|---|---:|---:|")
        for label, ms in rows:
            print(f"| {label} | {ms:.2f} | {ms / unit:.3f} |")
        return
    gpu_unit = gpu[rows[0][0]][0]
    print("| part | wall ms | × forward (wall) | GPU busy ms | × forward (GPU) | kernels |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, ms in rows:
        busy, kernels = gpu[label]
        print(
            f"| {label} | {ms:.2f} | {ms / unit:.3f} | {busy:.3f} | {busy / gpu_unit:.3f} "
            f"| {kernels:.0f} |"
        )


if __name__ == "__main__":
    main()
