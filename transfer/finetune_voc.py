#!/usr/bin/env python
"""Faster R-CNN R50-C4 fine-tuning on PASCAL VOC without detectron2 (torchvision only).

The paper's detection transfer (Table 6) is MoCo's detectron2 protocol (He et al., CVPR 2020,
§4.2): a Faster R-CNN with a ResNet-50 **C4** backbone (not FPN), fine-tuned on VOC07+12
trainval and tested on VOC07 test, reporting AP50 / AP (IoU 0.50:0.95) / AP75. This script
rebuilds that protocol with torchvision's detection parts so that it runs where detectron2 is
not installed. It is the command line only; the pieces live in their own modules:

* :mod:`transfer.voc_format` and :mod:`transfer.voc_dataset`: the VOC files and the data set
  (horizontal flip with p = 0.5 in training; difficult objects kept, as detectron2 does);
* :mod:`transfer.detection_model`: the R50-C4 model (trunk res2-res4, res5 box head with an
  extra BatchNorm, multi-scale training 480..800 step 32, 800 at test, max 1333);
* :mod:`transfer.backbone_weights`: ``--weights backbone.pt`` (a torchvision ResNet-50
  state_dict without ``fc``) into both the trunk and res5; a file that lacks some weights (or
  has others) is refused with the keys listed, unless ``--allow-partial``;
* :mod:`transfer.engine`: SGD with the protocol's schedule (base LR 0.02 x batch / 16, warm-up,
  x0.1 at 75 % and ~92 % of ``--max-iter``), ``--accum-steps`` passes per batch (default 2: 8
  images a pass; batch 16 at 800 px in one pass does not fit an 80 GB H100), precise BN on
  ``--precise-bn-iters`` training batches (200, never more than ``--max-iter``, so a smoke run
  stays short and ``--max-iter 0`` keeps the loaded statistics) and the evaluation;
* :mod:`transfer.voc_eval`: detectron2's ``PascalVOCDetectionEvaluator`` (VOC07 11-point AP for
  a 2007 test set).

Known differences from the detectron2 protocol (numbers are therefore close, not identical):

* SyncBN across 8 GPUs (2 images each, statistics over all 16 images) there; plain BatchNorm on
  one device here, whose statistics cover the images of one pass (``batch-size / accum-steps``,
  8 by default; 16 with ``--accum-steps 1`` where memory allows);
* difficult objects: kept in training as detectron2 does (``--drop-difficult`` leaves them out);
  in evaluation they are neither TP nor FP either way;
* torchvision's RoIAlign with ``aligned=False`` (detectron2: ``ROIAlignV2``, aligned), smooth-L1
  box losses with beta 1/9 (detectron2: L1), pixels resized by bilinear interpolation of the
  float tensor (detectron2: PIL on uint8), batches padded to a multiple of 32, no aspect-ratio
  grouping of batches, a class-specific box regressor that also has (unused) background outputs;
* no intermediate checkpoints and no resuming (detectron2 saves every 5000 iterations).

Precise BN runs before every evaluation on batches of the training loader, as detectron2's hook.

Outputs in ``--output-dir``: ``model_final.pth`` (``{"model": state_dict, "iteration": n}``) and
``metrics.json`` (AP50 / AP / AP75, per-class APs and every periodic evaluation). The last line
printed is ``AP50 xx.xx  AP xx.xx  AP75 xx.xx``.

Examples:
    The protocol on one GPU (VOC under ``data/voc/VOC2007`` and ``data/voc/VOC2012``)::

        python transfer/finetune_voc.py --data-root data/voc \\
            --weights out/imagenet_amix-i/backbone.pt --output-dir out/voc_amix-i

    A CPU smoke run on a tiny data set::

        python transfer/finetune_voc.py --data-root tiny_voc --max-iter 2 --batch-size 2 \\
            --min-size 64 --max-size 96 --accelerator cpu --num-workers 0 --output-dir out/smoke

    The same as a module, from any folder once the project is installed (``pip install -e .``)::

        python -m transfer.finetune_voc --help
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch.utils.data import DataLoader

from transfer.backbone_weights import load_backbone_weights_detailed
from transfer.detection_model import PROTOCOL_MIN_SIZE_TEST, build_model, train_min_sizes
from transfer.engine import (
    WARMUP_ITERS,
    Batch,
    InfiniteSampler,
    build_optimizer,
    collate_detection,
    evaluate,
    format_ap,
    lr_factor,
    lr_steps,
    precise_bn,
    train,
)
from transfer.errors import FinetuneError
from transfer.voc_dataset import RandomHorizontalFlip, VOCDetection


def _parse_set(text: str) -> tuple[str, str]:
    year, sep, split = text.strip().partition(":")
    if not sep or not year.isdigit() or not split:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not YEAR:SPLIT; expected e.g. 2007:trainval or 2012:trainval."
        )
    return year, split


def _parse_sets(text: str) -> list[tuple[str, str]]:
    return [_parse_set(part) for part in text.split(",") if part.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="finetune_voc.py",
        description=(
            "Fine-tune a Faster R-CNN R50-C4 (torchvision, no detectron2) on PASCAL VOC from a "
            "pre-trained backbone.pt and report VOC AP50 / AP / AP75 (detectron2's VOC "
            "evaluator). Writes <output-dir>/metrics.json and model_final.pth."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add("--data-root", required=True, help="folder holding VOC2007/ and VOC2012/ (no VOCdevkit/)")
    add("--weights", help="backbone.pt: torchvision ResNet-50 state_dict without fc "
        "(default: random init)")  # fmt: skip
    add("--max-iter", type=int, default=24000, help="training iterations (0: evaluate only)")
    add("--batch-size", type=int, default=16, help="images per iteration")
    add("--accum-steps", type=int, default=2, help="split each batch into this many forward/"
        "backward passes (gradient accumulation; BatchNorm sees batch-size/accum-steps images); "
        "batch 16 in one pass does not fit an 80 GB GPU")  # fmt: skip
    add("--lr", type=float, default=None, help="base LR; None: 0.02 x batch-size / 16")
    add("--accelerator", choices=("auto", "cpu", "gpu"), default="auto")
    add("--num-workers", type=int, default=4, help="data loader processes")
    add("--output-dir", default="out/voc_finetune", help="where metrics.json and "
        "model_final.pth go")  # fmt: skip
    add("--min-size", type=int, default=PROTOCOL_MIN_SIZE_TEST, help="shorter side at test; "
        "training draws 480..800 step 32 scaled by min-size/800")  # fmt: skip
    add("--max-size", type=int, default=1333, help="longest side cap")
    add("--train-sets", type=_parse_sets, default="2007:trainval,2012:trainval",
        help="comma-separated YEAR:SPLIT sets to train on")  # fmt: skip
    add("--test-set", type=_parse_set, default="2007:test", help="YEAR:SPLIT to evaluate on")
    add("--eval-every", type=int, default=0, help="also evaluate every N iterations (0: only "
        "at the end)")  # fmt: skip
    add("--eval-batch-size", type=int, default=1, help="test images per forward pass")
    add("--precise-bn-iters", type=int, default=200, help="training batches that re-estimate "
        "the BatchNorm statistics before each evaluation (0: off; at most --max-iter)")  # fmt: skip
    add("--drop-difficult", action="store_true", help="leave objects marked difficult out "
        "of training (detectron2 trains on them)")  # fmt: skip
    add("--roi-batch-size", type=int, default=512, help="RoIs sampled per image for the box "
        "head (detectron2: 512)")  # fmt: skip
    add("--print-every", type=int, default=20, help="print losses every N iterations")
    add("--seed", type=int, default=0)
    add("--allow-partial", action="store_true", help="load a checkpoint that lacks some weights, "
        "keeping the model's initial values for them (not recommended)")  # fmt: skip
    return parser


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    positive = ("batch_size", "accum_steps", "eval_batch_size", "min_size", "max_size",
                "roi_batch_size", "print_every")  # fmt: skip
    for name in positive:
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    for name in ("max_iter", "num_workers", "eval_every", "precise_bn_iters"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    if args.batch_size % args.accum_steps:
        parser.error(
            f"--batch-size ({args.batch_size}) must be a multiple of --accum-steps "
            f"({args.accum_steps})"
        )
    if args.min_size > args.max_size:
        parser.error(f"--min-size ({args.min_size}) is larger than --max-size ({args.max_size})")
    if args.lr is not None and not (args.lr > 0 and math.isfinite(args.lr)):
        parser.error(f"--lr must be a positive number, got {args.lr}")
    if not args.train_sets:
        parser.error("--train-sets is empty; expected e.g. 2007:trainval,2012:trainval")


def _device(accelerator: str) -> torch.device:
    if accelerator == "gpu" and not torch.cuda.is_available():
        raise FinetuneError(
            "--accelerator gpu, but CUDA is not available here (torch "
            f"{torch.__version__}); use --accelerator cpu or auto."
        )
    use_gpu = accelerator == "gpu" or (accelerator == "auto" and torch.cuda.is_available())
    return torch.device("cuda" if use_gpu else "cpu")


def _json_ready(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    return value


def run(args: argparse.Namespace) -> None:
    """Fine-tunes and evaluates as the parsed arguments say (see the module docstring)."""
    output_dir = Path(args.output_dir)
    existing = [n for n in ("model_final.pth", "metrics.json") if (output_dir / n).exists()]
    if existing:
        raise FinetuneError(
            f"{output_dir} already holds {', '.join(existing)} from an earlier run; choose "
            "another --output-dir or delete them."
        )
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    device = _device(args.accelerator)
    lr = args.lr if args.lr is not None else 0.02 * args.batch_size / 16

    resnet = torchvision.models.resnet50(weights=None)
    weights_note = (
        "Note: no --weights given: the ResNet-50 starts from random initialisation "
        "(torchvision's); the paper's numbers need pre-trained weights (backbone.pt)."
    )
    partial_weights = False
    if args.weights:
        n, missing, unexpected = load_backbone_weights_detailed(
            resnet, args.weights, args.allow_partial
        )
        partial_weights = bool(missing or unexpected)
        weights_note = f"Weights: {n} tensors from {args.weights} into the ResNet-50 (trunk, res5)"
        if missing:
            weights_note += f"; {len(missing)} missing keep torchvision's initialisation"
    try:
        train_set = VOCDetection(
            args.data_root,
            args.train_sets,
            keep_difficult=not args.drop_difficult,
            remove_empty=True,
            transform=RandomHorizontalFlip(0.5),
        )
        test_set = VOCDetection(args.data_root, [args.test_set], keep_difficult=True)
    except (FileNotFoundError, ValueError) as exc:
        raise FinetuneError(str(exc)) from None
    if not any((~ann.difficult).any() for ann in test_set.annotations):
        raise FinetuneError(
            f"The test set {args.test_set[0]}:{args.test_set[1]} has no non-difficult object, "
            "so AP is undefined; choose another --test-set."
        )
    print(weights_note)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if cpus and args.num_workers > cpus:
        print(f"--num-workers {args.num_workers} > {cpus} CPUs here: using {cpus}.")
        args.num_workers = cpus
    model = build_model(resnet, min_size=args.min_size, max_size=args.max_size,
                        roi_batch_size=args.roi_batch_size).to(device)  # fmt: skip
    train_name = " + ".join(f"VOC{y} {s}" for y, s in args.train_sets)
    test_name = f"VOC{args.test_set[0]} {args.test_set[1]}"
    use_07_metric = args.test_set[0] == "2007"
    if len(train_set) == 0 and args.max_iter > 0:
        raise FinetuneError(f"{train_name} has no image with an object to train on.")
    steps = lr_steps(args.max_iter)
    print(f"Train: {train_name}: {len(train_set)} images; test: {test_name}: {len(test_set)} "
          f"images ({'VOC07 11-point' if use_07_metric else 'area'} AP)")  # fmt: skip
    print(f"Model: Faster R-CNN R50-C4 (torchvision), device {device}, shorter side "
          f"{train_min_sizes(args.min_size)} in training, {args.min_size} at test, max "
          f"{args.max_size}")  # fmt: skip
    print(f"Schedule: {args.max_iter} iterations of {args.batch_size} images, LR {lr:g} "
          f"(warm-up {WARMUP_ITERS}, x0.1 at {steps[0]} and {steps[1]}), writing to "
          f"{output_dir.resolve()}")  # fmt: skip
    output_dir.mkdir(parents=True, exist_ok=True)

    loader = DataLoader(
        train_set,
        batch_size=args.batch_size,
        sampler=InfiniteSampler(len(train_set), seed=args.seed),
        num_workers=args.num_workers,
        collate_fn=collate_detection,
        pin_memory=device.type == "cuda",
        drop_last=True,
    )
    batches: Iterator[Batch] = iter(())
    if len(train_set):
        batches = iter(loader)
    optimizer = build_optimizer(model, lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda it: lr_factor(it, args.max_iter)
    )
    history: list[dict[str, Any]] = []

    def evaluate_now(iteration: int) -> dict[str, Any]:
        bn_iters = min(args.precise_bn_iters, args.max_iter)  # a smoke run stays short
        if bn_iters and len(train_set):
            precise_bn(model, batches, bn_iters, device, args.accum_steps)
        start = time.perf_counter()
        metrics = evaluate(model, test_set, device, args.eval_batch_size, args.num_workers,
                           use_07_metric)  # fmt: skip
        metrics["iteration"] = iteration
        history.append({k: metrics[k] for k in ("iteration", "AP50", "AP", "AP75")})
        print(f"Evaluated {test_name} at iteration {iteration} in "
              f"{time.perf_counter() - start:.1f} s")  # fmt: skip
        return metrics

    train(
        model,
        batches,
        optimizer,
        scheduler,
        device,
        args.max_iter,
        accum_steps=args.accum_steps,
        print_every=args.print_every,
        eval_every=args.eval_every,
        evaluate_at=evaluate_now,
    )

    if device.type == "cuda":
        print(f"Peak GPU memory: {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB")
    metrics = evaluate_now(args.max_iter)
    torch.save(
        {"model": model.state_dict(), "iteration": args.max_iter}, output_dir / "model_final.pth"
    )
    summary = OrderedDict(
        AP50=metrics["AP50"], AP=metrics["AP"], AP75=metrics["AP75"], iteration=args.max_iter
    )
    summary.update(
        test_set=f"{args.test_set[0]}:{args.test_set[1]}",
        partial_weights=partial_weights,
        metric="VOC07 11-point" if use_07_metric else "area",
        per_class=metrics["per_class"],
        num_ground_truth=metrics["num_ground_truth"],
        history=history,
        args={k: v for k, v in vars(args).items()},
    )
    (output_dir / "metrics.json").write_text(json.dumps(_json_ready(summary), indent=2) + "\n")
    print(f"Wrote {output_dir / 'metrics.json'} and {output_dir / 'model_final.pth'}")
    print(format_ap(metrics), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code (2 for a user error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_args(parser, args)
    try:
        run(args)
    except FinetuneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
