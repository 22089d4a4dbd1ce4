"""PuzzleMix: energies against a direct evaluation, graph cut against brute force, transport."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from lightly_amix.mixing.puzzle import (
    PuzzleMix,
    apply_transport,
    binomial_prior,
    boundary_differences,
    grid_cut_energies,
    input_saliency,
    transport_plan,
)
from lightly_amix.mixing.registry import build_mixup

pytest.importorskip("gco", reason="PuzzleMix's graph cut needs gco-wrapper")


def _saliency_grid(n: int, grid: int, seed: int) -> torch.Tensor:
    s = torch.rand(n, grid, grid, generator=torch.Generator().manual_seed(seed)) + 0.01
    return s / s.sum(dim=(1, 2), keepdim=True)


def _direct_energy(
    z: torch.Tensor, s_i: torch.Tensor, s_j: torch.Tensor, x_i: torch.Tensor,
    x_j: torch.Tensor, lam: float, beta: float, gamma: float, eta: float,
) -> float:  # fmt: skip
    """PuzzleMix eq. 3 for binary labels z (B, B) of one pair, written out region by region."""
    grid = z.shape[0]
    cell = x_i.shape[-1] // grid
    energy = 0.0
    for r, c in itertools.product(range(grid), range(grid)):
        share = float(z[r, c])
        energy += (1 - share) * float(s_i[r, c]) + share * float(s_j[r, c])
        p = lam if share == 1 else 1 - lam
        energy += eta * -math.log(p + 1e-8) / grid**2
    shown = {1.0: x_i, 0.0: x_j}
    for r, c in itertools.product(range(grid), range(grid)):
        for dr, dc in ((1, 0), (0, 1)):
            r2, c2 = r + dr, c + dc
            if r2 >= grid or c2 >= grid:
                continue
            a, b = shown[float(z[r, c])], shown[float(z[r2, c2])]
            if dr:  # last row of (r, c) against the first row of (r2, c)
                row_a = a[:, (r + 1) * cell - 1, c * cell : (c + 1) * cell]
                row_b = b[:, (r + 1) * cell, c * cell : (c + 1) * cell]
            else:
                row_a = a[:, r * cell : (r + 1) * cell, (c + 1) * cell - 1]
                row_b = b[:, r * cell : (r + 1) * cell, (c + 1) * cell]
            psi = float((row_a - row_b).abs().mean(dim=0).mean())
            energy += beta * float((z[r, c] - z[r2, c2]) ** 2) + beta * gamma * psi
    return energy


def _decomposed_energy(
    z_index: torch.Tensor, unary: torch.Tensor, vertical: torch.Tensor,
    horizontal: torch.Tensor, compat: torch.Tensor,
) -> float:  # fmt: skip
    """The energy the graph cut minimises: unaries plus weighted label compatibilities."""
    grid = z_index.shape[0]
    e = sum(float(unary[r, c, z_index[r, c]]) for r in range(grid) for c in range(grid))
    e += sum(float(vertical[r, c] * compat[z_index[r, c], z_index[r + 1, c]])
             for r in range(grid - 1) for c in range(grid))  # fmt: skip
    e += sum(float(horizontal[r, c] * compat[z_index[r, c], z_index[r, c + 1]])
             for r in range(grid) for c in range(grid - 1))  # fmt: skip
    return e


def test_binomial_prior_is_the_negative_log_of_the_binomial_pmf() -> None:
    lam = torch.tensor([0.3, 0.8])
    prior = binomial_prior(lam, 3)
    for n, value in enumerate(lam.tolist()):
        for k in range(3):
            p = math.comb(2, k) * value**k * (1 - value) ** (2 - k)
            assert prior[n, k].item() == pytest.approx(-math.log(p + 1e-8), rel=1e-9)


def test_boundary_differences_compare_the_rows_on_both_sides_of_each_boundary() -> None:
    a = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    b = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    vertical, horizontal = boundary_differences(a, b, grid=2)
    assert vertical.shape == (2, 1, 2) and horizontal.shape == (2, 2, 1)
    expected_v = (a[:, :, 3, 4:8] - b[:, :, 4, 4:8]).abs().mean()
    expected_h = (a[:, :, 4:8, 3] - b[:, :, 4:8, 4]).abs().mean()
    assert vertical[1, 0, 1].item() == pytest.approx(
        (a[1, :, 3, 4:8] - b[1, :, 4, 4:8]).abs().mean().item(), rel=1e-6
    )
    assert vertical[:, 0, 1].mean().item() == pytest.approx(expected_v.item(), rel=1e-6)
    assert horizontal[:, 1, 0].mean().item() == pytest.approx(expected_h.item(), rel=1e-6)


@pytest.mark.parametrize("lam", [0.25, 0.6])
def test_the_cut_energy_equals_eq3_up_to_a_constant_for_every_labelling(lam: float) -> None:
    """The graph's unaries and edge weights reproduce PuzzleMix's eq. 3 for all 2^9 labellings
    of a 3 × 3 grid (binary labels), up to one constant."""
    grid, beta, gamma, eta = 3, 0.05, 0.5, 0.2
    g = torch.Generator().manual_seed(3)
    x_i, x_j = torch.rand(1, 3, 12, 12, generator=g), torch.rand(1, 3, 12, 12, generator=g)
    s_i, s_j = _saliency_grid(1, grid, 4), _saliency_grid(1, grid, 5)
    unary, vertical, horizontal, compat = grid_cut_energies(
        s_i, s_j, x_i, x_j, torch.tensor([lam]), 2, beta, gamma, eta
    )
    raw_v = (
        boundary_differences(x_i, x_j, grid)[0] + boundary_differences(x_j, x_i, grid)[0]
        - boundary_differences(x_i, x_i, grid)[0] - boundary_differences(x_j, x_j, grid)[0]
    )  # fmt: skip
    assert bool((raw_v * beta * gamma / 2 + beta >= 0).all())  # no clamping in this example
    offsets = []
    for bits in itertools.product([0, 1], repeat=grid * grid):
        z_index = torch.tensor(bits).view(grid, grid)
        direct = _direct_energy(z_index.float(), s_i[0], s_j[0], x_i[0], x_j[0], lam, beta,
                                gamma, eta)  # fmt: skip
        decomposed = _decomposed_energy(z_index, unary[0], vertical[0], horizontal[0], compat)
        offsets.append(decomposed - direct)
    assert max(offsets) - min(offsets) < 1e-6  # float32 pixel differences


@pytest.mark.parametrize(("n_labels", "grid"), [(2, 3), (3, 2)])
def test_the_graph_cut_finds_the_minimum_energy_labelling(n_labels: int, grid: int) -> None:
    """gco's cut equals the brute-force minimum of the same energies."""
    g = torch.Generator().manual_seed(7)
    x = torch.rand(4, 3, 12, 12, generator=g)
    s = _saliency_grid(4, grid, 8)
    perm = torch.tensor([1, 2, 3, 0])
    unary, vertical, horizontal, compat = grid_cut_energies(
        s, s[perm], x, x[perm], torch.full((4,), 0.4), n_labels, 0.05, 0.5, 0.2
    )
    labels = PuzzleMix(n_labels=n_labels)._cut(unary, vertical, horizontal, compat)
    for n in range(4):
        best = min(
            _decomposed_energy(torch.tensor(b).view(grid, grid), unary[n], vertical[n],
                               horizontal[n], compat)
            for b in itertools.product(range(n_labels), repeat=grid * grid)
        )  # fmt: skip
        found = _decomposed_energy(labels[n], unary[n], vertical[n], horizontal[n], compat)
        # gco rounds the scaled energies to integers: equal up to that rounding.
        assert found == pytest.approx(best, rel=1e-4)


