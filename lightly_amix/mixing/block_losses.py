"""The Mix Block's classification losses ``L_φ^cls`` by name (paper §3.3, Tables 1 and 7).

``mixing.block_loss`` names the terms joined by ``+`` (AMix-I: ``infonce+bce``; AMix-C:
``ce_pl+bce``). Each term is a function of one :class:`BlockLossInputs`, looked up in
:data:`BLOCK_LOSSES`, so a new term is one entry here and no branch in the method.

- ``bce``: eq. 6, a 2-way cross-entropy over the two positives only (local).
- ``infonce``: eq. 4 against the queue (global).
- ``infonce_pl``: eq. 4 without the queue entries of the same pseudo-class as ``i`` or ``j``.
- ``ce_pl``: mixup cross-entropy of the (frozen) cluster head against the pseudo-labels.
- ``pbce``: the same restricted to the two classes ``y_i, y_j``.

Examples:
    >>> inputs = BlockLossInputs(q, k_i, k_j, negatives, lam, temperature=0.2)
    >>> loss = sum(BLOCK_LOSSES[name](inputs) for name in ("infonce", "bce"))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from lightly_amix.losses import mixup_bce, mixup_cross_entropy, mixup_info_nce, mixup_pbce


@dataclass
class BlockLossInputs:
    """What one step gives the Mix Block's loss terms.

    Attributes:
        query: The Mix Block's mixed samples through the frozen momentum encoder, (N, D),
            L2-normalised; the only tensor with a gradient (to the Mix Block).
        key_i: Positive keys of the samples, (N, D).
        key_j: Positive keys of their partners, (N, D).
        negatives: The queue before this step, (K, D).
        lam: Share of sample ``i`` in each mix, (N,).
        temperature: Softmax temperature.
        labels: Pseudo-labels ``(y_i, y_j)``, each (N,), for the ``_pl`` / ``pbce`` terms.
        logits: The frozen cluster head's logits of ``query``, (N, C).
        class_weights: CE class weights, (C,).
        same_class_negatives: (N, K) mask of the queue entries with the pseudo-label of ``i``
            or ``j``.
    """

    query: Tensor
    key_i: Tensor
    key_j: Tensor
    negatives: Tensor
    lam: Tensor
    temperature: float
    labels: tuple[Tensor, Tensor] | None = None
    logits: Tensor | None = None
    class_weights: Tensor | None = None
    same_class_negatives: Tensor | None = None

    def require_pseudo_labels(self, term: str) -> tuple[Tensor, Tensor, Tensor]:
        """``(y_i, y_j, logits)``; a clear error when the clustering did not provide them."""
        if self.labels is None or self.logits is None:
            raise ValueError(
                f"Mix Block loss term {term!r} needs pseudo-labels from the ODC clustering "
                "(method amix-c), but none were given."
            )
        return self.labels[0], self.labels[1], self.logits


BlockLoss = Callable[[BlockLossInputs], Tensor]


def _bce(x: BlockLossInputs) -> Tensor:
    return mixup_bce(x.query, x.key_i, x.key_j, x.lam, x.temperature)


def _infonce(x: BlockLossInputs) -> Tensor:
    return mixup_info_nce(x.query, x.key_i, x.key_j, x.negatives, x.lam, x.temperature)


def _infonce_pl(x: BlockLossInputs) -> Tensor:
    x.require_pseudo_labels("infonce_pl")
    return mixup_info_nce(
        x.query, x.key_i, x.key_j, x.negatives, x.lam, x.temperature,
        negative_mask=x.same_class_negatives,
    )  # fmt: skip


def _ce_pl(x: BlockLossInputs) -> Tensor:
    y_i, y_j, logits = x.require_pseudo_labels("ce_pl")
    return mixup_cross_entropy(logits, y_i, y_j, x.lam, x.class_weights)


def _pbce(x: BlockLossInputs) -> Tensor:
    y_i, y_j, logits = x.require_pseudo_labels("pbce")
    return mixup_pbce(logits, y_i, y_j, x.lam)


BLOCK_LOSSES: dict[str, BlockLoss] = {
    "bce": _bce,
    "infonce": _infonce,
    "infonce_pl": _infonce_pl,
    "ce_pl": _ce_pl,
    "pbce": _pbce,
}
# Terms that need the clustering's pseudo-labels.
PSEUDO_LABEL_TERMS: frozenset[str] = frozenset({"infonce_pl", "ce_pl", "pbce"})
