"""Supervised mixup classifiers: real CPU steps of every method, gradient isolation, schedules."""

from __future__ import annotations

import copy
import math
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
import torchvision
from torch.utils.data import Dataset

from lightly_amix.classifier_config import (
    CLASSIFIER_METHODS,
    ClassifierMixingConfig,
    ClassifierModelConfig,
    ClassifierOptimConfig,
    load_classifier_config,
)
from lightly_amix.data.datamodule import ClassifierDataModule
from lightly_amix.losses import mixup_cross_entropy
from lightly_amix.mixing.mix_block import MixBlockConfig
from lightly_amix.models.classifier import AutoMixClassifier, MixupClassifier, build_classifier

N, BATCH, SIZE, CLASSES = 24, 6, 32, 4


class Images(Dataset):
    """Random 32 px images with labels 0..3."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(N, 3, SIZE, SIZE, generator=g)
        self.y = torch.arange(N) % CLASSES
        self.labels = self.y.numpy()

    def __len__(self) -> int:
        return N

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.x[i], int(self.y[i])


def fit(model: pl.LightningModule, steps: int = 2, precision: str = "32-true") -> pl.Trainer:
    data = ClassifierDataModule(Images(), Images(), BATCH, 0, seed=0)
    trainer = pl.Trainer(
        max_steps=steps, accelerator="cpu", precision=precision,  # type: ignore[arg-type]
        logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=1,
        num_sanity_val_steps=0, reload_dataloaders_every_n_epochs=1,
        use_distributed_sampler=False,
    )  # fmt: skip
    trainer.fit(model, datamodule=data)
    return trainer


@pytest.mark.parametrize("method", CLASSIFIER_METHODS)
def test_every_method_trains_in_bf16_mixed(method: str) -> None:
    """Autocast's bf16 matmuls next to fp32 masks and images must not break a method."""
    torch.manual_seed(0)
    trainer = fit(build_classifier(method, CLASSES), steps=1, precision="bf16-mixed")
    assert trainer.global_step == 1 and torch.isfinite(trainer.callback_metrics["train/loss"])


@pytest.mark.parametrize("method", CLASSIFIER_METHODS)
def test_every_method_trains_and_validates(method: str) -> None:
    torch.manual_seed(0)
    model = build_classifier(method, CLASSES)
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    trainer = fit(model, steps=2)
    metrics = trainer.callback_metrics
    assert trainer.global_step == 2 and torch.isfinite(metrics["train/loss"])
    assert 0.0 <= float(trainer.validate(model, verbose=False, datamodule=trainer.datamodule)
                        [0]["val/top1"]) <= 100.0  # fmt: skip
    assert any(not torch.equal(before[k], v) for k, v in model.backbone.state_dict().items())
    if method in ("automix", "amix"):
        assert isinstance(model, AutoMixClassifier)
        for key in ("loss_clean", "loss_mix", "loss_block", "loss_mask", "mask_std"):
            assert torch.isfinite(metrics[f"train/{key}"]), key
        assert "val/top1_ema" in trainer.callback_metrics


def test_automix_uses_automix_block_and_amix_mix_block_plus() -> None:
    automix = build_classifier("automix", CLASSES)
    amix = build_classifier("amix", CLASSES, mix_block=MixBlockConfig())
    assert isinstance(automix, AutoMixClassifier) and isinstance(amix, AutoMixClassifier)
    assert automix.mix_block.config == MixBlockConfig.automix_tuned()
    assert amix.mix_block.config == MixBlockConfig()
    assert automix.mix_block.degenerate_margin == amix.mix_block.degenerate_margin == 0.08


def _grads(loss: torch.Tensor, params: list[torch.nn.Parameter]) -> list[torch.Tensor | None]:
    return list(torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True))


