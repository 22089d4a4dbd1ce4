"""Supervised mixup classification: the paper's other half (§4.1, Tables 2–3).

:class:`MixupClassifier` is a ResNet and a linear classifier trained with cross-entropy on clean
images (``vanilla``) or with the mixup cross-entropy ``λ CE(f(x̃), y_i) + (1 − λ) CE(f(x̃), y_j)``
on images mixed by a fixed mixup of :mod:`lightly_amix.mixing` (MixUp, CutMix, ManifoldMix,
SaliencyMix, FMix, ResizeMix, PuzzleMix; the effective λ of each mix). PuzzleMix's saliency is
the input gradient of the clean batch's CE, taken in eval mode without touching the parameters'
gradients (PuzzleMix's ``clean_lam = 0`` default).

:class:`AutoMixClassifier` is the AutoMix framework (Liu et al., "AutoMix: Unveiling the Power
of Mixup for Stronger Classifiers", ECCV 2022) with AutoMix's Mix Block (``automix``) or Mix
Block+ (``amix``). Each step:

- the **online network** (encoder + classifier) learns from the clean CE and the mixup CE of
  the backbone's sample, mixed by the Mix Block's mask *without gradient* (λ-adjusted for Mix
  Block+, a plain MixUp when λ is within ``degenerate_margin`` of 0 or 1);
- a **momentum network**, the EMA of encoder + classifier (momentum 0.999 → 1 on a cosine
  curve, §4.1), runs the clean batch (train mode, so its BatchNorm statistics follow clean
  images) to give the stage-3 maps (l = 3) the Mix Block sees;
- the **Mix Block** learns through the frozen momentum network: the mixup CE of its
  prediction of the Mix Block's own mixed sample (own λ', own partners), plus the mask loss.
  As in AutoMix's code its BatchNorm normalises with the statistics of that mixed batch
  (``mixing.block_bn=batch``); unlike there, its running statistics are not updated by it.
  With eval mode (``block_bn=running``) the running statistics of the early, fast-changing EMA
  weights gave exploding logits and saturated masks (``benchmarks/RESULTS.md``).

Choices, where the paper and AutoMix leave them open or where this differs from AutoMix's code:

- one λ per batch and one partner permutation per sample within each device's batch, as
  mixup implementations do (``Beta(α, α)``, α = 1 by default), for the backbone's sample; the
  Mix Block's own sample draws one λ' per sample (``mixing.block_lam=sample``; AutoMix's code:
  one per batch), so that its mask must follow each sample's λ' — with one λ' per batch one
  batch-wide shift of the mask logits meets it, and the block saturated to whole images;
- one classifier for the clean and the mixup CE (AutoMix's code has two, ``head_one`` and
  ``head_mix``); the momentum network is the EMA of encoder and that classifier;
- the mixup CE of the backbone's sample weighs the two labels with the *effective* λ, the
  mean of its (adjusted) mask; the Mix Block's CE uses its drawn λ' (its mask loss pulls the
  mask's mean to λ');
- the momentum network's BatchNorm statistics are its own (the EMA moves parameters only,
  Lightly's ``update_momentum``); mixed images never move them;
- weight decay skips norms and biases (Lightly's ``get_weight_decay_parameters``);
- the reported accuracy is the online network's; the momentum network's is logged as
  ``val/top1_ema``.

Examples:
    >>> model = MixupClassifier(num_classes=100, method="cutmix")
    >>> model = AutoMixClassifier(num_classes=100, method="amix")  # Mix Block+
"""

from __future__ import annotations

import contextlib
import copy
import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from lightly.models.utils import (
    deactivate_requires_grad,
    update_momentum,
)
from lightly.utils.scheduler import CosineWarmupScheduler, cosine_schedule
from torch import Tensor, nn

from lightly_amix.classifier_config import (
    BLOCK_LAMBDA_MODES,
    CLASSIFIER_METHODS,
    ClassifierMixingConfig,
    ClassifierModelConfig,
    ClassifierOptimConfig,
)
from lightly_amix.losses import mixup_cross_entropy
from lightly_amix.mixing.base import sample_lambda
from lightly_amix.mixing.learned import LearnedMixup
from lightly_amix.mixing.manifold import ManifoldMix
from lightly_amix.mixing.masks import MaskEpochStatistics, mask_diagnostics
from lightly_amix.mixing.mix_block import MixBlockConfig
from lightly_amix.mixing.puzzle import input_saliency
from lightly_amix.mixing.registry import build_mixup
from lightly_amix.models.backbones import ResNetBackbone
from lightly_amix.models.base import _as_config
from lightly_amix.optim import sgd_param_groups
from lightly_amix.state_dicts import load_state_dict_strict
from lightly_amix.utils import BLOCK_BN_MODES, eval_mode, frozen_network_mode

