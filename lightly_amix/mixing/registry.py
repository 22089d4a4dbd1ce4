"""Look-up of the fixed mixups by name.

Examples:
    >>> mixup = build_mixup("fmix", decay_power=3.0)
    >>> sorted(MIXUPS)
    ['cutmix', 'fmix', 'manifoldmix', 'mixup', 'resizemix', 'saliencymix']
"""

from __future__ import annotations

from typing import Any

from lightly_amix.mixing.base import Mixup
from lightly_amix.mixing.fixed import CutMix, FMix, MixUp, ResizeMix, SaliencyMix
from lightly_amix.mixing.manifold import ManifoldMix

MIXUPS: dict[str, type[Mixup]] = {
    cls.name: cls for cls in (MixUp, CutMix, ManifoldMix, SaliencyMix, FMix, ResizeMix)
}


def build_mixup(name: str, **kwargs: Any) -> Mixup:
    """Builds the mixup registered as ``name``, passing ``kwargs`` to its constructor.

    Args:
        name: One of the keys of :data:`MIXUPS`.
        **kwargs: Constructor arguments, e.g. ``decay_power`` for ``"fmix"``.

    Returns:
        A new mixup module.

    Raises:
        ValueError: If ``name`` is not registered.

    Examples:
        >>> build_mixup("resizemix", scale=(0.1, 0.8))
        ResizeMix()
    """
    if name not in MIXUPS:
        raise ValueError(f"Unknown mixup '{name}'. Expected one of: {', '.join(MIXUPS)}.")
    return MIXUPS[name](**kwargs)
