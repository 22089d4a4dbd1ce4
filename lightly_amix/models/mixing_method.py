"""What every mixing method adds to MoCo v2: λ draws and where each sample's partner comes from.

Two pipelines pair a sample ``i`` with a partner ``j`` (a random permutation of the global
batch, the same on every device):

- ``cross-view`` (the paper, Fig. 2a): mix the *query views* ``x_i^τq`` and ``x_j^τq``; the
  positives are the key views' keys ``k_i = f_k(x_i^τk)`` and ``k_j = f_k(x_j^τk)``;
- ``reference`` (the authors' public code): mix ``x_i^τq`` with the partner's *key view*
  ``x_j^τk``; the positives are ``k_i = f_k(x_i^τk)`` and ``k_j = f_k(x_j^τq)``, which costs one
  more momentum forward (of the query views).

Examples:
    >>> pool = method.partner_pool(x_q, x_k, k)  # doctest: +SKIP
    >>> x_j, k_j = pool.images[perm], pool.keys[perm]  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from lightly_amix.config import MixingConfig, ModelConfig, OptimConfig
from lightly_amix.mixing.base import sample_lambda
from lightly_amix.models.base import MomentumContrastMethod, _as_config
from lightly_amix.utils import gather


@dataclass
class PartnerPool:
    """The images a sample's partner is drawn from, and their positive keys.

    Attributes:
        images: All devices' partner candidates, (N_global, 3, H, W).
        keys: The positive key of each candidate's share of a mix, (N_global, D).
        query_views: Whether ``images`` are the query views themselves (``cross-view``), so
            that one process may mix its batch with a permutation of itself.
    """

    images: Tensor
    keys: Tensor
    query_views: bool


class MixingMethod(MomentumContrastMethod):
    """Base of the methods whose backbone also learns from mixed samples.

    Args:
        model: Backbone, head, queue and momentum settings.
        optim: Optimiser settings.
        batch_size: Images per device per step.
        mixing: λ distribution, loss weights and pipeline.
    """

    def __init__(
        self,
        model: ModelConfig | Mapping[str, Any] | None = None,
        optim: OptimConfig | Mapping[str, Any] | None = None,
        batch_size: int = 256,
        mixing: MixingConfig | Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(model, optim, batch_size)
        self.mixing_cfg: MixingConfig = _as_config(mixing or MixingConfig(), MixingConfig)
        self.save_hyperparameters({"mixing": vars(self.mixing_cfg).copy()})

    def sample_lambda(self, n: int) -> Tensor:
        """λ ~ Beta(α, α) per sample, on the CPU (checked there) then moved to the device."""
        return sample_lambda(n, self.mixing_cfg.alpha).to(self.device)

    def partner_pool(self, x_q: Tensor, x_k: Tensor, k: Tensor) -> PartnerPool:
        """Partner candidates and their positives under ``mixing.pipeline``.

        Args:
            x_q: This device's query views (N, 3, H, W).
            x_k: Its key views (N, 3, H, W).
            k: Keys of the key views, ``f_k(x_k)`` (N, D).
        """
        if self.mixing_cfg.pipeline == "cross-view":
            return PartnerPool(gather(x_q), gather(k), query_views=True)
        # Reference code: x_i^τq mixed with x_j^τk; positives k_i^τk and k_j^τq.
        return PartnerPool(gather(x_k), gather(self.encode_key(x_q)), query_views=False)
