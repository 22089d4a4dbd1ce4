"""A kNN monitor for pre-training: top-1 of weighted kNN on the labelled splits every N epochs.

Lightly's ``OnlineLinearClassifier`` needs labels in the training batches, which STL-10's
``train+unlabeled`` pre-training set does not have (label −1); a kNN over separate labelled
splits works for every data set, so that is the monitor here.

Examples:
    >>> monitor = KNNMonitor(train_set, test_set, num_classes=10, every_n_epochs=10)
    >>> trainer = pl.Trainer(callbacks=[monitor])
"""

from __future__ import annotations

import pytorch_lightning as pl
from torch import Tensor, nn
from torch.utils.data import Dataset

from lightly_amix.config import PretrainConfig
from lightly_amix.data import EVAL_SPLITS, build_dataset, eval_transform
from lightly_amix.eval.features import extract_features
from lightly_amix.eval.knn import knn_accuracy


class KNNMonitor(pl.Callback):
    """Logs ``knn/top1`` and ``knn/top5`` of the online backbone every ``every_n_epochs``.

    Args:
        train_set: Labelled images for the feature bank (eval transform).
        test_set: Labelled images to classify.
        num_classes: Number of classes.
        every_n_epochs: Interval (the last epoch is always evaluated).
        k: Neighbours. t: Temperature.
        batch_size: Feature-extraction batch size.
        limit_batches: Batches per split (``None``: all), to bound the cost.
    """

    def __init__(
        self,
        train_set: Dataset,
        test_set: Dataset,
        num_classes: int,
        every_n_epochs: int = 10,
        k: int = 200,
        t: float = 0.1,
        batch_size: int = 256,
        limit_batches: int | None = None,
    ) -> None:
        if every_n_epochs <= 0:
            raise ValueError(f"every_n_epochs must be > 0, got {every_n_epochs}.")
        self.train_set, self.test_set = train_set, test_set
        self.num_classes, self.every_n_epochs = num_classes, every_n_epochs
        self.k, self.t, self.batch_size, self.limit_batches = k, t, batch_size, limit_batches

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        last = trainer.max_epochs is not None and epoch >= trainer.max_epochs
        if epoch % self.every_n_epochs and not last:
            return
        backbone = getattr(pl_module, "backbone", None)
        if not isinstance(backbone, nn.Module):
            raise TypeError("KNNMonitor needs a module with a `backbone` attribute.")
        was_training = backbone.training
        try:
            train_f, train_y = self._features(backbone, self.train_set, pl_module, "kNN bank")
            test_f, test_y = self._features(backbone, self.test_set, pl_module, "kNN test")
        finally:
            backbone.train(was_training)
        acc = knn_accuracy(train_f, train_y, test_f, test_y, self.num_classes, self.k, self.t)
        pl_module.log("knn/top1", acc["top1"], rank_zero_only=True)
        pl_module.log("knn/top5", acc["top5"], rank_zero_only=True)

    def _features(
        self, backbone: nn.Module, dataset: Dataset, pl_module: pl.LightningModule, desc: str
    ) -> tuple[Tensor, Tensor]:
        return extract_features(
            backbone,
            dataset,
            batch_size=self.batch_size,
            device=pl_module.device,
            limit_batches=self.limit_batches,
            desc=desc,
        )


def build_knn_monitor(cfg: PretrainConfig) -> KNNMonitor:
    """A kNN monitor on the labelled splits of the run's data set (its registry entry)."""
    train_split, test_split = EVAL_SPLITS[cfg.data.dataset]
    transform = eval_transform(cfg.data.image_size)
    data = cfg.data
    bank = build_dataset(data.dataset, data.root, train_split, transform=transform)
    test = build_dataset(data.dataset, data.root, test_split, transform=transform)
    classes = getattr(bank, "classes", None) or []
    num_classes = len(classes) or int(max(getattr(bank, "labels", [0]))) + 1
    return KNNMonitor(
        bank,
        test,
        num_classes,
        every_n_epochs=cfg.trainer.knn_every_n_epochs,
        batch_size=cfg.trainer.batch_size,
        limit_batches=cfg.trainer.knn_limit_batches,
    )