def test_transport_keeps_every_cell_when_the_mask_shows_everything() -> None:
    mask = torch.ones(2, 4, 4)
    plan = transport_plan(mask, _saliency_grid(2, 4, 0), eps=0.8)
    assert torch.equal(plan, torch.eye(16).expand(2, 16, 16))


def test_transport_moves_the_salient_cell_into_the_shown_area() -> None:
    saliency = torch.full((1, 4, 4), 0.001)
    saliency[0, 0, 0] = 1.0  # the salient cell is top-left
    mask = torch.zeros(1, 4, 4)
    mask[0, 2:, 2:] = 1  # only the bottom-right quarter is shown
    plan = transport_plan(mask, saliency, eps=0.1)
    assert plan[0, 0].argmax().item() == 2 * 4 + 2  # to the nearest shown cell, (2, 2)
    assert bool((plan.sum(dim=1) <= 1).all())  # no target receives two cells
    images = torch.arange(16.0).view(1, 1, 4, 4).repeat_interleave(2, 2).repeat_interleave(2, 3)
    moved = apply_transport(images, plan, cells=4)  # (1, 1, 8, 8), 2 px cells
    assert bool((moved[0, 0, 4:6, 4:6] == 0).all())  # cell 0's value (0) now at cell (2, 2)
    expected = (plan[0].T @ torch.arange(16.0)).view(4, 4)
    assert torch.equal(moved[0, 0, ::2, ::2], expected)


