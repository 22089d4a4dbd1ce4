"""Shared base of the momentum-encoder methods (MoCo v2 and the AMix family).

:class:`MomentumContrastMethod` holds what every method here has in common, so that a method
class only writes its ``training_step``:

- the online encoder (torchvision ResNet + Lightly's ``MoCoProjectionHead``) and its momentum
  copy, updated with Lightly's ``update_momentum`` (constant or cosine momentum),
- the key encoder forward with batch shuffling (across devices under DDP, Lightly's
  ``batch_shuffle``) so that BatchNorm cannot leak the positive,
- Lightly's ``MemoryBankModule`` as the queue of negatives; its buffers are non-persistent, so
  the queue and its pointer are written to and read from checkpoints here,
- SGD with the linear learning-rate scaling rule, no weight decay on norms and biases (Lightly's
  ``get_weight_decay_parameters``), and a per-step cosine schedule (Lightly's
  ``CosineWarmupScheduler``),
- online metrics (loss terms, contrastive accuracy, learning rate, momentum, queue fill) and a
  clear stop on a non-finite loss that names the term and the step.

Reference: He et al., "Momentum Contrast for Unsupervised Visual Representation Learning",
CVPR 2020; Chen et al., "Improved Baselines with Momentum Contrastive Learning", 2020.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from lightly.models.modules import MoCoProjectionHead
from lightly.models.modules.memory_bank import MemoryBankModule
from lightly.models.utils import (
    batch_shuffle,
    batch_unshuffle,
    deactivate_requires_grad,
    update_momentum,
)
from lightly.utils import dist
from lightly.utils.scheduler import CosineWarmupScheduler, cosine_schedule
from torch import Tensor, nn

from lightly_amix.config import ModelConfig, OptimConfig
from lightly_amix.losses import contrastive_accuracy, info_nce_from_logits, info_nce_logits
from lightly_amix.models.backbones import ResNetBackbone
from lightly_amix.optim import sgd_param_groups

_CHECKPOINT_KEY = "lightly_amix_memory_banks"
_EPOCHS_KEY = "lightly_amix_max_epochs"


def _as_config(value: Any, cls: type) -> Any:
    """Accepts a config dataclass or its dict form (as stored in checkpoint hyper-parameters)."""
    if isinstance(value, cls):
        return value
    if isinstance(value, Mapping):
        return cls(**value)
    raise TypeError(f"Expected {cls.__name__} or a dict, got {type(value).__name__}.")


class MomentumContrastMethod(pl.LightningModule):
    """Base LightningModule for methods with a momentum key encoder and a queue.

    Args:
        model: Backbone, head, queue and momentum settings.
        optim: Optimiser settings.
        batch_size: Images per device per step; the learning rate is
            ``base_lr * batch_size * world_size / 256``.

    Subclasses implement ``training_step`` and may extend :meth:`trainable_modules` and
    :meth:`momentum_pairs`.
    """

    def __init__(
        self,
        model: ModelConfig | Mapping[str, Any] | None = None,
        optim: OptimConfig | Mapping[str, Any] | None = None,
        batch_size: int = 256,
    ) -> None:
        super().__init__()
        model_cfg: ModelConfig = _as_config(model or ModelConfig(), ModelConfig)
        optim_cfg: OptimConfig = _as_config(optim or OptimConfig(), OptimConfig)
        if batch_size <= 0:
            raise ValueError(f"batch_size must be > 0, got {batch_size}.")
        self.save_hyperparameters(
            {
                "model": vars(model_cfg).copy(),
                "optim": vars(optim_cfg).copy(),
                "batch_size": batch_size,
            }
        )
        self.model_cfg = model_cfg
        self.optim_cfg = optim_cfg
        self.batch_size = batch_size

        self.backbone = ResNetBackbone(
            model_cfg.backbone, cifar_stem=model_cfg.cifar_stem, bn_splits=model_cfg.bn_splits
        )
        hidden = model_cfg.proj_hidden_dim or self.backbone.out_dim
        self.projection_head = MoCoProjectionHead(
            self.backbone.out_dim, hidden, model_cfg.proj_output_dim
        )
        self.backbone_momentum = copy.deepcopy(self.backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)

        self.memory_bank = MemoryBankModule(
            size=(model_cfg.queue_size, model_cfg.proj_output_dim),
            gather_distributed=True,
            feature_dim_first=False,
        )
        self.queue_fill: Tensor
        self.register_buffer("queue_fill", torch.zeros((), dtype=torch.long))

    # Buffers every device already holds identically (the queue is filled with keys gathered
    # from all devices): DDP need not broadcast them from rank 0 at every forward.
    replicated_buffer_prefixes: tuple[str, ...] = ("memory_bank.", "queue_fill")

    def setup(self, stage: str) -> None:
        """Excludes the replicated buffers from DDP's per-step buffer broadcast."""
        prefixes = self.replicated_buffer_prefixes
        self._ddp_params_and_buffers_to_ignore = [
            name for name, _ in self.named_buffers() if name.startswith(prefixes)
        ]

    # ----------------------------------------------------------------- modules
    def trainable_modules(self) -> list[nn.Module]:
        """Modules whose parameters the optimiser updates."""
        return [self.backbone, self.projection_head]

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """(online, momentum) module pairs updated by EMA each step."""
        return [
            (self.backbone, self.backbone_momentum),
            (self.projection_head, self.projection_head_momentum),
        ]

    @property
    def distributed(self) -> bool:
        """Whether a process group with more than one process is running."""
        return dist.world_size() > 1

    # ----------------------------------------------------------------- momentum
    def current_momentum(self) -> float:
        """EMA momentum for this step: constant, or cosine from ``momentum`` to 1."""
        m = self.model_cfg.momentum
        if self.model_cfg.momentum_schedule == "constant":
            return m
        max_steps = max(int(self._total_steps()), 1)
        return cosine_schedule(min(self.global_step, max_steps), max_steps, m, 1.0)

    @torch.no_grad()
    def update_momentum_encoders(self) -> float:
        """Moves every momentum module towards its online module; returns the momentum used."""
        m = self.current_momentum()
        for online, ema in self.momentum_pairs():
            update_momentum(online, ema, m)
        return m

    # ----------------------------------------------------------------- encoders
    def encode_query(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Online encoder: returns (normalised projection (N, D), pooled features (N, F))."""
        features = self.backbone(images)
        return F.normalize(self.projection_head(features), dim=1), features

    @torch.no_grad()
    def encode_key(self, images: Tensor) -> Tensor:
        """Momentum encoder with batch shuffling: normalised projection (N, D), no gradient."""
        if self.model_cfg.shuffle_bn:
            images, shuffle = batch_shuffle(images, distributed=self.distributed)
        keys = self.projection_head_momentum(self.backbone_momentum(images))
        if self.model_cfg.shuffle_bn:
            keys = batch_unshuffle(keys, shuffle, distributed=self.distributed)
        return F.normalize(keys, dim=1)

    def moco_loss(self, q: Tensor, k: Tensor, negatives: Tensor) -> tuple[Tensor, Tensor]:
        """MoCo's InfoNCE of queries ``q`` (N, D) with positives ``k`` (N, D) against the queue
        ``negatives`` (K, D), and its contrastive accuracy."""
        logits = info_nce_logits(q, k, negatives, self.model_cfg.temperature)  # (N, 1 + K)
        return info_nce_from_logits(logits), contrastive_accuracy(logits)

    # ----------------------------------------------------------------- queue
    @torch.no_grad()
    def negatives_then_enqueue(self, keys: Tensor) -> Tensor:
        """Returns the queue as it was before this step (K, D), then enqueues ``keys``.

        Keys are gathered from all devices before the enqueue (Lightly's
        ``gather_distributed``), so every device holds the same queue.
        """
        _, negatives = self.memory_bank(keys.float(), update=True)
        assert negatives is not None
        added = keys.shape[0] * (dist.world_size() if self.memory_bank.gather_distributed else 1)
        self.queue_fill.copy_((self.queue_fill + added).clamp(max=self.model_cfg.queue_size))
        return negatives

    # ----------------------------------------------------------------- logging
    def log_terms(self, terms: Mapping[str, Tensor | float], prefix: str = "train/") -> None:
        """Logs scalars; stops with a clear error when a loss term is not finite."""
        for name, value in terms.items():
            if isinstance(value, Tensor) and not torch.isfinite(value).all():
                raise FloatingPointError(
                    f"Non-finite value for '{name}' at step {self.global_step} "
                    f"(epoch {self.current_epoch}): {value.detach().float().cpu().tolist()}. "
                    "Lower the learning rate, use 32-bit precision, or check the input data."
                )
            main = name == "loss"
            # The main loss is also averaged per epoch, so short runs log at least one row.
            self.log(prefix + name, value, prog_bar=main, on_step=True, on_epoch=main)

    def log_common(self) -> None:
        """Logs learning rate, momentum and queue fill (share of the queue holding real keys)."""
        opt = self.optimizers(use_pl_optimizer=False)
        assert isinstance(opt, torch.optim.Optimizer)
        self.log("train/lr", opt.param_groups[0]["lr"])
        self.log("train/momentum", self.current_momentum())
        self.log("train/queue_fill", self.queue_fill.float() / self.model_cfg.queue_size)

    # ----------------------------------------------------------------- optimiser
    def _total_steps(self) -> float:
        trainer = self._trainer
        return float(trainer.estimated_stepping_batches) if trainer is not None else 1.0

    def lr_scales(self) -> dict[str, tuple[list[nn.Module], float]]:
        """Trainable modules by parameter-group name, each with its learning-rate factor."""
        return {"": (self.trainable_modules(), 1.0)}

    def configure_optimizers(self) -> Any:
        """SGD (no decay on norms/biases) with a per-step cosine schedule and optional warm-up."""
        world = self.trainer.world_size if self._trainer is not None else 1
        lr = self.optim_cfg.base_lr * self.batch_size * world / 256
        wd = self.optim_cfg.weight_decay
        groups = sgd_param_groups(self.lr_scales(), lr, wd)
        optimizer = torch.optim.SGD(groups, lr=lr, momentum=self.optim_cfg.momentum)
        total = max(int(self._total_steps()), 1)
        epochs = max(self.trainer.max_epochs or 1, 1) if self._trainer is not None else 1
        warmup = int(math.floor(total * self.optim_cfg.warmup_epochs / epochs))
        scheduler = CosineWarmupScheduler(optimizer, warmup_epochs=warmup, max_epochs=total)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    # ----------------------------------------------------------------- checkpoints
    def _memory_banks(self) -> dict[str, MemoryBankModule]:
        return {n: m for n, m in self.named_modules() if isinstance(m, MemoryBankModule)}

    def rename_legacy_keys(self, keys: Mapping[str, Any]) -> dict[str, Any]:
        """State-dict entries of a checkpoint of an earlier version under today's names."""
        return dict(keys)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Stores every memory bank's queue and pointer (Lightly keeps them non-persistent)."""
        if self._trainer is not None:
            checkpoint[_EPOCHS_KEY] = self.trainer.max_epochs
        checkpoint[_CHECKPOINT_KEY] = {
            name: {
                "bank": bank.bank.detach().cpu().clone(),
                "bank_ptr": bank.bank_ptr.cpu().clone(),
            }
            for name, bank in self._memory_banks().items()
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restores the memory banks saved by :meth:`on_save_checkpoint`."""
        saved_epochs = checkpoint.get(_EPOCHS_KEY)
        if self._trainer is not None and saved_epochs not in (None, self.trainer.max_epochs):
            warnings.warn(
                f"The checkpoint was written by a run of {saved_epochs} epochs, this run has "
                f"{self.trainer.max_epochs}: the restored learning-rate schedule still ends at "
                f"epoch {saved_epochs}. To train longer with a fresh schedule, start a new run "
                "from backbone weights instead of resuming.",
                stacklevel=2,
            )
        saved = checkpoint.get(_CHECKPOINT_KEY)
        if saved is None:
            warnings.warn(
                "The checkpoint holds no memory bank: the queue restarts from random vectors.",
                stacklevel=2,
            )
            return
        for name, bank in self._memory_banks().items():
            if name not in saved:
                raise ValueError(
                    f"The checkpoint has no memory bank '{name}' (it has {list(saved)})."
                )
            state = saved[name]
            if tuple(state["bank"].shape) != tuple(bank.bank.shape):
                raise ValueError(
                    f"Memory bank '{name}' in the checkpoint has shape {tuple(state['bank'].shape)}"
                    f", this model expects {tuple(bank.bank.shape)}: use the same queue size and "
                    "projection dimension as the checkpoint."
                )
            bank.bank.copy_(state["bank"])
            bank.bank_ptr.copy_(state["bank_ptr"])

    def export_backbone_state_dict(self) -> dict[str, Tensor]:
        """The online backbone as a torchvision-ResNet state_dict without ``fc``."""
        return self.backbone.export_state_dict()
