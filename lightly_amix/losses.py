"""Contrastive losses over tensors (pure functions, no state).

Lightly's ``NTXentLoss`` owns its memory bank and takes hard labels only, while AMix needs the
same queue snapshot for the MoCo loss and the mixup losses of one step. So the method owns one
``lightly.models.modules.MemoryBankModule`` and passes its snapshot to these functions. For hard
labels :func:`info_nce` equals ``NTXentLoss(memory_bank_size=...)`` (see the tests).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def info_nce_logits(
    query: Tensor, positive: Tensor, negatives: Tensor, temperature: float
) -> Tensor:
    """Returns MoCo logits ``[q·k+ ; q·Q] / t`` with the positive in column 0.

    Args:
        query: L2-normalised queries, shape (N, D).
        positive: L2-normalised positive keys, shape (N, D).
        negatives: L2-normalised queue entries, shape (K, D).
        temperature: Softmax temperature ``t > 0``.

    Returns:
        Logits of shape (N, 1 + K).
    """
    if query.shape != positive.shape:
        raise ValueError(
            f"query and positive must have the same shape, got {tuple(query.shape)} "
            f"and {tuple(positive.shape)}."
        )
    if negatives.dim() != 2 or negatives.shape[1] != query.shape[1]:
        raise ValueError(
            f"negatives must have shape (K, {query.shape[1]}), got {tuple(negatives.shape)}."
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    pos = torch.einsum("nd,nd->n", query, positive).unsqueeze(1)  # (N, 1)
    neg = query @ negatives.to(query.dtype).T  # (N, K)
    return torch.cat([pos, neg], dim=1) / temperature  # (N, 1 + K)


def info_nce(query: Tensor, positive: Tensor, negatives: Tensor, temperature: float) -> Tensor:
    """MoCo's InfoNCE loss: cross-entropy of the positive against the queue's negatives.

    ``L = -mean_i log( exp(q_i·k_i / t) / (exp(q_i·k_i / t) + Σ_j exp(q_i·Q_j / t)) )``
    (He et al., 2020, eq. 1).

    Args:
        query: L2-normalised queries, shape (N, D).
        positive: L2-normalised positive keys, shape (N, D).
        negatives: L2-normalised queue entries, shape (K, D).
        temperature: Softmax temperature.

    Returns:
        Scalar loss.

    Examples:
        >>> q = F.normalize(torch.randn(4, 8), dim=1)
        >>> k = F.normalize(torch.randn(4, 8), dim=1)
        >>> queue = F.normalize(torch.randn(16, 8), dim=1)
        >>> loss = info_nce(q, k, queue, temperature=0.2)
    """
    return info_nce_from_logits(info_nce_logits(query, positive, negatives, temperature))


def info_nce_from_logits(logits: Tensor) -> Tensor:
    """Cross-entropy with the positive in column 0 of ``logits`` (N, 1 + K), computed in fp32."""
    targets = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits.float(), targets)


def contrastive_accuracy(logits: Tensor) -> Tensor:
    """Share of rows whose positive (column 0) has the largest logit; an online health metric."""
    return (logits.argmax(dim=1) == 0).float().mean()
