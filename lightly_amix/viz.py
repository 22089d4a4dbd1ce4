"""PNG grids of mixed samples and Mix Block masks, in the style of the AMix paper's Figure 4.

Each row is one image pair (A, B) and one λ; the columns are A, B, every fixed mixup's result
(λ = share of A) and, when a Mix Block is given, its mask (white = A) and its mixed image.

Examples:
    >>> grid = mixup_grid(images_a, images_b, lams=(0.3, 0.7), mixups=default_mixups())
    >>> grid.save("mixup_grid.png")
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from PIL import Image, ImageDraw
from torch import Tensor

from lightly_amix.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from lightly_amix.mixing.base import Mixup, pair_batch
from lightly_amix.mixing.mix_block import MixBlock, mix_images
from lightly_amix.mixing.registry import build_mixup

# ManifoldMix mixes hidden features, not pixels: it has no picture.
PIXEL_MIXUPS = ("mixup", "cutmix", "fmix", "resizemix", "saliencymix")
FeatureFn = Callable[[Tensor], Tensor]

_LABEL_HEIGHT = 14
_PAD = 2
# Tiles narrower than this are enlarged by a whole factor (nearest neighbour, so every pixel
# stays a visible square) so that the column labels fit: 28 px Fashion-MNIST tiles become 84 px.
_MIN_TILE = 64


def default_mixups() -> dict[str, Mixup]:
    """The fixed pixel mixups, by name."""
    return {name: build_mixup(name) for name in PIXEL_MIXUPS}


def normalize(images: Tensor) -> Tensor:
    """[0, 1] images -> ImageNet-normalised (the backbone's input)."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    return (images - mean) / std


def denormalize(images: Tensor) -> Tensor:
    """ImageNet-normalised images -> [0, 1] (clamped)."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    return (images * std + mean).clamp(0, 1)


@torch.no_grad()
def mixup_columns(
    images_a: Tensor,
    images_b: Tensor,
    lam: Tensor,
    mixups: Mapping[str, Mixup],
    mix_block: MixBlock | None = None,
    stage3_fn: FeatureFn | None = None,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """Mixes ``images_a[r]`` with ``images_b[r]`` at ``lam[r]`` with every mixup.

    Args:
        images_a: (R, 3, H, W) in [0, 1].
        images_b: (R, 3, H, W) in [0, 1].
        lam: (R,), the share of A.
        mixups: Fixed mixups by name.
        mix_block: Optional Mix Block; needs ``stage3_fn``.
        stage3_fn: Maps [0, 1] images (R, 3, H, W) to stage-3 features (R, C, h, w).
        generator: Seeds the random parts.

    Returns:
        Column name -> (R, 3, H, W) images in [0, 1]; ``A`` and ``B`` first, and for the
        Mix Block ``MB mask`` (grey) and ``MB mix``.
    """
    r = images_a.shape[0]
    batch, perm, lam2 = pair_batch(images_a, images_b, lam)  # (2R, 3, H, W), (2R,), (2R,)
    columns = {"A": images_a, "B": images_b}
    for name, mixup in mixups.items():
        columns[name] = mixup(batch, perm, lam2, generator=generator).images[:r].clamp(0, 1)
    if mix_block is not None:
        if stage3_fn is None:
            raise ValueError("A Mix Block needs stage3_fn to compute the stage-3 features.")
        z = stage3_fn(batch)  # (2R, C, h, w)
        mask = mix_block(z, z[perm], lam2, out_size=tuple(batch.shape[2:]))  # (2R, 1, H, W)
        columns["MB mask"] = mask[:r].expand(-1, 3, -1, -1)
        columns["MB mix"] = mix_images(batch, perm, mask)[:r].clamp(0, 1)
    return columns


def _to_pil(image: Tensor, scale: int = 1) -> Image.Image:
    array = (image.detach().float().cpu().clamp(0, 1) * 255).round().byte()
    tile = Image.fromarray(array.permute(1, 2, 0).numpy())
    if scale > 1:
        tile = tile.resize((tile.width * scale, tile.height * scale), Image.Resampling.NEAREST)
    return tile


def render_grid(columns: Mapping[str, Tensor], row_labels: Sequence[str]) -> Image.Image:
    """Lays out ``columns`` (name -> (R, 3, H, W)) as a labelled PNG-ready image.

    Images narrower than 64 px are enlarged by the smallest whole factor that reaches 64 px.
    """
    names = list(columns)
    first = columns[names[0]]
    rows, h, w = first.shape[0], first.shape[2], first.shape[3]
    scale = -(-_MIN_TILE // w)  # ceil; 1 for tiles of 64 px and more
    h, w = h * scale, w * scale
    label_w = 60
    width = label_w + len(names) * (w + _PAD)
    height = _LABEL_HEIGHT + rows * (h + _PAD)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    for c, name in enumerate(names):
        draw.text((label_w + c * (w + _PAD) + 2, 1), name, fill="black")
        for row in range(rows):
            canvas.paste(
                _to_pil(columns[name][row], scale),
                (label_w + c * (w + _PAD), _LABEL_HEIGHT + row * (h + _PAD)),
            )
    for row, label in enumerate(row_labels):
        draw.text((2, _LABEL_HEIGHT + row * (h + _PAD) + h // 2 - 5), label, fill="black")
    return canvas


def mixup_grid(
    images_a: Tensor,
    images_b: Tensor,
    lams: Sequence[float] = (0.2, 0.5, 0.8),
    mixups: Mapping[str, Mixup] | None = None,
    mix_block: MixBlock | None = None,
    stage3_fn: FeatureFn | None = None,
    seed: int = 0,
) -> Image.Image:
    """One row per (pair, λ): A, B, each mixup, and the Mix Block's mask and mix.

    Args:
        images_a: (P, 3, H, W) in [0, 1].
        images_b: (P, 3, H, W) in [0, 1].
        lams: λ values (the share of A); the grid has P x len(lams) rows.
        mixups: Fixed mixups by name (default: the five pixel mixups).
        mix_block: Optional Mix Block, with ``stage3_fn``.
        stage3_fn: [0, 1] images -> stage-3 features.
        seed: Seed of the random parts (boxes, noise), so the picture is reproducible.
    """
    if images_a.shape != images_b.shape or images_a.dim() != 4:
        raise ValueError(
            f"images_a and images_b must have the same shape (P, 3, H, W), got "
            f"{tuple(images_a.shape)} and {tuple(images_b.shape)}."
        )
    if not lams or any(not 0 <= lam <= 1 for lam in lams):
        raise ValueError(f"lams must be a non-empty list of values in [0, 1], got {list(lams)}.")
    p = images_a.shape[0]
    a = images_a.repeat_interleave(len(lams), dim=0)  # (P·L, 3, H, W)
    b = images_b.repeat_interleave(len(lams), dim=0)
    lam = torch.tensor(list(lams), dtype=torch.float32).repeat(p)  # (P·L,)
    columns = mixup_columns(
        a,
        b,
        lam,
        default_mixups() if mixups is None else mixups,
        mix_block,
        stage3_fn,
        generator=torch.Generator().manual_seed(seed),
    )
    return render_grid(columns, [f"lam={value:.2f}" for value in lam.tolist()])


class MixupGridCallback(pl.Callback):
    """Saves a mixed-sample grid from the first training batch every ``every_n_epochs`` epochs.

    The module's query views (ImageNet-normalised) are paired with their neighbours in the
    batch. When the module has a ``mix_block`` and a ``backbone_momentum`` with
    ``forward_with_stage3``, the Mix Block's masks are drawn too.

    Args:
        output_dir: Where ``mixup_epochNNN.png`` is written.
        every_n_epochs: Interval in epochs.
        num_pairs: Image pairs per grid.
        lams: λ values per pair.
    """

    def __init__(
        self,
        output_dir: str | Path,
        every_n_epochs: int = 10,
        num_pairs: int = 4,
        lams: Sequence[float] = (0.3, 0.7),
    ) -> None:
        if every_n_epochs <= 0 or num_pairs <= 0:
            raise ValueError("every_n_epochs and num_pairs must be > 0.")
        self.output_dir = Path(output_dir)
        self.every_n_epochs = every_n_epochs
        self.num_pairs = num_pairs
        self.lams = tuple(lams)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if (
            batch_idx != 0
            or trainer.current_epoch % self.every_n_epochs
            or not trainer.is_global_zero
        ):
            return
        # Pre-training batches start with the two views, classification batches with images.
        views = batch[0] if isinstance(batch[0], Tensor) else batch[0][0]  # (N, 3, H, W)
        p = min(self.num_pairs, views.shape[0] // 2)
        if p == 0:
            return
        images = denormalize(views[: 2 * p].detach().float())
        mix_block = getattr(pl_module, "mix_block", None)
        encoder = getattr(pl_module, "backbone_momentum", None)
        stage3_fn = None
        if mix_block is not None and encoder is not None:

            def stage3_fn(x: Tensor) -> Tensor:
                return encoder.forward_with_stage3(normalize(x))[1]

        was_training = pl_module.training
        pl_module.eval()
        try:
            grid = mixup_grid(
                images[:p], images[p:], self.lams, mix_block=mix_block, stage3_fn=stage3_fn
            )
        finally:
            pl_module.train(was_training)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        grid.save(self.output_dir / f"mixup_epoch{trainer.current_epoch:03d}.png")
