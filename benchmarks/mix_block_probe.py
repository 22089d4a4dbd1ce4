#!/usr/bin/env python
"""Can the Mix Block learn masks at all? Train it alone against a fixed, trained classifier.

In the AutoMix framework the Mix Block learns through the momentum network while that network
itself trains; when masks stay blends it is unclear whether the block cannot learn or whether it
has nothing to learn from. This probe removes the moving parts: it loads a trained classifier
(a ``classify`` checkpoint, e.g. the vanilla run of ``fashion_mnist_supervised.py``), freezes it
(eval mode), and trains only a new Mix Block on its objective — the mixup cross-entropy of the
frozen classifier on the block's mixed sample plus the mask loss — for a fixed number of steps.

Every ``--log-every`` steps it prints the block's mixup CE next to the same CE of MixUp and
CutMix on the same images, partners and λ (a block that learns something useful must get below
both: that is what "an optimal mixup for this classifier" means), the mask loss, the masks'
spatial standard deviation, |mean − λ| and the correlation of the mask means with λ.

Examples:
    python benchmarks/mix_block_probe.py --checkpoint out/vanilla/last.ckpt --block automix
    python benchmarks/mix_block_probe.py --checkpoint out/vanilla/last.ckpt --block amix \\
        --lam-per batch --set small_init=output --steps 400 --grid masks.png
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lightly_amix.data import FASHION_MNIST_DEFAULT_ROOT
from lightly_amix.data.fashion_mnist import FashionMNIST
from lightly_amix.losses import mixup_cross_entropy
from lightly_amix.mixing.base import sample_lambda
from lightly_amix.mixing.learned import LearnedMixup
from lightly_amix.mixing.masks import mask_diagnostics
from lightly_amix.mixing.mix_block import MixBlockConfig
from lightly_amix.mixing.registry import build_mixup
from lightly_amix.models.classifier import MixupClassifier
from lightly_amix.viz import denormalize, mixup_grid, normalize


def parse_value(text: str) -> Any:
    """``key=value`` values: numbers and booleans as such, anything else as a string."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def block_config(kind: str, overrides: list[str]) -> MixBlockConfig:
    cfg = MixBlockConfig.automix() if kind == "automix" else MixBlockConfig()
    changes = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not hasattr(cfg, key):
            raise SystemExit(f"--set {item!r}: expected key=value with a MixBlockConfig field.")
        changes[key] = parse_value(value)
    return replace(cfg, **changes)


def load_images(root: Path, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random training images, normalised as the classify recipe does (N, 3, 28, 28)."""
    data = FashionMNIST(root, split="train")
    idx = np.random.default_rng(seed).permutation(len(data.labels))[:n]
    x = torch.from_numpy(data.images[idx]).float().div(255).unsqueeze(1).expand(-1, 3, -1, -1)
    return normalize(x).contiguous(), torch.from_numpy(data.labels[idx])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--checkpoint", type=Path, required=True, help="a trained classifier's last.ckpt"
    )
    parser.add_argument("--block", choices=("amix", "automix"), default="amix")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="MixBlockConfig field=value, repeatable")  # fmt: skip
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--lr", type=float, default=0.1, help="SGD (momentum 0.9) lr")
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--lam-per", choices=("sample", "batch"), default="sample",
                        help="one λ per sample or one per batch")  # fmt: skip
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--data-root", type=Path, default=Path(FASHION_MNIST_DEFAULT_ROOT))
    parser.add_argument("--log-every", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the log rows here")
    parser.add_argument("--grid", type=Path, help="save a PNG of the final block's masks here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    cfg = block_config(args.block, args.overrides)
    if not args.checkpoint.is_file():
        raise SystemExit(f"--checkpoint {args.checkpoint}: no such file (a classify last.ckpt).")
    try:
        net = MixupClassifier.load_from_checkpoint(args.checkpoint, map_location="cpu")
    except Exception as error:  # any unreadable or foreign file: one line, not a traceback
        raise SystemExit(
            f"--checkpoint {args.checkpoint}: not a checkpoint of recipes/train_classifier.py "
            f"({type(error).__name__}: {error})."
        ) from None
    net.eval().requires_grad_(False)
    x_all, y_all = load_images(args.data_root, args.images, args.seed)
    block = LearnedMixup(net.backbone.stage3_dim, cfg)
    block.train()
    opt = torch.optim.SGD(block.parameters(), lr=args.lr, momentum=0.9)
    mixup, cutmix = build_mixup("mixup"), build_mixup("cutmix")
    print(f"block={args.block} {cfg}\nlr={args.lr} steps={args.steps} batch={args.batch_size}")
    header = ("step", "ce_block", "ce_mixup", "ce_cutmix", "loss_mask", "mask_std", "gap",
              "corr_lam", "s/step")  # fmt: skip
    print(" ".join(f"{h:>9}" for h in header))
    rows, acc = [], []
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        idx = torch.randint(len(y_all), (args.batch_size,))
        x, y = x_all[idx], y_all[idx]
        n = x.shape[0]
        perm = torch.randperm(n)
        if args.lam_per == "sample":
            lam = sample_lambda(n, args.alpha)  # (N,)
        else:
            lam = sample_lambda(1, args.alpha).expand(n)  # (N,), one value
        with torch.no_grad():
            _, z = net.backbone.forward_with_stage3(x)
        x_mb, mask, loss_mask = block.block_sample(x, x[perm], z, z[perm], lam)
        ce = mixup_cross_entropy(net(x_mb), y, y[perm], lam)
        opt.zero_grad(set_to_none=True)
        (ce + loss_mask).backward()
        opt.step()
        with torch.no_grad():
            ref_mixup = mixup_cross_entropy(net(mixup(x, perm, lam).images), y, y[perm], lam)
            out = cutmix(x, perm, lam)
            ref_cutmix = mixup_cross_entropy(net(out.images), y, y[perm], out.lam)
            stats = mask_diagnostics(mask.detach(), lam)
            mu = mask.detach().mean(dim=(1, 2, 3))
            # Per-sample λ: correlation of the mask means with λ within the batch; per-batch
            # λ: NaN here (one λ), the gap column says whether the means follow it.
            corr = torch.corrcoef(torch.stack([mu, lam]))[0, 1]
        std, gap = stats["mask_std"], stats["mask_lam_gap"]
        values = (ce, ref_mixup, ref_cutmix, loss_mask, std, gap, corr)
        acc.append([float(v.detach()) for v in values])
        if step % args.log_every == 0 or step == args.steps:
            mean = np.nanmean(np.array(acc), axis=0)
            sps = (time.perf_counter() - start) / step
            cells = [step, *[round(float(v), 4) for v in mean], round(sps, 2)]
            row = dict(zip(header, cells, strict=True))
            rows.append(row)
            print(" ".join(f"{v:>9}" for v in row.values()), flush=True)
            acc = []
    if args.grid:
        block.eval()
        pairs = denormalize(x_all[:8])  # [0, 1]; pairs (0, 4), (1, 5), ...

        def stage3(images: torch.Tensor) -> torch.Tensor:
            return net.backbone.forward_with_stage3(normalize(images))[1]

        with torch.no_grad():
            image = mixup_grid(pairs[:4], pairs[4:], mix_block=block, stage3_fn=stage3)
        image.save(args.grid)
        print(f"grid: {args.grid}")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "config": vars(cfg), "rows": rows}, indent=1))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
