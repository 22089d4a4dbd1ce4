"""What every "AMix beyond MoCo" method adds to its plain method: the Mix Block and its step.

:class:`LearnedMixupMethod` is combined with a plain method (``class AMixSimCLR(
LearnedMixupMethod, SimCLR)``): it builds the Mix Block from the ``mixing`` and ``mix_block``
configs, adds it to the trainable modules, draws λ, and turns the subclass's
:meth:`compute_losses` into a logged training step (the loss terms, the Mix Block's mask
statistics and the effective λ), after the momentum update.

Examples:
    >>> class AMixSimCLR(LearnedMixupMethod, SimCLR):
    ...     def compute_losses(self, batch): ...
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightly_amix.config import MixingConfig, ModelConfig, OptimConfig
from lightly_amix.mixing.base import sample_lambda
from lightly_amix.mixing.learned import LearnedMixup
from lightly_amix.mixing.masks import mask_diagnostics
from lightly_amix.mixing.mix_block import MixBlockConfig
from lightly_amix.models.base import MomentumContrastMethod, _as_config
from lightly_amix.utils import eval_mode, frozen_network_mode, gather, own_indices


class LearnedMixupMethod(MomentumContrastMethod):
    """The learned-mixup half of an AMix variant; the plain method comes next in the bases.

    Args:
        model: Backbone, head and momentum settings.
        optim: Optimiser settings.
        batch_size: Images per device per step.
        mixing: λ distribution, ``mix_weight`` and ``block_weight``.
        mix_block: Mix Block switches (Mix Block+ by default).
    """

    def __init__(
        self,
        model: ModelConfig | Mapping[str, Any] | None = None,
        optim: OptimConfig | Mapping[str, Any] | None = None,
        batch_size: int = 256,
        mixing: MixingConfig | Mapping[str, Any] | None = None,
        mix_block: MixBlockConfig | Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(model, optim, batch_size)
        self.mixing_cfg: MixingConfig = _as_config(mixing or MixingConfig(), MixingConfig)
        self.block_cfg: MixBlockConfig = _as_config(mix_block or MixBlockConfig(), MixBlockConfig)
        self.save_hyperparameters(
            {"mixing": vars(self.mixing_cfg).copy(), "mix_block": vars(self.block_cfg).copy()}
        )
        self.mix_block = LearnedMixup(self.backbone.stage3_dim, self.block_cfg)

    def trainable_modules(self) -> list[nn.Module]:
        return [*super().trainable_modules(), self.mix_block]

    def draw_lambda(self, n: int) -> Tensor:
        """λ ~ Beta(α, α) per sample (drawn on the CPU, then moved to the device), (N,)."""
        return sample_lambda(n, self.mixing_cfg.alpha).to(self.device)

    def block_inputs(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """What the Mix Block mixes ``x`` (N, C, H, W) with.

        Returns:
            The momentum network's stage-3 maps of ``x`` (N, C_3, h, w; eval mode, no
            gradient), all devices' images and maps (partners may live on another device), and
            the global batch index of each of ``x``'s samples (N,).
        """
        with torch.no_grad(), eval_mode(self.backbone_momentum):
            z = self.backbone_momentum.forward_stage3(x)  # (N, C_3, h, w)
        return z, gather(x), gather(z), own_indices(x.shape[0], x.device)

    def frozen_projection(self, x_mix: Tensor) -> Tensor:
        """The Mix Block's sample through the frozen momentum network, (N, D).

        The network's BatchNorm follows ``mixing.block_bn`` (``running``: eval mode).
        """
        frozen = (self.backbone_momentum, self.projection_head_momentum)
        with frozen_network_mode(self.mixing_cfg.block_bn, *frozen):
            return F.normalize(self.projection_head_momentum(self.backbone_momentum(x_mix)), dim=1)

    def compute_losses(
        self, batch: Any
    ) -> tuple[Tensor, dict[str, Tensor], tuple[Tensor, Tensor, Tensor]]:
        """One step's losses without logging or momentum update.

        Returns:
            The total loss, the named terms, and the Mix Block's mask, its λ' and the
            backbone sample's effective λ (for the diagnostics).
        """
        raise NotImplementedError

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        self.update_momentum_encoders()
        loss, terms, (mask2, lam2, lam_eff) = self.compute_losses(batch)
        self.log_terms({"loss": loss, **terms})
        for name, value in mask_diagnostics(mask2.detach(), lam2).items():
            self.log(f"train/{name}", value)
        self.log("train/lam", lam_eff.mean())
        self.log_common()
        return loss
