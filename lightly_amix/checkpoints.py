"""Reading pre-training checkpoints (``last.ckpt``) outside Lightning.

Examples:
    >>> ckpt = load_checkpoint("out/stl10_mocov2/last.ckpt")
    >>> backbone = backbone_from_checkpoint(ckpt, prefix="backbone_momentum.")
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lightly_amix.config import uses_pseudo_labels
from lightly_amix.models.backbones import ResNetBackbone, merge_split_bn_statistics
from lightly_amix.state_dicts import load_state_dict_strict


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


def method_from_hparams(hparams: Mapping[str, Any]) -> str:
    """The ``--method`` of a checkpoint, from its hyper-parameters.

    :func:`lightly_amix.models.factory.build_model` records it as ``hparams["method"]``;
    checkpoints of earlier versions are recognised by their other hyper-parameters.
    """
    if "method" in hparams:
        return str(hparams["method"])
    if "mix_block" in hparams:
        block_loss = hparams.get("mixing", {}).get("block_loss", "")
        return "amix-c" if block_loss and uses_pseudo_labels(block_loss) else "amix-i"
    return str(hparams.get("mixup") or "mocov2")


def sub_state_dict(state_dict: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """The entries under ``prefix`` with the prefix removed."""
    return {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}


def backbone_from_checkpoint(
    ckpt: dict[str, Any],
    prefix: str = "backbone.",
    allow_partial: bool = False,
    source: str = "the checkpoint",
) -> ResNetBackbone:
    """Rebuilds the ResNet of a checkpoint (same name and stem) and loads its weights.

    A run with ``model.bn_splits`` trained with split BatchNorm; the returned backbone has
    plain BatchNorm with the parts' running statistics averaged (as in evaluation mode).

    Args:
        ckpt: From :func:`load_checkpoint`.
        prefix: ``backbone.`` (the online/query encoder) or ``backbone_momentum.``.
        allow_partial: Load the matching tensors when some are missing or unexpected (one
            ``warning:`` line on stderr) instead of raising; not recommended.
        source: How error messages name the checkpoint, e.g. its path.

    Raises:
        ValueError: If there are no weights under ``prefix``, or they do not match the ResNet
            of the hyper-parameters (missing, unexpected or wrong-shape tensors, all listed).
    """
    return backbone_from_checkpoint_with_report(ckpt, prefix, allow_partial, source)[0]


def backbone_from_checkpoint_with_report(
    ckpt: dict[str, Any],
    prefix: str = "backbone.",
    allow_partial: bool = False,
    source: str = "the checkpoint",
) -> tuple[ResNetBackbone, list[str], list[str]]:
    """:func:`backbone_from_checkpoint`, also returning what was left out of the load.

    Args:
        ckpt: From :func:`load_checkpoint`.
        prefix: ``backbone.`` (the online/query encoder) or ``backbone_momentum.``.
        allow_partial: Load the matching tensors of a checkpoint that lacks some (or has extra
            ones) instead of raising; see :func:`load_state_dict_strict`.
        source: How error messages name the checkpoint, e.g. its path.

    Returns:
        The backbone, the missing keys and the unexpected keys (both empty unless
        ``allow_partial``; names relative to the backbone, e.g. ``resnet.layer2.0.conv1.weight``).

    Raises:
        ValueError: If there are no weights under ``prefix``, or they do not match the ResNet
            named in the hyper-parameters (see :func:`load_state_dict_strict`).
    """
    model_cfg = ckpt["hyper_parameters"]["model"]
    name, cifar = model_cfg["backbone"], bool(model_cfg["cifar_stem"])
    backbone = ResNetBackbone(name, cifar_stem=cifar, width=int(model_cfg.get("width", 64)))
    state = sub_state_dict(ckpt["state_dict"], prefix)
    if not state:
        raise ValueError(f"{source} has no weights under '{prefix}'.")
    missing, unexpected = load_state_dict_strict(
        backbone,
        merge_split_bn_statistics(state, model_cfg.get("bn_splits", 0)),
        f"{source} ('{prefix}*')",
        allow_partial=allow_partial,
        expected=f"a complete last.ckpt as recipes/pretrain_*.py writes it ({prefix}* holding "
        f"every tensor of the {name}{' with the CIFAR stem' if cifar else ''} named in its "
        "hyper-parameters)",
        model=f"a {name}{' (CIFAR stem)' if cifar else ''}",
    )
    return backbone, missing, unexpected