# An EMA over fewer steps than this follows the online network closely in any run.
_SHORT_HORIZON = 10.0


def topk_correct(logits: Tensor, y: Tensor, k: int) -> Tensor:
    """Share of samples whose label is among the ``k`` highest logits, a scalar."""
    k = min(k, logits.shape[1])
    top = logits.topk(k, dim=1).indices  # (N, k)
    return (top == y.view(-1, 1)).any(dim=1).float().mean()


class MixupClassifier(pl.LightningModule):
    """A ResNet classifier trained without mixup or with a fixed mixup.

    Args:
        num_classes: Number of classes.
        method: ``vanilla`` or a fixed mixup (``mixup``, ``cutmix``, ``manifoldmix``,
            ``saliencymix``, ``fmix``, ``resizemix``, ``puzzlemix``).
        model: Backbone settings (and optional pre-trained weights).
        optim: SGD settings.
        mixing: λ distribution (``alpha``).

    Raises:
        ValueError: On an unknown method or backbone.
    """

    def __init__(
        self,
        num_classes: int,
        method: str = "vanilla",
        model: ClassifierModelConfig | Mapping[str, Any] | None = None,
        optim: ClassifierOptimConfig | Mapping[str, Any] | None = None,
        mixing: ClassifierMixingConfig | Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if method not in CLASSIFIER_METHODS:
            raise ValueError(
                f"Unknown method {method!r}. Expected one of: {', '.join(CLASSIFIER_METHODS)}."
            )
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}.")
        self.model_cfg = _as_config(model or ClassifierModelConfig(), ClassifierModelConfig)
        self.optim_cfg = _as_config(optim or ClassifierOptimConfig(), ClassifierOptimConfig)
        self.mixing_cfg = _as_config(mixing or ClassifierMixingConfig(), ClassifierMixingConfig)
        self.method = method
        self.num_classes = num_classes
        self.save_hyperparameters(
            {
                "method": method,
                "num_classes": num_classes,
                "model": vars(self.model_cfg).copy(),
                "optim": vars(self.optim_cfg).copy(),
                "mixing": vars(self.mixing_cfg).copy(),
            }
        )
        self.backbone = ResNetBackbone(
            self.model_cfg.backbone,
            cifar_stem=self.model_cfg.cifar_stem,
            width=self.model_cfg.width,
        )
        if self.model_cfg.pretrained:
            self.load_pretrained(self.model_cfg.pretrained)
        self.head = nn.Linear(self.backbone.out_dim, num_classes)
        fixed = method not in ("vanilla", "automix", "amix")
        self.mixup = build_mixup(method) if fixed else None

    def load_pretrained(self, path: str | Path) -> None:
        """Loads a torchvision ResNet state_dict (its ``fc`` is ignored) into the encoder."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"model.pretrained: '{path}' does not exist. Download torchvision's ImageNet "
                f"weights of {self.model_cfg.backbone} (e.g. with torchvision.models."
                f"{self.model_cfg.backbone}(weights='DEFAULT') on a machine with internet, then "
                "torch.save(model.state_dict(), path)) or drop model.pretrained."
            )
        state = torch.load(path, map_location="cpu", weights_only=True)
        load_state_dict_strict(self.backbone.resnet, state, f"'{path}'", ignore=("fc.",))

    # ----------------------------------------------------------------- forward
    def forward(self, x: Tensor) -> Tensor:
        """Class logits (N, K)."""
        return self.head(self.backbone(x))

    def draw_lambda(self, n: int) -> Tensor:
        """One λ ~ Beta(α, α) for the batch, as a (N,) tensor on the model's device."""
        lam = sample_lambda(1, self.mixing_cfg.alpha)  # (1,), drawn on the CPU
        return lam.expand(n).to(self.device)

    def partners(self, n: int) -> Tensor:
        """A random permutation of this device's batch (N,)."""
        return torch.randperm(n, device=self.device)

    # ----------------------------------------------------------------- steps
    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y = batch[0], batch[1]
        if self.mixup is None:  # vanilla
            logits = self(x)
            loss = F.cross_entropy(logits.float(), y)
            self.log_terms({"loss": loss, "acc": topk_correct(logits, y, 1)}, x.shape[0])
            return loss
        perm, lam = self.partners(x.shape[0]), self.draw_lambda(x.shape[0])
        if getattr(self.mixup, "needs_saliency", False):
            out = self.mixup(x, perm, lam, saliency=self.saliency(x, y))
        else:
            out = self.mixup(x, perm, lam)
        if isinstance(self.mixup, ManifoldMix):
            assert out.stage is not None
            logits = self.head(self.backbone.forward_manifold(x, out.stage, perm, out.lam))
        else:
            logits = self(out.images)
        loss = mixup_cross_entropy(logits, y, y[perm], out.lam)
        self.log_terms({"loss": loss, "lam": out.lam.mean()}, x.shape[0])
        return loss

    def saliency(self, x: Tensor, y: Tensor) -> Tensor:
        """PuzzleMix's saliency of the clean images (N, H, W), from the CE in eval mode."""
        with eval_mode(self.backbone, self.head):
            return input_saliency(lambda images: F.cross_entropy(self(images).float(), y), x)

    def log_terms(self, terms: Mapping[str, Tensor], batch_size: int) -> None:
        """Logs scalars; stops with a clear error when a loss is not finite."""
        for name, value in terms.items():
            if name.startswith("loss") and not torch.isfinite(value).all():
                raise FloatingPointError(
                    f"Non-finite value for '{name}' at step {self.global_step} "
                    f"(epoch {self.current_epoch}): {float(value)}. Lower the learning rate, use "
                    "32-bit precision, or check the input data."
                )
            main = name == "loss"
            self.log(f"train/{name}", value, prog_bar=main, on_step=True, on_epoch=main,
                     batch_size=batch_size)  # fmt: skip
        opt = self.optimizers(use_pl_optimizer=False)
        assert isinstance(opt, torch.optim.Optimizer)
        self.log("train/lr", opt.param_groups[0]["lr"], batch_size=batch_size)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch[0], batch[1]
        logits = self(x)
        n = x.shape[0]
        self.log("val/top1", 100 * topk_correct(logits, y, 1), batch_size=n, sync_dist=True,
                 prog_bar=True)  # fmt: skip
        self.log("val/top5", 100 * topk_correct(logits, y, 5), batch_size=n, sync_dist=True)
        self.log("val/loss", F.cross_entropy(logits.float(), y), batch_size=n, sync_dist=True)

    # ----------------------------------------------------------------- optimiser
    def param_groups(self) -> dict[str, tuple[list[nn.Module], float]]:
        """Trainable modules by group name, each with its learning-rate factor."""
        return {"": ([self.backbone, self.head], 1.0)}

    def configure_optimizers(self) -> Any:
        """SGD (no decay on norms/biases) with a per-step cosine schedule to 0."""
        lr, wd = self.optim_cfg.lr, self.optim_cfg.weight_decay
        groups = sgd_param_groups(self.param_groups(), lr, wd)
        optimizer = torch.optim.SGD(groups, lr=lr, momentum=self.optim_cfg.momentum)
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        epochs = max(self.trainer.max_epochs or 1, 1)
        warmup = int(math.floor(total * self.optim_cfg.warmup_epochs / epochs))
        scheduler = CosineWarmupScheduler(
            optimizer, warmup_epochs=warmup, max_epochs=total,
            end_value=self.optim_cfg.final_lr_ratio,
        )  # fmt: skip
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def export_backbone_state_dict(self) -> dict[str, Tensor]:
        """The encoder as a torchvision-ResNet state_dict without ``fc``."""
        return self.backbone.export_state_dict()


