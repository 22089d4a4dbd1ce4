"""Spherical k-means with faiss, and nearest-centroid assignment in torch (AMix paper §3.3).

AMix-C initialises its ODC pseudo-labels with k-means on the L2-normalised ``f_k`` projections
of the whole training set (``K = 200``, 20 iterations). :func:`kmeans` wraps ``faiss.Kmeans``
for that; :func:`assign` is the batched nearest-centroid rule (inner product) that the ODC
memory uses at every step, without faiss.

Reference: AMix, ICLR 2022 submission, §3.3; Zhan et al., "Online Deep Clustering for
Unsupervised Representation Learning", CVPR 2020.

Examples:
    >>> centroids, labels = kmeans(features, num_clusters=200, iters=20)  # (200, D), (N,)
    >>> batch_labels = assign(batch_features, centroids)                  # (B,)
"""

from __future__ import annotations

from typing import Literal

import faiss
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

_ASSIGN_BATCH = 65536


def _check_features(features: Tensor, name: str = "features") -> None:
    if not isinstance(features, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(features).__name__}.")
    if features.dim() != 2:
        raise ValueError(f"{name} must have shape (N, D), got {tuple(features.shape)}.")
    if not features.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {features.dtype}.")
    if features.shape[1] < 1:
        raise ValueError(f"{name} must have at least one feature dimension, got shape (N, 0).")
    if not bool(torch.isfinite(features).all()):
        raise ValueError(f"{name} must be finite (no NaN or inf).")


def faiss_num_gpus() -> int:
    """Number of GPUs the installed faiss can use (0 for the ``faiss-cpu`` wheel)."""
    get_num_gpus = getattr(faiss, "get_num_gpus", None)
    return int(get_num_gpus()) if get_num_gpus is not None else 0