def test_puzzlemix_keeps_both_salient_regions_and_reports_the_mask_mean() -> None:
    n, size = 8, 32
    saliency = torch.full((n, size, size), 0.01)
    for k in range(n):  # image k is salient in quadrant-row k % 4 of a 4 × 4 grid
        r, c = (k % 4) * 8, (k // 4) * 8
        saliency[k, r : r + 8, c : c + 8] = 1.0
    images = torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0))
    perm = torch.roll(torch.arange(n), 1)
    out = PuzzleMix(transport=False, grid_sizes=(4,))(images, perm, 0.5, saliency=saliency)
    assert out.mask is not None and set(out.mask.unique().tolist()) <= {0.0, 0.5, 1.0}
    assert torch.allclose(out.lam, out.mask.mean(dim=(1, 2, 3)))
    for k in range(n):
        r, c = (k % 4) * 8, (k // 4) * 8
        j = int(perm[k])
        rj, cj = (j % 4) * 8, (j // 4) * 8
        assert out.mask[k, 0, r, c] == 1.0  # x_k's salient region comes from x_k
        assert out.mask[k, 0, rj, cj] == 0.0  # its partner's from the partner
    mixed = torch.lerp(images[perm], images, out.mask)
    assert torch.allclose(out.images, mixed)


def test_puzzlemix_is_reproducible_and_checks_its_inputs() -> None:
    images = torch.randn(4, 3, 16, 16)
    saliency = torch.rand(4, 16, 16)
    perm = torch.tensor([1, 0, 3, 2])
    mix = build_mixup("puzzlemix")
    a = mix(images, perm, 0.7, torch.Generator().manual_seed(1), saliency=saliency)
    b = mix(images, perm, 0.7, torch.Generator().manual_seed(1), saliency=saliency)
    assert torch.equal(a.images, b.images) and torch.equal(a.lam, b.lam)
    with pytest.raises(ValueError, match="needs the saliency"):
        mix(images, perm, 0.5)
    with pytest.raises(ValueError, match="saliency must have shape"):
        mix(images, perm, 0.5, saliency=saliency[:, :8])
    with pytest.raises(ValueError, match="divides the image size"):
        PuzzleMix(grid_sizes=(3,))(images, perm, 0.5, saliency=saliency)
    with pytest.raises(ValueError, match="n_labels"):
        PuzzleMix(n_labels=1)


def test_input_saliency_is_the_rms_input_gradient_and_leaves_parameters_alone() -> None:
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 5))
    x = torch.randn(2, 3, 4, 4)
    y = torch.tensor([1, 3])
    saliency = input_saliency(lambda v: F.cross_entropy(model(v), y), x)
    xr = x.clone().requires_grad_()
    F.cross_entropy(model(xr), y).backward()
    assert xr.grad is not None
    assert torch.allclose(saliency, xr.grad.pow(2).mean(dim=1).sqrt(), atol=1e-7)
    model.zero_grad(set_to_none=True)
    input_saliency(lambda v: F.cross_entropy(model(v), y), x)
    assert all(p.grad is None for p in model.parameters())


def test_puzzlemix_mixes_28_pixel_images() -> None:
    """Fashion-MNIST's 28 px: regions of 7 and 14 px, neighbourhoods and cells that divide them."""
    images, saliency = torch.randn(4, 1, 28, 28), torch.rand(4, 28, 28)
    for seed in range(4):
        out = PuzzleMix()(images, torch.tensor([1, 0, 3, 2]), 0.5,
                          torch.Generator().manual_seed(seed), saliency=saliency)  # fmt: skip
        assert out.images.shape == (4, 1, 28, 28) and torch.isfinite(out.images).all()


def test_puzzlemix_under_bf16_autocast_moves_pixels_exactly_in_the_batchs_dtype() -> None:
    """Autocast would run the transport's matmul in bf16 and return bf16 images next to an
    fp32 partner; the mix must be the same as without autocast."""
    g = torch.Generator().manual_seed(0)
    images, saliency = torch.randn(4, 3, 16, 16, generator=g), torch.rand(4, 16, 16, generator=g)
    perm = torch.tensor([1, 0, 3, 2])
    plain = PuzzleMix()(images, perm, 0.6, torch.Generator().manual_seed(2), saliency=saliency)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = PuzzleMix()(images, perm, 0.6, torch.Generator().manual_seed(2), saliency=saliency)
    assert auto.images.dtype == images.dtype and auto.lam.dtype == plain.lam.dtype
    assert torch.equal(auto.images, plain.images) and torch.equal(auto.lam, plain.lam)
