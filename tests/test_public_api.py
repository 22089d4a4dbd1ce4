"""The public API: every name in ``lightly_amix.__all__`` imports and is what it claims."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest
import torch

import lightly_amix


@pytest.mark.parametrize("name", lightly_amix.__all__)
def test_every_public_name_imports(name: str) -> None:
    assert getattr(lightly_amix, name) is not None


def test_the_public_parts_compose_a_learned_mixup() -> None:
    from lightly_amix import LearnedMixup, MixBlock, MixBlockConfig, build_mixup

    mixer = LearnedMixup(in_channels=16, config=MixBlockConfig())
    assert isinstance(mixer, MixBlock)
    x, z = torch.randn(4, 3, 16, 16), torch.randn(4, 16, 2, 2)
    perm, lam = torch.tensor([1, 0, 3, 2]), torch.full((4,), 0.4)
    x_mix, mask, lam_eff = mixer.backbone_sample(x, x[perm], z, z[perm], lam)
    assert x_mix.shape == x.shape and mask.shape == (4, 1, 16, 16) and lam_eff.shape == (4,)
    assert build_mixup("cutmix")(x, perm, lam).images.shape == x.shape


def test_the_version_is_defined_once_and_types_ship() -> None:
    assert importlib.metadata.version("lightly-amix") == lightly_amix.__version__
    assert (Path(lightly_amix.__file__).parent / "py.typed").is_file()
