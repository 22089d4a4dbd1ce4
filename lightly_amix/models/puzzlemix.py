"""MoCo v2 + PuzzleMix with cluster information: the paper's "PuzzleMix (C)" (Table 4).

PuzzleMix (Kim et al., ICML 2020) needs a classification loss for its saliency. Without labels,
the paper gives it the ODC pseudo-labels AMix-C uses (§4.2, "(C)": methods with cluster
information). Each step:

- the backbone learns from MoCo's InfoNCE and the mixup InfoNCE of PuzzleMix's mixed queries,
  ``L = L_moco(q, k) + w · L_mix(q̃, k_i, k_j, λ)`` (AMix eq. 2 + eq. 4, λ = the mask's mean), as
  every fixed mixup in the cross-view pipeline (:class:`~lightly_amix.models.MixMoCo`);
- the saliency of an image is ``‖∂ CE(h(q(x)), ŷ) / ∂x‖`` (RMS over channels), ``h`` the cluster
  head on the online query projection and ``ŷ`` the image's ODC pseudo-label, taken in eval mode
  without touching the parameters' gradients (PuzzleMix's ``clean_lam = 0``);
- the cluster head learns from the clean keys (CE) and from PuzzleMix's mixed queries (mixup CE,
  detached), and the ODC memory and label queue follow the keys, exactly as in AMix-C
  (:class:`~lightly_amix.clustering.ClusterPseudoLabels`).

Under DDP a partner may live on another device: its image, saliency and key are gathered (the
partner permutation is global, as for the other mixups).

Examples:
    >>> model = PuzzleMixMoCo(ModelConfig(), mixing=MixingConfig(alpha=1.0), num_samples=105_000)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch.nn.functional as F
from lightly.utils import dist
from torch import Tensor, nn

from lightly_amix.clustering.pseudo_labels import ClusterPseudoLabels
from lightly_amix.config import MixingConfig, ModelConfig, ODCConfig, OptimConfig
from lightly_amix.losses import mixup_info_nce
from lightly_amix.mixing.base import MixOutput
from lightly_amix.mixing.puzzle import PuzzleMix, input_saliency
from lightly_amix.models.base import _as_config
from lightly_amix.models.mix_moco import mix_with_partners
from lightly_amix.models.mixing_method import MixingMethod
from lightly_amix.utils import eval_mode, gather, global_partners


class PuzzleMixMoCo(MixingMethod):
    """MoCo v2 with PuzzleMix, its saliency from the ODC cluster head ("PuzzleMix (C)").

    Args:
        model: Backbone, head, queue and momentum settings.
        optim: Optimiser settings.
        batch_size: Images per device per step.
        mixing: λ distribution, loss weight and pipeline.
        odc: Clustering settings (the pseudo-labels of the saliency).
        num_samples: Size of the training set (for the ODC memory).
        puzzle: Keyword arguments of :class:`~lightly_amix.mixing.PuzzleMix`.

    Raises:
        ValueError: If ``num_samples`` is not positive.
    """

    replicated_buffer_prefixes = (*MixingMethod.replicated_buffer_prefixes, "clustering.")

    def __init__(
        self,
        model: ModelConfig | Mapping[str, Any] | None = None,
        optim: OptimConfig | Mapping[str, Any] | None = None,
        batch_size: int = 256,
        mixing: MixingConfig | Mapping[str, Any] | None = None,
        odc: ODCConfig | Mapping[str, Any] | None = None,
        num_samples: int = 0,
        puzzle: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(model, optim, batch_size, mixing)
        self.odc_cfg: ODCConfig = _as_config(odc or ODCConfig(), ODCConfig)
        self.save_hyperparameters(
            {
                "odc": vars(self.odc_cfg).copy(),
                "num_samples": num_samples,
                "puzzle": dict(puzzle or {}),
            }  # fmt: skip
        )
        self.mixup = PuzzleMix(**(puzzle or {}))
        self.clustering = ClusterPseudoLabels(
            num_samples, self.model_cfg.proj_output_dim, self.model_cfg.queue_size, self.odc_cfg
        )

    def trainable_modules(self) -> list[nn.Module]:
        return [*super().trainable_modules(), self.clustering.head]

    def on_train_start(self) -> None:
        """The ODC memory's k-means over the whole training set (once)."""
        self.clustering.start(self, "PuzzleMix (C)")

    def saliency(self, images: Tensor, labels: Tensor) -> Tensor:
        """PuzzleMix's saliency (N, H, W) of ``images`` for their pseudo-labels ``labels`` (N,).

        The loss is the CE of the cluster head on the online query projection, in eval mode.
        """
        head = self.clustering.head

        def loss(x: Tensor) -> Tensor:
            q = F.normalize(self.projection_head(self.backbone(x)), dim=1)
            return F.cross_entropy(head(q).float(), labels)

        with eval_mode(self.backbone, self.projection_head, head):
            return input_saliency(loss, images)

    def puzzle_mix(
        self, x_q: Tensor, sal_q: Tensor, x_partner: Tensor, sal_partner: Tensor, lam: Tensor,
        perm_local: Tensor | None,
    ) -> MixOutput:  # fmt: skip
        """PuzzleMix of the query views with their partners.

        With one process and the query views as partners (``perm_local``), the batch is mixed
        with its own permutation; otherwise the 2N batch of :func:`pair_batch` is mixed and its
        first N rows kept.
        """
        if perm_local is not None:
            return self.mixup(x_q, perm_local, lam, saliency=sal_q)
        return mix_with_partners(self.mixup, x_q, x_partner, lam, saliency=(sal_q, sal_partner))

    # ----------------------------------------------------------------- step
    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        (x_q, x_k) = batch[0]
        if len(batch) < 3:
            raise ValueError("PuzzleMix (C) needs sample indices in the batch (IndexedDataset).")
        indices = batch[2]
        n, t = x_q.shape[0], self.model_cfg.temperature
        self.update_momentum_encoders()
        q, _ = self.encode_query(x_q)  # (N, D)
        k = self.encode_key(x_k)  # (N, D)
        ptr = int(self.memory_bank.bank_ptr)  # where this step's keys go (for the label queue)
        negatives = self.negatives_then_enqueue(k)  # (K, D), the queue before this step
        loss_moco, acc = self.moco_loss(q, k, negatives)

        partners = global_partners(n, x_q.device)  # (N,) global indices
        pool = self.partner_pool(x_q, x_k, k)
        labels = self.clustering.pair_labels(indices, partners, x_q.device)  # (y_i, y_j)
        sal_q = self.saliency(x_q, labels[0])  # (N, H, W)
        sal_pool = gather(sal_q if pool.query_views else self.saliency(x_k, labels[0]))
        local = pool.query_views and dist.world_size() == 1
        out = self.puzzle_mix(
            x_q, sal_q, pool.images[partners], sal_pool[partners], self.sample_lambda(n),
            partners if local else None,
        )  # fmt: skip
        q_mix, _ = self.encode_query(out.images)  # (N, D)
        loss_mix = mixup_info_nce(q_mix, k, pool.keys[partners], negatives, out.lam, t)
        loss_head = self.clustering.head_loss(k, q_mix, labels, out.lam)
        loss = (
            loss_moco + self.mixing_cfg.mix_weight * loss_mix + self.odc_cfg.head_weight * loss_head
        )
        self.clustering.after_step(indices, k, ptr, labels[0])
        self.log_terms(
            {
                "loss": loss,
                "loss_moco": loss_moco,
                "loss_mix": loss_mix,
                "loss_head": loss_head,
                "acc_moco": acc,
            }  # fmt: skip
        )
        self.log("train/lam", out.lam.mean())
        self.log_common()
        return loss
