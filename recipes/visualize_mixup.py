#!/usr/bin/env python
"""Draw mixed samples of every fixed mixup and of a Mix Block as a PNG grid (paper Fig. 4 style).

Without data flags it uses photos that scikit-image ships (no download). With --checkpoint
it draws the Mix Block of a pre-training checkpoint (features from its momentum encoder);
otherwise the Mix Block is randomly initialised (its masks are then close to 0.5).

Examples:
    python recipes/visualize_mixup.py                      # writes mixup_grid.png
    python recipes/visualize_mixup.py --data-root data/stl10 --dataset stl10 --split test
    python recipes/visualize_mixup.py --checkpoint out/stl10_amix/last.ckpt -o amix.png

A checkpoint whose encoder or Mix Block lacks weights (or has unexpected ones) is refused with
exit code 2 and the keys listed, unless --allow-partial is given.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from lightly_amix.checkpoints import backbone_from_checkpoint, load_checkpoint, sub_state_dict
from lightly_amix.data import DATASET_SPLITS, build_dataset, default_image_size, eval_transform
from lightly_amix.mixing.mix_block import MixBlock, MixBlockConfig
from lightly_amix.models.backbones import RESNETS, ResNetBackbone
from lightly_amix.state_dicts import load_state_dict_strict
from lightly_amix.viz import mixup_grid, normalize

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field")


def photo_batch(count: int, size: int) -> torch.Tensor:
    """``count`` scikit-image sample photos as (count, 3, size, size) in [0, 1]."""
    try:
        import skimage.data
    except ImportError as exc:  # pragma: no cover - scikit-image is a dependency
        raise ValueError(
            "scikit-image is needed for the sample photos: pip install scikit-image"
        ) from exc
    images = []
    for name in PHOTOS[:count]:
        array = torch.from_numpy(getattr(skimage.data, name)()).permute(2, 0, 1).float() / 255
        side = min(array.shape[1:])
        top, left = (array.shape[1] - side) // 2, (array.shape[2] - side) // 2
        square = array[:, top : top + side, left : left + side].unsqueeze(0)
        images.append(F.interpolate(square, size=(size, size), mode="bilinear", antialias=True))
    return torch.cat(images).clamp(0, 1)


def dataset_batch(
    name: str, root: str, split: str, count: int, size: int, seed: int
) -> torch.Tensor:
    dataset = build_dataset(name, root, split, transform=eval_transform(size, normalize=False))
    n = len(dataset)  # type: ignore[arg-type]
    if n < count:
        raise ValueError(f"The {name} split '{split}' has {n} images; need {count}.")
    picks = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:count]
    return torch.stack([dataset[int(i)][0] for i in picks])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="Rows: image pairs x λ values. Columns: A, B, MixUp, CutMix, FMix, ResizeMix, "
        "SaliencyMix, Mix Block mask (white = A) and Mix Block mix. λ is the share of A.",
    )
    parser.add_argument(
        "--checkpoint", help="pre-training last.ckpt whose encoder (and Mix Block) to use"
    )
    parser.add_argument(
        "--backbone",
        default="resnet18",
        choices=RESNETS,
        help="ResNet for the Mix Block's features without --checkpoint",
    )
    parser.add_argument(
        "--data-root", help="data set folder; without it, scikit-image's photos are used"
    )
    parser.add_argument("--dataset", default="stl10", choices=sorted(DATASET_SPLITS))
    parser.add_argument("--split", help="split to draw images from (default: the data set's first)")
    parser.add_argument(
        "--image-size", type=int, help="side in pixels (default: the data set's, 224 for photos)"
    )
    parser.add_argument("--pairs", type=int, default=3, help="image pairs (default: %(default)s)")
    parser.add_argument("--lams", type=float, nargs="+", default=[0.2, 0.5, 0.8], help="λ values")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--allow-partial",
        action="store_true",
        help="load a checkpoint that lacks some weights, keeping the model's initial values for "
        "them (not recommended)",
    )
    parser.add_argument(
        "-o", "--output", default="mixup_grid.png", help="PNG path (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    if args.pairs < 1:
        parser.error("--pairs must be >= 1")

    try:
        torch.manual_seed(args.seed)
        if args.checkpoint:  # first, so that a bad checkpoint fails before any image work
            ckpt = load_checkpoint(args.checkpoint)
            prefix = (
                "backbone_momentum."
                if any(k.startswith("backbone_momentum.") for k in ckpt["state_dict"])
                else "backbone."
            )
            source = f"'{args.checkpoint}'"
            encoder = backbone_from_checkpoint(
                ckpt, prefix, allow_partial=args.allow_partial, source=source
            )
            block_cfg = ckpt["hyper_parameters"].get("mix_block")
            block = MixBlock(encoder.stage3_dim, MixBlockConfig(**block_cfg) if block_cfg else None)
            block_state = sub_state_dict(ckpt["state_dict"], "mix_block.")
            if block_state:
                load_state_dict_strict(
                    block,
                    block_state,
                    f"{source} ('mix_block.*')",
                    allow_partial=args.allow_partial,
                    expected="a complete last.ckpt as recipes/pretrain_*.py writes it (the Mix "
                    "Block of its hyper-parameters, 'mix_block')",
                    model="the Mix Block",
                )
            else:
                print("The checkpoint has no Mix Block (a MoCo v2 run?): drawing a random one.")
        else:
            encoder = ResNetBackbone(args.backbone)
            block = MixBlock(encoder.stage3_dim)

        if args.data_root:
            size = args.image_size or default_image_size(args.dataset)
            split = args.split or DATASET_SPLITS[args.dataset][0]
            images = dataset_batch(
                args.dataset, args.data_root, split, 2 * args.pairs, size, args.seed
            )
        else:
            size = args.image_size or 224
            if 2 * args.pairs > len(PHOTOS):
                most = len(PHOTOS) // 2
                raise ValueError(
                    f"Only {len(PHOTOS)} photos ship with scikit-image: use --pairs {most} or "
                    "less, or --data-root."
                )
            images = photo_batch(2 * args.pairs, size)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    encoder.eval()
    block.eval()

    def stage3(x: torch.Tensor) -> torch.Tensor:
        return encoder.forward_with_stage3(normalize(x))[1]

    p = args.pairs
    grid = mixup_grid(
        images[:p], images[p:], args.lams, mix_block=block, stage3_fn=stage3, seed=args.seed
    )
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    grid.save(output)
    print(f"Wrote {output} ({grid.width}x{grid.height} px, {p * len(args.lams)} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
