from __future__ import annotations

import copy

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from lightly_amix.config import ModelConfig, OptimConfig
from lightly_amix.models import MoCoV2

BATCH = 4


class TwoViews(Dataset):
    """Random 32 px image pairs standing in for two augmented views."""

    def __init__(self, n: int = 8) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 2, 3, 32, 32, generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[list[torch.Tensor], int]:
        return [self.x[i, 0], self.x[i, 1]], -1


def tiny_model(**model_kwargs: object) -> MoCoV2:
    cfg = ModelConfig(backbone="resnet18", queue_size=16, proj_hidden_dim=32, proj_output_dim=8)
    for key, value in model_kwargs.items():
        setattr(cfg, key, value)
    return MoCoV2(cfg, OptimConfig(), batch_size=BATCH)


def fit(model: MoCoV2, steps: int) -> pl.Trainer:
    trainer = pl.Trainer(
        max_steps=steps,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, DataLoader(TwoViews(), batch_size=BATCH, drop_last=True))
    return trainer


def test_step_is_finite_advances_queue_and_spares_the_key_encoder() -> None:
    torch.manual_seed(0)
    model = tiny_model()
    online = {k: v.clone() for k, v in model.backbone.named_parameters()}
    momentum = {k: v.clone() for k, v in model.backbone_momentum.named_parameters()}
    bank_before = model.memory_bank.bank.clone()

    trainer = fit(model, steps=1)

    assert torch.isfinite(trainer.callback_metrics["train/loss_step"])
    # The queue advanced by one batch: the first rows are new unit vectors, the rest untouched.
    assert int(model.memory_bank.bank_ptr) == BATCH
    assert int(model.queue_fill) == BATCH
    new_rows = model.memory_bank.bank[:BATCH]
    assert not torch.allclose(new_rows, bank_before[:BATCH])
    assert torch.allclose(new_rows.norm(dim=1), torch.ones(BATCH), atol=1e-5)
    assert torch.equal(model.memory_bank.bank[BATCH:], bank_before[BATCH:])
    # The key encoder moved only by the EMA taken before the optimiser step; backward did not
    # touch it, while the online encoder was updated.
    m = model.model_cfg.momentum
    for name, param in model.backbone_momentum.named_parameters():
        assert not param.requires_grad and param.grad is None
        expected = m * momentum[name] + (1 - m) * online[name]
        assert torch.allclose(param, expected, atol=1e-6), name
    moved = [n for n, p in model.backbone.named_parameters() if not torch.equal(p, online[n])]
    assert moved, "the online backbone should have been updated"


def test_optimizer_groups_and_linear_lr_scaling() -> None:
    model = tiny_model()
    trainer = fit(model, steps=1)
    optimizer = trainer.optimizers[0]
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert groups["no_decay"]["weight_decay"] == 0.0
    assert groups["decay"]["weight_decay"] == pytest.approx(1e-4)
    no_decay = {id(p) for p in groups["no_decay"]["params"]}
    for name, param in model.backbone.named_parameters():
        is_norm_or_bias = "bn" in name or "downsample.1" in name or name.endswith("bias")
        assert (id(param) in no_decay) == is_norm_or_bias, name
    trained = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert not any(id(p) in trained for p in model.backbone_momentum.parameters())
    assert groups["decay"]["initial_lr"] == pytest.approx(0.03 * BATCH / 256)


def test_cosine_momentum_schedule_goes_to_one() -> None:
    model = tiny_model(momentum_schedule="cosine", momentum=0.99)
    trainer = fit(model, steps=2)
    assert trainer.global_step == 2
    assert model.current_momentum() == pytest.approx(1.0)
    model_const = tiny_model(momentum=0.99)
    assert model_const.current_momentum() == 0.99


def test_memory_bank_round_trips_through_checkpoint_hooks() -> None:
    torch.manual_seed(0)
    source = tiny_model()
    source.memory_bank.bank.copy_(torch.randn_like(source.memory_bank.bank))
    source.memory_bank.bank_ptr.fill_(5)
    checkpoint: dict = {}
    source.on_save_checkpoint(checkpoint)
    target = tiny_model()
    target.on_load_checkpoint(copy.deepcopy(checkpoint))
    assert torch.equal(target.memory_bank.bank, source.memory_bank.bank)
    assert int(target.memory_bank.bank_ptr) == 5

    other = tiny_model(queue_size=32)
    with pytest.raises(ValueError, match="queue size"):
        other.on_load_checkpoint(copy.deepcopy(checkpoint))
    with pytest.warns(UserWarning, match="no memory bank"):
        other.on_load_checkpoint({})


def test_non_finite_loss_stops_with_the_term_name() -> None:
    model = tiny_model()
    model.backbone.resnet.conv1.weight.data.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="'loss' at step 0"):
        fit(model, steps=1)


def test_split_batchnorm_in_both_encoders_trains() -> None:
    from lightly.models.batchnorm import SplitBatchNorm

    torch.manual_seed(0)
    model = tiny_model(bn_splits=2)
    assert isinstance(model.backbone.resnet.bn1, SplitBatchNorm)
    assert isinstance(model.backbone_momentum.resnet.layer4[1].bn2, SplitBatchNorm)
    before = model.backbone_momentum.resnet.bn1.running_mean.clone()

    trainer = fit(model, steps=2)

    assert torch.isfinite(trainer.callback_metrics["train/loss_step"])
    # The key encoder ran in training mode with per-part statistics.
    after = model.backbone_momentum.resnet.bn1.running_mean.view(2, -1)
    assert not torch.allclose(after, before.view(2, -1))
    assert not torch.allclose(after[0], after[1])
    assert model.export_backbone_state_dict()["bn1.running_mean"].shape == (64,)