@pytest.mark.parametrize("method", ["automix", "amix"])
def test_the_mix_block_and_the_classifier_learn_from_their_own_losses(method: str) -> None:
    torch.manual_seed(0)
    model = AutoMixClassifier(CLASSES, method)
    data = Images()
    x, y = data.x[:BATCH], data.y[:BATCH]
    _, terms, _ = model.compute_losses(x, y)
    network = [*model.backbone.parameters(), *model.head.parameters()]
    block = list(model.mix_block.parameters())
    network_loss = terms["loss_clean"] + terms["loss_mix"]
    block_loss = terms["loss_block"] + terms["loss_mask"]
    # The Mix Block's loss does not reach the classifier, the classifier's not the Mix Block.
    assert all(g is None or not g.abs().any() for g in _grads(block_loss, network))
    assert all(g is None or not g.abs().any() for g in _grads(network_loss, block))
    assert any(g is not None and g.abs().any() for g in _grads(block_loss, block))
    assert any(g is not None and g.abs().any() for g in _grads(network_loss, network))
    assert not any(p.requires_grad for p in model.backbone_momentum.parameters())
    assert not any(p.requires_grad for p in model.head_momentum.parameters())


@pytest.mark.parametrize(("block_bn", "training"), [("batch", True), ("running", False)])
def test_the_block_learns_through_the_momentum_network_in_its_bn_mode(
    block_bn: str, training: bool
) -> None:
    """``batch``: AutoMix's train-mode BatchNorm, but the mixed batch leaves no statistics."""
    torch.manual_seed(0)
    model = AutoMixClassifier(CLASSES, "amix", mixing=ClassifierMixingConfig(block_bn=block_bn))
    data = Images()
    x, y = data.x[:BATCH], data.y[:BATCH]
    clean_only = copy.deepcopy(model.backbone_momentum)
    with torch.no_grad():  # what the clean forward alone does to the running statistics
        clean_only.forward_with_stage3(x)
    modes: list[bool] = []
    model.backbone_momentum.resnet.bn1.register_forward_hook(
        lambda module, inputs, output: modes.append(module.training)
    )
    model.compute_losses(x, y)
    assert modes == [True, training]  # the clean maps, then the Mix Block's sample
    for key, value in model.backbone_momentum.state_dict().items():
        assert torch.equal(value, clean_only.state_dict()[key]), key
    assert model.backbone_momentum.training


@pytest.mark.parametrize("block_lam", ["sample", "batch"])
def test_the_mix_blocks_lambda_is_drawn_per_sample_or_per_batch(block_lam: str) -> None:
    torch.manual_seed(0)
    model = AutoMixClassifier(CLASSES, "amix", mixing=ClassifierMixingConfig(block_lam=block_lam))
    data = Images()
    _, terms, (mask, lam2) = model.compute_losses(data.x[:BATCH], data.y[:BATCH])
    assert lam2.shape == (BATCH,) and ((lam2 > 0) & (lam2 < 1)).all()
    assert (lam2.unique().numel() == BATCH) == (block_lam == "sample")
    assert (lam2.unique().numel() == 1) == (block_lam == "batch")
    # The backbone's λ stays one per batch, as for the fixed mixups (mask adjusted to it).
    assert mask.shape == (BATCH, 1, SIZE, SIZE) and terms["lam"].ndim == 0


def test_an_unknown_block_mode_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="mixing.block_bn 'eval'"):
        AutoMixClassifier(CLASSES, "amix", mixing=ClassifierMixingConfig(block_bn="eval"))
    with pytest.raises(ValueError, match="mixing.block_lam 'pixel'"):
        AutoMixClassifier(CLASSES, "amix", mixing=ClassifierMixingConfig(block_lam="pixel"))


def test_the_mixup_loss_is_the_cross_entropy_of_both_labels() -> None:
    """Direct re-computation of a MixUp step: λ CE(f(x̃), y_i) + (1 − λ) CE(f(x̃), y_j)."""
    torch.manual_seed(0)
    model = MixupClassifier(CLASSES, "mixup")
    data = Images()
    x, y = data.x[:BATCH], data.y[:BATCH]
    perm = torch.tensor([1, 2, 3, 4, 5, 0])
    lam = 0.3
    mixed = lam * x + (1 - lam) * x[perm]
    logits = model(mixed)
    expected = lam * F.cross_entropy(logits, y) + (1 - lam) * F.cross_entropy(logits, y[perm])
    out = model.mixup(x, perm, torch.full((BATCH,), lam))
    got = mixup_cross_entropy(model(out.images), y, y[perm], out.lam)
    assert torch.allclose(got, expected, atol=1e-5)


