"""BYOL, and AMix beyond MoCo: a learned mixup for a method without negatives.

:class:`BYOL` (Grill et al., "Bootstrap Your Own Latent", NeurIPS 2020, §3.1) predicts the
target (EMA) network's projection of one view from the online network's prediction of the
other, with Lightly's ``BYOLProjectionHead``, ``BYOLPredictionHead`` and
``NegativeCosineSimilarity``, symmetrised over the two views:
``L_byol = ½ [−cos(p(x₀), t(x₁)) − cos(p(x₁), t(x₀))]``; the target network follows the online
one with momentum ``model.momentum`` → 1 (cosine).

:class:`AMixBYOL` adds AMix's two sub-tasks (AMix §3.3) without negatives:

- the **backbone** also learns to predict, from the first views mixed by the Mix Block's
  detached, λ-adjusted mask, the λ-weighted pair of the sources' target projections of the
  second views, as Un-Mix does for BYOL (Shen et al., AAAI 2022, §3.3):
  ``L_mix = mean_n [λ_n (−cos(p(x̃_n), t(x₁,i))) + (1 − λ_n)(−cos(p(x̃_n), t(x₁,j)))]``, and
  ``L = L_byol + w · L_mix``;
- the **Mix Block** learns through the frozen target network (eval mode, or batch statistics
  with ``mixing.block_bn=batch``), which also gives it the stage-3 maps: the two-positive BCE
  of AMix eq. 6 between the target projection of its mixed sample and the targets of ``i`` and
  ``j`` (no negatives), plus the mask loss.

Examples:
    >>> model = BYOL(ModelConfig(momentum=0.99, proj_hidden_dim=4096, proj_output_dim=256))
    >>> model = AMixBYOL(ModelConfig(momentum=0.99), mixing=MixingConfig())
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from lightly.loss import NegativeCosineSimilarity
from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
from lightly.models.utils import deactivate_requires_grad
from torch import Tensor, nn

from lightly_amix.config import ModelConfig, OptimConfig
from lightly_amix.losses import mixup_bce
from lightly_amix.models.base import MomentumContrastMethod
from lightly_amix.models.learned_mixup_method import LearnedMixupMethod
from lightly_amix.utils import gather, global_partners


class BYOL(MomentumContrastMethod):
    """BYOL with Lightly's heads and loss (see the module docstring).

    Args:
        model: Backbone, head widths (``proj_hidden_dim``, ``proj_output_dim``; BYOL: 4096,
            256) and momentum settings (BYOL: 0.99 → 1, cosine).
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
        hidden = self.model_cfg.proj_hidden_dim or self.backbone.out_dim
        out = self.model_cfg.proj_output_dim
        self.projection_head = BYOLProjectionHead(self.backbone.out_dim, hidden, out)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.projection_head_momentum)
        self.prediction_head = BYOLPredictionHead(out, hidden, out)
        self.criterion = NegativeCosineSimilarity()

    def trainable_modules(self) -> list[nn.Module]:
        return [*super().trainable_modules(), self.prediction_head]

    def predict(self, images: Tensor) -> Tensor:
        """The online prediction p(x), (N, D)."""
        return self.prediction_head(self.projection_head(self.backbone(images)))

    @torch.no_grad()
    def target(self, images: Tensor) -> Tensor:
        """The target network's projection t(x), (N, D), without gradient."""
        return self.projection_head_momentum(self.backbone_momentum(images))

    def byol_loss(self, x0: Tensor, x1: Tensor) -> tuple[Tensor, Tensor]:
        """The symmetrised BYOL loss and the target projections of the second views (N, D)."""
        t0, t1 = self.target(x0), self.target(x1)
        loss = 0.5 * (self.criterion(self.predict(x0), t1) + self.criterion(self.predict(x1), t0))
        return loss, t1

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x0, x1 = batch[0]
        self.update_momentum_encoders()
        loss, _ = self.byol_loss(x0, x1)
        self.log_terms({"loss": loss, "loss_byol": loss})
        self.log_common()
        return loss


def weighted_negative_cosine(p: Tensor, t_i: Tensor, t_j: Tensor, lam: Tensor) -> Tensor:
    """``mean_n [λ_n (−cos(p_n, t_i,n)) + (1 − λ_n)(−cos(p_n, t_j,n))]`` (Un-Mix for BYOL)."""
    cos_i = F.cosine_similarity(p.float(), t_i.float(), dim=1)  # (N,)
    cos_j = F.cosine_similarity(p.float(), t_j.float(), dim=1)  # (N,)
    lam = lam.float()
    return -(lam * cos_i + (1 - lam) * cos_j).mean()


class AMixBYOL(LearnedMixupMethod, BYOL):
    """BYOL + AMix's learned mixup (see the module docstring for the objective).

    Args:
        model: Backbone, heads and momentum settings.
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
        loss_byol, t1 = self.byol_loss(x0, x1)
        targets = gather(t1)  # (N_global, D)
        keys = F.normalize(targets.float(), dim=1)
        z, images, maps, own = self.block_inputs(x0)

        # Backbone: predict the λ-weighted targets of both sources from the Mix Block's mix.
        perm = global_partners(n, x0.device)
        lam = self.draw_lambda(n)
        x_mix, _, lam_eff = self.mix_block.backbone_sample(x0, images[perm], z, maps[perm], lam)
        loss_mix = weighted_negative_cosine(
            self.predict(x_mix), targets[own], targets[perm], lam_eff
        )

        # Mix Block: its own mix through the frozen target network, two-positive BCE.
        perm2 = global_partners(n, x0.device)
        lam2 = self.draw_lambda(n)
        x_mb, mask2, loss_mask = self.mix_block.block_sample(
            x0, images[perm2], z, maps[perm2], lam2
        )
        q_mb = self.frozen_projection(x_mb)
        loss_block_bce = mixup_bce(q_mb, keys[own], keys[perm2], lam2, t)
        loss_block = self.mixing_cfg.block_weight * loss_block_bce + loss_mask

        loss = loss_byol + self.mixing_cfg.mix_weight * loss_mix + loss_block
        terms = {"loss_byol": loss_byol, "loss_mix": loss_mix, "loss_mask": loss_mask,
                 "loss_block_bce": loss_block_bce}  # fmt: skip
        return loss, terms, (mask2, lam2, lam_eff)
