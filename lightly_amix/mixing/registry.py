"""Look-up of the fixed mixups by name.

:data:`MIXUPS` holds the mixups that need only the batch; :data:`SALIENCY_MIXUPS` those whose
``forward`` also takes the saliency of the images (``needs_saliency = True``: PuzzleMix), which a
training step computes from its classification loss. :func:`build_mixup` builds either.

Examples:
    >>> mixup = build_mixup("fmix", decay_power=3.0)
    >>> sorted(MIXUPS)
    ['cutmix', 'fmix', 'manifoldmix', 'mixup', 'resizemix', 'saliencymix']
    >>> build_mixup("puzzlemix").needs_saliency
    True
"""

from __future__ import annotations

from typing import Any

from lightly_amix.mixing.base import Mixup
from lightly_amix.mixing.fixed import CutMix, FMix, MixUp, ResizeMix, SaliencyMix
from lightly_amix.mixing.manifold import ManifoldMix
from lightly_amix.mixing.puzzle import PuzzleMix

MIXUPS: dict[str, type[Mixup]] = {
    cls.name: cls for cls in (MixUp, CutMix, ManifoldMix, SaliencyMix, FMix, ResizeMix)
}
SALIENCY_MIXUPS: dict[str, type[Mixup]] = {PuzzleMix.name: PuzzleMix}


def build_mixup(name: str, **kwargs: Any) -> Mixup:
    """Builds the mixup registered as ``name``, passing ``kwargs`` to its constructor.

    Args:
        name: One of the keys of :data:`MIXUPS` or :data:`SALIENCY_MIXUPS`.
        **kwargs: Constructor arguments, e.g. ``decay_power`` for ``"fmix"``.

    Returns:
        A new mixup module.

    Raises:
        ValueError: If ``name`` is not registered.

    Examples:
        >>> build_mixup("resizemix", scale=(0.1, 0.8))
        ResizeMix()
    """
    known = {**MIXUPS, **SALIENCY_MIXUPS}
    if name not in known:
        raise ValueError(f"Unknown mixup '{name}'. Expected one of: {', '.join(known)}.")
    return known[name](**kwargs)
