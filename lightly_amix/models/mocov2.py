"""MoCo v2, the baseline that AMix extends.

Reference: Chen et al., "Improved Baselines with Momentum Contrastive Learning", 2020.

Examples:
    >>> from lightly_amix.config import ModelConfig
    >>> model = MoCoV2(ModelConfig(backbone="resnet18", queue_size=4096), batch_size=256)
    >>> trainer = pl.Trainer(max_epochs=200)
    >>> trainer.fit(model, datamodule)
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from lightly_amix.models.base import MomentumContrastMethod


class MoCoV2(MomentumContrastMethod):
    """Asymmetric MoCo v2: the query view through the online encoder, the key view through the
    momentum encoder, InfoNCE against the queue."""

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x_query, x_key = batch[0]  # (views, labels[, indices])
        self.update_momentum_encoders()
        q, _ = self.encode_query(x_query)  # (N, D)
        k = self.encode_key(x_key)  # (N, D)
        negatives = self.negatives_then_enqueue(k)  # (K, D), the queue before this step
        loss, acc = self.moco_loss(q, k, negatives)
        self.log_terms({"loss": loss, "loss_moco": loss, "acc_moco": acc})
        self.log_common()
        return loss
