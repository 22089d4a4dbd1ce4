#!/usr/bin/env python
"""Faster R-CNN R50-C4 fine-tuning on PASCAL VOC without detectron2 (torchvision only).

The paper's detection transfer (Table 6) is MoCo's detectron2 protocol (spec §7): a Faster
R-CNN with a ResNet-50 **C4** backbone (not FPN), fine-tuned on VOC07+12 trainval and tested on
VOC07 test, reporting AP50 / AP (IoU 0.50:0.95) / AP75. This script rebuilds that model with
torchvision's detection parts so that it runs where detectron2 is not installed:

* backbone (the "trunk"): ``conv1`` .. ``layer3`` of our torchvision ResNet-50 (res2-res4),
  stride 16, 1024 channels; the RPN runs on it with anchors of sizes 32..512 and aspect ratios
  0.5/1/2 (15 per location);
* RoI head: ``MultiScaleRoIAlign(["0"], output_size=14, sampling_ratio=0)``, then ``layer4``
  (res5, first block stride 2: 14x14 -> 7x7), then an extra BatchNorm over its 2048 channels
  (MoCo's ``Res5ROIHeadsExtraNorm``), global average pooling and a
  ``FastRCNNPredictor(2048, 21)`` (20 classes + background; initialised as detectron2's, normal
  std 0.01 for the classifier and 0.001 for the box regressor);
* the pre-trained weights (``--weights backbone.pt``, a torchvision ResNet-50 state_dict without
  ``fc``) go into both the trunk and res5, as detectron2's converted weights do; a file that
  lacks some of them (or has others) is refused with the keys listed, unless ``--allow-partial``
  (the rest then keep torchvision's initialisation; not recommended);
* pixels: RGB in [0, 1] normalised with ImageNet's mean/std (the protocol's ``PIXEL_MEAN`` /
  ``PIXEL_STD`` divided by 255); multi-scale training with the shorter side drawn from
  480..800 step 32 (max 1333), shorter side 800 at test; horizontal flip with p = 0.5;
* BatchNorm: plain ``nn.BatchNorm2d`` in training mode everywhere (``FREEZE_AT 0``: nothing is
  frozen); before evaluation the running statistics are re-estimated on ``--precise-bn-iters``
  training batches (detectron2's ``PRECISE_BN``, 200 iterations; never more than
  ``--max-iter``, so a smoke run stays short and ``--max-iter 0`` keeps the loaded statistics);
* one device: each batch of ``--batch-size`` images is split into ``--accum-steps`` forward /
  backward passes whose gradients add up (default 2: 8 images a pass). Batch 16 at 800 px in one
  pass ran out of memory on an 80 GB H100; with two passes the peak was 40.2 GiB and an
  iteration took about 0.9 s there (so about 6 h for 24k iterations);
* schedule: SGD momentum 0.9, weight decay 1e-4 (none on norm parameters, detectron2's
  ``WEIGHT_DECAY_NORM 0``), base LR 0.02 x batch / 16, linear warm-up from 0.001x over 100
  iterations, x0.1 at 75 % and 22/24 (~92 %) of ``--max-iter`` (18k and 22k of 24k);
* RPN / RoI settings as detectron2's defaults: 12000/6000 boxes before NMS (train/test), 2000/1000
  after, NMS 0.7, 256 anchors and 512 RoIs per image, score threshold 0.05, NMS 0.5, 100
  detections per image at test;
* evaluation: :func:`transfer.voc.evaluate_detections`, i.e. detectron2's
  ``PascalVOCDetectionEvaluator`` (VOC07 11-point AP for a 2007 test set).

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
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import Tensor, nn
from torch.utils.data import DataLoader, Sampler
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.ops import MultiScaleRoIAlign

if __package__ in (None, ""):  # run as `python transfer/finetune_voc.py`: find `transfer`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from transfer.voc import (  # noqa: E402
    VOC_CLASSES,
    RandomHorizontalFlip,
    Target,
    VOCDetection,
    evaluate_detections,
)

PROTOCOL_MIN_SIZES_TRAIN: tuple[int, ...] = tuple(range(480, 801, 32))
"""Shorter sides drawn in training (detectron2 ``MIN_SIZE_TRAIN``, sampling "choice")."""
PROTOCOL_MIN_SIZE_TEST = 800
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # = PIXEL_MEAN [123.675, 116.280, 103.530] / 255, RGB
IMAGENET_STD = (0.229, 0.224, 0.225)  # = PIXEL_STD [58.395, 57.120, 57.375] / 255
WARMUP_ITERS = 100
WARMUP_FACTOR = 0.001
STEP_FRACTIONS = (18000 / 24000, 22000 / 24000)
_OOM = (
    "Out of GPU memory with {} images per forward pass (--accum-steps {}). Raise --accum-steps "
    "(e.g. 4 or 8; the batch size and LR stay the same) or lower --min-size/--max-size."
)
NORM_LAYERS = (nn.BatchNorm2d, nn.SyncBatchNorm, nn.GroupNorm, nn.LayerNorm)


class FinetuneError(Exception):
    """A user error (bad weights, data or arguments); ``main`` prints it and exits with 2."""


class ResNetC4Trunk(nn.Module):
    """The stem and res2-res4 (``conv1`` .. ``layer3``) of a torchvision ResNet-50.

    Maps images (N, 3, H, W) to the stride-16 map (N, 1024, ceil(H/16), ceil(W/16)). Keeps
    torchvision's module names, so its state_dict keys are the ResNet's (``conv1.weight``,
    ``layer3.5.bn3.running_var``, ...).

    Args:
        resnet: A torchvision ResNet-50; its modules are shared, not copied.

    Examples:
        >>> trunk = ResNetC4Trunk(torchvision.models.resnet50())
        >>> trunk(torch.zeros(1, 3, 64, 96)).shape, trunk.out_channels
        (torch.Size([1, 1024, 4, 6]), 1024)
    """

    def __init__(self, resnet: torchvision.models.ResNet) -> None:
        super().__init__()
        self.conv1 = resnet.conv1
        self.bn1 = resnet.bn1
        self.relu = resnet.relu
        self.maxpool = resnet.maxpool
        self.layer1 = resnet.layer1
        self.layer2 = resnet.layer2
        self.layer3 = resnet.layer3
        self.out_channels = 1024  # read by torchvision's FasterRCNN

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (N, 64, H/4, W/4)
        return self.layer3(self.layer2(self.layer1(x)))  # (N, 1024, H/16, W/16)


class Res5BoxHead(nn.Module):
    """The C4 box head: res5 on the 14x14 RoI features, an extra BatchNorm, global pooling.

    (R, 1024, 14, 14) -> res5 (R, 2048, 7, 7) -> BatchNorm2d(2048) -> mean over 7x7 -> (R, 2048).
    The extra norm is MoCo's ``Res5ROIHeadsExtraNorm`` (a new layer, not pre-trained).

    Args:
        res5: ``layer4`` of a torchvision ResNet-50 (shared, not copied).
        extra_norm: Add the BatchNorm after res5.

    Examples:
        >>> head = Res5BoxHead(torchvision.models.resnet50().layer4)
        >>> head(torch.zeros(3, 1024, 14, 14)).shape
        torch.Size([3, 2048])
    """

    def __init__(self, res5: nn.Module, extra_norm: bool = True) -> None:
        super().__init__()
        self.res5 = res5
        self.norm: nn.Module = nn.BatchNorm2d(2048) if extra_norm else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm(self.res5(x))  # (R, 2048, 7, 7)
        return x.mean(dim=(2, 3))  # (R, 2048)


def train_min_sizes(min_size: int) -> tuple[int, ...]:
    """The shorter sides drawn in training: 480..800 step 32, scaled by ``min_size / 800``.

    ``min_size=800`` gives the protocol's 11 sizes; the last size is always ``min_size`` (the
    test size, which torchvision takes as the last entry).

    Examples:
        >>> train_min_sizes(800)
        (480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800)
        >>> train_min_sizes(64)
        (38, 41, 44, 46, 49, 51, 54, 56, 59, 61, 64)
    """
    scale = min_size / PROTOCOL_MIN_SIZE_TEST
    return tuple(sorted({round(s * scale) for s in PROTOCOL_MIN_SIZES_TRAIN}))


def build_model(
    resnet: torchvision.models.ResNet | None = None,
    num_classes: int = len(VOC_CLASSES) + 1,
    min_size: int = PROTOCOL_MIN_SIZE_TEST,
    max_size: int = 1333,
    roi_batch_size: int = 512,
) -> FasterRCNN:
    """Faster R-CNN R50-C4 as in the detectron2 protocol (see the module docstring).

    Args:
        resnet: The ResNet-50 to build from (its modules are used in place); a fresh
            torchvision ``resnet50()`` (random init) when None.
        num_classes: Classes including the background (21 for VOC).
        min_size: Shorter side at test; training draws from :func:`train_min_sizes`.
        max_size: Longest side cap (train and test).
        roi_batch_size: RoIs sampled per image for the box head loss (detectron2: 512).

    Returns:
        A torchvision ``FasterRCNN``: in training mode ``model(images, targets)`` returns the
        four losses, in eval mode ``model(images)`` the detections per image (``boxes`` (k, 4)
        in input pixels, ``scores`` (k,), ``labels`` (k,) in 1..20).

    Examples:
        >>> model = build_model(min_size=64, max_size=96).eval()
        >>> with torch.no_grad():
        ...     out = model([torch.rand(3, 64, 80)])
        >>> sorted(out[0])
        ['boxes', 'labels', 'scores']
    """
    if resnet is None:
        resnet = torchvision.models.resnet50(weights=None)
    predictor = FastRCNNPredictor(2048, num_classes)
    nn.init.normal_(predictor.cls_score.weight, std=0.01)
    nn.init.normal_(predictor.bbox_pred.weight, std=0.001)
    nn.init.zeros_(predictor.cls_score.bias)
    nn.init.zeros_(predictor.bbox_pred.bias)
    return FasterRCNN(
        ResNetC4Trunk(resnet),
        min_size=train_min_sizes(min_size),
        max_size=max_size,
        image_mean=list(IMAGENET_MEAN),
        image_std=list(IMAGENET_STD),
        rpn_anchor_generator=AnchorGenerator(
            sizes=((32, 64, 128, 256, 512),), aspect_ratios=((0.5, 1.0, 2.0),)
        ),
        rpn_pre_nms_top_n_train=12000,
        rpn_pre_nms_top_n_test=6000,
        rpn_post_nms_top_n_train=2000,
        rpn_post_nms_top_n_test=1000,
        box_roi_pool=MultiScaleRoIAlign(featmap_names=["0"], output_size=14, sampling_ratio=0),
        box_head=Res5BoxHead(resnet.layer4),
        box_predictor=predictor,
        box_batch_size_per_image=roi_batch_size,
    )


def _describe_basic_block_state(state: dict[str, Tensor]) -> str:
    blocks = {k.split(".")[1] for k in state if k.startswith("layer3.")}
    return "ResNet-18" if len(blocks) <= 2 else "ResNet-34"


def load_backbone_weights(
    resnet: torchvision.models.ResNet, path: str | Path, allow_partial: bool = False
) -> int:
    """Loads ``backbone.pt`` (a torchvision ResNet-50 state_dict, ``fc`` optional) into ``resnet``.

    Every key except ``fc.*`` must be present with the right shape, and nothing else may be
    there: the message counts and lists what is missing, unexpected or of the wrong shape
    (:func:`lightly_amix.checkpoints.load_state_dict_strict`, as the evaluation recipes).
    Loaded with ``torch.load(weights_only=True)``.

    Args:
        resnet: A torchvision ``resnet50()``.
        path: The weights file, as the pre-training recipes write it (``<output-dir>/backbone.pt``).
        allow_partial: Load the matching tensors of a file that lacks some (or has extra ones),
            keeping ``resnet``'s initial values for the rest, with one ``warning:`` line on
            stderr; not recommended (``--allow-partial``). Wrong shapes are still refused.

    Returns:
        The number of tensors loaded.

    Raises:
        FinetuneError: The file is missing or unreadable, is a Lightning checkpoint, a
            ResNet-18/34, a CIFAR-stem ResNet or otherwise not a ResNet-50 state_dict.

    Examples:
        >>> import tempfile
        >>> resnet = torchvision.models.resnet50()
        >>> state = {k: v for k, v in resnet.state_dict().items() if not k.startswith("fc.")}
        >>> with tempfile.TemporaryDirectory() as d:
        ...     torch.save(state, f"{d}/backbone.pt")
        ...     load_backbone_weights(torchvision.models.resnet50(), f"{d}/backbone.pt")
        318
    """
    return _load_backbone_weights(resnet, path, allow_partial)[0]


def _load_backbone_weights(
    resnet: torchvision.models.ResNet, path: str | Path, allow_partial: bool
) -> tuple[int, list[str], list[str]]:
    """:func:`load_backbone_weights`, also returning the missing and unexpected keys."""
    path = Path(path)
    expected = (
        "Expected backbone.pt as the pre-training recipes write it: a torchvision ResNet-50 "
        "state_dict without fc (e.g. recipes/pretrain_imagenet.py --backbone resnet50)."
    )
    if not path.is_file():
        raise FinetuneError(f"--weights: no such file: {path}. {expected}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a user error here
        raise FinetuneError(
            f"--weights: {path} could not be read with torch.load(weights_only=True): {exc}. "
            f"{expected}"
        ) from None
    if isinstance(state, dict) and "state_dict" in state:
        raise FinetuneError(
            f"--weights: {path} is a training checkpoint (it has 'state_dict'), not backbone.pt. "
            "Pass the backbone.pt that the recipe wrote next to it."
        )
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise FinetuneError(f"--weights: {path} is not a dict of tensors. {expected}")
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    prefixed = [k for k in state if k.startswith(("backbone.resnet.", "module.", "resnet."))]
    if prefixed:
        raise FinetuneError(
            f"--weights: {path} has prefixed keys (e.g. {prefixed[0]!r}); expected plain "
            f"torchvision names like 'conv1.weight'. {expected}"
        )
    if "layer1.0.conv3.weight" not in state and "layer1.0.conv1.weight" in state:
        arch = _describe_basic_block_state(state)
        raise FinetuneError(
            f"--weights: {path} holds a {arch} (basic blocks, 512 output channels), but the "
            "C4 detection protocol needs a ResNet-50 (bottleneck blocks, 1024/2048 channels). "
            "Pre-train with the resnet50 backbone, or fine-tune without --weights."
        )
    conv1 = state.get("conv1.weight")
    if conv1 is not None and tuple(conv1.shape) == (64, 3, 3, 3):
        raise FinetuneError(
            f"--weights: {path} was pre-trained with the CIFAR stem (3x3 conv1, no max-pool; "
            "model.cifar_stem=true), but detection needs the ImageNet stem (7x7 stride-2 conv1 "
            "and max-pool) at 800 px. Pre-train with model.cifar_stem=false."
        )
    # Imported here, not at the top: lightly_amix pulls in Lightning (seconds), which the
    # fine-tuning does not otherwise need.
    from lightly_amix.checkpoints import load_state_dict_strict

    try:
        missing, unexpected = load_state_dict_strict(
            resnet,
            state,
            f"--weights: {path}",
            allow_partial=allow_partial,
            ignore=("fc.",),
            expected="backbone.pt as the pre-training recipes write it: a torchvision ResNet-50 "
            "state_dict without fc (e.g. recipes/pretrain_imagenet.py --backbone resnet50)",
            model="a ResNet-50",
        )
    except ValueError as exc:
        raise FinetuneError(str(exc)) from None
    return len(state) - len(unexpected), missing, unexpected


class InfiniteSampler(Sampler[int]):
    """Endless indices: one random permutation of the data set after another (seeded).

    Examples:
        >>> it = iter(InfiniteSampler(3, seed=0))
        >>> sorted(next(it) for _ in range(3)), sorted(next(it) for _ in range(3))
        ([0, 1, 2], [0, 1, 2])
    """

    def __init__(self, size: int, seed: int = 0) -> None:
        self.size = size
        self.seed = seed

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed)
        while True:
            yield from torch.randperm(self.size, generator=generator).tolist()


def collate_detection(
    batch: Sequence[tuple[Tensor, Target]],
) -> tuple[list[Tensor], list[Target]]:
    """Keeps images of different sizes as a list (torchvision's detectors batch them)."""
    return [image for image, _ in batch], [target for _, target in batch]


def lr_factor(iteration: int, max_iter: int) -> float:
    """detectron2's WarmupMultiStepLR: linear warm-up from 0.001, x0.1 at 75 % and ~92 %.

    Examples:
        >>> [round(lr_factor(i, 24000), 5) for i in (0, 50, 100, 17999, 18000, 22000)]
        [0.001, 0.5005, 1.0, 1.0, 0.1, 0.01]
    """
    steps = [round(f * max_iter) for f in STEP_FRACTIONS]
    factor = 0.1 ** bisect_right(steps, iteration)
    if iteration < WARMUP_ITERS:
        alpha = iteration / WARMUP_ITERS
        factor *= WARMUP_FACTOR * (1 - alpha) + alpha
    return factor


def build_optimizer(model: nn.Module, lr: float, weight_decay: float = 1e-4) -> torch.optim.SGD:
    """SGD (momentum 0.9) with weight decay on every parameter except those of norm layers."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for module in model.modules():
        for param in module.parameters(recurse=False):
            if param.requires_grad:
                (no_decay if isinstance(module, NORM_LAYERS) else decay).append(param)
    return torch.optim.SGD(
        [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=lr,
        momentum=0.9,
    )


def _chunks(
    images: list[Tensor], targets: list[Target], parts: int, device: torch.device
) -> Iterator[tuple[list[Tensor], list[Target]]]:
    """Splits a batch into ``parts`` equal sub-batches, moved to ``device``."""
    size = len(images) // parts
    for start in range(0, size * parts, size):
        yield (
            [image.to(device, non_blocking=True) for image in images[start : start + size]],
            [
                {"boxes": t["boxes"].to(device), "labels": t["labels"].to(device)}
                for t in targets[start : start + size]
            ],
        )


@torch.no_grad()
def precise_bn(
    model: nn.Module,
    batches: Iterator[tuple[list[Tensor], list[Target]]],
    num_iters: int,
    device: torch.device,
    accum_steps: int = 1,
) -> None:
    """Re-estimates every BatchNorm's running statistics as the mean over ``num_iters`` batches.

    The model runs in training mode (as detectron2's ``PreciseBN`` hook), without gradients;
    each batch is split into ``accum_steps`` forward passes as in training.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if num_iters <= 0 or not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches
    model.train()
    for _ in range(num_iters):
        for images, targets in _chunks(*next(batches), accum_steps, device):
            model(images, targets)
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: VOCDetection,
    device: torch.device,
    batch_size: int = 1,
    num_workers: int = 0,
    use_07_metric: bool = True,
) -> dict[str, Any]:
    """Runs the detector on ``dataset`` and returns :func:`evaluate_detections`'s result."""
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate_detection,
    )
    model.eval()
    detections: list[dict[str, Tensor]] = []
    ground_truth: list[Target] = []
    for images, targets in loader:
        outputs = model([image.to(device, non_blocking=True) for image in images])
        for output, target in zip(outputs, targets, strict=True):
            detections.append({k: output[k].cpu() for k in ("boxes", "scores", "labels")})
            ground_truth.append(target)
    model.train()
    return evaluate_detections(detections, ground_truth, use_07_metric=use_07_metric)


