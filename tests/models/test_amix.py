"""AMix-I, AMix-C and the fixed-mixup baselines: real CPU training steps and gradient isolation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

import lightly_amix.models.amix as amix_module
from lightly_amix.clustering.odc import ODCMemory
from lightly_amix.config import FIXED_MIXUPS, MixingConfig, ModelConfig, ODCConfig, OptimConfig
from lightly_amix.data.datamodule import PretrainDataModule
from lightly_amix.mixing.block_losses import BlockLossInputs
from lightly_amix.mixing.mix_block import MixBlockConfig
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


def amix(
    block_loss: str = "infonce+bce", mix_block: MixBlockConfig | None = None, **mixing: object
) -> AMix:
    odc = ODCConfig(num_clusters=3, min_cluster_size=4, refresh_interval=2)
    cfg = MixingConfig(block_loss=block_loss, **mixing)  # type: ignore[arg-type]
    return AMix(model_cfg(), OptimConfig(), BATCH, cfg, mix_block, odc=odc, num_samples=N_IMAGES)


def _parameters(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the parameters only: BatchNorm's running statistics move at every train-mode
    forward, so a changed ``state_dict()`` proves nothing about learning."""
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def _moved(module: torch.nn.Module, before: dict[str, torch.Tensor]) -> list[str]:
    return [n for n, p in module.named_parameters() if not torch.equal(p.detach(), before[n])]


def _optimised(trainer: pl.Trainer) -> set[int]:
    return {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}


def fit(
    model: pl.LightningModule,
    steps: int = 2,
    precision: str = "32-true",
    callbacks: list[pl.Callback] | None = None,
) -> pl.Trainer:
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
        callbacks=callbacks,
    )
    trainer.fit(model, datamodule=data)
    return trainer


@pytest.mark.parametrize("name", FIXED_MIXUPS)
def test_fixed_mixup_baselines_train(name: str) -> None:
    torch.manual_seed(0)
    model = MixMoCo(model_cfg(), OptimConfig(), BATCH, MixingConfig(), mixup=name)
    before = _parameters(model.backbone)
    trainer = fit(model)
    metrics = trainer.callback_metrics
    assert trainer.global_step == 2
    loss_mix, loss_moco = float(metrics["train/loss_mix"]), float(metrics["train/loss_moco"])
    # The step's loss is MoCo's plus the weighted mixup term ...
    expected = loss_moco + model.mixing_cfg.mix_weight * loss_mix
    assert float(metrics["train/loss_step"]) == pytest.approx(expected, rel=1e-5)
    # ... of queries that were mixed (unmixed ones would give MoCo's loss again) ...
    assert 0.0 < float(metrics["train/lam"]) < 1.0 and loss_mix != pytest.approx(loss_moco)
    # ... and the backbone learned (parameters, not BatchNorm statistics).
    assert _moved(model.backbone, before)


@pytest.mark.parametrize(
    "block_loss", ["infonce+bce", "ce_pl+bce", "infonce_pl", "pbce+bce", "bce"]
)
def test_amix_trains(block_loss: str) -> None:
    torch.manual_seed(0)
    model = amix(block_loss)
    before = _parameters(model.mix_block)
    trainer = fit(model, steps=3)
    metrics = trainer.callback_metrics
    for term in block_loss.split("+"):
        assert torch.isfinite(metrics[f"train/loss_block_{term}"]), term
    for key in ("loss_mix", "loss_mask", "mask_std", "mask_mean", "gamma", "queue_fill"):
        assert torch.isfinite(metrics[f"train/{key}"]), key
    # The Mix Block is optimised: all its parameters are in the optimiser, and they moved.
    assert {id(p) for p in model.mix_block.parameters()} <= _optimised(trainer)
    assert "content.fc2.weight" in _moved(model.mix_block, before), "the Mix Block must learn"
    if "pl" in block_loss or "pbce" in block_loss:
        assert model.odc is not None and bool(model.odc.initialized)
        assert torch.isfinite(metrics["train/loss_head"])


def _grads(loss: torch.Tensor, params: list[torch.nn.Parameter]) -> list[torch.Tensor | None]:
    return list(torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True))


