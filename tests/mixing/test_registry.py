"""Tests of the mixup registry."""

from __future__ import annotations

import pytest

from lightly_amix.mixing.base import Mixup
from lightly_amix.mixing.fixed import CutMix, FMix, MixUp, ResizeMix, SaliencyMix
from lightly_amix.mixing.manifold import ManifoldMix
from lightly_amix.mixing.registry import MIXUPS, build_mixup

EXPECTED = {
    "mixup": MixUp,
    "cutmix": CutMix,
    "manifoldmix": ManifoldMix,
    "saliencymix": SaliencyMix,
    "fmix": FMix,
    "resizemix": ResizeMix,
}


def test_registry_holds_the_six_fixed_mixups() -> None:
    assert MIXUPS == EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_name_builds_its_class(name: str) -> None:
    mixup = build_mixup(name)
    assert type(mixup) is EXPECTED[name] and isinstance(mixup, Mixup)
    assert mixup.name == name


def test_kwargs_reach_the_constructor() -> None:
    fmix = build_mixup("fmix", decay_power=2.5)
    assert isinstance(fmix, FMix) and fmix.decay_power == 2.5
    resizemix = build_mixup("resizemix", scale=(0.2, 0.6))
    assert isinstance(resizemix, ResizeMix) and resizemix.scale == (0.2, 0.6)
    manifold = build_mixup("manifoldmix", stages=(1, 2))
    assert isinstance(manifold, ManifoldMix) and manifold.stages == (1, 2)
    with pytest.raises(ValueError, match="decay_power"):
        build_mixup("fmix", decay_power=0.0)


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="Unknown mixup 'snapmix'") as info:
        build_mixup("snapmix")
    for name in [*EXPECTED, "puzzlemix"]:
        assert name in str(info.value)
