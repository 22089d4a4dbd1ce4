"""Small helpers shared by the methods and the clustering: gathering across devices, partners,
eval mode, batch-statistics mode.

Examples:
    >>> perm = global_partners(n_local=8, device=torch.device("cpu"))  # (8,) global indices
    >>> with eval_mode(encoder):
    ...     features = encoder(images)  # BatchNorm uses, and does not update, its statistics
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.distributed as torch_dist
from lightly.models.utils import concat_all_gather
from lightly.utils import dist
from torch import Tensor, nn


def gather(x: Tensor) -> Tensor:
    """All devices' tensors concatenated along dim 0 (no gradient); ``x`` itself on one."""
    return concat_all_gather(x.contiguous()) if dist.world_size() > 1 else x


def global_partners(n_local: int, device: torch.device) -> Tensor:
    """Global index of each local sample's partner, (n_local,).

    One random permutation of the global batch is drawn on rank 0 and broadcast, so every
    device agrees; each device takes the slice of its own samples.
    """
    world = dist.world_size()
    perm = torch.randperm(n_local * world, device=device)
    if world > 1:
        torch_dist.broadcast(perm, src=0)
    rank = dist.rank()
    return perm[rank * n_local : (rank + 1) * n_local]


@contextlib.contextmanager
def eval_mode(*modules: nn.Module) -> Iterator[None]:
    """Puts modules in eval mode (BatchNorm uses, and does not update, running statistics)."""
    modes = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        yield
    finally:
        for m, mode in zip(modules, modes, strict=True):
            m.train(mode)


@contextlib.contextmanager
def batch_stats_mode(*modules: nn.Module) -> Iterator[None]:
    """Train mode whose BatchNorm layers normalise with batch statistics but do not update them.

    For a frozen network that the gradient passes through (AutoMix's momentum network when the
    Mix Block learns through it): AutoMix's code runs it in train mode, so BatchNorm uses the
    statistics of the mixed batch; eval mode would use running statistics that, early in a run,
    belong to quickly changing EMA weights and can give exploding logits (a mixup CE of 40–70
    at step 20–40 on Fashion-MNIST, ``benchmarks/RESULTS.md``). Unlike AutoMix's code, the
    running statistics (and ``num_batches_tracked``) are left as they were, so mixed images
    never enter them. Implemented by setting each BatchNorm's ``momentum`` to 0 for the
    duration (``running ← (1 − 0) running + 0 · batch``).
    """
    modes = [m.training for m in modules]
    norms = [
        layer
        for m in modules
        for layer in m.modules()
        if isinstance(layer, nn.modules.batchnorm._BatchNorm) and layer.track_running_stats
    ]
    saved = [(layer.momentum, _tracked(layer).clone()) for layer in norms]
    for m in modules:
        m.train()
    for layer in norms:
        layer.momentum = 0.0
    try:
        yield
    finally:
        for layer, (momentum, tracked) in zip(norms, saved, strict=True):
            layer.momentum = momentum
            _tracked(layer).copy_(tracked)
        for m, mode in zip(modules, modes, strict=True):
            m.train(mode)


BLOCK_BN_MODES = ("batch", "running")


def frozen_network_mode(
    block_bn: str, *modules: nn.Module
) -> contextlib.AbstractContextManager[None]:
    """The mode a frozen network runs in while a Mix Block learns through it.

    Args:
        block_bn: ``running`` (:func:`eval_mode`: BatchNorm uses its running statistics) or
            ``batch`` (:func:`batch_stats_mode`: the mixed batch's statistics, running ones
            untouched).
        modules: The frozen network's parts.

    Raises:
        ValueError: ``block_bn`` is neither.
    """
    if block_bn == "running":
        return eval_mode(*modules)
    if block_bn == "batch":
        return batch_stats_mode(*modules)
    raise ValueError(f"block_bn must be one of {BLOCK_BN_MODES}, got {block_bn!r}.")


def _tracked(layer: nn.modules.batchnorm._BatchNorm) -> Tensor:
    """A BatchNorm's ``num_batches_tracked`` (present when it tracks running statistics)."""
    assert layer.num_batches_tracked is not None
    return layer.num_batches_tracked


def own_indices(n_local: int, device: torch.device) -> Tensor:
    """Global batch index of each of this device's samples, (n_local,)."""
    return dist.rank() * n_local + torch.arange(n_local, device=device)