BLOCKS = {
    "plus": MixBlockConfig(),
    # Without λ adjusting nothing else detaches the backbone's mask: only no_grad does.
    "automix": MixBlockConfig.automix(),
    "plus-no-adjust": MixBlockConfig(lambda_adjust=False),
}


@pytest.mark.parametrize(
    ("features", "block_cfg"),
    [("momentum", "plus"), ("online", "plus"), ("momentum", "automix"),
     ("online", "plus-no-adjust")],
)  # fmt: skip
def test_gradients_are_isolated_both_ways(features: str, block_cfg: str) -> None:
    torch.manual_seed(0)
    model = amix("infonce+bce", BLOCKS[block_cfg], block_features=features)
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
    reference = amix("infonce+bce", BLOCKS[block_cfg], block_features=features)
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


def test_amix_c_under_bf16_autocast(monkeypatch: pytest.MonkeyPatch) -> None:
    """Clustering refreshes (eigh) must run in fp32 inside autocast'ed training steps."""
    outer: list[bool] = []  # autocast at each call of ODCMemory.update (in the training step)
    inner: list[bool] = []  # autocast while the centroids are computed (refresh, start-up)
    update, centroids = ODCMemory.update, ODCMemory._compute_centroids

    def spy_update(self: ODCMemory, *args: Any, **kwargs: Any) -> torch.Tensor:
        outer.append(torch.is_autocast_enabled("cpu"))
        return update(self, *args, **kwargs)

    def spy_centroids(self: ODCMemory) -> torch.Tensor:
        inner.append(torch.is_autocast_enabled("cpu"))
        return centroids(self)

    monkeypatch.setattr(ODCMemory, "update", spy_update)
    monkeypatch.setattr(ODCMemory, "_compute_centroids", spy_centroids)
    torch.manual_seed(0)
    model = amix("ce_pl+bce")
    trainer = fit(model, steps=3, precision="bf16-mixed")
    assert torch.isfinite(trainer.callback_metrics["train/loss_head"])
    assert model.odc is not None and int(model.odc.step) == 3  # refreshed at step 2
    assert outer == [True] * 3  # the memory moved inside autocast'ed steps ...
    assert len(inner) >= 2 and not any(inner)  # ... but k-means and the refresh ran in fp32
    assert torch.isfinite(model.odc.centroids).all()


class _RecordBatches(pl.Callback):
    def __init__(self) -> None:
        self.batches: list[Any] = []

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, i: int) -> None:
        self.batches.append(batch)


Calls = list[tuple[tuple[Any, ...], Any]]


def _recording(function: Any, calls: Calls) -> Any:
    """``function``, appending ``(copies of the arguments, result)`` of each call to ``calls``."""

    def spy(*args: Any) -> Any:
        copies = tuple(a.detach().clone() if isinstance(a, torch.Tensor) else a for a in args)
        result = function(*args)
        calls.append((copies, result))
        return result

    return spy


def _spy(owner: Any, name: str, calls: Calls) -> None:
    """Replaces the method ``owner.name`` of one object by a recording of its calls."""
    setattr(owner, name, _recording(getattr(owner, name), calls))


def _rows_of(x: torch.Tensor, pool: torch.Tensor) -> list[int]:
    """The row of ``pool`` that each row of ``x`` equals (-1: none)."""
    return [next((j for j in range(len(pool)) if torch.equal(r, pool[j])), -1) for r in x]


