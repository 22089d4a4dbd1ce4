"""Loading a pre-trained encoder and computing its features over a data set.

Examples:
    >>> encoder, info = load_encoder("out/stl10_amix_i/last.ckpt")
    >>> features, labels = extract_features(encoder, dataset, batch_size=256)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from lightly_amix.checkpoints import (
    backbone_from_checkpoint_with_report,
    load_checkpoint,
    method_from_hparams,
)
from lightly_amix.models.backbones import ResNetBackbone
from lightly_amix.state_dicts import load_state_dict_strict


@dataclass
class EncoderInfo:
    """What is known about a loaded encoder, for result tables."""

    method: str
    backbone: str
    epochs: int | None
    source: str
    partial: bool = False
    """Whether some weights were missing or unexpected and left out (``--allow-partial``)."""


def _architecture(state: dict[str, Tensor]) -> tuple[str, bool]:
    """(resnet name, cifar stem) from a torchvision ResNet state_dict."""
    if "conv1.weight" not in state or not any(str(k).startswith("layer") for k in state):
        raise ValueError(
            "Not a torchvision ResNet state_dict (no conv1.weight / layer<N> keys); expected a "
            "backbone.pt written by recipes/pretrain_*.py."
        )
    cifar = tuple(state["conv1.weight"].shape[-2:]) == (3, 3)
    if any(str(k).endswith(".conv3.weight") for k in state):  # Bottleneck blocks
        return "resnet50", cifar
    # Any stage with more blocks than ResNet-18's (2 each) tells a ResNet-34 (3-4-6-3), even
    # when other stages are missing from the file.
    deeper = ("layer1.2.conv1.weight", "layer2.2.conv1.weight", "layer3.2.conv1.weight",
              "layer4.2.conv1.weight")  # fmt: skip
    return ("resnet34" if any(k in state for k in deeper) else "resnet18"), cifar


def load_encoder(
    path: str | Path, allow_partial: bool = False
) -> tuple[ResNetBackbone, EncoderInfo]:
    """The query encoder of a ``last.ckpt``, or a ``backbone.pt`` (architecture inferred).

    For a ``backbone.pt`` the method and epochs are read from the ``config.yaml`` that the
    recipe writes beside it, when present. Every tensor of the ResNet must be in the file with
    its shape, and nothing else (a classifier ``fc.*`` in a ``backbone.pt`` is ignored).

    Args:
        path: ``last.ckpt`` or ``backbone.pt`` of a pre-training run.
        allow_partial: Load the matching tensors of a file that lacks some (or has extra ones),
            keeping the model's initial values for the rest, print one ``warning:`` line and
            set ``EncoderInfo.partial``; not recommended (the ``--allow-partial`` flag).

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the file is not a checkpoint or ResNet state_dict, or its weights do not
            match the ResNet (missing, unexpected or wrong-shape tensors, all counted and the
            first ones listed).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint '{path}' does not exist.")
    if path.suffix == ".ckpt":
        ckpt = load_checkpoint(path)
        hparams = ckpt["hyper_parameters"]
        encoder, missing, unexpected = backbone_from_checkpoint_with_report(
            ckpt, "backbone.", allow_partial=allow_partial, source=f"'{path}'"
        )
        done = int(ckpt.get("epoch", -1)) + 1
        info = EncoderInfo(method_from_hparams(hparams), encoder.name, done, str(path),
                           partial=bool(missing or unexpected))  # fmt: skip
        return encoder.eval(), info
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"'{path}' does not hold a state_dict.")
    name, cifar = _architecture(state)
    encoder = ResNetBackbone(name, cifar_stem=cifar)
    missing, unexpected = load_state_dict_strict(
        encoder.resnet,
        state,
        f"'{path}'",
        allow_partial=allow_partial,
        ignore=("fc.",),
        expected=f"a complete backbone.pt as recipes/pretrain_*.py writes it (every tensor of "
        f"the {name} but fc; the architecture was inferred from the file's keys)",
        model=f"a {name}{' (CIFAR stem)' if cifar else ''}",
    )
    method: str = "?"
    epochs: int | None = None
    config = path.parent / "config.yaml"
    if config.is_file():
        saved = yaml.safe_load(config.read_text()) or {}
        method = saved.get("method", "?")
        epochs = saved.get("trainer", {}).get("epochs")
    partial = bool(missing or unexpected)
    return encoder.eval(), EncoderInfo(method, name, epochs, str(path), partial=partial)


@torch.no_grad()
def extract_features(
    encoder: torch.nn.Module,
    dataset: Dataset,
    batch_size: int = 256,
    num_workers: int = 0,
    device: torch.device | str = "cpu",
    limit_batches: int | None = None,
    desc: str = "features",
) -> tuple[Tensor, Tensor]:
    """Pooled features (N, F) and labels (N,) of a data set, with a progress bar."""
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, shuffle=False)
    encoder = encoder.to(device).eval()
    features, labels = [], []
    for step, (images, targets) in enumerate(tqdm(loader, desc=desc, leave=False)):
        if limit_batches is not None and step >= limit_batches:
            break
        features.append(encoder(images.to(device)).flatten(1).float().cpu())
        labels.append(torch.as_tensor(targets).long())
    if not features:
        raise ValueError("The data set produced no batch.")
    return torch.cat(features), torch.cat(labels)
