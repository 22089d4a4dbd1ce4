"""AMix-I, AMix-C and the fixed-mixup baselines: real CPU training steps and gradient isolation."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import Dataset

from lightly_amix.config import FIXED_MIXUPS, MixingConfig, ModelConfig, ODCConfig, OptimConfig
from lightly_amix.models import AMix, MixMoCo
from lightly_amix.models.amix import eval_mode
from lightly_amix.training import PretrainDataModule

N_IMAGES, BATCH, SIZE = 24, 6, 32


class Views(Dataset):
    """Random 32 px images: two 'views' (noise-perturbed copies) per image."""

    def __init__(self, single: bool = False) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(N_IMAGES, 3, SIZE, SIZE, generator=g)
        self.single = single

    def __len__(self) -> int:
        return N_IMAGES

    def __getitem__(self, i: int):  # type: ignore[no-untyped-def]
        if self.single:
            return self.x[i], -1
        return [self.x[i] + 0.1 * torch.randn_like(self.x[i]), self.x[i]], -1


def model_cfg() -> ModelConfig:
    return ModelConfig(queue_size=18, proj_hidden_dim=32, proj_output_dim=8)


def amix(block_loss: str = "infonce+bce", **mixing: object) -> AMix:
    odc = ODCConfig(num_clusters=3, min_cluster_size=4, refresh_interval=2)
    cfg = MixingConfig(block_loss=block_loss, **mixing)  # type: ignore[arg-type]
    return AMix(model_cfg(), OptimConfig(), BATCH, cfg, odc=odc, num_samples=N_IMAGES)


def fit(model: pl.LightningModule, steps: int = 2, precision: str = "32-true") -> pl.Trainer:
    data = PretrainDataModule(Views(), BATCH, 0, seed=0, feature_dataset=Views(single=True))
    trainer = pl.Trainer(
        max_steps=steps,
        accelerator="cpu",
        precision=precision,  # type: ignore[arg-type]
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        reload_dataloaders_every_n_epochs=1,
        use_distributed_sampler=False,
    )
    trainer.fit(model, datamodule=data)
    return trainer


@pytest.mark.parametrize("name", FIXED_MIXUPS)
def test_fixed_mixup_baselines_train(name: str) -> None:
    torch.manual_seed(0)
    model = MixMoCo(model_cfg(), OptimConfig(), BATCH, MixingConfig(), mixup=name)
    trainer = fit(model)
    metrics = trainer.callback_metrics
    assert trainer.global_step == 2
    assert torch.isfinite(metrics["train/loss_mix"]) and torch.isfinite(metrics["train/loss_moco"])
    assert 0.0 <= float(metrics["train/lam"]) <= 1.0


@pytest.mark.parametrize(
    "block_loss", ["infonce+bce", "ce_pl+bce", "infonce_pl", "pbce+bce", "bce"]
)
def test_amix_trains(block_loss: str) -> None:
    torch.manual_seed(0)
    model = amix(block_loss)
    before = {k: v.clone() for k, v in model.mix_block.state_dict().items()}
    trainer = fit(model, steps=3)
    metrics = trainer.callback_metrics
    for term in block_loss.split("+"):
        assert torch.isfinite(metrics[f"train/loss_block_{term}"]), term
    for key in ("loss_mix", "loss_mask", "mask_std", "mask_mean", "gamma", "queue_fill"):
        assert torch.isfinite(metrics[f"train/{key}"]), key
    after = model.mix_block.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before), "the Mix Block must learn"
    if "pl" in block_loss or "pbce" in block_loss:
        assert model.odc is not None and bool(model.odc.initialized)
        assert torch.isfinite(metrics["train/loss_head"])


def _grads(loss: torch.Tensor, params: list[torch.nn.Parameter]) -> list[torch.Tensor | None]:
    return list(torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True))


@pytest.mark.parametrize("features", ["momentum", "online"])
def test_gradients_are_isolated_both_ways(features: str) -> None:
    torch.manual_seed(0)
    model = amix("infonce+bce", block_features=features)
    x = Views()
    batch = ([torch.stack([x[i][0][0] for i in range(BATCH)]),
              torch.stack([x[i][0][1] for i in range(BATCH)])], None)  # fmt: skip
    bn_before = {
        k: v.clone() for k, v in model.backbone_momentum.state_dict().items() if "running" in k
    }
    tracked = model.backbone_momentum.resnet.bn1.num_batches_tracked.clone()
    _, terms, _ = model.compute_losses(batch)
    backbone_loss = terms["loss_moco"] + terms["loss_mix"]
    block_loss = terms["loss_block_infonce"] + terms["loss_block_bce"] + terms["loss_mask"]
    online = [*model.backbone.parameters(), *model.projection_head.parameters()]
    block = list(model.mix_block.parameters())
    # The Mix Block's loss does not reach the backbone ...
    assert all(g is None or not g.abs().any() for g in _grads(block_loss, online))
    # ... and the backbone's loss does not reach the Mix Block.
    assert all(g is None or not g.abs().any() for g in _grads(backbone_loss, block))
    # Both losses do reach their own parameters.
    assert any(g is not None and g.abs().any() for g in _grads(block_loss, block))
    assert any(g is not None and g.abs().any() for g in _grads(backbone_loss, online))
    # The momentum encoder ran in train mode once (the key forward); the Mix Block branch
    # and the stage-3 pass used eval mode, so BN statistics moved only by the key forward.
    assert int(model.backbone_momentum.resnet.bn1.num_batches_tracked - tracked) == 1
    assert all(not p.requires_grad for p in model.backbone_momentum.parameters())
    # Re-running only the key forward from the same start gives the same BN buffers.
    reference = amix("infonce+bce", block_features=features)
    reference.load_state_dict(model.state_dict())
    for k, v in bn_before.items():
        reference.backbone_momentum.state_dict()[k].copy_(v)
    reference.backbone_momentum.resnet.bn1.num_batches_tracked.copy_(tracked)
    with torch.no_grad():
        torch.manual_seed(1)
        reference.encode_key(batch[0][1])
    for k in bn_before:
        got = model.backbone_momentum.state_dict()[k]
        assert torch.allclose(got, reference.backbone_momentum.state_dict()[k], atol=1e-6), k


def test_eval_mode_restores_training_flags() -> None:
    a, b = torch.nn.BatchNorm1d(2), torch.nn.BatchNorm1d(2).eval()
    with eval_mode(a, b):
        assert not a.training and not b.training
    assert a.training and not b.training


def test_small_data_set_lowers_the_cluster_count() -> None:
    with pytest.warns(UserWarning, match="using 1 clusters"):
        odc = ODCConfig(num_clusters=200, min_cluster_size=20)
        mixing = MixingConfig(block_loss="ce_pl+bce")
        model = AMix(model_cfg(), OptimConfig(), BATCH, mixing, odc=odc, num_samples=30)
    assert model.cluster_head is not None and model.cluster_head.out_features == 1
    with pytest.raises(ValueError, match="num_samples"):
        AMix(model_cfg(), OptimConfig(), BATCH, MixingConfig(block_loss="ce_pl+bce"))


def test_replicated_buffers_are_not_broadcast_by_ddp() -> None:
    model = amix("ce_pl+bce")
    model.setup("fit")
    ignored = set(model._ddp_params_and_buffers_to_ignore)
    assert {"memory_bank.bank", "memory_bank.bank_ptr", "queue_fill", "queue_labels"} <= ignored
    assert {"odc.features", "odc.labels", "odc.centroids"} <= ignored
    assert not any(name.startswith(("backbone", "mix_block")) for name in ignored)


def test_amix_c_under_bf16_autocast() -> None:
    """Clustering refreshes (eigh) must run in fp32 inside autocast'ed training steps."""
    torch.manual_seed(0)
    model = amix("ce_pl+bce")
    trainer = fit(model, steps=3, precision="bf16-mixed")
    assert torch.isfinite(trainer.callback_metrics["train/loss_head"])
    assert model.odc is not None and model.odc.features.dtype == torch.float32


