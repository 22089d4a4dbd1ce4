"""Online Deep Clustering (ODC) memory: pseudo-labels for AMix-C (AMix paper §3.3).

The memory holds one L2-normalised feature and one cluster label per training sample, plus the
K cluster centroids. It is initialised once with k-means on the features of the whole training
set and then follows the network online:

- every step, the memory features of the batch move towards the new features,
  ``f ← normalise((1 − m)·f + m·normalise(z))``, and the batch is relabelled with the nearest
  centroid (cosine),
- every ``refresh_interval`` steps the centroids are recomputed as the normalised mean of the
  memory features of each label,
- small clusters are dissolved and refilled by splitting the largest cluster, so that no
  cluster is ever empty (the cluster head's CE then sees every class),
- the CE class weights ``w_c ∝ (n_c + 1e-5)^−0.5`` counter the cluster-size imbalance.

Under DDP (``torch.distributed`` initialised, world size > 1) every rank holds the full memory
and every rank applies the same updates: k-means runs on rank 0 and its result is broadcast,
each step gathers the indices and features of all ranks, and after every refresh the labels
and centroids of rank 0 are broadcast so that the ranks stay bit-identical even where a GPU
reduction (``index_add_``) is not deterministic.

Reference: Zhan et al., "Online Deep Clustering for Unsupervised Representation Learning",
CVPR 2020; AMix, ICLR 2022 submission, §3.3.

Examples:
    >>> memory = ODCMemory(num_samples=len(dataset), feature_dim=128, num_classes=200)
    >>> memory.initialize(all_features)                # (N, 128), once before training
    >>> labels = memory.update(indices, z_k.detach())  # (B,) pseudo-labels of the batch
    >>> loss = F.cross_entropy(logits, labels, weight=memory.class_weights())
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from lightly_amix.clustering.kmeans import assign, kmeans

_WEIGHT_EPS = 1e-5


def _world_size() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def _rank() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return 0


def _check_positive_int(name: str, value: int, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}.")


_T = TypeVar("_T")


def _without_autocast(method: Callable[..., _T]) -> Callable[..., _T]:
    """Runs an ODC method in fp32 even when called under autocast (eigh has no bf16 kernel,
    and the memory's normalised means need fp32 anyway)."""

    @functools.wraps(method)
    def wrapper(self: ODCMemory, *args: Any, **kwargs: Any) -> _T:
        with torch.autocast(device_type=self.features.device.type, enabled=False):
            return method(self, *args, **kwargs)

    return wrapper


class ODCMemory(nn.Module):
    """Feature and label memory with online cluster updates (ODC).

    All state lives in persistent buffers, so it is saved in and restored from checkpoints with
    the ``state_dict`` of the module that owns it (Lightning checkpoints included):
    ``features`` (n, d) float32 (unit rows), ``labels`` (n,) int64, ``centroids`` (K, d)
    float32 (unit rows), ``initialized`` (bool scalar) and ``step`` (int64 scalar, the number
    of :meth:`update` calls). The buffers follow the module's device.

    Small clusters. A cluster with fewer than ``min_cluster_size`` members has its members moved
    to their nearest centroid among the clusters that are not small, and is then refilled by
    splitting the currently largest cluster along its top principal direction: the members of
    the largest cluster are projected on the leading eigenvector of their covariance matrix
    (sign fixed so that its largest-magnitude entry is positive) and the half with the larger
    projections becomes the refilled cluster (a median split; one step of a bisecting
    "principal direction divisive partitioning", a cheap deterministic stand-in for the 2-means
    split of the original ODC code, and with halves of equal size, so that both keep at least
    the minimum size whenever the largest cluster has twice of it). When the largest cluster
    has fewer than twice the minimum, it gives all of its members above the minimum and the
    rest is taken from the next clusters with members to spare, those most similar to the
    refilled cluster's centroid first. Afterwards every cluster has at least
    ``min_cluster_size`` members when ``n >= K * min_cluster_size``; otherwise (a warning is
    raised at construction) only empty clusters are refilled and every cluster has at least
    one member. The whole procedure uses no randomness, so the state is deterministic given
    ``seed`` (which only seeds k-means).

    Args:
        num_samples: n, the number of training samples (indices run over ``0 .. n − 1``).
        feature_dim: d, the dimension of the features (the ``f_k`` projection).
        num_classes: K, the number of clusters (paper 200).
        momentum: m of the memory update, in (0, 1] (paper 0.5).
        min_cluster_size: Smallest allowed cluster (paper 20).
        refresh_interval: Recompute the centroids every this many :meth:`update` calls (paper
            10).
        kmeans_iters: k-means iterations of :meth:`initialize` (paper 20).
        seed: Seed of the k-means of :meth:`initialize`.

    Examples:
        >>> memory = ODCMemory(num_samples=600, feature_dim=16, num_classes=10)
        >>> memory.initialize(torch.randn(600, 16))
        >>> labels = memory.update(torch.arange(8), torch.randn(8, 16))  # (8,)
        >>> weights = memory.class_weights()  # (10,), sums to 1
    """

    features: Tensor
    labels: Tensor
    centroids: Tensor
    initialized: Tensor
    step: Tensor

    def __init__(
        self,
        num_samples: int,
        feature_dim: int,
        num_classes: int = 200,
        momentum: float = 0.5,
        min_cluster_size: int = 20,
        refresh_interval: int = 10,
        kmeans_iters: int = 20,
        seed: int = 0,
    ) -> None:
        super().__init__()
        _check_positive_int("num_samples", num_samples)
        _check_positive_int("feature_dim", feature_dim)
        _check_positive_int("num_classes", num_classes)
        _check_positive_int("min_cluster_size", min_cluster_size)
        _check_positive_int("refresh_interval", refresh_interval)
        _check_positive_int("kmeans_iters", kmeans_iters)
        _check_positive_int("seed", seed, minimum=0)
        if num_classes > num_samples:
            raise ValueError(
                f"num_classes (K = {num_classes}) must be <= num_samples (n = {num_samples})."
            )
        if not 0.0 < momentum <= 1.0:
            raise ValueError(f"momentum must be in (0, 1], got {momentum}.")
        if num_samples < num_classes * min_cluster_size:
            warnings.warn(
                f"ODCMemory: num_samples={num_samples} < num_classes * min_cluster_size = "
                f"{num_classes} * {min_cluster_size}; only empty clusters are refilled, so "
                "clusters may be smaller than min_cluster_size (but never empty).",
                UserWarning,
                stacklevel=2,
            )
        self.num_samples = num_samples
        self.feature_dim = feature_dim
        self.num_classes = num_classes
        self.momentum = float(momentum)
        self.min_cluster_size = min_cluster_size
        self.refresh_interval = refresh_interval
        self.kmeans_iters = kmeans_iters
        self.seed = seed

        self.register_buffer("features", torch.zeros(num_samples, feature_dim))
        self.register_buffer("labels", torch.zeros(num_samples, dtype=torch.long))
        self.register_buffer("centroids", torch.zeros(num_classes, feature_dim))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def extra_repr(self) -> str:
        return (
            f"num_samples={self.num_samples}, feature_dim={self.feature_dim}, "
            f"num_classes={self.num_classes}, momentum={self.momentum}, "
            f"min_cluster_size={self.min_cluster_size}, refresh_interval={self.refresh_interval}"
        )

    # ------------------------------------------------------------------ helpers
    @property
    def effective_min_size(self) -> int:
        """The cluster size guaranteed after a fix: ``min_cluster_size``, or 1 if n < K·min."""
        if self.num_samples >= self.num_classes * self.min_cluster_size:
            return self.min_cluster_size
        return 1

    def _require_initialized(self) -> None:
        if not bool(self.initialized):
            raise ValueError("ODCMemory is not initialised: call initialize(features) first.")

    def _index_error(self, indices: Tensor) -> str | None:
        if not isinstance(indices, Tensor):
            return f"indices must be a torch.Tensor, got {type(indices).__name__}."
        if indices.dim() != 1:
            return f"indices must have shape (B,), got {tuple(indices.shape)}."
        if indices.dtype == torch.bool or indices.is_floating_point() or indices.is_complex():
            return f"indices must be an integer tensor, got {indices.dtype}."
        if indices.numel() > 0:
            low, high = int(indices.min()), int(indices.max())
            if low < 0 or high >= self.num_samples:
                return f"indices must be in [0, {self.num_samples}), got values in [{low}, {high}]."
        return None

    def _check_indices(self, indices: Tensor) -> None:
        error = self._index_error(indices)
        if error is not None:
            raise ValueError(error)

    def _compute_centroids(self) -> Tensor:
        """Normalised mean of the memory features of every label -> (K, d)."""
        sums = torch.zeros_like(self.centroids)  # (K, d)
        sums.index_add_(0, self.labels, self.features)
        return F.normalize(sums, dim=1)  # an empty cluster would give a zero row

    def cluster_sizes(self) -> Tensor:
        """Number of samples per cluster, shape (K,), int64."""
        return torch.bincount(self.labels, minlength=self.num_classes)

    # ------------------------------------------------------------ small clusters
    def _principal_split(self, members: Tensor, take: int) -> Tensor:
        """The ``take`` members with the largest projection on the top principal direction."""
        x = self.features[members]  # (m, d)
        centred = x - x.mean(dim=0, keepdim=True)  # (m, d)
        cov = centred.T @ centred  # (d, d)
        _, eigvecs = torch.linalg.eigh(cov)  # eigenvalues ascending
        direction = eigvecs[:, -1]  # (d,)
        direction = direction * torch.sign(direction[direction.abs().argmax()])
        proj = centred @ direction  # (m,)
        order = torch.sort(proj, stable=True).indices  # ascending
        return members[order[members.numel() - take :]]

    def _refill(self, empty: int, counts: Tensor, target: int) -> None:
        """Moves members from the largest cluster (and, if needed, others) to ``empty``."""
        largest = int(counts.argmax())
        members = (self.labels == largest).nonzero().flatten()  # (m,) ascending
        size = members.numel()
        take = size // 2 if size // 2 >= target else max(size - target, 0)
        if take > 0:
            self.labels[self._principal_split(members, take)] = empty
            counts[largest] -= take
            counts[empty] += take
        while int(counts[empty]) < target:
            # Only when the largest cluster had fewer than 2·target members: take the spare
            # members of the next clusters, the most similar to the refilled cluster first.
            spare = counts - target
            spare[empty] = 0
            donor = int(spare.argmax())
            if int(spare[donor]) <= 0:  # cannot happen when n >= K * target
                break
            in_empty = self.labels == empty
            reference = F.normalize(self.features[in_empty].sum(dim=0), dim=0)  # (d,)
            donor_members = (self.labels == donor).nonzero().flatten()
            sims = self.features[donor_members] @ reference  # (m_donor,)
            k = min(target - int(counts[empty]), int(spare[donor]))
            order = torch.sort(sims, descending=True, stable=True).indices[:k]
            self.labels[donor_members[order]] = empty
            counts[donor] -= k
            counts[empty] += k

    def _fix_small_clusters(self) -> int:
        """Dissolves and refills clusters below the minimum size; recomputes the centroids.

        Returns:
            The number of clusters that were refilled.
        """
        target = self.effective_min_size
        counts = self.cluster_sizes()  # (K,)
        small = counts < target  # (K,) bool
        small_ids = small.nonzero().flatten().tolist()
        if small_ids:
            in_small = small[self.labels].nonzero().flatten()  # samples of small clusters
            if in_small.numel() > 0:
                scores = self.features[in_small] @ self.centroids.T  # (s, K)
                scores[:, small] = float("-inf")
                self.labels[in_small] = scores.argmax(dim=1)
            counts = self.cluster_sizes()
            for empty in small_ids:
                self._refill(empty, counts, target)
        self.centroids.copy_(self._compute_centroids())
        return len(small_ids)

    def _broadcast_from_rank0(self, *buffers: Tensor) -> None:
        if _world_size() > 1:
            for buffer in buffers:
                dist.broadcast(buffer, src=0)

    # ------------------------------------------------------------------- public
    @torch.no_grad()
    @_without_autocast
    def initialize(self, features: Tensor) -> None:
        """Fills the memory with k-means on the features of the whole training set.

        The features are L2-normalised and clustered with spherical k-means (:func:`kmeans`,
        ``kmeans_iters`` iterations, ``seed``), small clusters are fixed and the centroids are
        set to the normalised per-label means. Under DDP this is a collective call: k-means
        runs on rank 0 only and rank 0's features, labels and centroids are broadcast, so all
        ranks hold the same state (the features of the other ranks are only checked; they are
        expected to be the full set as well, but may differ slightly, e.g. through per-rank
        BatchNorm statistics). Resets ``step`` to 0.

        Args:
            features: Shape (n, d), the features of all n training samples in index order.
        """
        if not isinstance(features, Tensor) or features.shape != (
            self.num_samples,
            self.feature_dim,
        ):
            shape = tuple(features.shape) if isinstance(features, Tensor) else type(features)
            raise ValueError(
                f"features must have shape ({self.num_samples}, {self.feature_dim}), got {shape}."
            )
        if not features.is_floating_point():
            raise ValueError(f"features must be a floating-point tensor, got {features.dtype}.")
        if not bool(torch.isfinite(features).all()):
            raise ValueError("features must be finite (no NaN or inf).")
        if _rank() == 0:
            feats = F.normalize(features.detach().float(), dim=1)  # (n, d)
            centroids, labels = kmeans(
                feats, self.num_classes, iters=self.kmeans_iters, seed=self.seed
            )  # (K, d), (n,) on the CPU
            self.features.copy_(feats)
            self.labels.copy_(labels)
            self.centroids.copy_(centroids)
            self._fix_small_clusters()
        self._broadcast_from_rank0(self.features, self.labels, self.centroids)
        self.initialized.fill_(True)
        self.step.zero_()

    @torch.no_grad()
    @_without_autocast
    def refresh(self) -> int:
        """Recomputes the centroids from the memory and fixes small clusters.

        Called by :meth:`update` every ``refresh_interval`` steps. Under DDP it is a collective
        call (rank 0's labels and centroids are broadcast at the end).

        Returns:
            The number of clusters that were refilled.
        """
        self._require_initialized()
        self.centroids.copy_(self._compute_centroids())
        refilled = self._fix_small_clusters()
        self._broadcast_from_rank0(self.labels, self.centroids)
        return refilled

    @torch.no_grad()
    @_without_autocast
    def update(self, indices: Tensor, features: Tensor) -> Tensor:
        """Moves the memory of a batch towards new features and relabels it.

        With ``m = momentum``: ``f[i] ← normalise((1 − m)·f[i] + m·normalise(z))`` and
        ``label[i] ← argmax_c <f[i], centroid_c>`` (the centroids in use before this step's
        refresh), then ``step += 1`` and, every ``refresh_interval`` steps, :meth:`refresh`.
        Under DDP the indices and features of all ranks are gathered first (every rank must
        pass the same batch size), so that every rank applies the same update. An index that
        occurs several times in the (gathered) batch, e.g. through the padding of
        ``DistributedSampler``, is updated once, with its last occurrence in rank order.

        Args:
            indices: Dataset indices of this rank's batch, shape (B,), integer, in [0, n).
            features: This rank's new features, shape (B, d) (need not be normalised).

        Returns:
            The new labels of this rank's indices, in order, shape (B,), int64.
        """
        self._require_initialized()
        error = self._index_error(indices)
        if error is None:
            if not isinstance(features, Tensor) or features.shape != (
                indices.shape[0],
                self.feature_dim,
            ):
                shape = tuple(features.shape) if isinstance(features, Tensor) else None
                error = (
                    f"features must have shape ({indices.shape[0]}, {self.feature_dim}) to "
                    f"match indices, got {shape}."
                )
            elif not features.is_floating_point():
                error = f"features must be a floating-point tensor, got {features.dtype}."
            elif not bool(torch.isfinite(features).all()):
                error = "features must be finite (no NaN or inf)."
        device = self.features.device
        world_size = _world_size()
        if world_size > 1:
            # Agree on validity and batch size first, so that a bad input raises on every
            # rank instead of leaving the others waiting in the gather.
            batch = indices.shape[0] if isinstance(indices, Tensor) and indices.dim() else -1
            info = torch.tensor([batch, int(error is None)], dtype=torch.long, device=device)
            infos = [torch.empty_like(info) for _ in range(world_size)]
            dist.all_gather(infos, info)
            table = torch.stack(infos).cpu()  # (world, 2)
            if error is None and not bool(table[:, 1].all()):
                bad = table[:, 1].eq(0).nonzero().flatten().tolist()
                error = f"invalid update input on rank(s) {bad}."
            if error is None and not bool((table[:, 0] == table[0, 0]).all()):
                error = (
                    f"update needs the same batch size on every rank, got {table[:, 0].tolist()}."
                )
        if error is not None:
            raise ValueError(error)

        local_idx = indices.to(device=device, dtype=torch.long)  # (B,)
        new = features.detach().to(device=device, dtype=torch.float32)  # (B, d)
        idx = local_idx
        if world_size > 1:
            idx_list = [torch.empty_like(idx) for _ in range(world_size)]
            new_list = [torch.empty_like(new) for _ in range(world_size)]
            dist.all_gather(idx_list, idx)
            dist.all_gather(new_list, new)
            idx = torch.cat(idx_list)  # (world·B,)
            new = torch.cat(new_list)  # (world·B, d)

        # One update per distinct index, with its last occurrence.
        unique, inverse = torch.unique(idx, return_inverse=True)  # (U,), (world·B,)
        positions = torch.arange(idx.numel(), device=device)
        last = torch.full_like(unique, -1).scatter_reduce_(
            0, inverse, positions, reduce="amax", include_self=True
        )  # (U,)
        new = F.normalize(new[last], dim=1)  # (U, d)
        old = self.features[unique]  # (U, d)
        memory = F.normalize((1.0 - self.momentum) * old + self.momentum * new, dim=1)
        self.features[unique] = memory
        self.labels[unique] = assign(memory, self.centroids)

        self.step += 1
        if int(self.step) % self.refresh_interval == 0:
            self.refresh()
        return self.labels[local_idx].clone()

    @torch.no_grad()
    def class_weights(self) -> Tensor:
        """CE class weights ``w_c ∝ (n_c + 1e-5)^−0.5``, normalised to sum to 1 -> (K,)."""
        self._require_initialized()
        counts = self.cluster_sizes().float()  # (K,)
        weights = (counts + _WEIGHT_EPS).pow(-0.5)
        return weights / weights.sum()

    @torch.no_grad()
    def labels_of(self, indices: Tensor) -> Tensor:
        """Current labels of the given dataset indices, shape (B,), int64."""
        self._require_initialized()
        self._check_indices(indices)
        return self.labels[indices.to(device=self.labels.device, dtype=torch.long)].clone()
