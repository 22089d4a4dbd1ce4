"""Typed configuration of supervised mixup classification (paper §4.1, Tables 2–3).

One :class:`ClassifierConfig` describes a run of ``recipes/train_classifier.py``; it shares the
``trainer`` section (and its validation) and the Mix Block switches with pre-training, and is
loaded the same way (:func:`lightly_amix.config.load_config` with ``schema=ClassifierConfig``):
dataclass defaults < ``recipes/configs/classify/<dataset>.yaml`` < flags < ``--set``.

Examples:
    >>> cfg = load_classifier_config(overrides=["method=amix", "data.dataset=cifar100"])
    >>> cfg.mixing.alpha, cfg.mixing.momentum_end
    (1.0, 1.0)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightly_amix.config import (
    BACKBONES,
    TrainerConfig,
    _choice,
    _positive,
    load_config,
    validate_trainer,
)
from lightly_amix.mixing.mix_block import MixBlockConfig
from lightly_amix.mixing.puzzle import require_graph_cut
from lightly_amix.utils import BLOCK_BN_MODES

FIXED_METHODS = (
    "mixup", "cutmix", "manifoldmix", "saliencymix", "fmix", "resizemix", "puzzlemix"
)  # fmt: skip
LEARNED_METHODS = ("automix", "amix")
CLASSIFIER_METHODS = ("vanilla", *FIXED_METHODS, *LEARNED_METHODS)


@dataclass
class ClassifierDataConfig:
    """The labelled data set.

    Attributes:
        dataset: A registry name: ``cifar100``, ``cifar10``, ``cub200``, ``aircraft``,
            ``tiny-imagenet``, ``imagenet``, ``folder``, ``fashion-mnist``.
        root: Its folder (see README, "Data").
        train_split: Split to train on (``train``; FGVC-Aircraft: ``trainval``).
        test_split: Split to evaluate on every epoch (``test``; Tiny-ImageNet, ImageNet: ``val``).
        image_size: Side of the training crops.
        num_workers: DataLoader worker processes.
        download: Use torchvision's downloader (CIFAR, Fashion-MNIST, STL-10; needs internet).
        augment: ``crop`` (RandomCrop with 4 px reflect padding + flip, the small-image
            setting) or ``resized_crop`` (RandomResizedCrop + flip); ``auto`` picks ``crop`` for
            images of at most 64 px.
        subset: Train on a class-balanced subset of this many images (``None``: all), drawn
            with the run's seed.
        test_subset: Evaluate on a class-balanced subset of this many test images (``None``:
            all), drawn with seed 0 so that every run sees the same one.
    """

    dataset: str = "cifar100"
    root: str = "data/cifar100"
    train_split: str = "train"
    test_split: str = "test"
    image_size: int = 32
    num_workers: int = 8
    download: bool = False
    augment: str = "auto"
    subset: int | None = None
    test_subset: int | None = None


@dataclass
class ClassifierModelConfig:
    """The network.

    Attributes:
        backbone: torchvision ResNet name.
        cifar_stem: 3x3 stride-1 first conv and no max-pool (images of at most 64 px).
        pretrained: A torchvision ResNet state_dict file (e.g. ImageNet weights) to start from;
            the fine-grained settings (CUB-200, FGVC-Aircraft) use ImageNet weights.
        width: Channels of the ResNet's first stage (torchvision: 64; the mask lab: 16).
    """

    backbone: str = "resnet18"
    cifar_stem: bool = True
    pretrained: str | None = None
    width: int = 64


@dataclass
class ClassifierOptimConfig:
    """SGD with a cosine schedule per step (paper §4.1).

    Attributes:
        lr: Initial learning rate (for the configured batch; not rescaled).
        momentum: SGD momentum.
        weight_decay: Weight decay (not on norms and biases).
        warmup_epochs: Linear warm-up epochs.
        final_lr_ratio: The cosine ends at this share of ``lr`` (0: to zero; the authors'
            AutoMix / SAMix CIFAR configs: 0.5, ``min_lr=0.05`` for ``lr=0.1``).
    """

    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_epochs: int = 0
    final_lr_ratio: float = 0.0


BLOCK_LAMBDA_MODES = ("sample", "batch")
HEAD_MODES = ("one", "two")


@dataclass
class ClassifierMixingConfig:
    """Mixup settings of the supervised methods.

    Attributes:
        alpha: λ ~ Beta(α, α), one λ per batch (paper §4.1: α = 1; grid 0.2, 0.5, 1, 2, 4).
        momentum: Start of the EMA momentum of AutoMix's momentum network (0.999).
        momentum_end: End of its cosine schedule (1.0).
        momentum_hold: Share of the run at the start during which the momentum stays at
            ``momentum`` before the cosine takes over (the authors' ``CosineScheduleHook``,
            ``adjust_scope=[0.1, 1]``: 0.1; the paper: 0).
        degenerate_margin: The backbone's sample of ``automix`` / ``amix`` is a plain MixUp when
            λ is within this of 0 or 1 (AutoMix's ``lam_margin``, 0.08).
        block_lr_scale: The Mix Block's learning rate as a multiple of the network's.
        block_bn: BatchNorm of the frozen momentum network when the Mix Block learns through
            it: ``batch`` (batch statistics, not updated: AutoMix's code runs it in train mode)
            or ``running`` (eval mode, its running statistics).
        block_lam: λ' of the Mix Block's own sample: one per ``sample`` (the mask must then
            follow each sample's λ') or one per ``batch`` (AutoMix's code; the block can then
            meet λ' with one batch-wide shift of its output and saturates, RESULTS.md).
        heads: ``one`` classifier for the clean and the mixup CE, or ``two`` (the authors'
            code: ``head_one`` for clean images, ``head_mix`` for mixed ones; the Mix Block
            learns through the EMA of ``head_mix``).
        grid_every_n_epochs: Save a PNG grid of mixed samples every N epochs (0: never).
    """

    alpha: float = 1.0
    momentum: float = 0.999
    momentum_end: float = 1.0
    degenerate_margin: float = 0.08
    block_lr_scale: float = 1.0
    block_bn: str = "batch"
    block_lam: str = "sample"
    momentum_hold: float = 0.0
    heads: str = "one"
    grid_every_n_epochs: int = 0


@dataclass
class ClassifierConfig:
    """Everything that defines a supervised classification run.

    Attributes:
        method: ``vanilla``, a fixed mixup (``mixup``, ``cutmix``, ``manifoldmix``,
            ``saliencymix``, ``fmix``, ``resizemix``, ``puzzlemix``) or a learned one
            (``automix``: the AutoMix Mix Block; ``amix``: Mix Block+).
        mix_block: Mix Block switches of ``amix`` (``automix`` uses
            :meth:`MixBlockConfig.automix_tuned` whatever this holds).
        last_epochs: The reported metric is the median test top-1 of this many last epochs.
    """

    method: str = "vanilla"
    data: ClassifierDataConfig = field(default_factory=ClassifierDataConfig)
    model: ClassifierModelConfig = field(default_factory=ClassifierModelConfig)
    optim: ClassifierOptimConfig = field(default_factory=ClassifierOptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    mixing: ClassifierMixingConfig = field(default_factory=ClassifierMixingConfig)
    mix_block: MixBlockConfig = field(default_factory=MixBlockConfig)
    last_epochs: int = 10

    def block_config(self) -> MixBlockConfig:
        """The Mix Block of the method: AutoMix's for ``automix``, ``mix_block`` for ``amix``."""
        return MixBlockConfig.automix_tuned() if self.method == "automix" else self.mix_block


AUGMENTS = ("auto", "crop", "resized_crop")


def validate_classifier(cfg: ClassifierConfig) -> None:
    """Checks values that types alone cannot check; raises ValueError naming the key."""
    _choice(cfg.method, CLASSIFIER_METHODS, "method")
    if cfg.method == "puzzlemix":
        require_graph_cut()
    _choice(cfg.model.backbone, BACKBONES, "model.backbone")
    _choice(cfg.data.augment, AUGMENTS, "data.augment")
    _positive(cfg.model.width, "model.width")
    if cfg.model.pretrained and cfg.model.width != 64:
        raise ValueError(
            f"model.pretrained needs torchvision's width 64, got model.width={cfg.model.width}: "
            "drop one of the two."
        )
    _positive(cfg.data.image_size, "data.image_size")
    _positive(cfg.data.num_workers, "data.num_workers", allow_zero=True)
    for key in ("subset", "test_subset"):
        value = getattr(cfg.data, key)
        if value is not None:
            _positive(value, f"data.{key}")
    _positive(cfg.optim.lr, "optim.lr")
    _positive(cfg.optim.weight_decay, "optim.weight_decay", allow_zero=True)
    _positive(cfg.optim.warmup_epochs, "optim.warmup_epochs", allow_zero=True)
    _positive(cfg.mixing.alpha, "mixing.alpha")
    _positive(cfg.mixing.block_lr_scale, "mixing.block_lr_scale")
    _positive(cfg.mixing.grid_every_n_epochs, "mixing.grid_every_n_epochs", allow_zero=True)
    _choice(cfg.mixing.block_bn, BLOCK_BN_MODES, "mixing.block_bn")
    _choice(cfg.mixing.block_lam, BLOCK_LAMBDA_MODES, "mixing.block_lam")
    _choice(cfg.mixing.heads, HEAD_MODES, "mixing.heads")
    for key, value in (("optim.final_lr_ratio", cfg.optim.final_lr_ratio),
                       ("mixing.momentum_hold", cfg.mixing.momentum_hold)):  # fmt: skip
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"Invalid {key} {value}: expected a value in [0, 1].")
    _positive(cfg.last_epochs, "last_epochs")
    if not 0.0 <= cfg.mixing.momentum <= cfg.mixing.momentum_end <= 1.0:
        raise ValueError(
            f"Invalid mixing.momentum {cfg.mixing.momentum} -> mixing.momentum_end "
            f"{cfg.mixing.momentum_end}: expected 0 <= start <= end <= 1 (AutoMix: 0.999 -> 1)."
        )
    if not 0.0 <= cfg.mixing.degenerate_margin < 0.5:
        raise ValueError(
            f"Invalid mixing.degenerate_margin {cfg.mixing.degenerate_margin}: expected a value "
            "in [0, 0.5) (AutoMix: 0.08)."
        )
    validate_trainer(cfg.trainer)
    if cfg.optim.warmup_epochs >= cfg.trainer.epochs and cfg.optim.warmup_epochs > 0:
        raise ValueError(
            f"optim.warmup_epochs ({cfg.optim.warmup_epochs}) must be smaller than "
            f"trainer.epochs ({cfg.trainer.epochs})."
        )


def load_classifier_config(
    path: str | Path | Sequence[str | Path] | None = None,
    overrides: Iterable[str] = (),
    flags: Mapping[str, Any] | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> ClassifierConfig:
    """:func:`lightly_amix.config.load_config` for a :class:`ClassifierConfig`."""
    cfg = load_config(
        path, overrides, flags, defaults, schema=ClassifierConfig, check=validate_classifier
    )
    assert isinstance(cfg, ClassifierConfig)
    return cfg
