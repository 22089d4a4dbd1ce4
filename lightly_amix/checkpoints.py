"""Reading pre-training checkpoints (``last.ckpt``) outside Lightning.

Examples:
    >>> ckpt = load_checkpoint("out/stl10_mocov2/last.ckpt")
    >>> backbone = backbone_from_checkpoint(ckpt, prefix="backbone_momentum.")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lightly_amix.models.backbones import ResNetBackbone, merge_split_bn_statistics


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Loads a Lightning checkpoint on the CPU with ``weights_only=True``.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If it is not a pre-training checkpoint of this package.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint '{path}' does not exist.")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or foreign files
        raise ValueError(f"Cannot read checkpoint '{path}': {exc}") from exc
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ValueError(
            f"'{path}' is not a Lightning checkpoint (no 'state_dict'); expected a last.ckpt "
            "written by recipes/pretrain_*.py."
        )
    hparams = ckpt.get("hyper_parameters", {})
    if "model" not in hparams:
        raise ValueError(
            f"'{path}' has no model hyper-parameters; expected a last.ckpt written by "
            "recipes/pretrain_*.py."
        )
    return ckpt


def sub_state_dict(state_dict: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """The entries under ``prefix`` with the prefix removed."""
    return {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}


def backbone_from_checkpoint(ckpt: dict[str, Any], prefix: str = "backbone.") -> ResNetBackbone:
    """Rebuilds the ResNet of a checkpoint (same name and stem) and loads its weights.

    A run with ``model.bn_splits`` trained with split BatchNorm; the returned backbone has
    plain BatchNorm with the parts' running statistics averaged (as in evaluation mode).

    Args:
        ckpt: From :func:`load_checkpoint`.
        prefix: ``backbone.`` (the online/query encoder) or ``backbone_momentum.``.
    """
    model_cfg = ckpt["hyper_parameters"]["model"]
    backbone = ResNetBackbone(model_cfg["backbone"], cifar_stem=model_cfg["cifar_stem"])
    state = sub_state_dict(ckpt["state_dict"], prefix)
    if not state:
        raise ValueError(f"The checkpoint has no weights under '{prefix}'.")
    backbone.load_state_dict(merge_split_bn_statistics(state, model_cfg.get("bn_splits", 0)))
    return backbone
