"""Typed configuration for pre-training: YAML files, ``--set key=value`` overrides, validation.

A run is described by one :class:`PretrainConfig`, made of small sections (``data``, ``model``,
``optim``, ``trainer``). The schema is a set of dataclasses; YAML files and dotted overrides are
merged onto it with OmegaConf (already installed with Lightly through hydra-core), which checks
types. Unknown keys are an error that lists the valid keys of the section.

Precedence, lowest first: dataclass defaults < YAML file (``--config``) < command-line flags
(``--epochs``, ...) < ``--set key=value``.

Examples:
    >>> cfg = load_config(["recipes/configs/stl10.yaml", "recipes/configs/methods/amix-i.yaml"],
    ...                   overrides=["trainer.epochs=1"])
    >>> cfg.model.queue_size
    65536
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from lightly_amix.mixing.block_losses import BLOCK_LOSSES, PSEUDO_LABEL_TERMS
from lightly_amix.mixing.mix_block import MixBlockConfig
from lightly_amix.mixing.puzzle import require_graph_cut
from lightly_amix.utils import BLOCK_BN_MODES

BACKBONES = ("resnet18", "resnet34", "resnet50")
FIXED_MIXUPS = ("mixup", "cutmix", "fmix", "resizemix", "saliencymix", "manifoldmix")
# Contrastive methods that mix in the input and/or latent space (paper Tables 5-6).
COMPARISON_METHODS = ("mochi", "imix", "unmix", "puzzlemix")
# AMix beyond MoCo: SimCLR and BYOL, each plain and with the learned mixup.
BEYOND_MOCO_METHODS = ("simclr", "amix-simclr", "byol", "amix-byol")
METHODS = (
    "mocov2", "amix-i", "amix-c", *FIXED_MIXUPS, *COMPARISON_METHODS, *BEYOND_MOCO_METHODS
)  # fmt: skip
IMIX_INPUTS = ("mixup", "cutmix")
PIPELINES = ("cross-view", "reference")
BLOCK_FEATURES = ("momentum", "online")
BLOCK_LOSS_TERMS = tuple(BLOCK_LOSSES)
MOMENTUM_SCHEDULES = ("constant", "cosine")


# Lightning precisions the recipes support (fp8 / transformer-engine need extra packages and
# a Hopper GPU, and are not tested here).
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true",
              "32", "16", "bf16", "64")  # fmt: skip

# Where the two views are drawn (DataConfig.augment_on).
AUGMENT_ON_CHOICES: tuple[str, ...] = ("auto", "loader", "device")


@dataclass
class DataConfig:
    """Where the images come from.

    Attributes:
        dataset: One of ``stl10``, ``tiny-imagenet``, ``imagenet``, ``folder``, ``fashion-mnist``.
        root: Folder holding the data set (see README, "Data").
        split: Split used for pre-training (STL-10: ``train+unlabeled``, 105k images).
        image_size: Side of the square crops fed to the network.
        num_workers: DataLoader worker processes.
        download: Use torchvision's downloader (needs internet; STL-10, Fashion-MNIST only).
        augment_on: Where the two MoCo v2 views are drawn: ``loader`` (per image, PIL, in
            the loader workers), ``device`` (whole uint8 batches on the training device; see
            ``lightly_amix.data.device_augment``) or ``auto`` (``device`` when training on a
            GPU, else ``loader``). Both give the same distribution of views.
        crop_min_scale: Smallest random-resized-crop area as a share of the image (MoCo v2:
            0.2; milder crops suit small images whose class is their whole shape).
    """

    dataset: str = "stl10"
    root: str = "data"
    split: str = "train+unlabeled"
    image_size: int = 96
    num_workers: int = 8
    download: bool = False
    augment_on: str = "auto"
    crop_min_scale: float = 0.2


@dataclass
class ModelConfig:
    """Backbone and MoCo v2 settings (paper §4.2; MoCo v2, Chen et al. 2020).

    Attributes:
        backbone: torchvision ResNet name.
        cifar_stem: 3x3 stride-1 first conv and no max-pool (for inputs of at most 64 px).
        proj_hidden_dim: Hidden width of the projection head; ``None`` uses the backbone's
            feature width (512 for ResNet-18, 2048 for ResNet-50), as MoCo v2 does.
        proj_output_dim: Projection (embedding) dimension.
        queue_size: Number of negatives in the memory bank (at most the data set size).
        temperature: InfoNCE temperature.
        momentum: EMA momentum of the key encoder (start value with the cosine schedule).
        momentum_schedule: ``constant``, or ``cosine`` from ``momentum`` to 1 over training.
        shuffle_bn: Shuffle the key batch (across devices under DDP) before the key encoder.
            On one device this changes no BatchNorm statistic unless ``bn_splits`` > 1.
        bn_splits: BatchNorm statistics over this many equal parts of each device's batch in
            both encoders (Lightly's ``SplitBatchNorm``; 0: plain BatchNorm). On one device
            this is what makes ``shuffle_bn`` work: the shuffled keys are normalised with
            other parts' statistics than their queries.
    """

    backbone: str = "resnet18"
    cifar_stem: bool = False
    proj_hidden_dim: int | None = None
    proj_output_dim: int = 128
    queue_size: int = 65536
    temperature: float = 0.2
    momentum: float = 0.999
    momentum_schedule: str = "constant"
    shuffle_bn: bool = True
    bn_splits: int = 0


@dataclass
class OptimConfig:
    """SGD with a cosine learning-rate schedule (MoCo v2 settings).

    Attributes:
        base_lr: Learning rate for a global batch of 256; scaled linearly with the batch.
        momentum: SGD momentum.
        weight_decay: Weight decay, not applied to norm layers and biases.
        warmup_epochs: Linear warm-up length in epochs (0 disables it).
    """

    base_lr: float = 0.03
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_epochs: int = 0


@dataclass
class TrainerConfig:
    """Lightning Trainer settings and run bookkeeping.

    Attributes:
        epochs: Number of pre-training epochs.
        batch_size: Images per device per step.
        limit_batches: Batches per epoch (``None``: the whole data set); for quick checks.
        accelerator: ``auto``, ``cpu``, ``gpu``, ...
        devices: ``auto``, a count (``"2"``), or a list (``"0,1"``).
        strategy: ``auto``, ``ddp``, ...
        precision: Lightning precision string (``32-true``, ``bf16-mixed``, ``16-mixed``).
        sync_batchnorm: Convert BatchNorm layers to SyncBatchNorm under DDP.
        seed: Global seed; every epoch's randomness is derived from it and the epoch number.
        output_dir: Where checkpoints, logs and ``backbone.pt`` are written.
        resume: Checkpoint to resume from, ``auto`` (the valid checkpoint with the most
            training progress in ``output_dir``), or ``None``.
        log_every_n_steps: Logging interval.
        keep_every: Keep a numbered checkpoint every this many epochs (``last.ckpt`` is
            written every epoch).
        checkpoint_every_minutes: Also write ``last.ckpt`` within an epoch every this many
            minutes (0: only at the end of epochs), so a killed run loses at most that much.
        checkpoint_every_n_steps: Write ``last.ckpt`` every this many steps instead of by
            time (0: by time).
        knn_every_n_epochs: Log a weighted-kNN top-1 on the labelled splits (STL-10 train →
            test, Tiny/ImageNet train → val) every N epochs; 0 turns the monitor off.
        knn_limit_batches: Batches per split for the monitor (``None``: all).
    """

    epochs: int = 400
    batch_size: int = 256
    limit_batches: int | None = None
    accelerator: str = "auto"
    devices: str = "auto"
    strategy: str = "auto"
    precision: str = "32-true"
    sync_batchnorm: bool = False
    seed: int = 0
    output_dir: str = "out"
    resume: str | None = None
    log_every_n_steps: int = 50
    keep_every: int = 50
    checkpoint_every_minutes: float = 30.0
    checkpoint_every_n_steps: int = 0
    knn_every_n_epochs: int = 0
    knn_limit_batches: int | None = None


@dataclass
class MixingConfig:
    """Mixup settings of the AMix family and the fixed-mixup baselines (paper §2.2, §3).

    Attributes:
        alpha: λ ~ Beta(α, α) for the backbone's and the Mix Block's samples (paper: 2).
        mix_weight: Weight of the backbone's mixup InfoNCE (``L = L_moco + w L_mix``).
        pipeline: ``cross-view`` (mix query views, positives from key views; the paper) or
            ``reference`` (mix ``x_i^τ1`` with ``x_j^τ2``, positives ``k_i^τ2`` and
            ``k_j^τ1``; the reference code).
        block_loss: Mix Block loss terms joined by ``+`` from ``bce``, ``infonce``,
            ``infonce_pl``, ``ce_pl``, ``pbce`` (AMix-I: ``infonce+bce``; AMix-C:
            ``ce_pl+bce``). Terms with ``_pl`` or ``pbce`` use ODC pseudo-labels.
        block_weight: Weight of the Mix Block's main loss terms.
        block_lr_scale: The Mix Block's learning rate as a multiple of the backbone's (same
            cosine schedule).
        block_features: Stage-3 features for the Mix Block: ``momentum`` (the momentum
            encoder's, as AutoMix; one extra stem-to-stage-3 pass) or ``online`` (the query
            forward's, detached; no extra pass).
        block_bn: BatchNorm of the frozen momentum (EMA, target) network while the Mix Block
            learns through it: ``running`` (eval mode, its running statistics; the runs in
            RESULTS.md) or ``batch`` (the mixed batch's statistics, running ones not updated;
            the supervised classifier's default, see ``lightly_amix.utils.batch_stats_mode``).
        grid_every_n_epochs: Save a PNG grid of mixed samples every N epochs (0: never).
    """

    alpha: float = 2.0
    mix_weight: float = 1.0
    pipeline: str = "cross-view"
    block_loss: str = "infonce+bce"
    block_weight: float = 1.0
    block_lr_scale: float = 1.0
    block_features: str = "momentum"
    block_bn: str = "running"
    grid_every_n_epochs: int = 0


@dataclass
class ODCConfig:
    """Online deep clustering for AMix-C's pseudo-labels (paper §3.3; Zhan et al., CVPR 2020).

    Attributes:
        num_clusters: K (paper: 200). Lowered with a warning when the data set is too small
            for K clusters of ``min_cluster_size``.
        momentum: Memory update momentum.
        min_cluster_size: Smaller clusters are dissolved and refilled by a split.
        refresh_interval: Steps between centroid refreshes.
        kmeans_iters: faiss k-means iterations at initialisation.
        head_weight: Weight of the cluster head's own CE loss.
    """

    num_clusters: int = 200
    momentum: float = 0.5
    min_cluster_size: int = 20
    refresh_interval: int = 10
    kmeans_iters: int = 20
    head_weight: float = 1.0


@dataclass
class MoCHiConfig:
    """Hard negative mixing (MoCHi, Kalantidis et al., NeurIPS 2020; ``--method mochi``).

    Attributes:
        num_hard: ``N``, the hardest queue entries each query mixes from (lowered to the
            queue size, with a warning, for small queues).
        num_mix: ``s``, synthetic negatives mixed from two hard negatives, per query.
        num_query_mix: ``s'``, synthetic negatives mixed from the query and a hard negative.
        start_epoch: First epoch with synthetic negatives (before: MoCo v2).

    The defaults are MoCHi (1024, 1024, 128), one of the paper's ImageNet-100 settings.
    """

    num_hard: int = 1024
    num_mix: int = 1024
    num_query_mix: int = 128
    start_epoch: int = 0


@dataclass
class IMixConfig:
    """i-Mix for MoCo (Lee et al., ICLR 2021; ``--method imix``).

    Attributes:
        input: The input mixup of the queries: ``mixup`` or ``cutmix`` (the paper's variants).
    """

    input: str = "mixup"


@dataclass
class PretrainConfig:
    """Everything that defines a pre-training run."""

    method: str = "mocov2"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    mixing: MixingConfig = field(default_factory=MixingConfig)
    mix_block: MixBlockConfig = field(default_factory=MixBlockConfig)
    odc: ODCConfig = field(default_factory=ODCConfig)
    mochi: MoCHiConfig = field(default_factory=MoCHiConfig)
    imix: IMixConfig = field(default_factory=IMixConfig)


def _section_keys(schema: DictConfig, dotted: str) -> list[str]:
    """Returns the valid keys of the section that holds ``dotted`` (a full key)."""
    node: Any = schema
    for part in dotted.split(".")[:-1]:
        if not isinstance(node, DictConfig) or part not in node:
            break
        node = node[part]
    return sorted(str(k) for k in node.keys()) if isinstance(node, DictConfig) else []


def _merge(schema: DictConfig, update: Any, source: str) -> DictConfig:
    """Merges ``update`` onto ``schema``, turning OmegaConf errors into clear ValueErrors."""
    try:
        merged = OmegaConf.merge(schema, update)
    except ConfigKeyError as exc:
        key = str(exc.full_key or exc.key or "?")
        section = key.rsplit(".", 1)[0] if "." in key else "<top level>"
        raise ValueError(
            f"Unknown config key '{key}' in {source}. Valid keys in {section}: "
            f"{', '.join(_section_keys(schema, key))}."
        ) from None
    except OmegaConfBaseException as exc:
        key = str(getattr(exc, "full_key", None) or "?")
        reason = str(exc.msg).splitlines()[0]
        raise ValueError(f"Invalid value for config key '{key}' in {source}: {reason}.") from None
    assert isinstance(merged, DictConfig)
    return merged


def _read_yaml(path: Path) -> Any:
    """The YAML of a config file; a clear ValueError naming the file, line and column."""
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ValueError(
            f"Config file '{path}' is not valid YAML{where}: {problem}. Fix the file (nested "
            "'section: {key: value}' mappings, as in recipes/configs/) or pass another --config."
        ) from None
    except UnicodeDecodeError:
        raise ValueError(
            f"Config file '{path}' is not a text file; expected a YAML config such as "
            "recipes/configs/stl10.yaml."
        ) from None


def _parse_overrides(overrides: Iterable[str]) -> DictConfig:
    pairs = list(overrides)
    for item in pairs:
        if "=" not in item or item.startswith("="):
            raise ValueError(
                f"Bad override '{item}': expected key=value with a dotted key, "
                "e.g. --set model.temperature=0.2"
            )
    try:
        return OmegaConf.from_dotlist(pairs)
    except OmegaConfBaseException as exc:
        reason = str(exc).splitlines()[0]
        raise ValueError(
            f"Bad override in --set {' '.join(pairs)}: {reason}. Quote lists and strings with "
            "special characters, e.g. --set 'key=[1,2]'."
        ) from None


def recipe_config_files(
    config_dir: str | Path, dataset: str, method: str
) -> tuple[list[Path], dict[str, Any]]:
    """The config files a recipe merges, and the defaults they build on.

    Each data set has one base file (``<dataset>.yaml``: data, model, optimiser, trainer) and
    each method one overlay (``methods/<method>.yaml``: the method and its mixing, Mix Block
    and clustering settings); the output folder defaults to ``out/<dataset>_<method>``.

    Examples:
        >>> files, defaults = recipe_config_files("recipes/configs", "stl10", "amix-i")
        >>> [str(f) for f in files], defaults
        (['recipes/configs/stl10.yaml', 'recipes/configs/methods/amix-i.yaml'], \
{'trainer.output_dir': 'out/stl10_amix_i'})
    """
    slug = dataset.replace("-", "_")
    files = [Path(config_dir) / f"{slug}.yaml", Path(config_dir) / "methods" / f"{method}.yaml"]
    return files, {"trainer.output_dir": f"out/{slug}_{method.replace('-', '_')}"}


def load_config(
    path: str | Path | Sequence[str | Path] | None = None,
    overrides: Iterable[str] = (),
    flags: Mapping[str, Any] | None = None,
    defaults: Mapping[str, Any] | None = None,
    schema: type[Any] = PretrainConfig,
    check: Callable[[Any], None] | None = None,
) -> Any:
    """Builds a validated :class:`PretrainConfig` (or another ``schema``).

    Args:
        path: YAML file(s) whose nested keys mirror the dataclasses, merged in order
            (optional).
        overrides: ``key=value`` strings with dotted keys, applied last.
        flags: Dotted key -> value pairs from command-line flags; ``None`` values are ignored.
        defaults: Dotted key -> value pairs applied before the files (e.g. a recipe's
            default output folder).
        schema: The config dataclass (default :class:`PretrainConfig`).
        check: Validation of the built config (default :func:`validate` for
            :class:`PretrainConfig`).

    Returns:
        The merged and validated config.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: On unknown keys (the message lists the valid ones), wrong types or values.

    Examples:
        >>> cfg = load_config(overrides=["model.backbone=resnet50", "trainer.epochs=1"])
        >>> cfg.model.backbone
        'resnet50'
    """
    merged = OmegaConf.structured(schema)
    if defaults:
        given = [f"{key}={_yaml_scalar(value)}" for key, value in defaults.items()]
        merged = _merge(merged, OmegaConf.from_dotlist(given), "recipe defaults")
    paths = [] if path is None else [path] if isinstance(path, str | Path) else list(path)
    for file in map(Path, paths):
        if not file.is_file():
            raise FileNotFoundError(f"Config file '{file}' does not exist.")
        data = _read_yaml(file)
        if not isinstance(data, dict):
            raise ValueError(
                f"Config file '{file}' must hold a mapping, got {type(data).__name__}."
            )
        merged = _merge(merged, data, f"config file '{file}'")
    if flags:
        given = [
            f"{key}={_yaml_scalar(value)}" for key, value in flags.items() if value is not None
        ]
        merged = _merge(merged, OmegaConf.from_dotlist(given), "command-line flags")
    merged = _merge(merged, _parse_overrides(overrides), "--set overrides")
    cfg = OmegaConf.to_object(merged)
    assert isinstance(cfg, schema)
    (check or (validate if schema is PretrainConfig else None) or (lambda _: None))(cfg)
    return cfg


def _yaml_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _choice(value: str, valid: Iterable[str], key: str) -> None:
    valid = tuple(valid)
    if value not in valid:
        raise ValueError(f"Invalid {key} '{value}'. Expected one of: {', '.join(valid)}.")


def _positive(value: float | int, key: str, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"Invalid {key} {value}: expected a number {bound}.")


def validate_trainer(t: TrainerConfig) -> None:
    """Checks the ``trainer`` section (shared by pre-training and classification)."""
    _positive(t.epochs, "trainer.epochs")
    _positive(t.batch_size, "trainer.batch_size")
    _positive(t.keep_every, "trainer.keep_every")
    _positive(t.checkpoint_every_minutes, "trainer.checkpoint_every_minutes", True)
    _positive(t.checkpoint_every_n_steps, "trainer.checkpoint_every_n_steps", True)
    _positive(t.log_every_n_steps, "trainer.log_every_n_steps")
    if t.limit_batches is not None:
        _positive(t.limit_batches, "trainer.limit_batches")
    if str(t.precision) not in PRECISIONS:
        raise ValueError(
            f"Invalid trainer.precision '{t.precision}'. Expected one of: "
            f"{', '.join(PRECISIONS[:6])} (32-true is exact; bf16-mixed is the fast choice on "
            "recent GPUs and AVX-512 CPUs). fp8 and transformer-engine are not supported here."
        )


def validate(cfg: PretrainConfig) -> None:
    """Checks values that types alone cannot check; raises ValueError naming the key."""
    _choice(cfg.method, METHODS, "method")
    if cfg.method == "puzzlemix":
        require_graph_cut()
    _choice(cfg.data.augment_on, AUGMENT_ON_CHOICES, "data.augment_on")
    if not 0.0 < cfg.data.crop_min_scale <= 1.0:
        raise ValueError(
            f"Invalid data.crop_min_scale {cfg.data.crop_min_scale}: expected a share of the "
            "image area in (0, 1], e.g. 0.2 (MoCo v2)."
        )
    _choice(cfg.model.backbone, BACKBONES, "model.backbone")
    _choice(cfg.model.momentum_schedule, MOMENTUM_SCHEDULES, "model.momentum_schedule")
    _positive(cfg.data.image_size, "data.image_size")
    _positive(cfg.data.num_workers, "data.num_workers", allow_zero=True)
    _positive(cfg.model.queue_size, "model.queue_size")
    _positive(cfg.model.proj_output_dim, "model.proj_output_dim")
    if cfg.model.proj_hidden_dim is not None:
        _positive(cfg.model.proj_hidden_dim, "model.proj_hidden_dim")
    _positive(cfg.model.temperature, "model.temperature")
    _positive(cfg.model.bn_splits, "model.bn_splits", allow_zero=True)
    if cfg.model.bn_splits > 1 and cfg.trainer.batch_size % cfg.model.bn_splits:
        raise ValueError(
            f"trainer.batch_size {cfg.trainer.batch_size} is not a multiple of model.bn_splits "
            f"{cfg.model.bn_splits}: each device's batch is split into equal parts for "
            "BatchNorm. Choose a batch size divisible by bn_splits, or fewer splits."
        )
    if cfg.model.bn_splits > 1 and cfg.trainer.sync_batchnorm:
        raise ValueError(
            "model.bn_splits and trainer.sync_batchnorm exclude each other (split statistics "
            "per part vs. statistics synchronised over all devices); set one of them."
        )
    if not 0.0 <= cfg.model.momentum <= 1.0:
        raise ValueError(f"Invalid model.momentum {cfg.model.momentum}: expected 0 <= m <= 1.")
    _positive(cfg.optim.base_lr, "optim.base_lr")
    _positive(cfg.optim.weight_decay, "optim.weight_decay", allow_zero=True)
    _positive(cfg.optim.warmup_epochs, "optim.warmup_epochs", allow_zero=True)
    validate_trainer(cfg.trainer)
    if cfg.model.queue_size < cfg.trainer.batch_size:
        raise ValueError(
            f"model.queue_size {cfg.model.queue_size} is smaller than one batch of keys "
            f"(trainer.batch_size {cfg.trainer.batch_size}): every step would overwrite the "
            "whole queue with part of its own keys. Use --queue-size of at least the batch size, "
            f"best a multiple of it (e.g. {cfg.trainer.batch_size * 8}; MoCo v2: 65536)."
        )
    _positive(cfg.trainer.knn_every_n_epochs, "trainer.knn_every_n_epochs", allow_zero=True)
    _choice(cfg.mixing.pipeline, PIPELINES, "mixing.pipeline")
    _choice(cfg.mixing.block_features, BLOCK_FEATURES, "mixing.block_features")
    _choice(cfg.mixing.block_bn, BLOCK_BN_MODES, "mixing.block_bn")
    for term in block_loss_terms(cfg.mixing.block_loss):
        _choice(term, BLOCK_LOSS_TERMS, "mixing.block_loss term")
    _positive(cfg.mixing.alpha, "mixing.alpha")
    _positive(cfg.mixing.mix_weight, "mixing.mix_weight", allow_zero=True)
    _positive(cfg.mixing.block_weight, "mixing.block_weight", allow_zero=True)
    _positive(cfg.mixing.block_lr_scale, "mixing.block_lr_scale")
    _positive(cfg.mixing.grid_every_n_epochs, "mixing.grid_every_n_epochs", allow_zero=True)
    _positive(cfg.odc.num_clusters, "odc.num_clusters")
    _positive(cfg.odc.min_cluster_size, "odc.min_cluster_size")
    _positive(cfg.odc.refresh_interval, "odc.refresh_interval")
    _positive(cfg.odc.kmeans_iters, "odc.kmeans_iters")
    _positive(cfg.mochi.num_hard, "mochi.num_hard")
    _positive(cfg.mochi.num_mix, "mochi.num_mix", allow_zero=True)
    _positive(cfg.mochi.num_query_mix, "mochi.num_query_mix", allow_zero=True)
    _positive(cfg.mochi.start_epoch, "mochi.start_epoch", allow_zero=True)
    _choice(cfg.imix.input, IMIX_INPUTS, "imix.input")
    if not 0.0 < cfg.odc.momentum <= 1.0:
        raise ValueError(f"Invalid odc.momentum {cfg.odc.momentum}: expected 0 < m <= 1.")
    if cfg.optim.warmup_epochs >= cfg.trainer.epochs and cfg.optim.warmup_epochs > 0:
        raise ValueError(
            f"optim.warmup_epochs ({cfg.optim.warmup_epochs}) must be smaller than "
            f"trainer.epochs ({cfg.trainer.epochs})."
        )


def block_loss_terms(spec: str) -> list[str]:
    """``"infonce+bce"`` -> ``["infonce", "bce"]``; raises ValueError when empty."""
    terms = [term.strip() for term in spec.split("+") if term.strip()]
    if not terms:
        raise ValueError(
            f"Invalid mixing.block_loss '{spec}': expected terms joined by '+' from "
            f"{', '.join(BLOCK_LOSS_TERMS)}."
        )
    return terms


def uses_pseudo_labels(spec: str) -> bool:
    """Whether a Mix Block loss needs ODC pseudo-labels."""
    return any(term in PSEUDO_LABEL_TERMS for term in block_loss_terms(spec))


def to_dict(cfg: Any) -> dict[str, Any]:
    """Returns a plain nested dict of a config dataclass (for logging and checkpoints)."""
    return dataclasses.asdict(cfg)


def to_yaml(cfg: Any) -> str:
    """Returns the config as YAML text, in the layout that :func:`load_config` reads."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
