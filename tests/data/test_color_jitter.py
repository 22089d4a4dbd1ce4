"""The batched colour jitter against torchvision's per-image functions and sampler."""

from __future__ import annotations

import math

import torch
import torchvision.transforms.functional as TF
from scipy import stats

from lightly_amix.data.color_jitter import BatchColorJitter


def test_colour_jitter_matches_torchvision_functions_in_each_images_order() -> None:
    """A direct re-computation with torchvision's tensor functions, image by image."""
    torch.manual_seed(0)
    images = torch.rand(12, 3, 16, 16)
    jitter = BatchColorJitter()
    applied, factors, order = jitter.sample_params(12)
    out = jitter.apply_params(images, applied, factors, order)
    functions = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    for i in range(12):
        expected = images[i]
        if applied[i]:
            for op in order[i].tolist():
                expected = functions[op](expected, float(factors[i, op]))
        # Within float rounding of the HSV round trip, far below one 8-bit step (4e-3).
        torch.testing.assert_close(out[i], expected, atol=2e-4, rtol=0)
    # Different orders do give different images (the order is not a no-op).
    i = int(applied.nonzero()[0])
    swapped = jitter.apply_params(images, applied, factors, order.flip(1))
    assert not torch.allclose(out[i], swapped[i], atol=1e-4)


def test_colour_jitter_probability_factors_and_orders() -> None:
    torch.manual_seed(0)
    n = 20000
    applied, factors, order = BatchColorJitter().sample_params(n)
    assert abs(float(applied.float().mean()) - 0.8) < 0.015
    for column, (low, high) in enumerate([(0.6, 1.4)] * 3 + [(-0.1, 0.1)]):
        values = factors[:, column].numpy()
        assert values.min() >= low and values.max() <= high
        assert stats.kstest(values, stats.uniform(low, high - low).cdf).pvalue > 0.01
    # All 24 orders, each about equally often.
    counts = torch.unique(order, dim=0, return_counts=True)[1]
    assert len(counts) == math.factorial(4)
    assert stats.chisquare(counts.numpy()).pvalue > 0.01