def test_momentum_rises_from_0999_to_1_on_a_cosine() -> None:
    model = AutoMixClassifier(CLASSES, "amix", mixing=ClassifierMixingConfig())
    trainer = SimpleNamespace(estimated_stepping_batches=4, global_step=0)
    model._trainer = trainer  # type: ignore[assignment]
    values = []
    for step in (0, 1, 2, 3):  # Lightly's cosine_schedule spans steps 0 .. total - 1
        trainer.global_step = step
        values.append(model.current_momentum())
    # m(s) = 1 - 0.001 (1 + cos(π s / 3)) / 2
    assert values == pytest.approx([0.999, 0.99925, 0.99975, 1.0])


def test_a_missing_pretrained_file_says_how_to_get_one() -> None:
    with pytest.raises(FileNotFoundError, match="torchvision.models.resnet18"):
        MixupClassifier(CLASSES, model=ClassifierModelConfig(pretrained="/nowhere/r18.pth"))


def test_pretrained_torchvision_weights_load_into_the_encoder(tmp_path: Path) -> None:
    path = tmp_path / "r18.pth"
    reference = torchvision.models.resnet18()
    torch.save(reference.state_dict(), path)
    model = MixupClassifier(CLASSES, model=ClassifierModelConfig(cifar_stem=False,
                                                                 pretrained=str(path)))  # fmt: skip
    assert torch.equal(
        model.backbone.resnet.layer4[1].conv2.weight, reference.layer4[1].conv2.weight
    )


def test_a_short_run_with_the_papers_momentum_warns() -> None:
    with pytest.warns(UserWarning, match=r"averages over ~1000 steps, more than 10% of this run"):
        fit(AutoMixClassifier(CLASSES, "amix"), steps=1)
    mixing = ClassifierMixingConfig(momentum=0.5)  # a 2-step horizon: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        fit(AutoMixClassifier(CLASSES, "amix", mixing=mixing), steps=1)


# ----------------------------------------------------------------- the mask lab's switches
def test_gamma_takes_no_weight_decay_and_every_block_parameter_is_optimised() -> None:
    """γ of Mix Block+ sits in a no-decay group (decay would pull it to 0: blind to λ)."""
    model = AutoMixClassifier(
        CLASSES, "amix", optim=ClassifierOptimConfig(weight_decay=5e-4),
        mixing=ClassifierMixingConfig(block_lr_scale=3.0),
    )  # fmt: skip
    trainer = fit(model, steps=1)
    groups = {g["name"]: g for g in trainer.optimizers[0].param_groups}
    gamma_group = [
        g for g in groups.values() if any(p is model.mix_block.gamma for p in g["params"])
    ]
    assert len(gamma_group) == 1 and gamma_group[0]["weight_decay"] == 0.0
    assert gamma_group[0]["name"] == "mix_block_no_decay"
    block = {id(p) for p in model.mix_block.parameters()}
    optimised = {id(p) for g in groups.values() if g["name"].startswith("mix_block_")
                 for p in g["params"]}  # fmt: skip
    assert optimised == block
    assert groups["mix_block_decay"]["weight_decay"] == pytest.approx(5e-4)


