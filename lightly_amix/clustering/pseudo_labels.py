"""AMix-C's pseudo-labels: the ODC memory, the cluster head and the label queue in one module.

Everything AMix-C adds to AMix-I for its Mix Block loss ``CE (PL) + BCE`` (paper §3.3) lives
here, so the method only asks for labels and loss inputs:

- :meth:`ClusterPseudoLabels.initialize`: once, before the first step, k-means over the
  momentum encoder's features of the whole training set (the start-up pass);
- :meth:`ClusterPseudoLabels.pair_labels`: the pseudo-labels ``(y_i, y_j)`` of a step's
  samples and of their partners;
- :meth:`ClusterPseudoLabels.loss_inputs`: the frozen cluster head's logits of the Mix
  Block's mixed samples (so the Mix Block's CE does not train the head), the class weights and
  the same-class mask of the queue;
- :meth:`ClusterPseudoLabels.head_loss`: the cluster head learns from clean keys (CE) and the
  Mix Block's mixes (mixup CE);
- :meth:`ClusterPseudoLabels.after_step`: the label queue follows the key queue and the ODC
  memory follows the keys.

Reference: AMix, ICLR 2022 submission, §3.3; Zhan et al., "Online Deep Clustering for
Unsupervised Representation Learning", CVPR 2020.

Examples:
    >>> labels = ClusterPseudoLabels(num_samples=105_000, feature_dim=128, queue_size=65536,
    ...                              cfg=ODCConfig())
    >>> y_i, y_j = labels.pair_labels(indices, perm, device)  # doctest: +SKIP
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightly_amix.clustering.odc import ODCMemory
from lightly_amix.config import ODCConfig
from lightly_amix.losses import mixup_cross_entropy
from lightly_amix.utils import eval_mode, gather


class ClusterPseudoLabels(nn.Module):
    """ODC pseudo-labels, a linear cluster head and the labels of the queue's keys.

    Args:
        num_samples: Size of the training set (one memory row per image).
        feature_dim: Dimension of the momentum encoder's projections.
        queue_size: Length of the key queue (the label queue mirrors it).
        cfg: Clustering settings. ``num_clusters`` is lowered, with a warning, when the data
            set cannot hold that many clusters of ``min_cluster_size``.

    Raises:
        ValueError: If ``num_samples`` is not positive.
    """

    def __init__(self, num_samples: int, feature_dim: int, queue_size: int, cfg: ODCConfig) -> None:
        super().__init__()
        if num_samples <= 0:
            raise ValueError("AMix-C needs num_samples (the training set size) for ODC.")
        k = min(cfg.num_clusters, max(1, num_samples // cfg.min_cluster_size))
        if k < cfg.num_clusters:
            warnings.warn(
                f"{num_samples} images cannot hold {cfg.num_clusters} clusters of at least "
                f"{cfg.min_cluster_size}: using {k} clusters (set odc.num_clusters).",
                stacklevel=4,
            )
        self.memory = ODCMemory(
            num_samples,
            feature_dim,
            num_classes=k,
            momentum=cfg.momentum,
            min_cluster_size=min(cfg.min_cluster_size, max(1, num_samples // k)),
            refresh_interval=cfg.refresh_interval,
            kmeans_iters=cfg.kmeans_iters,
        )
        self.head = nn.Linear(feature_dim, k)
        self.queue_labels: Tensor
        self.register_buffer("queue_labels", torch.full((queue_size,), -1, dtype=torch.long))

    @torch.no_grad()
    def initialize(
        self,
        batches: Iterable[tuple[Tensor, Any, Tensor]],
        encode: Callable[[Tensor], Tensor],
        device: torch.device,
    ) -> None:
        """The start-up pass: k-means over the features of every training image (once).

        Args:
            batches: ``(images, labels, indices)`` covering the training set (each rank its
                share under DDP).
            encode: Images → L2-normalised projections (the momentum encoder in eval mode).
            device: Where to collect the features.
        """
        if bool(self.memory.initialized):
            return
        n, dim = self.memory.features.shape
        features = torch.zeros(n, dim, device=device)
        for images, _, indices in batches:
            keys = encode(images.to(device))
            features[gather(indices.to(device))] = gather(keys)
        self.memory.initialize(features)

    def start(self, method: Any, name: str) -> None:
        """:meth:`initialize` from a method's trainer: its data module's feature loader and its
        momentum encoder (eval mode). Called from ``on_train_start``; a no-op once initialised.

        Args:
            method: The LightningModule (with ``trainer``, ``device``, ``backbone_momentum`` and
                ``projection_head_momentum``).
            name: The method's name, for the error message.

        Raises:
            RuntimeError: If the trainer has no data module with ``feature_dataloader()``.
        """
        if bool(self.memory.initialized):
            return
        datamodule = getattr(method.trainer, "datamodule", None)
        if datamodule is None or not hasattr(datamodule, "feature_dataloader"):
            raise RuntimeError(f"{name} needs a data module with feature_dataloader().")

        def encode(images: Tensor) -> Tensor:
            keys = method.projection_head_momentum(method.backbone_momentum(images))
            return F.normalize(keys.float(), dim=1)

        with eval_mode(method.backbone_momentum, method.projection_head_momentum):
            self.initialize(datamodule.feature_dataloader(), encode, method.device)

    def pair_labels(
        self, indices: Tensor, perm: Tensor, device: torch.device
    ) -> tuple[Tensor, Tensor]:
        """Pseudo-labels of this device's samples (N,) and of their partners ``perm`` (N,)."""
        y = self.memory.labels_of(indices.to(self.memory.labels.device)).to(device)
        return y, gather(y)[perm]

    def loss_inputs(
        self, query: Tensor, labels: tuple[Tensor, Tensor], same_class_mask: bool
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """What the pseudo-label terms need for the Mix Block's mixed samples.

        Args:
            query: The Mix Block's mixed samples through the frozen momentum encoder, (N, D).
            labels: ``(y_i, y_j)``.
            same_class_mask: Also build the (N, K) mask of queue entries of class ``y_i`` or
                ``y_j`` (for ``infonce_pl``).

        Returns:
            Logits of the frozen head (N, C), class weights (C,), and the mask or ``None``.
        """
        # The Mix Block's CE goes through a frozen copy of the cluster head.
        logits = F.linear(query, self.head.weight.detach(), self.head.bias.detach())  # (N, C)
        weights = self.memory.class_weights().to(logits.device)  # (C,)
        mask = None
        if same_class_mask:
            y_i, y_j = labels
            queued = self.queue_labels[None, :]  # (1, K)
            mask = (queued == y_i[:, None]) | (queued == y_j[:, None])  # (N, K)
        return logits, weights, mask

    def head_loss(
        self, keys: Tensor, query: Tensor, labels: tuple[Tensor, Tensor], lam: Tensor
    ) -> Tensor:
        """The cluster head learns from clean keys (CE) and the Mix Block's mixes (mixup CE)."""
        weight = self.memory.class_weights().to(keys.device)
        y_i, y_j = labels
        clean = F.cross_entropy(self.head(keys.detach()).float(), y_i, weight=weight)
        mixed_logits = self.head(query.detach())
        return clean + mixup_cross_entropy(mixed_logits, y_i, y_j, lam, weight)

    @torch.no_grad()
    def after_step(self, indices: Tensor, keys: Tensor, queue_ptr: int, labels: Tensor) -> None:
        """The label queue takes this step's labels at the key queue's position; ODC moves.

        Args:
            indices: Training-set indices of this device's samples (N,).
            keys: Their momentum keys (N, D).
            queue_ptr: Where the key queue wrote this step's (gathered) keys.
            labels: Pseudo-labels of this device's samples (N,).
        """
        labels_all = gather(labels)
        size = self.queue_labels.shape[0]
        take = min(labels_all.shape[0], size - queue_ptr)
        self.queue_labels[queue_ptr : queue_ptr + take] = labels_all[:take]
        self.memory.update(indices.to(self.memory.labels.device), keys.detach().float())
