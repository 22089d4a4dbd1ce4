"""MoCo v2 + a fixed mixup in the cross-view pipeline (the baselines of AMix's Tables 4 and 5).

The backbone loss is ``L_moco(q, k) + w · L_mix(λ)`` (AMix eq. 2 + eq. 4): MoCo's InfoNCE on the
clean query, plus the mixup InfoNCE of a mixed query against both sources' keys. In the
cross-view pipeline (paper Fig. 2a) the *query views* are mixed and the positives are the
sources' *key views*; the partner of each sample is a random permutation of the global batch,
the same on every device.

Examples:
    >>> model = MixMoCo(ModelConfig(), mixing=MixingConfig(), mixup="cutmix", batch_size=256)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from lightly.utils import dist
from torch import Tensor

from lightly_amix.config import MixingConfig, ModelConfig, OptimConfig
from lightly_amix.losses import mixup_info_nce
from lightly_amix.mixing.base import MixOutput, Mixup, pair_batch
from lightly_amix.mixing.manifold import ManifoldMix
from lightly_amix.mixing.registry import build_mixup
from lightly_amix.models.mixing_method import MixingMethod
from lightly_amix.utils import global_partners


def mix_with_partners(
    mixup: Mixup,
    images: Tensor,
    partners: Tensor,
    lam: Tensor,
    saliency: tuple[Tensor, Tensor] | None = None,
) -> MixOutput:
    """Mixes ``images[n]`` with ``partners[n]`` (the first n rows of a 2n mixing batch).

    Used under DDP, where a partner may live on another device; one process mixes its batch
    with a permutation directly. ``saliency`` (of the images and of the partners, (N, H, W)
    each) goes to mixups that need it (PuzzleMix).
    """
    n = images.shape[0]
    if saliency is None:
        out = mixup(*pair_batch(images, partners, lam))
    else:
        out = mixup(*pair_batch(images, partners, lam), saliency=torch.cat(saliency))
    mask = None if out.mask is None else out.mask[:n]
    return MixOutput(images=out.images[:n], lam=out.lam[:n], mask=mask, stage=out.stage)


class MixMoCo(MixingMethod):
    """MoCo v2 with a fixed mixup (MixUp, CutMix, FMix, ResizeMix, SaliencyMix, ManifoldMix).

    Args:
        model: Backbone, head, queue and momentum settings.
        optim: Optimiser settings.
        batch_size: Images per device per step.
        mixing: λ distribution, loss weight and pipeline.
        mixup: Name of the fixed mixup (``lightly_amix.mixing.MIXUPS``).
    """

    def __init__(
        self,
        model: ModelConfig | Mapping[str, Any] | None = None,
        optim: OptimConfig | Mapping[str, Any] | None = None,
        batch_size: int = 256,
        mixing: MixingConfig | Mapping[str, Any] | None = None,
        mixup: str = "mixup",
    ) -> None:
        super().__init__(model, optim, batch_size, mixing)
        self.save_hyperparameters({"mixup": mixup})
        self.mixup = build_mixup(mixup)

    def mixed_queries(
        self, x_q: Tensor, x_partner: Tensor, lam: Tensor, perm_local: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """Normalised projections of the mixed queries (N, D) and the effective λ (N,).

        Args:
            x_q: This device's images to mix (N, 3, H, W).
            x_partner: Their partners (N, 3, H, W).
            lam: Requested share of ``x_q`` (N,).
            perm_local: With one process, the permutation with ``x_partner = x_q[perm]``
                (mixups then run on the batch itself); ``None`` under DDP.
        """
        if perm_local is not None:
            out = self.mixup(x_q, perm_local, lam)
        else:
            out = mix_with_partners(self.mixup, x_q, x_partner, lam)
        if isinstance(self.mixup, ManifoldMix):
            if perm_local is None:  # mix hidden features of the 2N batch, keep the first N
                both, swap, lam2 = pair_batch(x_q, x_partner, out.lam)
                assert out.stage is not None
                n = x_q.shape[0]
                features = self.backbone.forward_manifold(both, out.stage, swap, lam2)[:n]
            else:
                assert out.stage is not None
                features = self.backbone.forward_manifold(x_q, out.stage, perm_local, out.lam)
            return torch.nn.functional.normalize(self.projection_head(features), dim=1), out.lam
        q_mix, _ = self.encode_query(out.images)
        return q_mix, out.lam

    def pipeline_views(
        self, x_q: Tensor, x_k: Tensor, k: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """Partners for mixing and their positives, for this device's samples.

        Returns:
            ``(x_partner, k_i, k_j, perm_local)``: partner images (N, 3, H, W), keys of the
            samples (N, D) and of their partners (N, D), and the permutation when one process
            mixes its own query views (else ``None``).
        """
        partners = global_partners(x_q.shape[0], x_q.device)  # (N,) global indices
        pool = self.partner_pool(x_q, x_k, k)
        local = pool.query_views and dist.world_size() == 1
        return pool.images[partners], k, pool.keys[partners], partners if local else None

    # ----------------------------------------------------------------- step
    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        (x_q, x_k) = batch[0]
        self.update_momentum_encoders()
        q, _ = self.encode_query(x_q)  # (N, D)
        k = self.encode_key(x_k)  # (N, D)
        negatives = self.negatives_then_enqueue(k)  # (K, D), the queue before this step
        loss_moco, acc = self.moco_loss(q, k, negatives)

        x_partner, k_i, k_j, perm_local = self.pipeline_views(x_q, x_k, k)
        lam = self.sample_lambda(x_q.shape[0])
        q_mix, lam_eff = self.mixed_queries(x_q, x_partner, lam, perm_local)
        t = self.model_cfg.temperature
        loss_mix = mixup_info_nce(q_mix, k_i, k_j, negatives, lam_eff, t)
        loss = loss_moco + self.mixing_cfg.mix_weight * loss_mix
        self.log_terms(
            {"loss": loss, "loss_moco": loss_moco, "loss_mix": loss_mix, "acc_moco": acc}
        )
        self.log("train/lam", lam_eff.mean())
        self.log_common()
        return loss
