"""i-Mix for MoCo: a mixed query against mixed virtual labels (paper Tables 5-6).

Reference: Lee et al., "i-Mix: A Domain-Agnostic Strategy for Contrastive Representation
Learning", ICLR 2021 (§3, "i-Mix for MoCo"). Every query view is mixed with a partner's query
view, ``x̃_i = Mix(x_i, x_{r(i)}; λ)`` (MixUp, or CutMix as the paper's input-mixup variant), and
its *virtual label* over the keys of the (global) batch and the queue is ``λ`` for its own key and
``1 − λ`` for the partner's:

``L = −mean_i [λ log p_i(i) + (1 − λ) log p_i(r(i))]``, with
``p_i = softmax([q̃_i·k_1, …, q̃_i·k_B, q̃_i·Q] / t)``

so the batch's other keys and the queue are the negatives. λ ~ Beta(α, α) is one draw per
batch (α = 1 by default, as i-Mix), the partners a random permutation of the global batch. As in
i-Mix, this loss replaces MoCo's (the clean query is not used).

Examples:
    >>> model = IMix(ModelConfig(), mixing=MixingConfig(alpha=1.0), imix=IMixConfig("cutmix"))
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from lightly.utils import dist
from torch import Tensor

from lightly_amix.config import IMixConfig, MixingConfig, ModelConfig, OptimConfig
from lightly_amix.mixing.registry import build_mixup
from lightly_amix.models.base import _as_config
from lightly_amix.models.mix_moco import mix_with_partners
from lightly_amix.models.mixing_method import MixingMethod
from lightly_amix.utils import gather, global_partners


def imix_loss(
    query: Tensor,
    keys: Tensor,
    negatives: Tensor,
    own: Tensor,
    partner: Tensor,
    lam: Tensor,
    temperature: float,
) -> tuple[Tensor, Tensor]:
    """i-Mix's loss and the accuracy of the own key among the batch's keys and the queue.

    Args:
        query: L2-normalised mixed queries (N, D).
        keys: Keys of the whole (global) batch (B, D).
        negatives: The queue (K, D).
        own: Index in ``keys`` of each query's own key (N,).
        partner: Index in ``keys`` of its partner's key (N,).
        lam: Share of the own image in each mix (N,).
        temperature: Softmax temperature.
    """
    q = query.float()
    logits = torch.cat([q @ keys.float().T, q @ negatives.float().T], dim=1) / temperature
    log_p = F.log_softmax(logits, dim=1)  # (N, B + K)
    lam = lam.float()
    own_lp = log_p.gather(1, own.view(-1, 1)).squeeze(1)  # (N,)
    partner_lp = log_p.gather(1, partner.view(-1, 1)).squeeze(1)
    loss = -(lam * own_lp + (1 - lam) * partner_lp).mean()
    accuracy = (logits.argmax(dim=1) == own).float().mean()
    return loss, accuracy


class IMix(MixingMethod):
    """MoCo v2 trained with i-Mix's mixed queries and virtual labels.

    Args:
        model: Backbone, head, queue and momentum settings.
        optim: Optimiser settings.
        batch_size: Images per device per step.
        mixing: λ distribution (``alpha``).
        imix: The input mixup (``mixup`` or ``cutmix``).
    """

    def __init__(
        self,
        model: ModelConfig | Mapping[str, Any] | None = None,
        optim: OptimConfig | Mapping[str, Any] | None = None,
        batch_size: int = 256,
        mixing: MixingConfig | Mapping[str, Any] | None = None,
        imix: IMixConfig | Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(model, optim, batch_size, mixing)
        self.imix_cfg: IMixConfig = _as_config(imix or IMixConfig(), IMixConfig)
        self.save_hyperparameters({"imix": vars(self.imix_cfg).copy()})
        self.mixup = build_mixup(self.imix_cfg.input)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x_q, x_k = batch[0]
        n = x_q.shape[0]
        self.update_momentum_encoders()
        k = self.encode_key(x_k)  # (N, D)
        negatives = self.negatives_then_enqueue(k)  # (K, D), the queue before this step
        partners = global_partners(n, x_q.device)  # (N,) global indices
        lam = self.sample_lambda(1).expand(n)  # one λ per batch
        if dist.world_size() == 1:
            out = self.mixup(x_q, partners, lam)
        else:
            out = mix_with_partners(self.mixup, x_q, gather(x_q)[partners], lam)
        q_mix, _ = self.encode_query(out.images)  # (N, D)
        own = dist.rank() * n + torch.arange(n, device=x_q.device)  # (N,) global indices
        loss, acc = imix_loss(q_mix, gather(k), negatives, own, partners, out.lam,
                              self.model_cfg.temperature)  # fmt: skip
        self.log_terms({"loss": loss, "acc_imix": acc})
        self.log("train/lam", out.lam.mean())
        self.log_common()
        return loss
