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


class Bench:
    """One batch, one backbone and the callables to time."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.device = torch.device(args.device)
        self.bf16 = args.precision == "bf16"
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

        def step() -> None:
            with self.autocast():
                mask = block(self.z, self.z[self.perm], self.lam, (self.size, self.size))
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
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    bench = Bench(args)
    device = bench.device

    def run(fn: Callable[[], object]) -> float:
        return timeit(fn, device, args.repeats, args.warmup)

    unit = run(bench.forward)
    rows = [("ResNet-18 forward (the unit)", unit)]
    rows.append(("Mix Block+ forward+backward", run(bench.mix_block(MixBlockConfig()))))
    rows.append(("AutoMix Mix Block fwd+bwd", run(bench.mix_block(MixBlockConfig.automix()))))
    for name in MIXUPS:
        label = "manifoldmix (incl. its forward)" if name == "manifoldmix" else name
        rows.append((label, run(bench.mixup(name))))

    if device.type == "cuda":
        where = torch.cuda.get_device_name(device)
    else:
        where = f"CPU, {torch.get_num_threads()} threads"
    print(
        f"device: {where}; batch {args.batch_size}, {args.image_size} px, {args.precision}, "
        f"channels_last={args.channels_last}, stage-3 {tuple(bench.z.shape[1:])}; "
        f"median of {args.repeats} runs after {args.warmup} warm-up"
    )
    print("| part | ms / batch | × ResNet-18 forward |")
    print("|---|---:|---:|")
    for label, ms in rows:
        print(f"| {label} | {ms:.2f} | {ms / unit:.3f} |")


if __name__ == "__main__":
    main()
