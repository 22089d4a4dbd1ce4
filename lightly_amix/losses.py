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


def _pair_check(query: Tensor, key_i: Tensor, key_j: Tensor, lam: Tensor) -> None:
    if not (query.shape == key_i.shape == key_j.shape) or query.dim() != 2:
        raise ValueError(
            "query, key_i and key_j must have the same shape (N, D), got "
            f"{tuple(query.shape)}, {tuple(key_i.shape)} and {tuple(key_j.shape)}."
        )
    if lam.shape != (query.shape[0],):
        raise ValueError(f"lam must have shape ({query.shape[0]},), got {tuple(lam.shape)}.")


def mixup_info_nce(
    query: Tensor,
    key_i: Tensor,
    key_j: Tensor,
    negatives: Tensor,
    lam: Tensor,
    temperature: float,
    negative_mask: Tensor | None = None,
) -> Tensor:
    """Mixup InfoNCE (AMix eq. 4) for mixed queries whose sources are ``i`` and ``j``.

    ``L = mean_n [ −λ_n log softmax_+(q·k_i) − (1 − λ_n) log softmax_+(q·k_j) ]``, each softmax
    over ``[q·k_pos ; q·Q] / t``: the positive against the queue's negatives. With λ = 1 it is
    MoCo's InfoNCE.

    Args:
        query: L2-normalised mixed queries (N, D).
        key_i: Keys of the first sources (N, D).
        key_j: Keys of the partners (N, D).
        negatives: Queue (K, D).
        lam: Share of source ``i`` per sample (N,).
        temperature: Softmax temperature.
        negative_mask: Optional bool (N, K): True drops that negative for that query
            (``infonce_pl``: queue entries with the pseudo-label of ``i`` or ``j``).

    Returns:
        Scalar loss (fp32).

    Examples:
        >>> loss = mixup_info_nce(q_mix, k, k[perm], queue, lam, temperature=0.2)
    """
    _pair_check(query, key_i, key_j, lam)
    q = query.float()
    neg = (q @ negatives.float().T) / temperature  # (N, K)
    if negative_mask is not None:
        neg = neg.masked_fill(negative_mask, float("-inf"))
    pos_i = torch.einsum("nd,nd->n", q, key_i.float()) / temperature  # (N,)
    pos_j = torch.einsum("nd,nd->n", q, key_j.float()) / temperature  # (N,)
    neg_lse = torch.logsumexp(neg, dim=1)  # (N,)
    log_p_i = pos_i - torch.logaddexp(pos_i, neg_lse)  # log softmax_+ of the i positive
    log_p_j = pos_j - torch.logaddexp(pos_j, neg_lse)
    lam = lam.float()
    return -(lam * log_p_i + (1 - lam) * log_p_j).mean()


def mixup_bce(
    query: Tensor, key_i: Tensor, key_j: Tensor, lam: Tensor, temperature: float
) -> Tensor:
    """The local 2-way loss of AMix eq. 6 over the two positives only (no queue).

    ``L = mean_n [ −λ log σ((s_i − s_j)/t) − (1 − λ) log σ((s_j − s_i)/t) ]`` with
    ``s_i = q·k_i``, ``s_j = q·k_j``.

    Examples:
        >>> loss = mixup_bce(q_mix, k, k[perm], lam, temperature=0.2)
    """
    _pair_check(query, key_i, key_j, lam)
    q = query.float()
    diff = torch.einsum("nd,nd->n", q, key_i.float()) - torch.einsum("nd,nd->n", q, key_j.float())
    diff = diff / temperature  # (N,)
    lam = lam.float()
    return -(lam * F.logsigmoid(diff) + (1 - lam) * F.logsigmoid(-diff)).mean()


def mixup_cross_entropy(
    logits: Tensor, y_i: Tensor, y_j: Tensor, lam: Tensor, weight: Tensor | None = None
) -> Tensor:
    """``λ CE(logits, y_i) + (1 − λ) CE(logits, y_j)`` per sample, averaged (CE (PL)).

    With class weights ``w`` each term is weighted by ``w[y]`` and the sum is normalised by the
    summed weights, so that λ = 1 gives ``F.cross_entropy(logits, y_i, weight=w)``.
    """
    if logits.dim() != 2 or y_i.shape != (logits.shape[0],) or y_j.shape != y_i.shape:
        raise ValueError(
            f"logits must be (N, K) and labels (N,), got {tuple(logits.shape)}, "
            f"{tuple(y_i.shape)} and {tuple(y_j.shape)}."
        )
    log_p = F.log_softmax(logits.float(), dim=1)  # (N, K)
    nll_i = -log_p.gather(1, y_i.view(-1, 1)).squeeze(1)  # (N,)
    nll_j = -log_p.gather(1, y_j.view(-1, 1)).squeeze(1)
    lam = lam.float()
    if weight is None:
        return (lam * nll_i + (1 - lam) * nll_j).mean()
    w_i, w_j = weight[y_i].float(), weight[y_j].float()
    num = (lam * w_i * nll_i + (1 - lam) * w_j * nll_j).sum()
    return num / (lam * w_i + (1 - lam) * w_j).sum().clamp(min=1e-12)


def mixup_pbce(logits: Tensor, y_i: Tensor, y_j: Tensor, lam: Tensor) -> Tensor:
    """Mixup cross-entropy restricted to the two classes ``y_i, y_j`` (pBCE).

    A 2-way softmax over ``[logit_{y_i}, logit_{y_j}]`` against the target ``[λ, 1 − λ]``.
    When ``y_i == y_j`` the term is constant (log 2) and has no gradient.
    """
    two = torch.stack([logits.gather(1, y_i.view(-1, 1)), logits.gather(1, y_j.view(-1, 1))], 1)
    log_p = F.log_softmax(two.squeeze(2).float(), dim=1)  # (N, 2)
    lam = lam.float()
    return -(lam * log_p[:, 0] + (1 - lam) * log_p[:, 1]).mean()
