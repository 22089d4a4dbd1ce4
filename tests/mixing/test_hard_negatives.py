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


def test_the_query_never_dominates_its_mixes() -> None:
    """β < 1/2, read back from the module's output: each query mix lies in the plane of the
    query and one of its hard negatives, with a smaller share of the query."""
    q, queue = _data()
    num_hard, s2 = 5, 64
    torch.manual_seed(2)  # the module's own draws (global generator)
    got = mochi_negatives(q, queue, num_hard, 0, s2)  # (N, s', D)
    shares = []
    for n in range(N):
        hard = queue[(q[n] @ queue.T).topk(num_hard).indices]  # (num_hard, D)
        # For every hard negative h: the least-squares (a, b) with a q + b h ≈ mix, per mix.
        basis = torch.stack([q[n].expand(num_hard, D), hard], dim=2).double()  # (nh, D, 2)
        target = got[n].double().T.unsqueeze(0).expand(num_hard, D, s2)  # (nh, D, s')
        coef = torch.linalg.lstsq(basis, target).solution  # (nh, 2, s')
        residual = (basis @ coef - target).norm(dim=1)  # (nh, s')
        best = residual.argmin(dim=0)  # (s',) the negative each mix was made from
        assert bool((residual.min(dim=0).values < 1e-5).all())
        a, b = coef[best, 0, torch.arange(s2)], coef[best, 1, torch.arange(s2)]  # (s',)
        assert bool((a >= -1e-6).all() and (b > 0).all())
        shares.append(a / (a + b))  # β of each mix
    beta = torch.cat(shares)
    assert float(beta.max()) < 0.5  # the query never dominates
    assert float(beta.max()) > 0.3 and float(beta.min()) < 0.1  # β spans U(0, 1/2)


def test_bad_counts_are_refused_and_zero_counts_give_nothing() -> None:
    q, queue = _data()
    with pytest.raises(ValueError, match="num_hard must be in 1..20"):
        mochi_negatives(q, queue, 21, 1, 1)
    with pytest.raises(ValueError, match="must be >= 0"):
        mochi_negatives(q, queue, 4, -1, 1)
    assert mochi_negatives(q, queue, 4, 0, 0).shape == (N, 0, D)
