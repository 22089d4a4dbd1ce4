"""Hard negatives synthesised in the embedding space (MoCHi, Kalantidis et al., NeurIPS 2020).

For each query ``q`` (paper §4, "Hard negative mixing"), with ``Q̃`` its ``N`` hardest negatives
(the queue entries most similar to ``q``):

- ``s`` mixes of two hard negatives: ``h_k = normalise(α_k n_i + (1 − α_k) n_j)``, ``n_i, n_j``
  drawn from ``Q̃`` and ``α_k ~ U(0, 1)`` (eq. 3);
- ``s'`` harder ones that mix in the query itself: ``h'_k = normalise(β_k q + (1 − β_k) n_j)``,
  ``n_j`` from ``Q̃`` and ``β_k ~ U(0, 0.5)``, so the query never dominates (eq. 4).

They are computed without gradient and only for the query they were made for; the query's
logits are then ``[q·k+ ; q·Q ; q·H] / t``.

Examples:
    >>> synthetic = mochi_negatives(q, queue, num_hard=1024, num_mix=1024, num_query_mix=128)
    >>> synthetic.shape  # (N, s + s', D)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


@torch.no_grad()
def mochi_negatives(
    query: Tensor,
    queue: Tensor,
    num_hard: int,
    num_mix: int,
    num_query_mix: int,
    generator: torch.Generator | None = None,
) -> Tensor:
    """MoCHi's synthetic hard negatives of every query.

    Args:
        query: L2-normalised queries (N, D).
        queue: L2-normalised negatives (K, D).
        num_hard: ``N``, the hardest negatives each query mixes from (at most K).
        num_mix: ``s``, mixes of two hard negatives per query.
        num_query_mix: ``s'``, mixes of the query with a hard negative per query.
        generator: CPU generator for the random draws (``None``: the global one).

    Returns:
        Synthetic negatives (N, s + s', D), L2-normalised, without gradient.

    Raises:
        ValueError: If ``num_hard`` is not in 1..K or a count is negative.
    """
    n, d = query.shape
    k = queue.shape[0]
    if not 1 <= num_hard <= k:
        raise ValueError(f"num_hard must be in 1..{k} (the queue size), got {num_hard}.")
    if num_mix < 0 or num_query_mix < 0:
        raise ValueError(f"num_mix and num_query_mix must be >= 0, got {num_mix}, {num_query_mix}.")
    q = query.float()
    sims = q @ queue.float().T  # (N, K)
    hard = queue.float()[sims.topk(num_hard, dim=1).indices]  # (N, num_hard, D)

    def draw(*shape: int, high: float = 1.0, integers: int = 0) -> Tensor:
        if integers:
            return torch.randint(integers, shape, generator=generator).to(query.device)
        return (torch.rand(shape, generator=generator) * high).to(query.device)

    rows = torch.arange(n, device=query.device).view(-1, 1)  # (N, 1)
    parts = []
    if num_mix:
        i, j = draw(n, num_mix, integers=num_hard), draw(n, num_mix, integers=num_hard)
        alpha = draw(n, num_mix, 1)  # (N, s, 1), U(0, 1)
        mixed = alpha * hard[rows, i] + (1 - alpha) * hard[rows, j]  # (N, s, D)
        parts.append(F.normalize(mixed, dim=2))
    if num_query_mix:
        j = draw(n, num_query_mix, integers=num_hard)
        beta = draw(n, num_query_mix, 1, high=0.5)  # (N, s', 1), U(0, 0.5)
        mixed = beta * q[:, None, :] + (1 - beta) * hard[rows, j]  # (N, s', D)
        parts.append(F.normalize(mixed, dim=2))
    if not parts:
        return query.new_zeros(n, 0, d)
    return torch.cat(parts, dim=1).to(query.dtype)  # (N, s + s', D)
