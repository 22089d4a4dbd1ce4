import pytest
import torch
import torch.nn.functional as F
from lightly.loss import NTXentLoss

from lightly_amix.losses import contrastive_accuracy, info_nce, info_nce_logits


def _unit(*shape: int) -> torch.Tensor:
    return F.normalize(torch.randn(*shape), dim=-1)


def test_info_nce_matches_direct_formula() -> None:
    torch.manual_seed(0)
    q, k, queue, t = _unit(6, 16), _unit(6, 16), _unit(32, 16), 0.2
    expected = []
    for i in range(6):
        pos = torch.exp(q[i] @ k[i] / t)
        neg = torch.exp(q[i] @ queue.T / t).sum()
        expected.append(-torch.log(pos / (pos + neg)))
    assert torch.allclose(info_nce(q, k, queue, t), torch.stack(expected).mean(), atol=1e-5)


def test_info_nce_matches_lightly_ntxent_with_memory_bank() -> None:
    torch.manual_seed(1)
    q, k = _unit(8, 16).requires_grad_(), _unit(8, 16)
    lightly_loss = NTXentLoss(temperature=0.2, memory_bank_size=(64, 16))
    queue = lightly_loss.memory_bank.bank.clone()  # (64, 16), before the enqueue
    expected = lightly_loss(q, k)
    assert torch.allclose(info_nce(q, k, queue, 0.2), expected, atol=1e-5)


def test_logits_layout_and_accuracy() -> None:
    q = torch.eye(4)
    logits = info_nce_logits(q, q, -torch.eye(4), temperature=0.5)  # (4, 5)
    assert logits.shape == (4, 5)
    assert torch.allclose(logits[:, 0], torch.full((4,), 2.0))
    assert contrastive_accuracy(logits) == 1.0
    assert contrastive_accuracy(-logits) == 0.0


@pytest.mark.parametrize(
    ("q", "k", "queue", "t", "match"),
    [
        ((4, 8), (3, 8), (5, 8), 0.2, "same shape"),
        ((4, 8), (4, 8), (5, 7), 0.2, "negatives must have shape"),
        ((4, 8), (4, 8), (5, 8), 0.0, "temperature"),
    ],
)
def test_bad_arguments(q: tuple, k: tuple, queue: tuple, t: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        info_nce(torch.randn(*q), torch.randn(*k), torch.randn(*queue), t)
