"""AMix beyond MoCo: SimCLR and BYOL, plain and with the learned mixup."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lightly_amix.config import MixingConfig, ModelConfig, OptimConfig
from lightly_amix.losses import mixup_info_nce
from lightly_amix.models import BYOL, AMixBYOL, AMixSimCLR, SimCLR
from lightly_amix.models.byol import weighted_negative_cosine
from lightly_amix.models.simclr import pair_mask
from tests.models.test_amix import BATCH, _two_view_batch, fit


def _cfg(**extra: object) -> ModelConfig:
    return ModelConfig(queue_size=18, proj_hidden_dim=32, proj_output_dim=8, **extra)  # type: ignore[arg-type]


def _unit(*shape: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_in_batch_mixup_infonce_drops_both_sources_from_the_negatives() -> None:
    """AMix-SimCLR's mixup term: softmax of each positive against the other images' keys."""
    n, t = 6, 0.5
    q, keys = _unit(n, 8, seed=0), _unit(n, 8, seed=1)
    own, perm = torch.arange(n), torch.tensor([3, 2, 1, 0, 5, 4])
    lam = torch.linspace(0.1, 0.9, n)
    got = mixup_info_nce(q, keys[own], keys[perm], keys, lam, t, pair_mask(own, perm, n))
    expected = 0.0
    for a in range(n):
        others = [b for b in range(n) if b not in (a, int(perm[a]))]
        neg = [math.exp(float(q[a] @ keys[b]) / t) for b in others]
        for key, weight in ((keys[a], lam[a]), (keys[perm[a]], 1 - lam[a])):
            pos = math.exp(float(q[a] @ key) / t)
            expected -= float(weight) * math.log(pos / (pos + sum(neg)))
    assert float(got) == pytest.approx(expected / n, rel=1e-5)


def test_weighted_negative_cosine_is_the_un_mix_byol_target() -> None:
    p, t_i, t_j = torch.randn(5, 8), torch.randn(5, 8), torch.randn(5, 8)
    lam = torch.rand(5)
    expected = sum(
        -float(lam[n]) * float(F.cosine_similarity(p[n], t_i[n], dim=0))
        - (1 - float(lam[n])) * float(F.cosine_similarity(p[n], t_j[n], dim=0))
        for n in range(5)
    )
    assert float(weighted_negative_cosine(p, t_i, t_j, lam)) == pytest.approx(
        expected / 5, rel=1e-5
    )


def _grad_norms(loss: torch.Tensor, modules: dict[str, torch.nn.Module]) -> dict[str, float]:
    params = {name: [p for p in m.parameters() if p.requires_grad] for name, m in modules.items()}
    flat = [p for group in params.values() for p in group]
    grads = torch.autograd.grad(loss, flat, retain_graph=True, allow_unused=True)
    out, i = {}, 0
    for name, group in params.items():
        chunk = grads[i : i + len(group)]
        out[name] = sum(float(g.abs().sum()) for g in chunk if g is not None)
        i += len(group)
    return out


@pytest.mark.parametrize(
    ("cls", "block_terms"),
    [(AMixSimCLR, ("loss_block_infonce", "loss_block_bce")), (AMixBYOL, ("loss_block_bce",))],
)
def test_each_sub_task_moves_only_its_own_parameters(cls: type, block_terms: tuple) -> None:
    torch.manual_seed(0)
    model = cls(_cfg(momentum=0.99), OptimConfig(), BATCH, MixingConfig())
    x_q, x_k = _two_view_batch()
    loss, terms, _ = model.compute_losses(([x_q, x_k], torch.zeros(BATCH), torch.arange(BATCH)))
    assert torch.isfinite(loss)
    online = {"backbone": model.backbone, "head": model.projection_head,
              "mix_block": model.mix_block}  # fmt: skip
    block_loss = sum(terms[name] for name in block_terms) + terms["loss_mask"]
    block = _grad_norms(block_loss, online)
    assert block["mix_block"] > 0 and block["backbone"] == 0 and block["head"] == 0
    mix = _grad_norms(terms["loss_mix"], online)
    assert mix["backbone"] > 0 and mix["mix_block"] == 0


@pytest.mark.parametrize("cls", [SimCLR, AMixSimCLR, BYOL, AMixBYOL])
def test_the_method_trains(cls: type) -> None:
    torch.manual_seed(0)
    extra = {"mixing": MixingConfig()} if cls in (AMixSimCLR, AMixBYOL) else {}
    model = cls(_cfg(momentum=0.99), OptimConfig(), BATCH, **extra)
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    trainer = fit(model, steps=2)
    assert trainer.global_step == 2
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    moved = [k for k, v in model.backbone.state_dict().items() if not torch.equal(v, before[k])]
    assert moved  # the backbone learned
    if cls in (AMixSimCLR, AMixBYOL):
        assert "train/mask_std" in trainer.callback_metrics
