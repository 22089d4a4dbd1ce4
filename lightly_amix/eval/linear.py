"""Linear probe with the MoCo protocol on Lightly's ``LinearClassifier``.

Lightly's classifier schedules the learning rate with a cosine curve; the MoCo protocol
(He et al., 2020) uses SGD, lr 0.1 (STL-10, Tiny) or 30 (ImageNet), ×0.1 at epochs 30 and 60
of 100. So only ``configure_optimizers`` is replaced; the milestones scale with the number of
epochs (30 % and 60 %).

With cached features the "model" is ``nn.Identity`` and the data set yields features, so the
frozen backbone runs once instead of once per epoch.

Examples:
    >>> probe = MoCoLinearClassifier(nn.Identity(), batch_size_per_device=256, lr=0.1,
    ...                              feature_dim=512, num_classes=10, epochs=100)
"""

from __future__ import annotations

from typing import Any

from lightly.utils.benchmarking import LinearClassifier
from torch import nn
from torch.optim import SGD
from torch.optim.lr_scheduler import MultiStepLR


class MoCoLinearClassifier(LinearClassifier):
    """Lightly's linear classifier with the MoCo step schedule.

    Args:
        model: Frozen feature extractor (``nn.Identity`` for cached features).
        batch_size_per_device: Batch size (the lr is scaled by batch / 256, as in Lightly).
        lr: Base learning rate.
        feature_dim: Feature width.
        num_classes: Classes.
        epochs: Training epochs (milestones at 30 % and 60 %).
        topk: Reported top-k accuracies.
    """

    def __init__(
        self,
        model: nn.Module,
        batch_size_per_device: int,
        lr: float,
        feature_dim: int,
        num_classes: int,
        epochs: int = 100,
        topk: tuple[int, ...] = (1, 5),
    ) -> None:
        # top-k beyond the number of classes is undefined: top-5 of 3 classes is top-3.
        topk = tuple(sorted({min(k, num_classes) for k in topk}))
        super().__init__(model, batch_size_per_device, lr, feature_dim, num_classes, topk)
        self.epochs = epochs

    def configure_optimizers(self) -> Any:
        optimizer = SGD(
            list(self.get_trainable_parameters()),
            lr=self.get_effective_lr(),
            momentum=0.9,
            weight_decay=0.0,
        )
        milestones = sorted({max(1, round(0.3 * self.epochs)), max(1, round(0.6 * self.epochs))})
        scheduler = MultiStepLR(optimizer, milestones=milestones, gamma=0.1)
        return [optimizer], [{"scheduler": scheduler, "interval": "epoch"}]