@pytest.mark.parametrize("cls", ["mixmoco", "amix"])
def test_reference_code_pipeline_trains(cls: str) -> None:
    """Each step mixes the query views with the partners' key views, and encodes the query
    views with the momentum encoder (their keys are the partners' positives)."""
    torch.manual_seed(0)
    mixing = MixingConfig(pipeline="reference")
    if cls == "mixmoco":
        model: pl.LightningModule = MixMoCo(model_cfg(), OptimConfig(), BATCH, mixing, "cutmix")
    else:
        model = amix("infonce+bce", pipeline="reference")
    keyed: Calls = []
    mixed: Calls = []
    _spy(model, "encode_key", keyed)
    if isinstance(model, AMix):
        _spy(model.mix_block, "backbone_sample", mixed)  # (x, x_partner, z, z_partner, lam)
    else:
        _spy(model, "mixed_queries", mixed)  # (x_q, x_partner, lam, perm_local)
    record, before = _RecordBatches(), _parameters(model.backbone)
    trainer = fit(model, callbacks=[record])
    assert torch.isfinite(trainer.callback_metrics["train/loss_mix"])
    assert _moved(model.backbone, before)
    assert len(record.batches) == len(mixed) == 2 and len(keyed) == 4
    for step, batch in enumerate(record.batches):
        x_q, x_k = batch[0]
        # The momentum encoder keys the key views, then the query views (partners' positives).
        (images_k,), _ = keyed[2 * step]
        (images_q,), _ = keyed[2 * step + 1]
        assert torch.equal(images_k, x_k) and torch.equal(images_q, x_q)
        # Every query view is mixed with a key view: the partners are a permutation of them.
        x, x_partner = mixed[step][0][:2]
        assert torch.equal(x, x_q)
        assert sorted(_rows_of(x_partner, x_k)) == list(range(BATCH))


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


def _mixup_nce(
    q: torch.Tensor,
    k_i: torch.Tensor,
    k_j: torch.Tensor,
    queue: torch.Tensor,
    lam: torch.Tensor,
    t: float,
) -> torch.Tensor:
    """AMix eq. 4 written out: each positive's log-softmax against the queue, λ-weighted."""
    negatives = q @ queue.T / t  # (N, K)

    def log_p(k: torch.Tensor) -> torch.Tensor:
        logits = torch.cat([(q * k).sum(dim=1, keepdim=True) / t, negatives], dim=1)
        return logits.log_softmax(dim=1)[:, 0]

    return -(lam * log_p(k_i) + (1 - lam) * log_p(k_j)).mean()


def test_amix_reads_the_pipeline_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cross-view: x_i^τq mixed with x_j^τq, positives k_i^τk, k_j^τk. Reference (the public
    code): x_i^τq mixed with x_j^τk, positives k_i^τk and k_j^τq; for both of AMix's mixes."""
    x_q, x_k = _two_view_batch()
    results = {}
    for pipeline in ("cross-view", "reference"):
        torch.manual_seed(0)
        mixing = MixingConfig(block_loss="infonce+bce", pipeline=pipeline)
        model = AMix(_no_shuffle_cfg(), OptimConfig(), BATCH, mixing)
        perms: Calls = []  # the backbone's partners, then the Mix Block's
        block_inputs: Calls = []
        mixed: Calls = []
        queues: Calls = []
        monkeypatch.setattr(
            amix_module, "global_partners", _recording(amix_module.global_partners, perms)
        )
        infonce = amix_module.BLOCK_LOSSES["infonce"]
        monkeypatch.setitem(amix_module.BLOCK_LOSSES, "infonce", _recording(infonce, block_inputs))
        _spy(model.mix_block, "backbone_sample", mixed)
        _spy(model, "negatives_then_enqueue", queues)
        torch.manual_seed(1)
        _, terms, _ = model.compute_losses(([x_q, x_k], None))
        results[pipeline] = terms
        # The backbone's mixup loss, recomputed from the mixed images and the right positives.
        (_, perm), (_, perm2) = perms
        partner_views = x_q if pipeline == "cross-view" else x_k
        with torch.no_grad():
            k = model.encode_key(x_k)  # k^τk
            k_partner = k if pipeline == "cross-view" else model.encode_key(x_q)  # k^τq
            (args, (x_mix, _, lam_eff)), ((_,), queue) = mixed[0], queues[0]
            assert torch.equal(args[1], partner_views[perm])  # the backbone's sample
            q_mix, _ = model.encode_query(x_mix)
            t = model.model_cfg.temperature
            expected = _mixup_nce(q_mix, k, k_partner[perm], queue, lam_eff, t)
        assert float(terms["loss_mix"].detach()) == pytest.approx(float(expected), rel=1e-5)
        # The Mix Block's loss has the same positives, for its own partners.
        [((inputs,), _)] = block_inputs
        assert isinstance(inputs, BlockLossInputs)
        assert torch.allclose(inputs.key_i, k, atol=1e-6)
        assert torch.allclose(inputs.key_j, k_partner[perm2], atol=1e-6)
        monkeypatch.undo()
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
