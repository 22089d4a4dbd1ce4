"""Training and evaluation loop of the VOC fine-tuning: data order, schedule, precise BN, AP.

The detectron2 protocol's solver and hooks, on one device:

* data: an endless seeded sequence of random permutations (:class:`InfiniteSampler`), images
  of different sizes kept as lists (:func:`collate_detection`);
* one device: each batch of ``batch-size`` images is split into ``accum-steps`` forward /
  backward passes whose gradients add up (:func:`train_step`; default 2: 8 images a pass).
  Batch 16 at 800 px in one pass ran out of memory on an 80 GB H100; with two passes the peak
  was 40.2 GiB and an iteration took about 0.9 s there (so about 6 h for 24k iterations);
* schedule: SGD momentum 0.9, weight decay 1e-4 (none on norm parameters, detectron2's
  ``WEIGHT_DECAY_NORM 0``; :func:`build_optimizer`), base LR 0.02 x batch / 16, linear warm-up
  from 0.001x over 100 iterations, x0.1 at 75 % and 22/24 (~92 %) of ``max-iter`` (18k and 22k
  of 24k; :func:`lr_factor`);
* BatchNorm: before evaluation the running statistics are re-estimated on training batches
  (:func:`precise_bn`, detectron2's ``PRECISE_BN``, 200 iterations by default);
* evaluation: :func:`evaluate` runs the detector on the test set and scores it with
  :func:`transfer.voc_eval.evaluate_detections`, i.e. detectron2's
  ``PascalVOCDetectionEvaluator`` (VOC07 11-point AP for a 2007 test set).

Examples:
    >>> lr_steps(24000)
    [18000, 22000]
"""

from __future__ import annotations

import time
from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Sampler

from transfer.errors import FinetuneError
from transfer.voc_dataset import Target, VOCDetection
from transfer.voc_eval import evaluate_detections

Batch = tuple[list[Tensor], list[Target]]
"""Images (3, H, W) of different sizes and their targets, as :func:`collate_detection` makes."""

WARMUP_ITERS = 100
WARMUP_FACTOR = 0.001
STEP_FRACTIONS = (18000 / 24000, 22000 / 24000)
_OOM = (
    "Out of GPU memory with {} images per forward pass (--accum-steps {}). Raise --accum-steps "
    "(e.g. 4 or 8; the batch size and LR stay the same) or lower --min-size/--max-size."
)
NORM_LAYERS = (nn.BatchNorm2d, nn.SyncBatchNorm, nn.GroupNorm, nn.LayerNorm)


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


def collate_detection(batch: Sequence[tuple[Tensor, Target]]) -> Batch:
    """Keeps images of different sizes as a list (torchvision's detectors batch them)."""
    return [image for image, _ in batch], [target for _, target in batch]


def lr_steps(max_iter: int) -> list[int]:
    """The iterations where the LR drops by 10x: 75 % and 22/24 of ``max_iter``.

    Examples:
        >>> lr_steps(1000)
        [750, 917]
    """
    return [round(f * max_iter) for f in STEP_FRACTIONS]


def lr_factor(iteration: int, max_iter: int) -> float:
    """detectron2's WarmupMultiStepLR: linear warm-up from 0.001, x0.1 at 75 % and ~92 %.

    Examples:
        >>> [round(lr_factor(i, 24000), 5) for i in (0, 50, 100, 17999, 18000, 22000)]
        [0.001, 0.5005, 1.0, 1.0, 0.1, 0.01]
    """
    steps = lr_steps(max_iter)
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
) -> Iterator[Batch]:
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
    batches: Iterator[Batch],
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


def format_ap(metrics: dict[str, Any]) -> str:
    """The AP line printed last by the fine-tuning, from :func:`evaluate`'s result.

    Examples:
        >>> format_ap({"AP50": 80.123, "AP": 55.0, "AP75": 61.456})
        'AP50 80.12  AP 55.00  AP75 61.46'
    """
    return f"AP50 {metrics['AP50']:.2f}  AP {metrics['AP']:.2f}  AP75 {metrics['AP75']:.2f}"


