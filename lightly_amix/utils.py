"""Small helpers shared by the methods and the clustering: gathering across devices, partners,
eval mode.

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


def own_indices(n_local: int, device: torch.device) -> Tensor:
    """Global batch index of each of this device's samples, (n_local,)."""
    return dist.rank() * n_local + torch.arange(n_local, device=device)
