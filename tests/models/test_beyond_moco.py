"""AMix beyond MoCo: SimCLR and BYOL, plain and with the learned mixup."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from lightly_amix.config import MixingConfig, ModelConfig, OptimConfig, PretrainConfig, validate
from lightly_amix.losses import mixup_info_nce
from lightly_amix.models import BYOL, AMix, AMixBYOL, AMixSimCLR, SimCLR
from lightly_amix.models.byol import weighted_negative_cosine
from lightly_amix.models.simclr import pair_mask
from lightly_amix.utils import frozen_network_mode
from tests.models.test_amix import BATCH, _moved, _optimised, _parameters, _two_view_batch, fit


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
    # Parameters only: BatchNorm's running statistics move at every train-mode forward.
    before = _parameters(model)
    trainer = fit(model, steps=2)
    assert trainer.global_step == 2
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    moved = _moved(model, before)
    assert any(name.startswith("backbone.") for name in moved)  # the backbone learned
    if cls in (AMixSimCLR, AMixBYOL):
        assert "train/mask_std" in trainer.callback_metrics
        # The Mix Block is optimised too: every parameter in the optimiser, and it learned.
        assert {id(p) for p in model.mix_block.parameters()} <= _optimised(trainer)
        assert "mix_block.content.fc2.weight" in moved


@pytest.mark.parametrize("cls", [AMix, AMixSimCLR, AMixBYOL])
def test_the_block_learns_through_the_frozen_network_in_its_bn_mode(cls: type) -> None:
    """``mixing.block_bn``: only the Mix Block's pass changes mode; running stats untouched."""
    x_q, x_k = _two_view_batch()
    batch = ([x_q, x_k], torch.zeros(BATCH), torch.arange(BATCH))
    modes: dict[str, list[bool]] = {}
    states: dict[str, dict[str, torch.Tensor]] = {}
    bce: dict[str, float] = {}
    for block_bn in ("running", "batch"):
        torch.manual_seed(0)
        model = cls(_cfg(momentum=0.99), OptimConfig(), BATCH, MixingConfig(block_bn=block_bn))
        seen: list[bool] = []
        model.backbone_momentum.resnet.bn1.register_forward_hook(
            lambda module, inputs, output, seen=seen: seen.append(module.training)
        )
        torch.manual_seed(1)
        _, terms, _ = model.compute_losses(batch)
        modes[block_bn], bce[block_bn] = seen, float(terms["loss_block_bce"].detach())
        states[block_bn] = copy.deepcopy(model.backbone_momentum.state_dict())
        assert model.backbone_momentum.training  # modes restored
    # One pass differs: the Mix Block's sample, eval mode vs batch statistics.
    differ = [i for i, (a, b) in enumerate(zip(modes["running"], modes["batch"], strict=True))
              if a != b]  # fmt: skip
    assert len(differ) == 1 and modes["batch"][differ[0]] and not modes["running"][differ[0]]
    # The mixed batch leaves no statistics behind in either mode ...
    for key, value in states["running"].items():
        assert torch.equal(value, states["batch"][key]), key
    # ... but the normalisation, and so the block's loss, differs.
    assert bce["running"] != pytest.approx(bce["batch"])


def test_an_unknown_block_bn_is_a_config_error() -> None:
    cfg = PretrainConfig(method="amix-i")
    cfg.mixing.block_bn = "eval"
    with pytest.raises(ValueError, match="mixing.block_bn"):
        validate(cfg)
    with pytest.raises(ValueError, match="block_bn must be one of"):
        with frozen_network_mode("eval", torch.nn.BatchNorm1d(2)):
            pass
