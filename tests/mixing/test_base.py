"""Helpers shared by the mixups (``lightly_amix.mixing.base``)."""

from __future__ import annotations

import pytest
import torch

from lightly_amix.mixing.base import as_lambda, mix_with_mask


def test_mix_with_mask_is_the_masked_sum_in_the_images_dtype() -> None:
    g = torch.Generator().manual_seed(0)
    images = torch.rand(4, 3, 5, 5, generator=g)
    mask = torch.rand(4, 1, 5, 5, generator=g)  # float32, as the Mix Block makes it
    perm = torch.tensor([2, 0, 3, 1])
    mixed = mix_with_mask(images, perm, mask)
    assert torch.allclose(mixed, mask * images + (1 - mask) * images[perm], atol=1e-6)
    half = mix_with_mask(images.bfloat16(), perm, mask)  # e.g. images under bf16 autocast
    assert half.dtype == torch.bfloat16
    assert torch.equal(
        half, torch.lerp(images.bfloat16()[perm], images.bfloat16(), mask.bfloat16())
    )


def test_as_lambda_is_float32_of_shape_n_and_refuses_values_outside_0_1() -> None:
    lam = as_lambda(torch.tensor([0.25, 0.5], dtype=torch.float64), 2, torch.device("cpu"))
    assert lam.dtype == torch.float32 and lam.tolist() == [0.25, 0.5]
    assert as_lambda(0.3, 3, torch.device("cpu")).tolist() == pytest.approx([0.3] * 3)
    with pytest.raises(ValueError) as error:
        as_lambda(1.5, 2, torch.device("cpu"))
    assert str(error.value) == "lam must lie in [0, 1] (it is the share of the first image)."
