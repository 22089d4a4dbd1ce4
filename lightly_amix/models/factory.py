"""The pre-training method of a config: ``--method`` name → LightningModule.

Examples:
    >>> cfg = load_config("recipes/configs/stl10.yaml", overrides=["method=amix-i"])
    >>> model = build_model(cfg, num_samples=105_000)  # doctest: +SKIP
    >>> model.hparams["method"]  # doctest: +SKIP
    'amix-i'
"""

from __future__ import annotations

import warnings

from lightly_amix.config import FIXED_MIXUPS, PretrainConfig, uses_pseudo_labels
from lightly_amix.models.amix import AMix
from lightly_amix.models.base import MomentumContrastMethod
from lightly_amix.models.byol import BYOL, AMixBYOL
from lightly_amix.models.imix import IMix
from lightly_amix.models.mix_moco import MixMoCo
from lightly_amix.models.mochi import MoCHi
from lightly_amix.models.mocov2 import MoCoV2
from lightly_amix.models.puzzlemix import PuzzleMixMoCo
from lightly_amix.models.simclr import AMixSimCLR, SimCLR
from lightly_amix.models.unmix import UnMix


def build_model(cfg: PretrainConfig, num_samples: int) -> MomentumContrastMethod:
    """The LightningModule of ``cfg.method``; its hyper-parameters record the method name.

    Args:
        cfg: The run's config.
        num_samples: Size of the training set (the clustering memory of AMix-C and PuzzleMix (C)
            has one row each).

    Raises:
        ValueError: If the method is unknown.
    """
    batch = cfg.trainer.batch_size
    model: MomentumContrastMethod
    if cfg.method == "mocov2":
        model = MoCoV2(cfg.model, cfg.optim, batch_size=batch)
    elif cfg.method in FIXED_MIXUPS:
        model = MixMoCo(cfg.model, cfg.optim, batch, cfg.mixing, mixup=cfg.method)
    elif cfg.method == "mochi":
        model = MoCHi(cfg.model, cfg.optim, batch, cfg.mochi)
    elif cfg.method == "imix":
        model = IMix(cfg.model, cfg.optim, batch, cfg.mixing, cfg.imix)
    elif cfg.method == "unmix":
        model = UnMix(cfg.model, cfg.optim, batch, cfg.mixing)
    elif cfg.method == "simclr":
        model = SimCLR(cfg.model, cfg.optim, batch)
    elif cfg.method == "amix-simclr":
        model = AMixSimCLR(cfg.model, cfg.optim, batch, cfg.mixing, cfg.mix_block)
    elif cfg.method == "byol":
        model = BYOL(cfg.model, cfg.optim, batch)
    elif cfg.method == "amix-byol":
        model = AMixBYOL(cfg.model, cfg.optim, batch, cfg.mixing, cfg.mix_block)
    elif cfg.method == "puzzlemix":
        model = PuzzleMixMoCo(cfg.model, cfg.optim, batch, cfg.mixing, cfg.odc, num_samples)
    elif cfg.method in ("amix-i", "amix-c"):
        if cfg.method == "amix-c" and not uses_pseudo_labels(cfg.mixing.block_loss):
            warnings.warn(
                f"--method amix-c with mixing.block_loss={cfg.mixing.block_loss} uses no "
                "pseudo-labels; AMix-C is ce_pl+bce.",
                stacklevel=2,
            )
        model = AMix(cfg.model, cfg.optim, batch, cfg.mixing, cfg.mix_block, cfg.odc, num_samples)
    else:
        raise ValueError(f"Unknown method {cfg.method!r}.")
    model.save_hyperparameters({"method": cfg.method})
    return model
