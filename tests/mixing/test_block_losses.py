"""The Mix Block's loss terms (``BLOCK_LOSSES``): each is its loss on the right inputs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lightly_amix.losses import mixup_bce, mixup_cross_entropy, mixup_info_nce, mixup_pbce
from lightly_amix.mixing.block_losses import BLOCK_LOSSES, PSEUDO_LABEL_TERMS, BlockLossInputs

N, D, K, C = 6, 8, 10, 4


def _inputs(with_labels: bool = True) -> BlockLossInputs:
    g = torch.Generator().manual_seed(0)
    unit = lambda *shape: F.normalize(torch.randn(*shape, generator=g), dim=-1)  # noqa: E731
    y_i, y_j = torch.randint(0, C, (N,), generator=g), torch.randint(0, C, (N,), generator=g)
    return BlockLossInputs(
        query=unit(N, D), key_i=unit(N, D), key_j=unit(N, D), negatives=unit(K, D),
        lam=torch.rand(N, generator=g), temperature=0.2,
        labels=(y_i, y_j) if with_labels else None,
        logits=torch.randn(N, C, generator=g) if with_labels else None,
        class_weights=torch.rand(C, generator=g) + 0.5,
        same_class_negatives=torch.rand(N, K, generator=g) < 0.3,
    )  # fmt: skip


def test_each_term_is_its_loss_on_the_inputs() -> None:
    x = _inputs()
    y_i, y_j = x.labels  # type: ignore[misc]
    expected = {
        "bce": mixup_bce(x.query, x.key_i, x.key_j, x.lam, x.temperature),
        "infonce": mixup_info_nce(x.query, x.key_i, x.key_j, x.negatives, x.lam, x.temperature),
        "infonce_pl": mixup_info_nce(x.query, x.key_i, x.key_j, x.negatives, x.lam,
                                     x.temperature, negative_mask=x.same_class_negatives),
        "ce_pl": mixup_cross_entropy(x.logits, y_i, y_j, x.lam, x.class_weights),  # type: ignore[arg-type]
        "pbce": mixup_pbce(x.logits, y_i, y_j, x.lam),  # type: ignore[arg-type]
    }  # fmt: skip
    assert set(BLOCK_LOSSES) == set(expected)
    for name, value in expected.items():
        assert torch.equal(BLOCK_LOSSES[name](x), value), name
    # The pseudo-label InfoNCE drops the same-class queue entries: it is not the plain one.
    assert not torch.allclose(expected["infonce_pl"], expected["infonce"])
    assert not torch.allclose(expected["bce"], expected["infonce"])


@pytest.mark.parametrize("term", sorted(PSEUDO_LABEL_TERMS))
@pytest.mark.parametrize("missing", ["labels", "logits"])
def test_pseudo_label_terms_say_they_need_the_clustering(term: str, missing: str) -> None:
    x = _inputs()
    setattr(x, missing, None)
    with pytest.raises(ValueError) as error:
        BLOCK_LOSSES[term](x)
    assert str(error.value) == (
        f"Mix Block loss term {term!r} needs pseudo-labels from the ODC clustering "
        "(method amix-c), but none were given."
    )


def test_terms_without_pseudo_labels_need_none() -> None:
    x = _inputs(with_labels=False)
    for term in set(BLOCK_LOSSES) - PSEUDO_LABEL_TERMS:
        assert torch.isfinite(BLOCK_LOSSES[term](x)), term
