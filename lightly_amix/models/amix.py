"""AMix-I and AMix-C: MoCo v2 with a learned mixed-sample generator (Mix Block+).

One training step has two sub-tasks (paper §3.3):

- **backbone**: ``L_moco(q, k) + w · L_mix(λ)`` on a sample mixed by the Mix Block's mask,
  *detached* and λ-adjusted, with positives from the key views (cross-view pipeline, §3.1);
- **Mix Block**: a second mixed sample (own λ', own partners) is encoded by the momentum
  encoder with frozen weights *in eval mode* (so its BatchNorm statistics do not drift toward
  mixed images; ``mixing.block_bn=batch`` normalises with the mixed batch's statistics
  instead, leaving the running ones untouched), and the Mix Block's loss (AMix-I: infoNCE +
  BCE; AMix-C: CE on ODC pseudo-labels + BCE; :mod:`lightly_amix.mixing.block_losses`) plus the
  mask loss flows back to the Mix Block only.

The Mix Block sees stage-3 features of the images it mixes, without gradient: the momentum
encoder's (default, as AutoMix) or the online query forward's (``block_features=online``).
AMix-C's clustering lives in :class:`~lightly_amix.clustering.ClusterPseudoLabels`.

Choices where this implementation is more specific than the printed paper, or differs from the
authors' public code (each is what the paper's text implies, or the safer reading):

- The backbone's mixup loss weighs the two positives with the *effective* λ, the mean of the
  λ-adjusted mask, per sample (the paper writes the drawn λ; after adjusting they differ by at
  most ``adjust_margin``, and the effective one is what the pixels hold).
- λ is drawn per sample, λ ~ Beta(α, α) with α = 2 (paper Fig. 5), independently for the
  backbone's and the Mix Block's samples.
- The mask for the backbone's sample is drawn with the Mix Block in train mode (its dropout
  active), under ``no_grad``, then λ-adjusted (paper §3.2).
- AMix-C's small clusters are dissolved and refilled at every centroid refresh
  (``odc.refresh_interval`` steps), not at every step (ODC's code does it every step).
- γ of the adaptive λ encoding is clamped to [0, 1] with a straight-through gradient, so it
  can leave 0; as a parameter it gets weight decay like the Mix Block's weights
  (:class:`~lightly_amix.mixing.MixBlock`).
- ``mixing.pipeline=reference`` pairs as the public code does (``x_i^τq`` with ``x_j^τk``,
  positives ``k_i^τk`` and ``k_j^τq``, :mod:`lightly_amix.models.mixing_method`); its Mix Block
  then sees the momentum encoder's stage-3 features of the partners' key views.

Reference: AMix, ICLR 2022 submission, §3; Zhan et al., "Online Deep Clustering", CVPR 2020.

Examples:
    >>> model = AMix(ModelConfig(), mixing=MixingConfig(block_loss="infonce+bce"), batch_size=256)
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightly_amix.clustering.pseudo_labels import ClusterPseudoLabels
from lightly_amix.config import (
    MixingConfig,
    ModelConfig,
    ODCConfig,
    OptimConfig,
    block_loss_terms,
    uses_pseudo_labels,
)
from lightly_amix.losses import mixup_info_nce
from lightly_amix.mixing.block_losses import BLOCK_LOSSES, BlockLossInputs
from lightly_amix.mixing.learned import LearnedMixup
from lightly_amix.mixing.masks import mask_diagnostics
from lightly_amix.mixing.mix_block import MixBlockConfig
from lightly_amix.models.base import _as_config
from lightly_amix.models.mixing_method import MixingMethod
from lightly_amix.utils import eval_mode, frozen_network_mode, gather, global_partners

TRIVIAL_MASK_STD = 0.01
TRIVIAL_MASK_STEPS = 200


@dataclass
class BlockPool:
    """Partner candidates of the Mix Block's mixes, with their stage-3 maps and positives.

    Attributes:
        images: All devices' partner images, (N_global, 3, H, W).
        features: Their stage-3 feature maps for the Mix Block, (N_global, C, h, w).
        keys: Their positive keys, (N_global, D).
    """

    images: Tensor
    features: Tensor
    keys: Tensor


class AMix(MixingMethod):
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

    replicated_buffer_prefixes = (*MixingMethod.replicated_buffer_prefixes, "clustering.")
    # Checkpoints of versions before the clustering had its own module.
    legacy_key_prefixes = {
        "odc.": "clustering.memory.",
        "cluster_head.": "clustering.head.",
        "queue_labels": "clustering.queue_labels",
    }

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
        super().__init__(model, optim, batch_size, mixing)
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
        self.mix_block = LearnedMixup(self.backbone.stage3_dim, self.block_cfg)
        self.clustering: ClusterPseudoLabels | None = None
        if uses_pseudo_labels(self.mixing_cfg.block_loss):
            self.clustering = ClusterPseudoLabels(
                num_samples, self.model_cfg.proj_output_dim, self.model_cfg.queue_size, self.odc_cfg
            )
        self.trivial_steps: Tensor
        self.register_buffer("trivial_steps", torch.zeros((), dtype=torch.long), persistent=False)

    @property
    def odc(self) -> Any:
        """AMix-C's ODC memory (``None`` for AMix-I)."""
        return self.clustering.memory if self.clustering is not None else None

    @property
    def cluster_head(self) -> nn.Linear | None:
        """AMix-C's cluster head (``None`` for AMix-I)."""
        return self.clustering.head if self.clustering is not None else None

    def trainable_modules(self) -> list[nn.Module]:
        modules = [*super().trainable_modules(), self.mix_block]
        return modules + ([self.clustering.head] if self.clustering is not None else [])

    def lr_scales(self) -> dict[str, tuple[list[nn.Module], float]]:
        """The Mix Block learns at ``mixing.block_lr_scale`` times the backbone's rate."""
        if self.mixing_cfg.block_lr_scale == 1.0:
            return super().lr_scales()
        rest = [m for m in self.trainable_modules() if m is not self.mix_block]
        return {"": (rest, 1.0), "mix_block_": ([self.mix_block], self.mixing_cfg.block_lr_scale)}

    # ----------------------------------------------------------------- start-up
    def on_train_start(self) -> None:
        """AMix-C: the ODC memory's k-means over the whole training set (once)."""
        if self.clustering is not None:
            self.clustering.start(self, "AMix-C")

    # ----------------------------------------------------------------- pieces
    @torch.no_grad()
    def block_features(self, x_q: Tensor, online_stage3: Tensor) -> Tensor:
        """Stage-3 maps (N, C, h, w) of the query views for the Mix Block, without gradient."""
        if self.mixing_cfg.block_features == "online":
            return online_stage3.detach()
        with eval_mode(self.backbone_momentum):
            return self.backbone_momentum.forward_stage3(x_q)

    def block_pool(self, x_q: Tensor, x_k: Tensor, k: Tensor, z: Tensor) -> BlockPool:
        """Partners of the Mix Block's mixes under ``mixing.pipeline`` (see the module doc)."""
        pool = self.partner_pool(x_q, x_k, k)
        if pool.query_views:
            return BlockPool(pool.images, gather(z), pool.keys)
        with torch.no_grad(), eval_mode(self.backbone_momentum):
            z_k = self.backbone_momentum.forward_stage3(x_k)  # the key views' stage-3 maps
        return BlockPool(pool.images, gather(z_k), pool.keys)

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
        ptr = int(self.memory_bank.bank_ptr) if self.clustering is not None else 0
        negatives = self.negatives_then_enqueue(k)  # (K, D), before this step's keys
        loss_moco, acc = self.moco_loss(q, k, negatives)

        z = self.block_features(x_q, stage3)  # (N, C, h, w)
        pool = self.block_pool(x_q, x_k, k, z)

        # Backbone: a detached, λ-adjusted Mix Block mask.
        perm, lam = global_partners(n, x_q.device), self.sample_lambda(n)
        x_mix, _, lam_eff = self.mix_block.backbone_sample(
            x_q, pool.images[perm], z, pool.features[perm], lam
        )
        q_mix, _ = self.encode_query(x_mix)
        loss_mix = mixup_info_nce(q_mix, k, pool.keys[perm], negatives, lam_eff, t)

        # Mix Block: own partners and λ', frozen momentum encoder (mode: mixing.block_bn).
        perm2, lam2 = global_partners(n, x_q.device), self.sample_lambda(n)
        x_mb, mask2, loss_mask = self.mix_block.block_sample(
            x_q, pool.images[perm2], z, pool.features[perm2], lam2
        )
        frozen = (self.backbone_momentum, self.projection_head_momentum)
        with frozen_network_mode(self.mixing_cfg.block_bn, *frozen):
            q_mb = F.normalize(self.projection_head_momentum(self.backbone_momentum(x_mb)), dim=1)
        inputs = BlockLossInputs(q_mb, k, pool.keys[perm2], negatives, lam2, t)
        if self.clustering is not None:
            if indices is None:
                raise ValueError("AMix-C needs sample indices in the batch (IndexedDataset).")
            inputs.labels = self.clustering.pair_labels(indices, perm2, x_q.device)
            inputs.logits, inputs.class_weights, inputs.same_class_negatives = (
                self.clustering.loss_inputs(q_mb, inputs.labels, "infonce_pl" in self.terms)
            )
        terms = {f"loss_block_{term}": BLOCK_LOSSES[term](inputs) for term in self.terms}
        loss_block = self.mixing_cfg.block_weight * sum(terms.values()) + loss_mask

        loss = loss_moco + self.mixing_cfg.mix_weight * loss_mix + loss_block
        logged: dict[str, Tensor] = {
            "loss_moco": loss_moco,
            "loss_mix": loss_mix,
            "loss_mask": loss_mask,
            **terms,
            "acc_moco": acc,
        }
        if self.clustering is not None and inputs.labels is not None and indices is not None:
            loss_head = self.clustering.head_loss(k, q_mb, inputs.labels, lam2)
            loss = loss + self.odc_cfg.head_weight * loss_head
            logged["loss_head"] = loss_head
            self.clustering.after_step(indices, k, ptr, inputs.labels[0])
        return loss, logged, (mask2, lam2, lam_eff)

    # ----------------------------------------------------------------- checkpoints
    def rename_legacy_keys(self, keys: Mapping[str, Any]) -> dict[str, Any]:
        """State-dict entries of an older checkpoint under today's names."""
        renamed = {}
        for key, value in keys.items():
            for old, new in self.legacy_key_prefixes.items():
                if key.startswith(old):
                    key = new + key[len(old) :]
                    break
            renamed[key] = value
        return renamed

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["state_dict"] = self.rename_legacy_keys(checkpoint["state_dict"])
        super().on_load_checkpoint(checkpoint)

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
