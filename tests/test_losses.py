import pytest
import torch
import torch.nn.functional as F
from lightly.loss import NTXentLoss

from lightly_amix.losses import (
    contrastive_accuracy,
    info_nce,
    info_nce_logits,
    mixup_bce,
    mixup_cross_entropy,
    mixup_info_nce,
    mixup_pbce,
)


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


def _mix_inputs(n: int = 5, d: int = 8, k: int = 12, seed: int = 0):  # type: ignore[no-untyped-def]
    torch.manual_seed(seed)
    return _unit(n, d), _unit(n, d), _unit(n, d), _unit(k, d), torch.rand(n)


def test_mixup_info_nce_matches_direct_formula() -> None:
    q, k_i, k_j, queue, lam = _mix_inputs()
    t = 0.2
    expected = []
    for n in range(5):
        neg = torch.exp(q[n] @ queue.T / t).sum()
        p_i = torch.exp(q[n] @ k_i[n] / t) / (torch.exp(q[n] @ k_i[n] / t) + neg)
        p_j = torch.exp(q[n] @ k_j[n] / t) / (torch.exp(q[n] @ k_j[n] / t) + neg)
        expected.append(-lam[n] * torch.log(p_i) - (1 - lam[n]) * torch.log(p_j))
    got = mixup_info_nce(q, k_i, k_j, queue, lam, t)
    assert torch.allclose(got, torch.stack(expected).mean(), atol=1e-5)
    # λ = 1 is MoCo's InfoNCE.
    assert torch.allclose(
        mixup_info_nce(q, k_i, k_j, queue, torch.ones(5), t), info_nce(q, k_i, queue, t), atol=1e-5
    )


def test_mixup_info_nce_negative_mask_drops_queue_entries() -> None:
    q, k_i, k_j, queue, lam = _mix_inputs(n=1)
    keep = torch.tensor([True, False] * 6)
    mask = (~keep).view(1, -1)
    masked = mixup_info_nce(q, k_i, k_j, queue, lam, 0.3, negative_mask=mask)
    assert torch.allclose(masked, mixup_info_nce(q, k_i, k_j, queue[keep], lam, 0.3), atol=1e-5)


def test_mixup_bce_matches_direct_formula() -> None:
    q, k_i, k_j, _, lam = _mix_inputs()
    s_i, s_j = (q * k_i).sum(1), (q * k_j).sum(1)
    sig = torch.sigmoid((s_i - s_j) / 0.2)
    expected = (-(lam * torch.log(sig) + (1 - lam) * torch.log(1 - sig))).mean()
    assert torch.allclose(mixup_bce(q, k_i, k_j, lam, 0.2), expected, atol=1e-5)


def test_mixup_cross_entropy_and_pbce() -> None:
    torch.manual_seed(3)
    logits = torch.randn(6, 4)
    y_i, y_j = torch.tensor([0, 1, 2, 3, 0, 1]), torch.tensor([1, 1, 0, 2, 3, 3])
    lam = torch.rand(6)
    log_p = torch.log_softmax(logits, 1)
    expected = torch.stack(
        [-(lam[n] * log_p[n, y_i[n]] + (1 - lam[n]) * log_p[n, y_j[n]]) for n in range(6)]
    ).mean()
    assert torch.allclose(mixup_cross_entropy(logits, y_i, y_j, lam), expected, atol=1e-6)
    weight = torch.tensor([0.1, 0.2, 0.3, 0.4])
    assert torch.allclose(
        mixup_cross_entropy(logits, y_i, y_j, torch.ones(6), weight),
        F.cross_entropy(logits, y_i, weight=weight),
        atol=1e-6,
    )
    two = torch.stack([logits[torch.arange(6), y_i], logits[torch.arange(6), y_j]], 1)
    lp2 = torch.log_softmax(two, 1)
    pbce = (-(lam * lp2[:, 0] + (1 - lam) * lp2[:, 1])).mean()
    assert torch.allclose(mixup_pbce(logits, y_i, y_j, lam), pbce, atol=1e-6)


def test_weighted_mixup_cross_entropy_matches_direct_formula_for_any_lambda() -> None:
    # Small weights: the normaliser (about 0.15) is far from the clamp's floor.
    torch.manual_seed(4)
    logits = torch.randn(6, 4)
    y_i, y_j = torch.tensor([0, 1, 2, 3, 0, 1]), torch.tensor([1, 1, 0, 2, 3, 3])
    lam = torch.rand(6)
    weight = torch.tensor([0.01, 0.02, 0.03, 0.04])
    log_p = torch.log_softmax(logits, 1)
    num = sum(lam[n] * weight[y_i[n]] * -log_p[n, y_i[n]]
              + (1 - lam[n]) * weight[y_j[n]] * -log_p[n, y_j[n]] for n in range(6))  # fmt: skip
    den = sum(lam[n] * weight[y_i[n]] + (1 - lam[n]) * weight[y_j[n]] for n in range(6))
    got = mixup_cross_entropy(logits, y_i, y_j, lam, weight)
    assert torch.allclose(got, num / den, atol=1e-6)


def test_accuracy_is_per_row() -> None:
    # Row 0 ranks its positive first, row 1 does not; the largest logit overall is row 0's.
    logits = torch.tensor([[5.0, 0.0], [0.0, 1.0]])
    assert contrastive_accuracy(logits) == 0.5


def test_logits_take_the_query_dtype() -> None:
    q = F.normalize(torch.randn(3, 8), dim=1)
    queue = F.normalize(torch.randn(5, 8), dim=1)
    logits = info_nce_logits(q, q, queue.bfloat16(), temperature=0.2)
    assert logits.dtype == torch.float32
    expected = torch.cat([(q * q).sum(1, keepdim=True), q @ queue.bfloat16().float().T], 1) / 0.2
    assert torch.allclose(logits, expected, atol=1e-5)


def test_mixup_loss_shape_errors() -> None:
    q, k_i, k_j, queue, lam = _mix_inputs()
    with pytest.raises(ValueError, match=r"key_i and key_j must have the same shape \(N, D\)"):
        mixup_bce(q, k_i[:3], k_j, lam, 0.2)
    with pytest.raises(ValueError, match=r"lam must have shape \(5,\), got \(2,\)"):
        mixup_info_nce(q, k_i, k_j, queue, lam[:2], 0.2)
    with pytest.raises(ValueError, match="logits must be"):
        mixup_cross_entropy(torch.randn(3, 4), torch.zeros(2, dtype=torch.long),
                            torch.zeros(2, dtype=torch.long), torch.rand(3))  # fmt: skip
