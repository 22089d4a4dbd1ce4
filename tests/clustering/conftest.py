"""Shared fixtures and helpers of the clustering tests."""

from __future__ import annotations

from collections.abc import Iterator

import faiss
import pytest
import torch
import torch.nn.functional as F


@pytest.fixture(autouse=True)
def _single_faiss_thread() -> Iterator[None]:
    """One faiss thread: faiss and torch bring separate OpenMP runtimes whose spinning threads
    slow small k-means calls down by ~0.5 s each on a 2-core machine."""
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(threads)


def unit(n: int, d: int, seed: int = 0) -> torch.Tensor:
    """``n`` random L2-normalised vectors of dimension ``d``."""
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g), dim=1)
