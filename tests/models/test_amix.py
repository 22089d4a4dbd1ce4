"""AMix-I, AMix-C and the fixed-mixup baselines: real CPU training steps and gradient isolation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from lightly_amix.config import FIXED_MIXUPS, MixingConfig, ModelConfig, ODCConfig, OptimConfig
from lightly_amix.data.datamodule import PretrainDataModule
from lightly_amix.models import AMix, MixMoCo
from lightly_amix.utils import eval_mode

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
    assert {"memory_bank.bank", "memory_bank.bank_ptr", "queue_fill"} <= ignored
    clustering = {"features", "labels", "centroids"}
    assert {f"clustering.memory.{name}" for name in clustering} | {
        "clustering.queue_labels"
    } <= ignored
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


def _two_view_batch() -> tuple[torch.Tensor, torch.Tensor]:
    x = Views()
    return (torch.stack([x[i][0][0] for i in range(BATCH)]),
            torch.stack([x[i][0][1] for i in range(BATCH)]))  # fmt: skip


def _no_shuffle_cfg() -> ModelConfig:
    cfg = model_cfg()
    cfg.shuffle_bn = False  # no random draw in the key forward: both pipelines draw alike
    return cfg


def test_reference_pipeline_mixes_with_the_partners_key_views() -> None:
    """x_i^τq is mixed with x_j^τk; the positives are k_i^τk and k_j^τq (the public code)."""
    x_q, x_k = _two_view_batch()
    cross = MixMoCo(_no_shuffle_cfg(), OptimConfig(), BATCH, MixingConfig(), "mixup")
    reference = MixMoCo(_no_shuffle_cfg(), OptimConfig(), BATCH,
                        MixingConfig(pipeline="reference"), "mixup")  # fmt: skip
    reference.load_state_dict(cross.state_dict())
    with torch.no_grad():
        k = cross.encode_key(x_k)
        torch.manual_seed(3)
        xc, kc_i, kc_j, perm = cross.pipeline_views(x_q, x_k, k)
        torch.manual_seed(3)
        xr, kr_i, kr_j, perm_r = reference.pipeline_views(x_q, x_k, k)
        assert perm is not None and perm_r is None  # the reference pairs across views
        assert torch.equal(xc, x_q[perm]) and torch.equal(kc_j, k[perm])
        assert torch.equal(xr, x_k[perm]) and torch.equal(kr_i, k) and torch.equal(kc_i, k)
        assert torch.allclose(kr_j, reference.encode_key(x_q)[perm], atol=1e-6)


def test_amix_reads_the_pipeline_switch() -> None:
    x_q, x_k = _two_view_batch()
    results = {}
    for pipeline in ("cross-view", "reference"):
        torch.manual_seed(0)
        mixing = MixingConfig(block_loss="infonce+bce", pipeline=pipeline)
        model = AMix(_no_shuffle_cfg(), OptimConfig(), BATCH, mixing)
        torch.manual_seed(1)
        _, terms, _ = model.compute_losses(([x_q, x_k], None))
        results[pipeline] = terms
        # The Mix Block's partners are the key views, with their own stage-3 maps.
        with torch.no_grad():
            k = model.encode_key(x_k)
            pool = model.block_pool(x_q, x_k, k, model.block_features(x_q, x_q))
        expected = x_q if pipeline == "cross-view" else x_k
        assert torch.equal(pool.images, expected)
        with torch.no_grad(), eval_mode(model.backbone_momentum):
            assert torch.allclose(pool.features, model.backbone_momentum.forward_stage3(expected))
    same = results["cross-view"]["loss_moco"], results["reference"]["loss_moco"]
    assert torch.equal(*same)  # the same MoCo step ...
    for name in ("loss_mix", "loss_block_infonce", "loss_block_bce"):  # ... other mixes
        assert not torch.allclose(results["cross-view"][name], results["reference"][name]), name


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
    # γ of Mix Block+ takes no weight decay (decay would pull it to 0: masks blind to λ).
    assert any(p is model.mix_block.gamma for p in groups["mix_block_no_decay"]["params"])
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


def test_checkpoints_of_earlier_versions_load_into_the_clustering_module() -> None:
    """Earlier AMix-C checkpoints hold ``odc.*``, ``cluster_head.*`` and ``queue_labels``."""
    torch.manual_seed(0)
    saved = amix("ce_pl+bce")
    saved.clustering.queue_labels.fill_(2)  # type: ignore[union-attr]
    legacy = {}
    for key, value in saved.state_dict().items():
        for new, old in (("clustering.memory.", "odc."), ("clustering.head.", "cluster_head."),
                         ("clustering.queue_labels", "queue_labels")):  # fmt: skip
            if key.startswith(new):
                key = old + key[len(new) :]
        legacy[key] = value
    assert "odc.features" in legacy and "cluster_head.weight" in legacy
    bank = {"bank": saved.memory_bank.bank.clone(), "bank_ptr": saved.memory_bank.bank_ptr.clone()}
    checkpoint = {"state_dict": legacy, "lightly_amix_memory_banks": {"memory_bank": bank}}
    torch.manual_seed(1)
    model = amix("ce_pl+bce")
    model.on_load_checkpoint(checkpoint)
    model.load_state_dict(checkpoint["state_dict"])
    for key, value in saved.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


SEEDED_STEP = Path(__file__).parent / "data" / "amix_seeded_step.json"


@pytest.mark.parametrize(
    ("name", "mixing"),
    [
        ("i-mom", {"block_loss": "infonce+bce"}),
        ("i-online", {"block_loss": "infonce+bce", "block_features": "online"}),
        ("c", {"block_loss": "ce_pl+bce"}),
        ("pl", {"block_loss": "infonce_pl+pbce"}),
    ],
)
def test_a_seeded_step_gives_the_losses_recorded_before_the_refactors(
    name: str, mixing: dict
) -> None:
    """The losses of one seeded step, recorded with AMix as it was before its loss table,
    clustering module and ``LearnedMixup`` existed: the refactors changed no number."""
    expected = json.loads(SEEDED_STEP.read_text())[name]
    torch.manual_seed(0)
    model = amix(**mixing)
    if model.clustering is not None:
        torch.manual_seed(1)
        model.clustering.memory.initialize(F.normalize(torch.randn(N_IMAGES, 8), dim=1))
    torch.manual_seed(2)
    x_q, x_k = _two_view_batch()  # the views draw their noise from the seeded generator
    loss, terms, _ = model.compute_losses(
        ([x_q, x_k], torch.zeros(BATCH, dtype=torch.long), torch.arange(BATCH))
    )
    got = {key: float(value) for key, value in terms.items()} | {"loss": float(loss)}
    assert got.keys() == expected.keys()
    # The tolerance covers reductions summed in another order (other thread counts: 2e-6
    # seen); any change of the computation moves these losses by orders of magnitude more.
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=2e-5, abs=1e-6), key