@torch.no_grad()
def assign(
    features: Tensor,
    centroids: Tensor,
    *,
    metric: Literal["ip", "l2"] = "ip",
    batch_size: int = _ASSIGN_BATCH,
) -> Tensor:
    """Index of the nearest centroid of every row, computed in batches of rows.

    With ``metric="ip"`` (the default) the nearest centroid is the one with the largest inner
    product, i.e. the largest cosine similarity for L2-normalised features and centroids:
    ``(features @ centroids.T).argmax(1)``. With ``metric="l2"`` it is the smallest Euclidean
    distance. Ties go to the lowest centroid index.

    Args:
        features: Shape (N, D), floating point.
        centroids: Shape (K, D), floating point, K >= 1.
        metric: ``"ip"`` (inner product) or ``"l2"`` (Euclidean).
        batch_size: Rows per matrix product (bounds the (batch, K) score matrix).

    Returns:
        Labels of shape (N,), int64, on the device of ``features``.

    Examples:
        >>> labels = assign(F.normalize(z, dim=1), centroids)  # (N,)
    """
    _check_features(features)
    _check_features(centroids, "centroids")
    if centroids.shape[0] < 1:
        raise ValueError("centroids must hold at least one centroid, got shape (0, D).")
    if features.shape[1] != centroids.shape[1]:
        raise ValueError(
            f"features and centroids must have the same dimension, got {features.shape[1]} "
            f"and {centroids.shape[1]}."
        )
    if metric not in ("ip", "l2"):
        raise ValueError(f"metric must be 'ip' or 'l2', got {metric!r}.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    centroids = centroids.to(device=features.device, dtype=torch.float32)  # (K, D)
    half_sq_norms = 0.5 * (centroids * centroids).sum(dim=1)  # (K,)
    labels = torch.empty(features.shape[0], dtype=torch.long, device=features.device)  # (N,)
    for start in range(0, features.shape[0], batch_size):
        chunk = features[start : start + batch_size].float()  # (b, D)
        scores = chunk @ centroids.T  # (b, K)
        if metric == "l2":
            # argmin ||x - c||^2 = argmax (x.c - ||c||^2 / 2)
            scores = scores - half_sq_norms
        labels[start : start + batch_size] = scores.argmax(dim=1)
    return labels


def kmeans(
    features: Tensor,
    num_clusters: int,
    iters: int = 20,
    seed: int = 0,
    use_gpu: bool | None = None,
    spherical: bool = True,
) -> tuple[Tensor, Tensor]:
    """k-means with ``faiss.Kmeans`` on the whole set; spherical (cosine) by default.

    With ``spherical=True`` the rows are L2-normalised first, faiss keeps the centroids on the
    unit sphere after every iteration, and the labels are the nearest centroid by inner
    product (cosine). With ``spherical=False`` it is plain Euclidean k-means on the raw rows.
    The returned labels are computed with :func:`assign` against the *final* centroids (faiss
    itself only holds the assignment of the last iteration, made before the last update).

    Choices made here:

    - **No subsampling.** faiss trains on a random subset of ``max_points_per_centroid * K``
      rows (default 256 per centroid: 51,200 of STL-10's 105,000 images for ``K = 200``).
      ``max_points_per_centroid`` is set to ``n`` so that every row is used: the pseudo-labels
      are needed for every sample and the paper clusters the whole training set; the cost is
      linear in the rows (about twice the default for STL-10). ``min_points_per_centroid`` is
      set to 1, which only silences faiss's warning about few points per centroid (n >= K is
      checked here).
    - **k-means++ initialisation** when the installed faiss offers it
      (``faiss.ClusteringInitMethod_KMEANS_PLUS_PLUS``, recent releases such as the 1.15
      wheel), else faiss's default of K random rows.
      Random initialisation often puts two seeds in one well-separated group and Lloyd
      iterations cannot recover from that. k-means++ adds about a third to the time of 20
      iterations at STL-10's size (105,000 x 128, K = 200, two CPU threads: 1.98 s against
      1.54 s with random seeds, ``benchmarks/RESULTS.md``), once per run.
    - **Empty clusters.** faiss never ends an iteration with an empty centroid: after each
      centroid update it re-seeds every empty cluster by splitting another cluster (chosen at
      random with probability growing with its size): the empty centroid becomes a copy of
      that cluster's centroid, both are pushed apart by a symmetric relative perturbation
      (``1 ± 1/1024``), and the cluster's points are counted half to each (counted in
      ``iteration_stats[i]["nsplit"]``). The final labels may still leave a cluster empty or
      small (e.g. many duplicate rows); :class:`~lightly_amix.clustering.ODCMemory` fixes
      small clusters afterwards.
    - **Device.** ``use_gpu=None`` uses a GPU when the installed faiss has GPUs
      (``faiss.get_num_gpus() > 0``, i.e. a ``faiss-gpu`` wheel and a visible GPU), else the
      CPU. On GPU one device is used (GPU 0, the device of rank 0 under DDP), because faiss
      reserves a share of the memory of every GPU it uses.

    The result is deterministic for a fixed ``seed`` on the same machine and faiss build.

    Args:
        features: Shape (n, d), floating point, finite. Any device; copied to the CPU.
        num_clusters: K, with ``1 <= K <= n``.
        iters: Lloyd iterations (paper 20).
        seed: Seed of faiss's random number generator (initialisation and splits), >= 0.
        use_gpu: True: GPU (error without one), False: CPU, None: GPU when available.
        spherical: Cosine k-means on L2-normalised rows (True) or Euclidean k-means (False).

    Returns:
        ``(centroids, labels)``: centroids (K, d) float32 (unit rows when spherical) and labels
        (n,) int64, both on the CPU.

    Examples:
        >>> z = torch.randn(1000, 128)
        >>> centroids, labels = kmeans(z, num_clusters=10, iters=20, seed=0)
        >>> centroids.shape, labels.shape
        (torch.Size([10, 128]), torch.Size([1000]))
    """
    _check_features(features)
    n, d = features.shape
    if isinstance(num_clusters, bool) or not isinstance(num_clusters, int) or num_clusters < 1:
        raise ValueError(f"num_clusters must be an int >= 1, got {num_clusters!r}.")
    if num_clusters > n:
        raise ValueError(
            f"num_clusters must be <= the number of samples, got {num_clusters} clusters "
            f"for {n} samples."
        )
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}.")
    if seed < 0:
        raise ValueError(f"seed must be >= 0 (faiss seeds from the clock otherwise), got {seed}.")
    num_gpus = faiss_num_gpus()
    if use_gpu is None:
        use_gpu = num_gpus > 0
    elif use_gpu and num_gpus == 0:
        raise ValueError(
            "use_gpu=True but the installed faiss has no GPUs (faiss-cpu wheel or no visible "
            "GPU); pass use_gpu=None or False."
        )

    x = features.detach().to(device="cpu", dtype=torch.float32)  # (n, d)
    if spherical:
        x = F.normalize(x, dim=1)
    x_np = np.ascontiguousarray(x.numpy(), dtype=np.float32)  # (n, d)

    params: dict[str, object] = {
        "niter": int(iters),
        "seed": int(seed),
        "spherical": bool(spherical),
        "max_points_per_centroid": int(n),  # >= ceil(n / K): faiss trains on every row
        "min_points_per_centroid": 1,
        "verbose": False,
    }
    if hasattr(faiss, "ClusteringInitMethod_KMEANS_PLUS_PLUS"):
        params["init_method"] = faiss.ClusteringInitMethod_KMEANS_PLUS_PLUS
    if use_gpu:
        params["gpu"] = 1
    km = faiss.Kmeans(d, num_clusters, **params)
    km.train(x_np)

    centroids = torch.from_numpy(np.array(km.centroids, dtype=np.float32)).reshape(
        num_clusters, d
    )  # (K, d)
    if spherical:
        centroids = F.normalize(centroids, dim=1)
    labels = assign(x, centroids, metric="ip" if spherical else "l2")  # (n,)
    return centroids, labels
