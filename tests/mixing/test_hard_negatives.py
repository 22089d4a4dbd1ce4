"""MoCHi's synthetic negatives, re-computed directly from the same random draws."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lightly_amix.mixing.hard_negatives import mochi_negatives

N, K, D = 4, 20, 8


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return (F.normalize(torch.randn(N, D, generator=g), dim=1),
            F.normalize(torch.randn(K, D, generator=g), dim=1))  # fmt: skip


def test_mixes_of_the_hardest_negatives_and_of_the_query() -> None:
    q, queue = _data()
    num_hard, s, s2 = 5, 6, 3
    got = mochi_negatives(q, queue, num_hard, s, s2, generator=torch.Generator().manual_seed(1))
    assert got.shape == (N, s + s2, D) and not got.requires_grad
    assert torch.allclose(got.norm(dim=2), torch.ones(N, s + s2), atol=1e-5)
    # The same draws, in the same order: pairs i, j and α, then j' and β.
    g = torch.Generator().manual_seed(1)
    i, j = (
        torch.randint(num_hard, (N, s), generator=g),
        torch.randint(num_hard, (N, s), generator=g),
    )
    alpha = torch.rand(N, s, 1, generator=g)
    j2 = torch.randint(num_hard, (N, s2), generator=g)
    beta = torch.rand(N, s2, 1, generator=g) * 0.5
    for n in range(N):
        hardest = (q[n] @ queue.T).argsort(descending=True)[:num_hard]  # Q̃ of query n
        hard = queue[hardest]
        for m in range(s):
            expected = F.normalize(
                alpha[n, m] * hard[i[n, m]] + (1 - alpha[n, m]) * hard[j[n, m]], dim=0
            )
            assert torch.allclose(got[n, m], expected, atol=1e-5)
        for m in range(s2):
            expected = F.normalize(beta[n, m] * q[n] + (1 - beta[n, m]) * hard[j2[n, m]], dim=0)
            assert torch.allclose(got[n, s + m], expected, atol=1e-5)
    assert float(beta.max()) < 0.5  # the query never dominates its mixes


def test_bad_counts_are_refused_and_zero_counts_give_nothing() -> None:
    q, queue = _data()
    with pytest.raises(ValueError, match="num_hard must be in 1..20"):
        mochi_negatives(q, queue, 21, 1, 1)
    with pytest.raises(ValueError, match="must be >= 0"):
        mochi_negatives(q, queue, 4, -1, 1)
    assert mochi_negatives(q, queue, 4, 0, 0).shape == (N, 0, D)