def _format_ap(metrics: dict[str, Any]) -> str:
    return f"AP50 {metrics['AP50']:.2f}  AP {metrics['AP']:.2f}  AP75 {metrics['AP75']:.2f}"


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
        n, missing, unexpected = _load_backbone_weights(resnet, args.weights, args.allow_partial)
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
    steps = [round(f * args.max_iter) for f in STEP_FRACTIONS]
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
    batches: Iterator[tuple[list[Tensor], list[Target]]] = iter(())
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

    model.train()
    start = time.perf_counter()
    for iteration in range(args.max_iter):
        current_lr = optimizer.param_groups[0]["lr"]
        optimizer.zero_grad(set_to_none=True)
        losses: dict[str, Tensor] = {}
        for images, targets in _chunks(*next(batches), args.accum_steps, device):
            try:
                chunk_losses = model(images, targets)
                loss = sum(chunk_losses.values(), torch.zeros((), device=device))
                if not torch.isfinite(loss):
                    values = ", ".join(f"{k} {v.item():.4g}" for k, v in chunk_losses.items())
                    raise FinetuneError(
                        f"The loss became {loss.item()} at iteration {iteration + 1} ({values}); "
                        "lower --lr."
                    )
                (loss / args.accum_steps).backward()
            except torch.cuda.OutOfMemoryError:
                raise FinetuneError(_OOM.format(len(images), args.accum_steps)) from None
            for k, v in chunk_losses.items():
                losses[k] = losses.get(k, 0.0) + v.detach() / args.accum_steps
        loss = sum(losses.values(), torch.zeros((), device=device))
        optimizer.step()
        scheduler.step()
        done = iteration + 1
        if done % args.print_every == 0 or done in (1, args.max_iter):
            per_iter = (time.perf_counter() - start) / done
            parts = "  ".join(f"{k} {v.item():.4f}" for k, v in losses.items())
            print(f"iter {done}/{args.max_iter}  loss {loss.item():.4f}  {parts}  "
                  f"lr {current_lr:.6f}  {per_iter:.2f} s/it", flush=True)  # fmt: skip
        if args.eval_every and done % args.eval_every == 0 and done < args.max_iter:
            print(f"iter {done}: {_format_ap(evaluate_now(done))}", flush=True)

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
    print(_format_ap(metrics), flush=True)


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
