"""SimCLR, and AMix beyond MoCo: a learned mixup for SimCLR's in-batch negatives.

:class:`SimCLR` (Chen et al., "A Simple Framework for Contrastive Learning of Visual
Representations", ICML 2020, §2.1) sends both views through the online encoder and learns from
Lightly's ``NTXentLoss``: each view's positive is the other view, its negatives the 2N − 2 other
views of the (gathered) batch. The projection head is the MoCo v2 one (SimCLR's 2-layer MLP
without BatchNorm).

:class:`AMixSimCLR` adds AMix's two sub-tasks (AMix §3.3) to it:

- the **backbone** also learns from the mixup InfoNCE of the first views, mixed by the Mix
  Block's detached, λ-adjusted mask: ``x̃ = s ⊙ x_i + (1 − s) ⊙ x_j`` against two positives, the
  second views of ``i`` and ``j`` (weights λ and 1 − λ), with the *other* images' second views
  as negatives (eq. 4 with in-batch negatives instead of a queue):
  ``L = L_NT-Xent + w · L_mix``;
- the **Mix Block** learns from the mixup InfoNCE + BCE (eq. 6) of its own mixes and the mask
  loss. SimCLR has no momentum network, so, as AutoMix does for classifiers, an EMA copy of the
  encoder (momentum ``model.momentum`` → 1, cosine) gives the stage-3 maps the Mix Block sees
  and is the frozen network it learns through (eval mode; batch statistics with
  ``mixing.block_bn=batch``). Its positives and negatives are the online second views'
  projections, without gradient.

Neither sub-task's loss moves the other's parameters: the backbone's mask is detached, the EMA
copy is frozen.

Examples:
    >>> model = SimCLR(ModelConfig(temperature=0.5), batch_size=256)
    >>> model = AMixSimCLR(ModelConfig(temperature=0.5), mixing=MixingConfig(), batch_size=256)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from lightly.loss import NTXentLoss
from torch import Tensor

from lightly_amix.config import ModelConfig, OptimConfig
from lightly_amix.losses import mixup_bce, mixup_info_nce
from lightly_amix.models.base import MomentumContrastMethod
from lightly_amix.models.learned_mixup_method import LearnedMixupMethod
from lightly_amix.utils import gather, global_partners


def pair_mask(own: Tensor, partners: Tensor, n_global: int) -> Tensor:
    """(N, N_global) bool: True at the columns of each sample and of its partner."""
    columns = torch.arange(n_global, device=own.device).view(1, -1)  # (1, N_global)
    return (columns == own.view(-1, 1)) | (columns == partners.view(-1, 1))  # (N, N_global)


class SimCLR(MomentumContrastMethod):
    """SimCLR: NT-Xent over both views with in-batch negatives (Lightly's ``NTXentLoss``).

    The base class's momentum copy of the encoder is kept (and not updated), so that SimCLR's
    checkpoints have the layout of the other methods'.

    Args:
        model: Backbone and head settings (``temperature``: NT-Xent's τ, SimCLR's CIFAR 0.5).
        optim: Optimiser settings.
        batch_size: Images per device per step.
    """

    def __init__(
        self,
        model: ModelConfig | Mapping[str, Any] | None = None,
        optim: OptimConfig | Mapping[str, Any] | None = None,
        batch_size: int = 256,
    ) -> None:
        super().__init__(model, optim, batch_size)
        self.criterion = NTXentLoss(temperature=self.model_cfg.temperature, gather_distributed=True)

    def simclr_loss(self, x0: Tensor, x1: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """NT-Xent of the two views, and their normalised projections (N, D) each."""
        z0, _ = self.encode_query(x0)
        z1, _ = self.encode_query(x1)
        return self.criterion(z0, z1), z0, z1

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x0, x1 = batch[0]
        loss, _, _ = self.simclr_loss(x0, x1)
        self.log_terms({"loss": loss, "loss_simclr": loss})
        self.log_common()
        return loss


class AMixSimCLR(LearnedMixupMethod, SimCLR):
    """SimCLR + AMix's learned mixup (see the module docstring for the objective).

    Args:
        model: Backbone, head and EMA settings.
        optim: Optimiser settings.
        batch_size: Images per device per step.
        mixing: λ distribution, ``mix_weight`` and ``block_weight``.
        mix_block: Mix Block switches (Mix Block+ by default).
    """

    def compute_losses(
        self, batch: Any
    ) -> tuple[Tensor, dict[str, Tensor], tuple[Tensor, Tensor, Tensor]]:
        """The step's losses (see :meth:`LearnedMixupMethod.compute_losses`)."""
        x0, x1 = batch[0]
        n, t = x0.shape[0], self.model_cfg.temperature
        loss_simclr, _, z1 = self.simclr_loss(x0, x1)
        keys = gather(z1.detach())  # (N_global, D): the second views, positives and negatives
        z, images, maps, own = self.block_inputs(x0)

        # Backbone: the Mix Block's detached, λ-adjusted mask.
        perm = global_partners(n, x0.device)
        lam = self.draw_lambda(n)
        x_mix, _, lam_eff = self.mix_block.backbone_sample(x0, images[perm], z, maps[perm], lam)
        q_mix = F.normalize(self.projection_head(self.backbone(x_mix)), dim=1)
        drop = pair_mask(own, perm, keys.shape[0])
        loss_mix = mixup_info_nce(q_mix, keys[own], keys[perm], keys, lam_eff, t, drop)

        # Mix Block: own partners and λ', through the frozen EMA encoder.
        perm2 = global_partners(n, x0.device)
        lam2 = self.draw_lambda(n)
        x_mb, mask2, loss_mask = self.mix_block.block_sample(
            x0, images[perm2], z, maps[perm2], lam2
        )
        q_mb = self.frozen_projection(x_mb)
        drop2 = pair_mask(own, perm2, keys.shape[0])
        loss_block_infonce = mixup_info_nce(q_mb, keys[own], keys[perm2], keys, lam2, t, drop2)
        loss_block_bce = mixup_bce(q_mb, keys[own], keys[perm2], lam2, t)
        weight = self.mixing_cfg.block_weight
        loss_block = weight * (loss_block_infonce + loss_block_bce) + loss_mask

        loss = loss_simclr + self.mixing_cfg.mix_weight * loss_mix + loss_block
        terms = {
            "loss_simclr": loss_simclr,
            "loss_mix": loss_mix,
            "loss_mask": loss_mask,
            "loss_block_infonce": loss_block_infonce,
            "loss_block_bce": loss_block_bce,
        }
        return loss, terms, (mask2, lam2, lam_eff)
