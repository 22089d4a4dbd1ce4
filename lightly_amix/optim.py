"""SGD parameter groups shared by every method: who gets weight decay, at which learning rate.

Lightly's ``get_weight_decay_parameters`` exempts the parameters of norm layers and biases.
Scalar parameters outside norm layers, such as γ of Mix Block+ (the λ-encoding scale), are
norm-like too: weight decay pulls γ to 0, where the mask does not depend on λ at all
(d mask / dλ = 0), and its own gradient (~1e-5 per term) cannot hold it there. So every
parameter with fewer than two dimensions is exempt as well.

Examples:
    >>> groups = sgd_param_groups({"": ([backbone, head], 1.0), "mix_block_": ([block], 10.0)},
    ...                           lr=0.1, weight_decay=5e-4)
    >>> optimizer = torch.optim.SGD(groups, lr=0.1, momentum=0.9)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lightly.models.utils import get_weight_decay_parameters
from torch import nn


def weight_decay_split(
    modules: Sequence[nn.Module],
) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """``(decay, no_decay)``: norms, biases and every other parameter of < 2 dims are exempt."""
    decay, no_decay = get_weight_decay_parameters(list(modules))
    scalars = [p for p in decay if p.dim() < 2]
    decay = [p for p in decay if p.dim() >= 2]
    return decay, [*no_decay, *scalars]


def sgd_param_groups(
    groups: Mapping[str, tuple[Sequence[nn.Module], float]], lr: float, weight_decay: float
) -> list[dict[str, Any]]:
    """Optimiser groups ``<prefix>decay`` / ``<prefix>no_decay`` of each named set of modules.

    Args:
        groups: Prefix → (modules, learning-rate factor).
        lr: The base learning rate.
        weight_decay: Weight decay of the ``decay`` groups (0 for ``no_decay``).

    Returns:
        A list of dicts for ``torch.optim.SGD`` (empty groups left out), each with a ``name``.
    """
    out: list[dict[str, Any]] = []
    for prefix, (modules, scale) in groups.items():
        decay, no_decay = weight_decay_split(modules)
        for name, params, wd in (("decay", decay, weight_decay), ("no_decay", no_decay, 0.0)):
            if params:
                out.append({"name": prefix + name, "params": params, "lr": lr * scale,
                            "weight_decay": wd})  # fmt: skip
    return out