def train_step(
    model: nn.Module,
    batch: Batch,
    accum_steps: int,
    device: torch.device,
    iteration: int,
) -> dict[str, Tensor]:
    """Forward and backward passes of one batch, in ``accum_steps`` equal parts.

    The gradients of the parts add up (each loss is divided by ``accum_steps``); the caller
    zeroes them before and steps the optimizer after.

    Args:
        model: The detector in training mode (``model(images, targets)`` returns its losses).
        batch: The images and targets of one iteration (on the CPU).
        accum_steps: Number of forward / backward passes; divides the batch size.
        device: Where the model is.
        iteration: The 0-based iteration, for the error message.

    Returns:
        The losses by name, detached, averaged over the parts.

    Raises:
        FinetuneError: A loss is not finite (lower the LR), or the GPU ran out of memory
            (raise ``accum_steps``).
    """
    losses: dict[str, Tensor] = {}
    for images, targets in _chunks(*batch, accum_steps, device):
        try:
            chunk_losses = model(images, targets)
            loss = sum(chunk_losses.values(), torch.zeros((), device=device))
            if not torch.isfinite(loss):
                values = ", ".join(f"{k} {v.item():.4g}" for k, v in chunk_losses.items())
                raise FinetuneError(
                    f"The loss became {loss.item()} at iteration {iteration + 1} ({values}); "
                    "lower --lr."
                )
            (loss / accum_steps).backward()
        except torch.cuda.OutOfMemoryError:
            raise FinetuneError(_OOM.format(len(images), accum_steps)) from None
        for k, v in chunk_losses.items():
            losses[k] = losses.get(k, 0.0) + v.detach() / accum_steps
    return losses


def train(
    model: nn.Module,
    batches: Iterator[Batch],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    device: torch.device,
    max_iter: int,
    accum_steps: int = 1,
    print_every: int = 20,
    eval_every: int = 0,
    evaluate_at: Callable[[int], dict[str, Any]] | None = None,
) -> None:
    """Runs ``max_iter`` iterations of :func:`train_step`, an optimizer and a scheduler step.

    Prints ``iter n/max_iter  loss ...  <each loss>  lr ...  s/it`` at iteration 1, every
    ``print_every`` iterations and at the last one.

    Args:
        model: The detector; put in training mode here.
        batches: Training batches, one taken per iteration.
        optimizer: E.g. :func:`build_optimizer`'s.
        scheduler: Stepped once per iteration, e.g. ``LambdaLR`` with :func:`lr_factor`.
        device: Where the model is.
        max_iter: Number of iterations (0: nothing to do).
        accum_steps: Forward / backward passes per batch (see :func:`train_step`).
        print_every: Print the losses every this many iterations.
        eval_every: Call ``evaluate_at(n)`` after every ``eval_every``-th iteration ``n`` before
            the last (0: never); the caller evaluates after the last one itself.
        evaluate_at: Evaluates the model at an iteration and returns :func:`evaluate`'s result
            (e.g. after :func:`precise_bn`); its AP line is printed.

    Raises:
        FinetuneError: From :func:`train_step`.
    """
    model.train()
    start = time.perf_counter()
    for iteration in range(max_iter):
        current_lr = optimizer.param_groups[0]["lr"]
        optimizer.zero_grad(set_to_none=True)
        losses = train_step(model, next(batches), accum_steps, device, iteration)
        loss = sum(losses.values(), torch.zeros((), device=device))
        optimizer.step()
        scheduler.step()
        done = iteration + 1
        if done % print_every == 0 or done in (1, max_iter):
            per_iter = (time.perf_counter() - start) / done
            parts = "  ".join(f"{k} {v.item():.4f}" for k, v in losses.items())
            print(f"iter {done}/{max_iter}  loss {loss.item():.4f}  {parts}  "
                  f"lr {current_lr:.6f}  {per_iter:.2f} s/it", flush=True)  # fmt: skip
        if evaluate_at is not None and eval_every and done % eval_every == 0 and done < max_iter:
            print(f"iter {done}: {format_ap(evaluate_at(done))}", flush=True)
