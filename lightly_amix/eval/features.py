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

from lightly_amix.checkpoints import backbone_from_checkpoint, load_checkpoint
from lightly_amix.config import uses_pseudo_labels
from lightly_amix.models.backbones import ResNetBackbone


@dataclass
class EncoderInfo:
    """What is known about a loaded encoder, for result tables."""

    method: str
    backbone: str
    epochs: int | None
    source: str


def _method_from_hparams(hparams: dict) -> str:
    if "mix_block" in hparams:
        block_loss = hparams.get("mixing", {}).get("block_loss", "")
        return "amix-c" if block_loss and uses_pseudo_labels(block_loss) else "amix-i"
    return str(hparams.get("mixup") or "mocov2")


def _architecture(state: dict[str, Tensor]) -> tuple[str, bool]:
    """(resnet name, cifar stem) from a torchvision ResNet state_dict."""
    if "conv1.weight" not in state or "layer4.0.conv1.weight" not in state:
        raise ValueError(
            "Not a torchvision ResNet state_dict (no conv1.weight / layer4 keys); expected a "
            "backbone.pt written by recipes/pretrain_*.py."
        )
    cifar = tuple(state["conv1.weight"].shape[-2:]) == (3, 3)
    if "layer1.0.conv3.weight" in state:
        return "resnet50", cifar
    return ("resnet34" if "layer2.3.conv1.weight" in state else "resnet18"), cifar


def load_encoder(path: str | Path) -> tuple[ResNetBackbone, EncoderInfo]:
    """The query encoder of a ``last.ckpt``, or a ``backbone.pt`` (architecture inferred).

    For a ``backbone.pt`` the method and epochs are read from the ``config.yaml`` that the
    recipe writes beside it, when present.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint '{path}' does not exist.")
    if path.suffix == ".ckpt":
        ckpt = load_checkpoint(path)
        hparams = ckpt["hyper_parameters"]
        encoder = backbone_from_checkpoint(ckpt, "backbone.")
        done = int(ckpt.get("epoch", -1)) + 1
        info = EncoderInfo(_method_from_hparams(hparams), encoder.name, done, str(path))
        return encoder.eval(), info
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"'{path}' does not hold a state_dict.")
    name, cifar = _architecture(state)
    encoder = ResNetBackbone(name, cifar_stem=cifar)
    encoder.resnet.load_state_dict(state, strict=False)
    method: str = "?"
    epochs: int | None = None
    config = path.parent / "config.yaml"
    if config.is_file():
        saved = yaml.safe_load(config.read_text()) or {}
        method = saved.get("method", "?")
        epochs = saved.get("trainer", {}).get("epochs")
    return encoder.eval(), EncoderInfo(method, name, epochs, str(path))


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