@pytest.mark.parametrize("cls", ["mixmoco", "amix"])
def test_reference_code_pipeline_trains(cls: str) -> None:
    torch.manual_seed(0)
    mixing = MixingConfig(pipeline="reference")
    if cls == "mixmoco":
        model: pl.LightningModule = MixMoCo(model_cfg(), OptimConfig(), BATCH, mixing, "cutmix")
    else:
        model = amix("infonce+bce", pipeline="reference")
    trainer = fit(model)
    assert torch.isfinite(trainer.callback_metrics["train/loss_mix"])


def test_constant_masks_raise_a_warning() -> None:
    torch.manual_seed(0)
    model = amix("infonce+bce")
    with torch.no_grad():  # content = bias only: every mask is a constant
        model.mix_block.content.fc2.weight.zero_()
    model.trivial_steps.fill_(500)  # as if constant for 500 steps already
    with pytest.warns(UserWarning, match="nearly constant"):
        fit(model, steps=1)
    assert int(model.trivial_steps) == 501


def test_mix_block_learning_rate_scale() -> None:
    model = amix(block_lr_scale=10.0)
    trainer = fit(model, steps=1)
    groups = {g["name"]: g for g in trainer.optimizers[0].param_groups}
    assert set(groups) == {"decay", "no_decay", "mix_block_decay", "mix_block_no_decay"}
    base = 0.03 * BATCH / 256
    assert groups["decay"]["initial_lr"] == pytest.approx(base)
    assert groups["mix_block_decay"]["initial_lr"] == pytest.approx(10 * base)
    assert groups["mix_block_no_decay"]["weight_decay"] == 0.0
    block = {id(p) for p in model.mix_block.parameters()}
    in_block_groups = {
        id(p) for name in ("mix_block_decay", "mix_block_no_decay") for p in groups[name]["params"]
    }
    assert in_block_groups == block
    assert not any(id(p) in block for p in groups["decay"]["params"] + groups["no_decay"]["params"])
    # The cosine schedule scales every group alike.
    assert groups["mix_block_decay"]["lr"] / groups["decay"]["lr"] == pytest.approx(10.0)
    plain = fit(amix(), steps=1).optimizers[0]
    assert [g["name"] for g in plain.param_groups] == ["decay", "no_decay"]


@pytest.mark.parametrize("block_loss", ["infonce+bce", "ce_pl+bce"])
def test_amix_trains_with_split_batchnorm(block_loss: str) -> None:
    torch.manual_seed(0)
    odc = ODCConfig(num_clusters=3, min_cluster_size=4, refresh_interval=2)
    cfg = model_cfg()
    cfg.bn_splits = 3
    model = AMix(cfg, OptimConfig(), BATCH, MixingConfig(block_loss=block_loss), odc=odc,
                 num_samples=N_IMAGES)  # fmt: skip
    trainer = fit(model, steps=3)
    assert trainer.global_step == 3
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    # Both encoders kept three sets of statistics; the export has one.
    for encoder in (model.backbone, model.backbone_momentum):
        assert encoder.resnet.bn1.running_mean.shape == (3 * 64,)
    assert model.export_backbone_state_dict()["bn1.running_mean"].shape == (64,)
