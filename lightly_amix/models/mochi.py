"""MoCHi: MoCo v2 with hard negatives mixed in the embedding space (paper Tables 5-6).

Reference: Kalantidis et al., "Hard Negative Mixing for Contrastive Learning", NeurIPS 2020.
Each query gets, besides the queue, ``s + s'`` synthetic negatives made from its ``N`` hardest
queue entries (:func:`lightly_amix.mixing.hard_negatives.mochi_negatives`, §4 eq. 3-4):

``L = −log exp(q·k+/t) / (exp(q·k+/t) + Σ_Q exp(q·n/t) + Σ_{H(q)} exp(q·h/t))``

No input is mixed. The synthetic negatives carry no gradient (they are new *negatives*, not
new parameters); they are not enqueued.

Examples:
    >>> model = MoCHi(ModelConfig(queue_size=65536), mochi=MoCHiConfig(), batch_size=256)
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from lightly_amix.config import MoCHiConfig, ModelConfig, OptimConfig
from lightly_amix.losses import contrastive_accuracy, info_nce_from_logits, info_nce_logits
from lightly_amix.mixing.hard_negatives import mochi_negatives
from lightly_amix.models.base import MomentumContrastMethod, _as_config


class MoCHi(MomentumContrastMethod):
    """MoCo v2 + hard negative mixing.

    Args:
        model: Backbone, head, queue and momentum settings.
        optim: Optimiser settings.
        batch_size: Images per device per step.
        mochi: ``N``, ``s``, ``s'`` and the first epoch with synthetic negatives.

    ``mochi.num_hard`` is lowered to the queue size (with a warning) for small queues.
    """

    def __init__(
        self,
        model: ModelConfig | Mapping[str, Any] | None = None,
        optim: OptimConfig | Mapping[str, Any] | None = None,
        batch_size: int = 256,
        mochi: MoCHiConfig | Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(model, optim, batch_size)
        self.mochi_cfg: MoCHiConfig = _as_config(mochi or MoCHiConfig(), MoCHiConfig)
        queue = self.model_cfg.queue_size
        if self.mochi_cfg.num_hard > queue:
            warnings.warn(
                f"mochi.num_hard {self.mochi_cfg.num_hard} is larger than the queue ({queue}): "
                f"mixing from all {queue} entries (set mochi.num_hard).",
                stacklevel=2,
            )
            self.mochi_cfg = replace(self.mochi_cfg, num_hard=queue)
        self.save_hyperparameters({"mochi": vars(self.mochi_cfg).copy()})

    def mochi_logits(self, q: Tensor, k: Tensor, negatives: Tensor) -> Tensor:
        """``[q·k+ ; q·Q ; q·H(q)] / t`` (N, 1 + K + s + s'); H only from ``start_epoch`` on."""
        logits = info_nce_logits(q, k, negatives, self.model_cfg.temperature)  # (N, 1 + K)
        cfg = self.mochi_cfg
        if self.current_epoch < cfg.start_epoch or cfg.num_mix + cfg.num_query_mix == 0:
            return logits
        synthetic = mochi_negatives(q.detach(), negatives, cfg.num_hard, cfg.num_mix,
                                    cfg.num_query_mix)  # (N, s + s', D)  # fmt: skip
        extra = torch.einsum("nd,nsd->ns", q, synthetic.to(q.dtype))  # (N, s + s')
        return torch.cat([logits, extra / self.model_cfg.temperature], dim=1)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x_q, x_k = batch[0]
        self.update_momentum_encoders()
        q, _ = self.encode_query(x_q)  # (N, D)
        k = self.encode_key(x_k)  # (N, D)
        negatives = self.negatives_then_enqueue(k)  # (K, D), the queue before this step
        logits = self.mochi_logits(q, k, negatives)
        loss = info_nce_from_logits(logits)
        self.log_terms({"loss": loss, "acc_moco": contrastive_accuracy(logits)})
        self.log_common()
        return loss
