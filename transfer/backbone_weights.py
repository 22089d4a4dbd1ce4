"""Loading pre-trained ResNet-50 weights (``backbone.pt``) for the VOC fine-tuning.

The pre-trained weights (``--weights backbone.pt``, a torchvision ResNet-50 state_dict without
``fc``) go into the ResNet-50 that :func:`transfer.detection_model.build_model` then splits into
the trunk and res5, as detectron2's converted weights do. A file that lacks some of them (or has
others) is refused with the keys listed, unless ``allow_partial`` (``--allow-partial``; the rest
then keep torchvision's initialisation; not recommended). Lightning checkpoints, ResNet-18/34
and CIFAR-stem weights are refused with a message that says what to pass instead.

Examples:
    >>> try:
    ...     load_backbone_weights(torchvision.models.resnet50(), "missing.pt")
    ... except FinetuneError as exc:
    ...     print(str(exc)[:40])
    --weights: no such file: missing.pt. Exp
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import Tensor

from transfer.errors import FinetuneError


def _describe_basic_block_state(state: dict[str, Tensor]) -> str:
    blocks = {k.split(".")[1] for k in state if k.startswith("layer3.")}
    return "ResNet-18" if len(blocks) <= 2 else "ResNet-34"


def load_backbone_weights(
    resnet: torchvision.models.ResNet, path: str | Path, allow_partial: bool = False
) -> int:
    """Loads ``backbone.pt`` (a torchvision ResNet-50 state_dict, ``fc`` optional) into ``resnet``.

    Every key except ``fc.*`` must be present with the right shape, and nothing else may be
    there: the message counts and lists what is missing, unexpected or of the wrong shape
    (:func:`lightly_amix.state_dicts.load_state_dict_strict`, as the evaluation recipes).
    Loaded with ``torch.load(weights_only=True)``.

    Args:
        resnet: A torchvision ``resnet50()``.
        path: The weights file, as the pre-training recipes write it (``<output-dir>/backbone.pt``).
        allow_partial: Load the matching tensors of a file that lacks some (or has extra ones),
            keeping ``resnet``'s initial values for the rest, with one ``warning:`` line on
            stderr; not recommended (``--allow-partial``). Wrong shapes are still refused.

    Returns:
        The number of tensors loaded.

    Raises:
        FinetuneError: The file is missing or unreadable, is a Lightning checkpoint, a
            ResNet-18/34, a CIFAR-stem ResNet or otherwise not a ResNet-50 state_dict.

    Examples:
        >>> import tempfile
        >>> resnet = torchvision.models.resnet50()
        >>> state = {k: v for k, v in resnet.state_dict().items() if not k.startswith("fc.")}
        >>> with tempfile.TemporaryDirectory() as d:
        ...     torch.save(state, f"{d}/backbone.pt")
        ...     load_backbone_weights(torchvision.models.resnet50(), f"{d}/backbone.pt")
        318
    """
    return load_backbone_weights_detailed(resnet, path, allow_partial)[0]


def load_backbone_weights_detailed(
    resnet: torchvision.models.ResNet, path: str | Path, allow_partial: bool = False
) -> tuple[int, list[str], list[str]]:
    """:func:`load_backbone_weights`, also returning the missing and unexpected keys.

    Args:
        resnet: A torchvision ``resnet50()``.
        path: The weights file (``backbone.pt``).
        allow_partial: As in :func:`load_backbone_weights`.

    Returns:
        ``(loaded, missing, unexpected)``: the number of tensors loaded and the keys the file
        lacks or has in excess (both empty unless ``allow_partial``).

    Raises:
        FinetuneError: As :func:`load_backbone_weights`.
    """
    path = Path(path)
    expected = (
        "Expected backbone.pt as the pre-training recipes write it: a torchvision ResNet-50 "
        "state_dict without fc (e.g. recipes/pretrain_imagenet.py --backbone resnet50)."
    )
    if not path.is_file():
        raise FinetuneError(f"--weights: no such file: {path}. {expected}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a user error here
        raise FinetuneError(
            f"--weights: {path} could not be read with torch.load(weights_only=True): {exc}. "
            f"{expected}"
        ) from None
    if isinstance(state, dict) and "state_dict" in state:
        raise FinetuneError(
            f"--weights: {path} is a training checkpoint (it has 'state_dict'), not backbone.pt. "
            "Pass the backbone.pt that the recipe wrote next to it."
        )
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise FinetuneError(f"--weights: {path} is not a dict of tensors. {expected}")
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    prefixed = [k for k in state if k.startswith(("backbone.resnet.", "module.", "resnet."))]
    if prefixed:
        raise FinetuneError(
            f"--weights: {path} has prefixed keys (e.g. {prefixed[0]!r}); expected plain "
            f"torchvision names like 'conv1.weight'. {expected}"
        )
    if "layer1.0.conv3.weight" not in state and "layer1.0.conv1.weight" in state:
        arch = _describe_basic_block_state(state)
        raise FinetuneError(
            f"--weights: {path} holds a {arch} (basic blocks, 512 output channels), but the "
            "C4 detection protocol needs a ResNet-50 (bottleneck blocks, 1024/2048 channels). "
            "Pre-train with the resnet50 backbone, or fine-tune without --weights."
        )
    conv1 = state.get("conv1.weight")
    if conv1 is not None and tuple(conv1.shape) == (64, 3, 3, 3):
        raise FinetuneError(
            f"--weights: {path} was pre-trained with the CIFAR stem (3x3 conv1, no max-pool; "
            "model.cifar_stem=true), but detection needs the ImageNet stem (7x7 stride-2 conv1 "
            "and max-pool) at 800 px. Pre-train with model.cifar_stem=false."
        )
    # Imported here, not at the top: lightly_amix pulls in Lightning (seconds), which the
    # fine-tuning does not otherwise need.
    from lightly_amix.state_dicts import load_state_dict_strict

    try:
        missing, unexpected = load_state_dict_strict(
            resnet,
            state,
            f"--weights: {path}",
            allow_partial=allow_partial,
            ignore=("fc.",),
            expected="backbone.pt as the pre-training recipes write it: a torchvision ResNet-50 "
            "state_dict without fc (e.g. recipes/pretrain_imagenet.py --backbone resnet50)",
            model="a ResNet-50",
        )
    except ValueError as exc:
        raise FinetuneError(str(exc)) from None
    return len(state) - len(unexpected), missing, unexpected
