"""AMix-I and AMix-C: MoCo v2 with a learned mixed-sample generator (Mix Block+).

One training step has two sub-tasks (paper §3.3; spec §2–§4):

- **backbone**: ``L_moco(q, k) + w · L_mix(λ)`` on a sample mixed by the Mix Block's mask,
  *detached* and λ-adjusted, with positives from the key views (cross-view pipeline);
- **Mix Block**: a second mixed sample (own λ', own partners) is encoded by the momentum
  encoder with frozen weights *in eval mode* (so its BatchNorm statistics do not drift toward
  mixed images), and the Mix Block's loss (AMix-I: infoNCE + BCE; AMix-C: CE on ODC
  pseudo-labels + BCE) plus the mask loss flows back to the Mix Block only.

The Mix Block sees stage-3 features of the images it mixes, without gradient: the momentum
encoder's (default, as AutoMix) or the online query forward's (``block_features=online``).

Reference: AMix, ICLR 2022 submission, §3; Zhan et al., "Online Deep Clustering", CVPR 2020.

Examples:
    >>> model = AMix(ModelConfig(), mixing=MixingConfig(block_loss="infonce+bce"), batch_size=256)
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightly_amix.clustering import ODCMemory
from lightly_amix.config import (
    MixingConfig,
    ModelConfig,
    ODCConfig,
    OptimConfig,
    block_loss_terms,
    uses_pseudo_labels,
)
from lightly_amix.losses import (
    mixup_bce,
    mixup_cross_entropy,
    mixup_info_nce,
    mixup_pbce,
)
from lightly_amix.mixing.masks import adjust_lambda, mask_diagnostics, mask_loss
from lightly_amix.mixing.mix_block import MixBlock, MixBlockConfig
from lightly_amix.models.base import _as_config
from lightly_amix.models.mix_moco import MixMoCo, gather, global_partners

TRIVIAL_MASK_STD = 0.01
TRIVIAL_MASK_STEPS = 200


@contextlib.contextmanager
def eval_mode(*modules: nn.Module) -> Iterator[None]:
    """Puts modules in eval mode (BatchNorm uses, and does not update, running statistics)."""
    modes = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        yield
    finally:
        for m, mode in zip(modules, modes, strict=True):
            m.train(mode)


class AMix(MixMoCo):
    """AMix-I (``block_loss="infonce+bce"``) or AMix-C (``"ce_pl+bce"``, with ODC).

    Args:
        model: Backbone, head, queue and momentum settings.
        optim: Optimiser settings.
        batch_size: Images per device per step.
        mixing: λ, weights, pipeline and the Mix Block's loss terms.
        mix_block: Mix Block switches (Mix Block+ by default).
        odc: Clustering settings, used when a loss term needs pseudo-labels.
        num_samples: Size of the training set (for the ODC memory).
    """

    replicated_buffer_prefixes = (
        *MixMoCo.replicated_buffer_prefixes,
        "odc.",
        "queue_labels",
    )

    def __init__(
        self,
        model: ModelConfig | Mapping[str, Any] | None = None,
        optim: OptimConfig | Mapping[str, Any] | None = None,
        batch_size: int = 256,
        mixing: MixingConfig | Mapping[str, Any] | None = None,
        mix_block: MixBlockConfig | Mapping[str, Any] | None = None,
        odc: ODCConfig | Mapping[str, Any] | None = None,
        num_samples: int = 0,
    ) -> None:
        super().__init__(model, optim, batch_size, mixing, mixup=None)
        self.block_cfg: MixBlockConfig = _as_config(mix_block or MixBlockConfig(), MixBlockConfig)
        self.odc_cfg: ODCConfig = _as_config(odc or ODCConfig(), ODCConfig)
        self.terms = block_loss_terms(self.mixing_cfg.block_loss)
        self.save_hyperparameters(
            {
                "mix_block": vars(self.block_cfg).copy(),
                "odc": vars(self.odc_cfg).copy(),
                "num_samples": num_samples,
            }
        )
        self.mix_block = MixBlock(self.backbone.stage3_dim, self.block_cfg)
        self.odc: ODCMemory | None = None
        self.cluster_head: nn.Linear | None = None
        if uses_pseudo_labels(self.mixing_cfg.block_loss):
            self._build_clustering(num_samples)
        self.trivial_steps: Tensor
        self.register_buffer("trivial_steps", torch.zeros((), dtype=torch.long), persistent=False)

    def _build_clustering(self, num_samples: int) -> None:
        cfg = self.odc_cfg
        if num_samples <= 0:
            raise ValueError("AMix-C needs num_samples (the training set size) for ODC.")
        k = min(cfg.num_clusters, max(1, num_samples // cfg.min_cluster_size))
        if k < cfg.num_clusters:
            warnings.warn(
                f"{num_samples} images cannot hold {cfg.num_clusters} clusters of at least "
                f"{cfg.min_cluster_size}: using {k} clusters (set odc.num_clusters).",
                stacklevel=3,
            )
        dim = self.model_cfg.proj_output_dim
        self.odc = ODCMemory(
            num_samples,
            dim,
            num_classes=k,
            momentum=cfg.momentum,
            min_cluster_size=min(cfg.min_cluster_size, max(1, num_samples // k)),
            refresh_interval=cfg.refresh_interval,
            kmeans_iters=cfg.kmeans_iters,
        )
        self.cluster_head = nn.Linear(dim, k)
        self.queue_labels: Tensor
        self.register_buffer(
            "queue_labels", torch.full((self.model_cfg.queue_size,), -1, dtype=torch.long)
        )

    def trainable_modules(self) -> list[nn.Module]:
        modules = [*super().trainable_modules(), self.mix_block]
        return modules + ([self.cluster_head] if self.cluster_head is not None else [])

    def lr_scales(self) -> dict[str, tuple[list[nn.Module], float]]:
        """The Mix Block learns at ``mixing.block_lr_scale`` times the backbone's rate."""
        if self.mixing_cfg.block_lr_scale == 1.0:
            return super().lr_scales()
        rest = [m for m in self.trainable_modules() if m is not self.mix_block]
        return {"": (rest, 1.0), "mix_block_": ([self.mix_block], self.mixing_cfg.block_lr_scale)}

    # ----------------------------------------------------------------- ODC start-up
    def on_train_start(self) -> None:
        """Initialises the ODC memory with k-means over the whole training set (once)."""
        if self.odc is None or bool(self.odc.initialized):
            return
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None or not hasattr(datamodule, "feature_dataloader"):
            raise RuntimeError("AMix-C needs a data module with feature_dataloader().")
        n, dim = self.odc.features.shape
        features = torch.zeros(n, dim, device=self.device)
        with torch.no_grad(), eval_mode(self.backbone_momentum, self.projection_head_momentum):
            for images, _, indices in datamodule.feature_dataloader():
                keys = self.projection_head_momentum(self.backbone_momentum(images.to(self.device)))
                keys = F.normalize(keys.float(), dim=1)
                features[gather(indices.to(self.device))] = gather(keys)
        self.odc.initialize(features)

    # ----------------------------------------------------------------- pieces
    @torch.no_grad()
    def block_features(self, x_q: Tensor, online_stage3: Tensor) -> Tensor:
        """Stage-3 maps (N, C, h, w) of the query views for the Mix Block, without gradient."""
        if self.mixing_cfg.block_features == "online":
            return online_stage3.detach()
        with eval_mode(self.backbone_momentum):
            return self.backbone_momentum.forward_stage3(x_q)

    def mix(
        self, x_q: Tensor, x_all: Tensor, z: Tensor, z_all: Tensor, perm: Tensor, lam: Tensor
    ) -> tuple[Tensor, Tensor]:
        """The Mix Block's mask (N, 1, H, W) for partners ``perm`` and the mixed images."""
        mask = self.mix_block(z, z_all[perm], lam, out_size=(x_q.shape[2], x_q.shape[3]))
        return mask, torch.lerp(x_all[perm], x_q, mask.to(x_q.dtype))

    def _enqueue_labels(self, ptr: int, labels: Tensor) -> None:
        size = self.queue_labels.shape[0]
        take = min(labels.shape[0], size - ptr)
        self.queue_labels[ptr : ptr + take] = labels[:take]

    # ----------------------------------------------------------------- step
    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        self.update_momentum_encoders()
        loss, logged, (mask2, lam2, lam_eff) = self.compute_losses(batch)
        self.log_terms({"loss": loss, **logged})
        self._log_masks(mask2, lam2, lam_eff)
        self.log_common()
        return loss

    def compute_losses(
        self, batch: Any
    ) -> tuple[Tensor, dict[str, Tensor], tuple[Tensor, Tensor, Tensor]]:
        """One step's losses without logging or momentum update.

        Returns:
            The total loss, the named terms (``loss_moco``, ``loss_mix``, ``loss_mask``,
            ``loss_block_<term>``, ``loss_head``, ``acc_moco``) and, for the diagnostics, the
            Mix Block's mask, its λ' and the backbone sample's effective λ.
        """
        x_q, x_k = batch[0]
        indices = batch[2] if len(batch) > 2 else None
        n, t = x_q.shape[0], self.model_cfg.temperature
        features, stage3 = self.backbone.forward_with_stage3(x_q)
        q = F.normalize(self.projection_head(features), dim=1)  # (N, D)
        k = self.encode_key(x_k)  # (N, D)
        # The queue position of this step's keys, for the label queue (AMix-C only: reading it
        # is a host-device sync).
        ptr = int(self.memory_bank.bank_ptr) if self.odc is not None else 0
        negatives = self.negatives_then_enqueue(k)  # (K, D), before this step's keys
        loss_moco, acc = self.moco_loss(q, k, negatives)

        z = self.block_features(x_q, stage3)  # (N, C, h, w)
        x_all, z_all, k_all = gather(x_q), gather(z), gather(k)

        # Backbone: a detached, λ-adjusted Mix Block mask.
        perm, lam = global_partners(n, x_q.device), self.sample_lambda(n)
        with torch.no_grad():
            mask, _ = self.mix(x_q, x_all, z, z_all, perm, lam)
            if self.block_cfg.lambda_adjust:
                mask = adjust_lambda(mask, lam, self.block_cfg.adjust_margin)
        x_mix = torch.lerp(x_all[perm], x_q, mask.to(x_q.dtype))
        lam_eff = mask.float().mean(dim=(1, 2, 3))  # (N,)
        q_mix, _ = self.encode_query(x_mix)
        loss_mix = mixup_info_nce(q_mix, k, k_all[perm], negatives, lam_eff, t)

        # Mix Block: own partners and λ', frozen momentum encoder in eval mode.
        perm2, lam2 = global_partners(n, x_q.device), self.sample_lambda(n)
        mask2, x_mb = self.mix(x_q, x_all, z, z_all, perm2, lam2)
        with eval_mode(self.backbone_momentum, self.projection_head_momentum):
            q_mb = F.normalize(self.projection_head_momentum(self.backbone_momentum(x_mb)), dim=1)
        k_j = k_all[perm2]
        terms: dict[str, Tensor] = {}
        labels: tuple[Tensor, Tensor] | None = None
        if self.odc is not None:
            if indices is None:
                raise ValueError("AMix-C needs sample indices in the batch (IndexedDataset).")
            y = self.odc.labels_of(indices.to(self.odc.labels.device)).to(x_q.device)
            labels = (y, gather(y)[perm2])
        for term in self.terms:
            terms[f"loss_block_{term}"] = self._block_term(
                term, q_mb, k, k_j, negatives, lam2, labels
            )
        loss_mask = mask_loss(
            mask2,
            lam2,
            margin=self.block_cfg.mask_margin,
            weight=self.block_cfg.mask_loss_weight,
            use_variance=self.block_cfg.mask_loss == "mean_var",
        )
        loss_block = self.mixing_cfg.block_weight * sum(terms.values()) + loss_mask

        loss = loss_moco + self.mixing_cfg.mix_weight * loss_mix + loss_block
        logged: dict[str, Tensor] = {
            "loss_moco": loss_moco,
            "loss_mix": loss_mix,
            "loss_mask": loss_mask,
            **terms,
            "acc_moco": acc,
        }
        if self.odc is not None and labels is not None and indices is not None:
            loss_head = self._cluster_head_loss(k, q_mb, labels, lam2)
            loss = loss + self.odc_cfg.head_weight * loss_head
            logged["loss_head"] = loss_head
            self._enqueue_labels(ptr, gather(labels[0]))
            self.odc.update(indices.to(self.odc.labels.device), k.detach().float())
        return loss, logged, (mask2, lam2, lam_eff)

    def _block_term(
        self,
        term: str,
        q_mb: Tensor,
        k: Tensor,
        k_j: Tensor,
        negatives: Tensor,
        lam: Tensor,
        labels: tuple[Tensor, Tensor] | None,
    ) -> Tensor:
        t = self.model_cfg.temperature
        if term == "bce":
            return mixup_bce(q_mb, k, k_j, lam, t)
        if term == "infonce":
            return mixup_info_nce(q_mb, k, k_j, negatives, lam, t)
        assert labels is not None and self.cluster_head is not None and self.odc is not None
        y_i, y_j = labels
        if term == "infonce_pl":
            same = (self.queue_labels[None, :] == y_i[:, None]) | (
                self.queue_labels[None, :] == y_j[:, None]
            )  # (N, K): queue entries of the same pseudo-class as i or j
            return mixup_info_nce(q_mb, k, k_j, negatives, lam, t, negative_mask=same)
        # The Mix Block's CE goes through a frozen copy of the cluster head.
        head = self.cluster_head
        logits = F.linear(q_mb, head.weight.detach(), head.bias.detach())  # (N, K)
        if term == "ce_pl":
            weight = self.odc.class_weights().to(logits.device)
            return mixup_cross_entropy(logits, y_i, y_j, lam, weight)
        return mixup_pbce(logits, y_i, y_j, lam)

    def _cluster_head_loss(
        self, k: Tensor, q_mb: Tensor, labels: tuple[Tensor, Tensor], lam: Tensor
    ) -> Tensor:
        """The cluster head learns from clean keys (CE) and the Mix Block's mixes (mixup CE)."""
        assert self.cluster_head is not None and self.odc is not None
        weight = self.odc.class_weights().to(k.device)
        y_i, y_j = labels
        clean = F.cross_entropy(self.cluster_head(k.detach()).float(), y_i, weight=weight)
        mixed_logits = self.cluster_head(q_mb.detach())
        return clean + mixup_cross_entropy(mixed_logits, y_i, y_j, lam, weight)

    def _log_masks(self, mask: Tensor, lam: Tensor, lam_eff: Tensor) -> None:
        stats = mask_diagnostics(mask.detach(), lam)
        for name, value in stats.items():
            self.log(f"train/{name}", value)
        self.log("train/lam", lam_eff.mean())
        self.log("train/gamma", self.mix_block.gamma_value().detach())
        # Counted on the device; read (a host sync) only every TRIVIAL_MASK_STEPS steps.
        trivial = stats["mask_std"] < TRIVIAL_MASK_STD
        self.trivial_steps.copy_(torch.where(trivial, self.trivial_steps + 1, 0))
        if (
            self.global_step % TRIVIAL_MASK_STEPS == 0
            and int(self.trivial_steps) >= TRIVIAL_MASK_STEPS
        ):
            warnings.warn(
                f"The Mix Block's masks have been nearly constant (spatial std < "
                f"{TRIVIAL_MASK_STD}) for {int(self.trivial_steps)} steps: a trivial solution. "
                "Check mix_block.mask_loss=mean_var, mix_block.small_init=output and "
                "mixing.block_lr_scale (a Mix Block learning at the backbone's rate stays "
                "near its uniform-attention start).",
                stacklevel=2,
            )