class AutoMixClassifier(MixupClassifier):
    """The AutoMix framework with AutoMix's Mix Block (``automix``) or Mix Block+ (``amix``).

    Args:
        num_classes: Number of classes.
        method: ``automix`` or ``amix``.
        model: Backbone settings.
        optim: SGD settings.
        mixing: λ, momentum schedule, degenerate margin, the Mix Block's learning rate.
        mix_block: Switches of Mix Block+ for ``amix``; ``automix`` always uses
            :meth:`MixBlockConfig.automix_tuned` (the authors' block with the mask lab's fixes).
    """

    def __init__(
        self,
        num_classes: int,
        method: str = "amix",
        model: ClassifierModelConfig | Mapping[str, Any] | None = None,
        optim: ClassifierOptimConfig | Mapping[str, Any] | None = None,
        mixing: ClassifierMixingConfig | Mapping[str, Any] | None = None,
        mix_block: MixBlockConfig | Mapping[str, Any] | None = None,
    ) -> None:
        if method not in ("automix", "amix"):
            raise ValueError(f"AutoMixClassifier takes automix or amix, got {method!r}.")
        super().__init__(num_classes, method, model, optim, mixing)
        for key, value, valid in (
            ("block_bn", self.mixing_cfg.block_bn, BLOCK_BN_MODES),
            ("block_lam", self.mixing_cfg.block_lam, BLOCK_LAMBDA_MODES),
        ):
            if value not in valid:
                raise ValueError(
                    f"Invalid mixing.{key} {value!r}. Expected one of: {', '.join(valid)}."
                )
        block_cfg: MixBlockConfig = (
            MixBlockConfig.automix_tuned()
            if method == "automix"
            else _as_config(mix_block or MixBlockConfig(), MixBlockConfig)
        )
        self.save_hyperparameters({"mix_block": vars(block_cfg).copy()})
        self.backbone_momentum = copy.deepcopy(self.backbone)
        self.head_momentum = copy.deepcopy(self.head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.head_momentum)
        # The mixed images' classifier: the clean one, or its own (``mixing.heads=two``; only
        # then registered, so that one-head checkpoints keep their keys).
        if self.mixing_cfg.heads == "two":
            self.mix_head = copy.deepcopy(self.head)
            self.mix_head_momentum = copy.deepcopy(self.head_momentum)
        self.mix_block = LearnedMixup(
            self.backbone.stage3_dim, block_cfg, self.mixing_cfg.degenerate_margin
        )
        self.mask_stats = MaskEpochStatistics()

    def param_groups(self) -> dict[str, tuple[list[nn.Module], float]]:
        """The Mix Block learns at ``mixing.block_lr_scale`` times the network's rate."""
        network = [self.backbone, self.head]
        if self.head_mix is not self.head:
            network.append(self.head_mix)
        return {"": (network, 1.0),
                "mix_block_": ([self.mix_block], self.mixing_cfg.block_lr_scale)}  # fmt: skip

    @property
    def head_mix(self) -> nn.Module:
        """The classifier of mixed images: ``head`` itself, or its own with ``heads=two``."""
        return self.mix_head if self.mixing_cfg.heads == "two" else self.head

    @property
    def head_mix_momentum(self) -> nn.Module:
        """The EMA of :attr:`head_mix`, through which the Mix Block learns."""
        return self.mix_head_momentum if self.mixing_cfg.heads == "two" else self.head_momentum

    def on_train_start(self) -> None:
        """Warns when the momentum network would stay close to its initialisation.

        The Mix Block learns through the momentum network; with an EMA horizon 1 / (1 − m)
        that is a large share of the run (0.999: 1,000 steps), it learns through a mostly
        untrained network and its masks stay near-uniform (benchmarks/RESULTS.md,
        "Supervised Fashion-MNIST").
        """
        total = int(self.trainer.estimated_stepping_batches)
        horizon = 1.0 / max(1.0 - self.mixing_cfg.momentum, 1e-12)
        if horizon > max(0.1 * total, _SHORT_HORIZON):
            warnings.warn(
                f"mixing.momentum {self.mixing_cfg.momentum} averages over ~{horizon:.0f} steps, "
                f"more than 10% of this run's {total}: the Mix Block would learn through a "
                "mostly untrained momentum network and its masks stay near-uniform. For short "
                f"runs use e.g. --set mixing.momentum={_short_run_momentum(total)}.",
                stacklevel=2,
            )

    def current_momentum(self) -> float:
        """EMA momentum of this step: cosine from ``momentum`` to ``momentum_end``."""
        start, end = self.mixing_cfg.momentum, self.mixing_cfg.momentum_end
        if self._trainer is None or start == end:
            return start
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        if self.global_step < self.mixing_cfg.momentum_hold * total:
            return start
        return cosine_schedule(min(self.global_step, total), total, start, end)

    @torch.no_grad()
    def update_momentum_network(self) -> float:
        m = self.current_momentum()
        update_momentum(self.backbone, self.backbone_momentum, m)
        update_momentum(self.head, self.head_momentum, m)
        if self.head_mix is not self.head:
            update_momentum(self.head_mix, self.head_mix_momentum, m)
        return m

    def compute_losses(
        self, x: Tensor, y: Tensor
    ) -> tuple[Tensor, dict[str, Tensor], tuple[Tensor, Tensor]]:
        """One step's losses (no logging, no momentum update).

        Returns:
            The total loss, the named terms, and the Mix Block's mask and λ' (diagnostics).
        """
        n = x.shape[0]
        with torch.no_grad():  # train mode: the momentum network's BN follows clean batches
            _, z = self.backbone_momentum.forward_with_stage3(x)  # (N, C3, h, w)

        # Online network: clean CE + mixup CE of the backbone's sample (detached mask).
        perm, lam = self.partners(n), self.draw_lambda(n)
        x_mix, _, lam_eff = self.mix_block.backbone_sample(x, x[perm], z, z[perm], lam)
        loss_mix = mixup_cross_entropy(self.head_mix(self.backbone(x_mix)), y, y[perm], lam_eff)
        logits = self(x)
        loss_clean = F.cross_entropy(logits.float(), y)

        # Mix Block: its own sample through the frozen momentum network in eval mode.
        perm2, lam2 = self.partners(n), self.draw_block_lambda(n)
        x_mb, mask2, loss_mask = self.mix_block.block_sample(x, x[perm2], z, z[perm2], lam2)
        with self.block_network_mode():
            logits_mb = self.head_mix_momentum(self.backbone_momentum(x_mb))
        loss_block = mixup_cross_entropy(logits_mb, y, y[perm2], lam2)

        loss = loss_clean + loss_mix + loss_block + loss_mask
        terms = {"loss_clean": loss_clean, "loss_mix": loss_mix, "loss_block": loss_block,
                 "loss_mask": loss_mask, "lam": lam_eff.mean(),
                 "acc": topk_correct(logits, y, 1)}  # fmt: skip
        return loss, terms, (mask2.detach(), lam2)

    def draw_block_lambda(self, n: int) -> Tensor:
        """λ' of the Mix Block's sample (N,): one per sample or per batch (``block_lam``)."""
        if self.mixing_cfg.block_lam == "batch":
            return self.draw_lambda(n)
        return sample_lambda(n, self.mixing_cfg.alpha).to(self.device)

    def block_network_mode(self) -> contextlib.AbstractContextManager[None]:
        """Mode of the frozen momentum network the Mix Block learns through (``block_bn``)."""
        return frozen_network_mode(
            self.mixing_cfg.block_bn, self.backbone_momentum, self.head_momentum
        )

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y = batch[0], batch[1]
        momentum = self.update_momentum_network()
        loss, terms, (mask, lam2) = self.compute_losses(x, y)
        stats = mask_diagnostics(mask, lam2)
        self.mask_stats.update(mask, lam2)
        self.log_terms({"loss": loss, **terms, **stats}, x.shape[0])
        self.log("train/momentum", momentum, batch_size=x.shape[0])
        self.log("train/gamma", self.mix_block.gamma_value().detach(), batch_size=x.shape[0])
        return loss

    def on_train_epoch_start(self) -> None:
        self.mask_stats.compute()  # drop what a resumed, partial epoch left

    def on_train_epoch_end(self) -> None:
        """Logs the epoch's mask statistics (``mask/std``, ``mask/lam_corr``, ``mask/lam_gap``,
        ``mask/whole``) over the Mix Block's samples of every device."""
        rows = self.mask_stats.samples().to(self.device)
        if self.trainer.world_size > 1:
            gathered = self.all_gather(rows)
            assert isinstance(gathered, Tensor)
            rows = gathered.reshape(-1, rows.shape[-1])
        for name, value in self.mask_stats.compute(rows).items():
            self.log(f"mask/{name}", value, rank_zero_only=True)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        super().validation_step(batch, batch_idx)
        x, y = batch[0], batch[1]
        logits = self.head_momentum(self.backbone_momentum(x))
        self.log("val/top1_ema", 100 * topk_correct(logits, y, 1), batch_size=x.shape[0],
                 sync_dist=True)  # fmt: skip


def _short_run_momentum(total_steps: int) -> float:
    """A momentum whose EMA horizon is about 5% of the run (at most 0.999)."""
    return round(min(0.999, 1.0 - 1.0 / max(0.05 * total_steps, 10.0)), 3)


def build_classifier(
    method: str,
    num_classes: int,
    model: ClassifierModelConfig | None = None,
    optim: ClassifierOptimConfig | None = None,
    mixing: ClassifierMixingConfig | None = None,
    mix_block: MixBlockConfig | None = None,
) -> MixupClassifier:
    """The classifier of ``method`` (see :data:`CLASSIFIER_METHODS`)."""
    if method in ("automix", "amix"):
        return AutoMixClassifier(num_classes, method, model, optim, mixing, mix_block)
    return MixupClassifier(num_classes, method, model, optim, mixing)
