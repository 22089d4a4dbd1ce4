"""Un-Mix for MoCo: the batch mixed with its own reversed order (paper Tables 5-6).

Reference: Shen et al., "Un-Mix: Rethinking Image Mixtures for Unsupervised Visual
Representation Learning", AAAI 2022 (§3). Each query view is mixed with the query view at the
mirrored position of the (global) batch, ``x̃_i = Mix(x_i, x_{B−1−i}; λ)``, with a global MixUp
on even steps and a region CutMix on odd ones (the paper alternates them across iterations);
λ ~ Beta(1, 1) once per batch. The mixed query learns from both sources' keys, re-weighted by
their shares, next to MoCo's loss on the clean query:

``L = L_moco(q, k) + λ L_moco(q̃, k_i) + (1 − λ) L_moco(q̃, k_{B−1−i})``

(CutMix's λ is the share of the pasted box, per sample.)

Examples:
    >>> model = UnMix(ModelConfig(), mixing=MixingConfig(alpha=1.0), batch_size=256)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from lightly.utils import dist
from torch import Tensor

from lightly_amix.config import MixingConfig, ModelConfig, OptimConfig
from lightly_amix.losses import mixup_info_nce
from lightly_amix.mixing.base import Mixup
from lightly_amix.mixing.registry import build_mixup
from lightly_amix.models.mix_moco import mix_with_partners
from lightly_amix.models.mixing_method import MixingMethod
from lightly_amix.utils import gather


def mirrored_partners(n_local: int, device: torch.device) -> Tensor:
    """Global index of each local sample's partner: the mirrored position of the global batch."""
    world, rank = dist.world_size(), dist.rank()
    own = rank * n_local + torch.arange(n_local, device=device)  # (N,)
    return n_local * world - 1 - own


class UnMix(MixingMethod):
    """MoCo v2 + Un-Mix's within-batch mixtures.

    Args:
        model: Backbone, head, queue and momentum settings.
        optim: Optimiser settings.
        batch_size: Images per device per step.
        mixing: λ distribution (Un-Mix: ``alpha = 1``) and the mixup term's weight.
    """

    def __init__(
        self,
        model: ModelConfig | Mapping[str, Any] | None = None,
        optim: OptimConfig | Mapping[str, Any] | None = None,
        batch_size: int = 256,
        mixing: MixingConfig | Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(model, optim, batch_size, mixing)
        self.global_mixup = build_mixup("mixup")
        self.region_mixup = build_mixup("cutmix")

    def mixup_of_step(self, step: int) -> Mixup:
        """MixUp on even steps, CutMix on odd ones."""
        return self.region_mixup if step % 2 else self.global_mixup

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x_q, x_k = batch[0]
        n = x_q.shape[0]
        self.update_momentum_encoders()
        q, _ = self.encode_query(x_q)  # (N, D)
        k = self.encode_key(x_k)  # (N, D)
        negatives = self.negatives_then_enqueue(k)  # (K, D)
        loss_moco, acc = self.moco_loss(q, k, negatives)

        partners = mirrored_partners(n, x_q.device)  # (N,) global indices
        lam = self.sample_lambda(1).expand(n)  # one λ per batch
        mixup = self.mixup_of_step(self.global_step)
        if dist.world_size() == 1:
            out = mixup(x_q, partners, lam)
        else:
            out = mix_with_partners(mixup, x_q, gather(x_q)[partners], lam)
        q_mix, _ = self.encode_query(out.images)
        t = self.model_cfg.temperature
        loss_mix = mixup_info_nce(q_mix, k, gather(k)[partners], negatives, out.lam, t)
        loss = loss_moco + self.mixing_cfg.mix_weight * loss_mix
        self.log_terms({"loss": loss, "loss_moco": loss_moco, "loss_mix": loss_mix,
                        "acc_moco": acc})  # fmt: skip
        self.log("train/lam", out.lam.mean())
        self.log_common()
        return loss
