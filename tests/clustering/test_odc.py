"""ODC memory: invariants after initialise/update/refresh, resume, determinism, errors, DDP."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from lightly_amix.clustering import ODCMemory, assign
from lightly_amix.clustering import odc as odc_module
from tests.clustering.conftest import unit as _unit

N, D, K, MIN = 600, 16, 10, 20
WORKER = Path(__file__).resolve().parent / "odc_ddp_worker.py"


def _per_label_means(memory: ODCMemory) -> torch.Tensor:
    """Normalised mean feature of every label, recomputed directly (K, d)."""
    rows = [memory.features[memory.labels == c].mean(0) for c in range(memory.num_classes)]
    return F.normalize(torch.stack(rows), dim=1)


def _memory(**kwargs: int | float) -> ODCMemory:
    params: dict = {"num_samples": N, "feature_dim": D, "num_classes": K, "min_cluster_size": MIN}
    params.update(kwargs)
    return ODCMemory(**params)


def _run_steps(memory: ODCMemory, steps: int, batch: int = 32, seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    returned = []
    for _ in range(steps):
        idx = torch.randperm(memory.num_samples, generator=g)[:batch]
        returned.append(memory.update(idx, torch.randn(batch, memory.feature_dim, generator=g)))
    return returned


@pytest.fixture
def memory() -> ODCMemory:
    m = _memory()
    m.initialize(_unit(N, D))
    return m


def test_initialize_state(memory: ODCMemory) -> None:
    assert bool(memory.initialized) and int(memory.step) == 0
    assert memory.features.dtype == memory.centroids.dtype == torch.float32
    assert memory.labels.dtype == torch.int64
    torch.testing.assert_close(memory.features, _unit(N, D))
    assert int(memory.cluster_sizes().min()) >= MIN
    assert int(memory.cluster_sizes().sum()) == N
    torch.testing.assert_close(memory.centroids, _per_label_means(memory))
    torch.testing.assert_close(memory.centroids.norm(dim=1), torch.ones(K))


def test_class_weights_formula(memory: ODCMemory) -> None:
    weights = memory.class_weights()
    counts = torch.tensor([(memory.labels == c).sum().item() for c in range(K)], dtype=torch.float)
    expected = (counts + 1e-5) ** -0.5
    torch.testing.assert_close(weights, expected / expected.sum())
    torch.testing.assert_close(weights.sum(), torch.tensor(1.0))
    # Smaller clusters get larger weights.
    assert int(weights.argmax()) == int(counts.argmin())


def test_update_formula_and_labels(memory: ODCMemory) -> None:
    memory.refresh_interval = 1000  # no refresh in this test
    idx = torch.tensor([5, 17, 3, 599, 0])
    new = torch.randn(5, D, generator=torch.Generator().manual_seed(3)) * 4  # not normalised
    old_features = memory.features.clone()
    old_labels = memory.labels.clone()
    centroids = memory.centroids.clone()

    labels = memory.update(idx, new)

    m = memory.momentum
    expected = F.normalize((1 - m) * old_features[idx] + m * F.normalize(new, dim=1), dim=1)
    torch.testing.assert_close(memory.features[idx], expected)
    assert torch.equal(labels, (expected @ centroids.T).argmax(1))
    assert torch.equal(memory.labels[idx], labels)
    assert torch.equal(memory.labels_of(idx), labels)
    rest = torch.ones(N, dtype=torch.bool)
    rest[idx] = False
    assert torch.equal(memory.features[rest], old_features[rest])
    assert torch.equal(memory.labels[rest], old_labels[rest])
    assert torch.equal(memory.centroids, centroids)
    assert int(memory.step) == 1


def test_momentum_one_replaces_the_memory() -> None:
    memory = _memory(momentum=1.0)
    memory.initialize(_unit(N, D))
    new = torch.randn(4, D)
    memory.update(torch.arange(4), new)
    torch.testing.assert_close(memory.features[:4], F.normalize(new, dim=1))


def test_duplicate_indices_use_the_last_occurrence(memory: ODCMemory) -> None:
    old = memory.features[7].clone()
    first, last = torch.randn(D), torch.randn(D)
    labels = memory.update(torch.tensor([7, 8, 7]), torch.stack([first, torch.randn(D), last]))
    m = memory.momentum
    expected = F.normalize((1 - m) * old + m * F.normalize(last, dim=0), dim=0)
    torch.testing.assert_close(memory.features[7], expected)
    assert int(labels[0]) == int(labels[2]) == int(memory.labels[7])


def test_refresh_every_interval(memory: ODCMemory) -> None:
    centroids = memory.centroids.clone()
    _run_steps(memory, memory.refresh_interval - 1)
    assert torch.equal(memory.centroids, centroids)  # not refreshed yet
    _run_steps(memory, 1, seed=2)
    assert int(memory.step) == memory.refresh_interval
    assert not torch.equal(memory.centroids, centroids)
    # After a refresh: centroids are the normalised per-label means, every cluster is big enough.
    torch.testing.assert_close(memory.centroids, _per_label_means(memory))
    assert int(memory.cluster_sizes().min()) >= MIN


def test_labels_are_nearest_refreshed_centroid(memory: ODCMemory) -> None:
    _run_steps(memory, memory.refresh_interval)  # ends with a refresh
    centroids = memory.centroids.clone()
    idx = torch.arange(0, N, 7)
    labels = memory.update(idx, torch.randn(idx.numel(), D))
    assert torch.equal(labels, (memory.features[idx] @ centroids.T).argmax(1))
    assert torch.equal(labels, assign(memory.features[idx], centroids))


def test_invariants_over_many_steps(memory: ODCMemory) -> None:
    for block in range(4):
        _run_steps(memory, memory.refresh_interval, batch=64, seed=10 + block)
        assert int(memory.cluster_sizes().min()) >= MIN
        torch.testing.assert_close(memory.centroids, _per_label_means(memory))
        torch.testing.assert_close(memory.features.norm(dim=1), torch.ones(N))
        torch.testing.assert_close(memory.class_weights().sum(), torch.tensor(1.0))


def _fake_kmeans(labels: torch.Tensor) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """Stands in for ``kmeans``: returns the given labels and their normalised mean centroids."""

    def fake(
        features: torch.Tensor, num_clusters: int, **_: object
    ) -> tuple[torch.Tensor, torch.Tensor]:
        sums = torch.zeros(num_clusters, features.shape[1]).index_add_(0, labels, features)
        return F.normalize(sums, dim=1), labels.clone()

    return fake


def test_small_cluster_is_dissolved_and_refilled_by_splitting_largest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Cluster 0: 400 members, clusters 1-7: 25 each, cluster 8: 5 (small), cluster 9: 20.
    sizes = [400, 25, 25, 25, 25, 25, 25, 25, 5, 20]
    labels = torch.arange(K).repeat_interleave(torch.tensor(sizes))
    labels = labels[torch.randperm(N, generator=torch.Generator().manual_seed(0))]
    monkeypatch.setattr(odc_module, "kmeans", _fake_kmeans(labels))
    memory = _memory()
    features = _unit(N, D)
    memory.initialize(features)

    sizes_after = memory.cluster_sizes()
    assert int(sizes_after.min()) >= MIN
    # The five members of cluster 8 went to their nearest centroid among the other clusters.
    was_small = labels == 8
    others = [c for c in range(K) if c != 8]
    kmeans_centroids = _fake_kmeans(labels)(features, K)[0]
    nearest = torch.tensor(others)[(features[was_small] @ kmeans_centroids[others].T).argmax(1)]
    moved_to_0 = nearest == 0
    assert torch.equal(memory.labels[was_small][~moved_to_0], nearest[~moved_to_0])
    # Cluster 8 now holds half of the (then) largest cluster 0, split at the median of the
    # projection on the top principal direction; clusters 1-7 keep all their members.
    pool = labels == 0
    pool[was_small.nonzero().flatten()[moved_to_0]] = True
    assert set(memory.labels[pool].tolist()) == {0, 8}
    assert int(sizes_after[0]) + int(sizes_after[8]) == int(pool.sum())
    assert abs(int(sizes_after[0]) - int(sizes_after[8])) <= 1
    x = features[pool]
    centred = x - x.mean(0)
    direction = torch.linalg.eigh(centred.T @ centred)[1][:, -1]
    proj = centred @ direction
    moved = memory.labels[pool] == 8
    lo, hi = proj[moved], proj[~moved]
    assert bool(lo.min() >= hi.max()) or bool(hi.min() >= lo.max())
    for c in range(1, 8):
        assert torch.equal(memory.labels[labels == c], torch.full((25,), c))
    torch.testing.assert_close(memory.centroids, _per_label_means(memory))


def test_tight_case_reaches_minimum_from_several_donors(monkeypatch: pytest.MonkeyPatch) -> None:
    # n == K * min exactly and the largest cluster has fewer than 2 * min members.
    sizes = [24, 22, 22, 22, 22, 22, 22, 22, 22, 0]
    labels = torch.arange(K).repeat_interleave(torch.tensor(sizes))
    monkeypatch.setattr(odc_module, "kmeans", _fake_kmeans(labels))
    memory = _memory(num_samples=200)
    memory.initialize(_unit(200, D))
    assert memory.cluster_sizes().tolist() == [20] * K


@settings(max_examples=20, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 80), min_size=K, max_size=K).filter(lambda s: sum(s) >= K * MIN),
    seed=st.integers(0, 2**16),
)
def test_refresh_always_reaches_minimum_size(sizes: list[int], seed: int) -> None:
    n = sum(sizes)
    memory = ODCMemory(n, D, num_classes=K, min_cluster_size=MIN)
    g = torch.Generator().manual_seed(seed)
    memory.features.copy_(F.normalize(torch.randn(n, D, generator=g), dim=1))
    memory.labels.copy_(torch.arange(K).repeat_interleave(torch.tensor(sizes)))
    memory.initialized.fill_(True)
    memory.refresh()
    assert int(memory.cluster_sizes().min()) >= MIN
    torch.testing.assert_close(memory.centroids, _per_label_means(memory))


def test_fewer_samples_than_k_times_minimum_keeps_every_cluster_nonempty(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    n = 100  # < K * MIN = 200
    labels = torch.arange(n) % (K - 2)  # clusters 8 and 9 empty, the others 12 or 13
    monkeypatch.setattr(odc_module, "kmeans", _fake_kmeans(labels))
    with pytest.warns(UserWarning, match="never empty"):
        memory = _memory(num_samples=n)
    assert memory.effective_min_size == 1
    memory.initialize(_unit(n, D))
    # Only the empty clusters 8 and 9 are refilled, by halving the largest clusters (0 and 1,
    # 13 members each); clusters below min_cluster_size but not empty are left alone.
    assert memory.cluster_sizes().tolist() == [7, 7, 13, 13, 12, 12, 12, 12, 6, 6]
    assert torch.equal(memory.labels[labels >= 2], labels[labels >= 2])
    assert set(memory.labels[labels == 0].tolist()) == {0, 8}
    assert set(memory.labels[labels == 1].tolist()) == {1, 9}
    _run_steps(memory, 3 * memory.refresh_interval, batch=16)
    assert int(memory.cluster_sizes().min()) >= 1


def test_state_dict_round_trip_resumes_exactly(memory: ODCMemory) -> None:
    _run_steps(memory, 13)
    state = memory.state_dict()
    assert set(state) == {"features", "labels", "centroids", "initialized", "step"}
    fresh = _memory()
    assert not bool(fresh.initialized)
    fresh.load_state_dict(state)
    for name in state:
        assert torch.equal(getattr(fresh, name), getattr(memory, name)), name
    # Both continue identically (the next refresh happens at step 20 in both).
    for a, b in zip(_run_steps(memory, 12, seed=5), _run_steps(fresh, 12, seed=5), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(fresh.centroids, memory.centroids)
    assert torch.equal(fresh.labels, memory.labels)
    assert int(fresh.step) == int(memory.step) == 25


def test_deterministic_for_a_fixed_seed() -> None:
    runs = []
    for _ in range(2):
        m = _memory(seed=3)
        m.initialize(_unit(N, D, seed=4))
        returned = _run_steps(m, 15)
        runs.append((m.state_dict(), returned))
    for name, value in runs[0][0].items():
        assert torch.equal(value, runs[1][0][name]), name
    for a, b in zip(runs[0][1], runs[1][1], strict=True):
        assert torch.equal(a, b)


def test_initialize_accepts_unnormalised_features() -> None:
    a, b = _memory(), _memory()
    x = _unit(N, D)
    a.initialize(x)
    b.initialize(x * 7.0)
    assert torch.equal(a.labels, b.labels)
    torch.testing.assert_close(a.features, b.features)


def test_errors(memory: ODCMemory) -> None:
    fresh = _memory()
    with pytest.raises(ValueError, match="initialize"):
        fresh.update(torch.arange(2), torch.randn(2, D))
    with pytest.raises(ValueError, match="initialize"):
        fresh.labels_of(torch.arange(2))
    with pytest.raises(ValueError, match="initialize"):
        fresh.class_weights()
    with pytest.raises(ValueError, match=r"shape \(600, 16\)"):
        fresh.initialize(torch.randn(N, D + 1))
    with pytest.raises(ValueError, match="finite"):
        fresh.initialize(torch.full((N, D), float("nan")))
    with pytest.raises(ValueError, match=r"shape \(3, 16\)"):
        memory.update(torch.arange(3), torch.randn(2, D))
    with pytest.raises(ValueError, match=r"shape \(3, 16\)"):
        memory.update(torch.arange(3), torch.randn(3, D + 1))
    with pytest.raises(ValueError, match=r"shape \(B,\)"):
        memory.update(torch.zeros(3, 1, dtype=torch.long), torch.randn(3, D))
    with pytest.raises(ValueError, match="integer"):
        memory.update(torch.zeros(3), torch.randn(3, D))
    with pytest.raises(ValueError, match=r"\[0, 600\)"):
        memory.update(torch.tensor([0, N]), torch.randn(2, D))
    with pytest.raises(ValueError, match=r"\[0, 600\)"):
        memory.labels_of(torch.tensor([-1]))
    with pytest.raises(ValueError, match="finite"):
        memory.update(torch.arange(2), torch.full((2, D), float("inf")))
    assert int(memory.step) == 0  # nothing was applied


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_classes": N + 1}, "must be <= num_samples"),
        ({"num_classes": 0}, "num_classes must be an int >= 1"),
        ({"momentum": 0.0}, "momentum"),
        ({"momentum": 1.5}, "momentum"),
        ({"min_cluster_size": 0}, "min_cluster_size"),
        ({"refresh_interval": 0}, "refresh_interval"),
        ({"kmeans_iters": 0}, "kmeans_iters"),
        ({"seed": -1}, "seed"),
    ],
)
def test_constructor_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _memory(**kwargs)


# ----------------------------------------------------------------------------------- DDP
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.distributed
def test_two_process_ddp_keeps_memories_identical(tmp_path: Path) -> None:
    port, world = _free_port(), 2
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(rank), str(world), str(port), str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(world)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-3000:]
    r0 = torch.load(tmp_path / "rank0.pt")
    r1 = torch.load(tmp_path / "rank1.pt")
    # initialize: rank 1 passed slightly different features; rank 0's state is everywhere.
    for name in ("features", "labels", "centroids"):
        assert torch.equal(r0["init"][name], r1["init"][name]), name
    assert int(r0["init"]["labels"].bincount(minlength=8).min()) >= 20
    # After steps with different indices and features per rank: identical state.
    for name in ("features", "labels", "centroids", "step"):
        assert torch.equal(r0["final"][name], r1["final"][name]), name
    assert int(r0["final"]["step"]) == len(r0["batches"])
    for r in (r0, r1):
        assert "same batch size on every rank, got [3, 4]" in r["unequal_batch_error"]
        assert r["step_after_error"] == len(r0["batches"])

    # A single process fed with the concatenated batches (rank 0 first) reaches the same state,
    # and each rank got back the labels of its own indices.
    reference = ODCMemory(**r0["kwargs"])
    reference.load_state_dict(r0["init"])
    for (i0, f0, l0), (i1, f1, l1) in zip(r0["batches"], r1["batches"], strict=True):
        assert not torch.equal(i0, i1)
        labels = reference.update(torch.cat([i0, i1]), torch.cat([f0, f1]))
        assert torch.equal(labels, torch.cat([l0, l1]))
    torch.testing.assert_close(reference.features, r0["final"]["features"])
    torch.testing.assert_close(reference.centroids, r0["final"]["centroids"])
    assert torch.equal(reference.labels, r0["final"]["labels"])


@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param(
            "cuda",
            marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
        ),
    ],
)
def test_refresh_with_splits_runs_in_fp32_under_bf16_autocast(device: str) -> None:
    # CUDA autocast runs matmuls in bf16 and has no bf16 eigh (CPU autocast keeps linalg in
    # fp32), so the CUDA case is the one that failed before refresh() disabled autocast.
    g = torch.Generator().manual_seed(0)
    features = torch.nn.functional.normalize(torch.randn(120, 8, generator=g), dim=1)
    memory = ODCMemory(120, 8, num_classes=3, min_cluster_size=10, refresh_interval=1)
    memory.initialize(features)
    memory = memory.to(device)
    memory.labels.zero_()  # clusters 1 and 2 empty: the refresh must split cluster 0
    memory.labels[:2] = 1
    with torch.autocast(device, dtype=torch.bfloat16):
        refilled = memory.refresh()
    assert refilled >= 1
    assert int(memory.cluster_sizes().min()) >= 10
    assert memory.centroids.dtype == torch.float32
