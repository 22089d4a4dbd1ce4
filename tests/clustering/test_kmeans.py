"""faiss k-means wrapper and the torch nearest-centroid assignment."""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from lightly_amix.clustering import assign, faiss_num_gpus, kmeans
from tests.clustering.conftest import unit as _unit


def _blobs(
    num_blobs: int, per_blob: int, d: int, spread: float = 0.01, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tight blobs around random points of the unit sphere, shuffled; returns (x, truth)."""
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(num_blobs, d, generator=g), dim=1)  # (B, d)
    truth = torch.arange(num_blobs).repeat_interleave(per_blob)  # (n,)
    x = centres[truth] + spread * torch.randn(truth.numel(), d, generator=g)
    perm = torch.randperm(truth.numel(), generator=g)
    return F.normalize(x[perm], dim=1), truth[perm]


def _same_partition(a: torch.Tensor, b: torch.Tensor) -> bool:
    """True when the two labelings are equal up to a permutation of the label values."""
    pairs = set(zip(a.tolist(), b.tolist(), strict=True))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def test_output_types_shapes_and_unit_centroids() -> None:
    x = torch.randn(300, 8, dtype=torch.float64)
    centroids, labels = kmeans(x, num_clusters=5, iters=10)
    assert centroids.shape == (5, 8) and centroids.dtype == torch.float32
    assert labels.shape == (300,) and labels.dtype == torch.int64
    assert centroids.device.type == labels.device.type == "cpu"
    torch.testing.assert_close(centroids.norm(dim=1), torch.ones(5))
    assert int(labels.min()) >= 0 and int(labels.max()) < 5


@pytest.mark.parametrize(("n", "d", "k"), [(50, 4, 3), (200, 16, 10), (257, 7, 32), (20, 3, 20)])
def test_labels_equal_brute_force_nearest_centroid(n: int, d: int, k: int) -> None:
    x = _unit(n, d, seed=n)
    centroids, labels = kmeans(x, num_clusters=k, iters=15, seed=1)
    assert torch.equal(labels, (x @ centroids.T).argmax(1))


def test_faiss_assignment_agrees_with_brute_force() -> None:
    """faiss's own search over the returned centroids gives the same nearest centroid."""
    x = _unit(400, 12, seed=3)
    centroids, labels = kmeans(x, num_clusters=8, iters=10)
    index = faiss.IndexFlatIP(12)
    index.add(centroids.numpy())
    _, nearest = index.search(x.numpy(), 1)
    assert torch.equal(torch.from_numpy(nearest[:, 0].astype(np.int64)), labels)


def test_spherical_kmeans_is_scale_invariant() -> None:
    x = _unit(300, 8, seed=4)
    scales = torch.rand(300, 1, generator=torch.Generator().manual_seed(0)) * 10 + 0.1
    c1, l1 = kmeans(x, 6, seed=2)
    c2, l2 = kmeans(x * scales, 6, seed=2)
    torch.testing.assert_close(c1, c2)
    assert torch.equal(l1, l2)


def test_euclidean_kmeans_labels_are_nearest_in_l2() -> None:
    x = torch.randn(300, 5, generator=torch.Generator().manual_seed(5)) * 3
    centroids, labels = kmeans(x, 7, seed=0, spherical=False)
    assert torch.equal(labels, torch.cdist(x, centroids).argmin(1))
    assert not torch.allclose(centroids.norm(dim=1), torch.ones(7))


def test_deterministic_for_a_fixed_seed() -> None:
    x = _unit(500, 16, seed=6)
    c1, l1 = kmeans(x, 12, seed=7)
    c2, l2 = kmeans(x, 12, seed=7)
    assert torch.equal(c1, c2) and torch.equal(l1, l2)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_recovers_well_separated_blobs(seed: int) -> None:
    x, truth = _blobs(num_blobs=4, per_blob=50, d=16, seed=seed)
    _, labels = kmeans(x, num_clusters=4, iters=20, seed=seed)
    assert _same_partition(labels, truth)


def test_whole_set_is_used_without_subsampling(monkeypatch: pytest.MonkeyPatch) -> None:
    """More than faiss's default 256 points per centroid: every row still reaches faiss."""
    seen: dict[str, Any] = {}
    real_kmeans = faiss.Kmeans

    class Recording(real_kmeans):  # type: ignore[misc, valid-type]
        def train(self, x: np.ndarray, *args: Any, **kwargs: Any) -> float:
            seen["rows"] = x.shape[0]
            seen["max_points"] = self.cp.max_points_per_centroid
            return float(super().train(x, *args, **kwargs))

    monkeypatch.setattr(faiss, "Kmeans", Recording)
    n, k = 2000, 2  # default would subsample to 256 * 2 = 512 rows
    kmeans(_unit(n, 4), num_clusters=k, iters=2)
    assert seen["rows"] == n
    assert seen["max_points"] * k >= n


def test_assign_matches_brute_force_in_batches() -> None:
    x = _unit(1000, 8, seed=8)
    c = _unit(13, 8, seed=9)
    expected = (x @ c.T).argmax(1)
    assert torch.equal(assign(x, c), expected)
    assert torch.equal(assign(x, c, batch_size=7), expected)
    y = torch.randn(100, 8) * 5
    assert torch.equal(assign(y, c * 2, metric="l2", batch_size=9), torch.cdist(y, c * 2).argmin(1))


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 60),
    k=st.integers(1, 12),
    d=st.integers(1, 6),
    batch=st.integers(1, 70),
    seed=st.integers(0, 2**16),
)
def test_assign_property(n: int, k: int, d: int, batch: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    c = torch.randn(k, d, generator=g)
    labels = assign(x, c, batch_size=batch)
    best = (x @ c.T).max(1).values
    chosen = (x * c[labels]).sum(1)
    torch.testing.assert_close(chosen, best)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((torch.randn(10), 2), r"shape \(N, D\)"),
        ((torch.randn(2, 3, 4), 2), r"shape \(N, D\)"),
        ((torch.ones(10, 3, dtype=torch.long), 2), "floating-point"),
        ((torch.tensor([[0.0, float("nan")], [1.0, 0.0]]), 1), "finite"),
        ((torch.tensor([[0.0, float("inf")], [1.0, 0.0]]), 1), "finite"),
        ((torch.randn(5, 3), 6), r"num_clusters must be <= the number of samples"),
        ((torch.randn(5, 3), 0), r"num_clusters must be an int >= 1"),
        (([[1.0, 2.0]], 1), "torch.Tensor"),
    ],
)
def test_kmeans_errors(args: tuple[Any, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        kmeans(*args)


def test_kmeans_errors_on_iterations_seed_and_gpu() -> None:
    x = torch.randn(10, 3)
    with pytest.raises(ValueError, match="iters must be >= 1"):
        kmeans(x, 2, iters=0)
    with pytest.raises(ValueError, match="seed must be >= 0"):
        kmeans(x, 2, seed=-1)
    if faiss_num_gpus() == 0:
        with pytest.raises(ValueError, match="use_gpu=True"):
            kmeans(x, 2, use_gpu=True)


def test_assign_errors() -> None:
    with pytest.raises(ValueError, match="same dimension"):
        assign(torch.randn(4, 3), torch.randn(2, 5))
    with pytest.raises(ValueError, match="at least one centroid"):
        assign(torch.randn(4, 3), torch.randn(0, 3))
    with pytest.raises(ValueError, match="metric"):
        assign(torch.randn(4, 3), torch.randn(2, 3), metric="cos")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size"):
        assign(torch.randn(4, 3), torch.randn(2, 3), batch_size=0)