def test_two_heads_the_block_learns_through_the_mixed_heads_ema() -> None:
    torch.manual_seed(0)
    model = AutoMixClassifier(CLASSES, "amix", mixing=ClassifierMixingConfig(heads="two"))
    assert model.head_mix is not model.head and model.head_mix_momentum is not model.head_momentum
    data = Images()
    x, y = data.x[:BATCH], data.y[:BATCH]
    used: list[str] = []
    for name in ("head", "head_mix", "head_momentum", "head_mix_momentum"):
        getattr(model, name).register_forward_hook(lambda *_, n=name: used.append(n))
    assert not any(p.requires_grad for p in model.head_mix_momentum.parameters())
    _, terms, _ = model.compute_losses(x, y)
    assert sorted(used) == ["head", "head_mix", "head_mix_momentum"]
    grads = _grads(terms["loss_mix"], [model.head.weight, model.head_mix.weight])
    assert grads[0] is None and grads[1] is not None and grads[1].abs().any()
    grads = _grads(terms["loss_clean"], [model.head.weight, model.head_mix.weight])
    assert grads[0] is not None and grads[1] is None
    trainer = fit(model, steps=1)
    optimised = {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]}
    assert id(model.head_mix.weight) in optimised
    one = AutoMixClassifier(CLASSES, "amix")
    assert one.head_mix is one.head and one.head_mix_momentum is one.head_momentum
    # One head: the checkpoint keys of 0.1.0 (no head_mix.*); two heads: their own keys.
    assert not any(k.startswith("mix_head") for k in one.state_dict())
    assert {"mix_head.weight", "mix_head_momentum.weight"} <= set(model.state_dict())


def test_momentum_is_held_then_follows_the_cosine() -> None:
    model = AutoMixClassifier(
        CLASSES, "amix", mixing=ClassifierMixingConfig(momentum_hold=0.5, momentum_end=1.0)
    )
    trainer = SimpleNamespace(estimated_stepping_batches=5, global_step=0)
    model._trainer = trainer  # type: ignore[assignment]
    values = []
    for step in range(5):
        trainer.global_step = step
        values.append(model.current_momentum())
    cosine = [1 - 0.001 * (1 + math.cos(math.pi * s / 4)) / 2 for s in range(5)]
    assert values == pytest.approx([0.999, 0.999, 0.999, cosine[3], cosine[4]])


def test_the_learning_rate_ends_at_its_floor() -> None:
    model = MixupClassifier(CLASSES, "vanilla", optim=ClassifierOptimConfig(final_lr_ratio=0.5))
    trainer = fit(model, steps=4)
    lrs = [g["lr"] for g in trainer.optimizers[0].param_groups]
    assert lrs == pytest.approx([0.05] * len(lrs))


def test_mask_statistics_are_logged_per_epoch() -> None:
    torch.manual_seed(0)
    model = AutoMixClassifier(CLASSES, "amix")
    rows: list[torch.Tensor] = []
    update = model.mask_stats.update

    def spy(mask: torch.Tensor, lam: torch.Tensor) -> None:
        update(mask, lam)
        rows.append(model.mask_stats.samples()[-BATCH:].clone())

    model.mask_stats.update = spy  # type: ignore[method-assign]
    trainer = fit(model, steps=N // BATCH)  # one epoch
    logged = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("mask/")}
    samples = torch.cat(rows).double()
    mu, std, lam = samples.unbind(1)
    expected_corr = float(torch.corrcoef(torch.stack([mu, lam]))[0, 1])
    assert logged["mask/lam_corr"] == pytest.approx(expected_corr, abs=1e-5)
    assert logged["mask/std"] == pytest.approx(float(std.mean()), abs=1e-6)
    assert logged["mask/lam_gap"] == pytest.approx(float((mu - lam).abs().mean()), abs=1e-6)
    assert logged["mask/whole"] == pytest.approx(float(((mu < 0.02) | (mu > 0.98)).double().mean()))
    assert len(rows) == N // BATCH


def test_a_narrow_backbone_is_used_and_validated() -> None:
    model = MixupClassifier(CLASSES, "vanilla", model=ClassifierModelConfig(width=8))
    assert model.backbone.out_dim == 64 and model.head.in_features == 64
    with pytest.raises(ValueError, match="model.width"):
        load_classifier_config(overrides=["model.width=0"])
    with pytest.raises(ValueError, match="mixing.heads"):
        load_classifier_config(overrides=["mixing.heads=three"])
    with pytest.raises(ValueError, match="optim.final_lr_ratio"):
        load_classifier_config(overrides=["optim.final_lr_ratio=2"])
