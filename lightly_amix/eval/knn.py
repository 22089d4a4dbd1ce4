"""Weighted kNN classification on normalised features (Wu et al., 2018), via Lightly.

Examples:
    >>> knn_accuracy(train_f, train_y, test_f, test_y, num_classes=10, k=200, t=0.1)
    {'top1': 71.3, 'top5': 97.9}
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lightly.utils.benchmarking import knn_predict
from torch import Tensor


@torch.no_grad()
def knn_accuracy(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    num_classes: int,
    k: int = 200,
    t: float = 0.1,
    batch_size: int = 1024,
) -> dict[str, float]:
    """Top-1 and top-5 accuracy (percent) of Lightly's ``knn_predict`` (k nearest, weights
    ``exp(sim / t)``), in batches of test samples."""
    if (
        train_features.shape[0] != train_labels.shape[0]
        or test_features.shape[0] != test_labels.shape[0]
    ):
        raise ValueError("features and labels must have the same number of rows.")
    if bool((train_labels < 0).any()) or bool((test_labels < 0).any()):
        raise ValueError("kNN needs labelled images (labels >= 0); use a labelled split.")
    k = min(k, train_features.shape[0])
    bank = F.normalize(train_features.float(), dim=1).T.contiguous()  # (D, N)
    correct1 = correct5 = 0
    for start in range(0, test_features.shape[0], batch_size):
        query = F.normalize(test_features[start : start + batch_size].float(), dim=1)
        target = test_labels[start : start + batch_size].view(-1, 1)
        pred = knn_predict(query, bank, train_labels, num_classes, knn_k=k, knn_t=t)  # (B, C)
        correct1 += int((pred[:, :1] == target).any(dim=1).sum())
        correct5 += int((pred[:, : min(5, num_classes)] == target).any(dim=1).sum())
    n = test_features.shape[0]
    return {"top1": 100.0 * correct1 / n, "top5": 100.0 * correct5 / n}
