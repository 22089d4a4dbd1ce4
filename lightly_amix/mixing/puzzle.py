"""PuzzleMix: saliency-guided masks from a graph cut, with optimal transport of salient regions.

PuzzleMix (Kim, Choo & Song, "Puzzle Mix: Exploiting Saliency and Local Statistics for Optimal
Mixup", ICML 2020, https://arxiv.org/abs/2009.06962) mixes ``x_i`` and its partner
``x_j = x_perm[i]`` on a grid of ``B × B`` regions. Per pair it

1. **labels each region** with a mixing ratio ``z ∈ {0, 1/(L−1), …, 1}`` (the share of
   ``x_i``, L = ``n_labels``) by minimising, with a graph cut (§3.1, eq. 3),

   ``Σ_r [(1 − z_r) s_i(r) + z_r s_j(r)] + η Σ_r −log p(z_r | λ)``
   ``+ β Σ_{r~r'} (z_r − z_r')² + γ Σ_{r~r'} ψ(r, r', z_r, z_r')``

   where ``s_i`` is ``x_i``'s saliency pooled to the grid and normalised to sum 1 (the
   saliency a region *drops*), ``p(z | λ)`` is the binomial prior with ``L − 1`` trials and
   success probability λ (eq. 4), ``β`` the label smoothness and ``ψ`` the data smoothness:
   the mean absolute pixel difference across the boundary of two neighbouring regions of the
   images they show (§3.1, "data local smoothness");
2. **moves each image's salient regions** into the area its label gives it (§3.2, eq. 5):
   a transport plan ``Π`` minimising ``ε·⟨C, Π⟩ − ⟨s ⊗ z, Π⟩`` (C: squared grid distance,
   normalised by ``(T − 1)²``), solved as the paper does by a greedy row-wise assignment with
   conflicts resolved per column (Algorithm 1), on a ``T × T`` grid of ``t_size`` pixels;
3. returns ``z ⊙ Π_i(x_i) + (1 − z) ⊙ Π_j(x_j)``; the label weight is the mask's mean.

The saliency is ``‖∂ℓ/∂x‖₂`` over channels (root mean square) of the classification loss
(:func:`input_saliency`): for supervised training the labels' CE, for contrastive training
with cluster information (the paper's "PuzzleMix (C)") the CE of the cluster head against
the pseudo-labels.

Defaults are PuzzleMix's CIFAR settings (its README): α = 1, L = 3, β = 1.2, γ = 0.5, η = 0.2,
neighbourhood 4 px, transport with ε = 0.8 on 4 px cells, the grid size drawn per batch from
{2, 4, 8, 16} regions per side (the sizes that divide the image). Choices of this
implementation, where PuzzleMix's code differs or leaves them open:

- the graph cut runs with floating-point energies (gco-wrapper supports them), so the label
  smoothness ``(z_r − z_r')²`` keeps its value 1/4 between neighbouring labels (an integer
  energy rounds it to 0); β is scaled by ``1 / (16 B)`` and the prior by ``1 / B²`` as in
  PuzzleMix, so that both keep their size relative to the normalised saliency on any grid;
- no adversarial perturbation of the input (PuzzleMix's optional ``adv_p``) and no clean
  loss term (its ``clean_lam = 0`` default); the saliency pass runs in eval mode and leaves
  no gradient on the model's parameters;
- the data smoothness uses the images as given (after normalisation), not de-normalised pixels.

The graph cut needs the optional dependency ``gco-wrapper`` (``pip install
'lightly-amix[puzzlemix]'``); everything else is batched tensor code.

Examples:
    >>> puzzle = PuzzleMix()
    >>> saliency = input_saliency(lambda x: F.cross_entropy(model(x), y), images)  # (N, H, W)
    >>> out = puzzle(images, perm, lam=0.6, saliency=saliency)
    >>> out.mask.shape, out.lam.shape  # (N, 1, H, W) with values in {0, 0.5, 1}; (N,)
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lightly_amix.mixing.base import MixOutput, Mixup, as_lambda, check_batch

_EPS = 1e-8
_CUT_SCALE = 1000.0


GCO_MISSING = (
    "PuzzleMix needs the graph-cut library gco-wrapper: pip install 'lightly-amix[puzzlemix]' "
    "(or pip install gco-wrapper)."
)


def require_graph_cut() -> None:
    """Raises ValueError (:data:`GCO_MISSING`) unless gco-wrapper can be imported.

    The configs call it when they are checked, so that a missing extra ends a run before any
    data is read, not at its first training step.
    """
    if importlib.util.find_spec("gco") is None:
        raise ValueError(GCO_MISSING)


def _gco() -> Any:
    """The ``gco`` module of gco-wrapper, or a clear ImportError naming the extra."""
    try:
        import gco
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(GCO_MISSING) from err
    return gco


def _divisor_at_most(n: int, k: int) -> int:
    """The largest divisor of ``n`` that is at most ``k`` (e.g. 4 px cells on 28 px: 4)."""
    return max(d for d in range(1, max(k, 1) + 1) if n % d == 0)


def input_saliency(loss_fn: Callable[[Tensor], Tensor], images: Tensor) -> Tensor:
    """PuzzleMix's saliency: the root mean square over channels of ``∂ loss / ∂ images``.

    Only the input gradient is accumulated (``backward(inputs=[x])``), so the parameters'
    ``.grad`` stay untouched.

    Args:
        loss_fn: Maps the images (N, C, H, W) to a scalar loss (e.g. a mean cross-entropy).
        images: The batch (N, C, H, W).

    Returns:
        The saliency (N, H, W), non-negative, without gradient.
    """
    x = images.detach().requires_grad_(True)
    with torch.enable_grad():
        loss_fn(x).backward(inputs=[x])
    assert x.grad is not None
    return x.grad.float().pow(2).mean(dim=1).sqrt()  # (N, H, W)


def binomial_prior(lam: Tensor, n_labels: int) -> Tensor:
    """``−log p(z = k/(L−1) | λ)`` of PuzzleMix's binomial label prior, shape (N, L).

    ``p(z = k/(L−1)) = C(L−1, k) λ^k (1−λ)^(L−1−k)``: label k shows ``x_i`` with share k/(L−1).
    """
    k = torch.arange(n_labels, dtype=torch.float64, device=lam.device)  # (L,)
    trials = n_labels - 1
    binom = torch.tensor(
        [math.comb(trials, int(j)) for j in range(n_labels)], dtype=torch.float64, device=lam.device
    )  # (L,)
    lam64 = lam.to(torch.float64).view(-1, 1)  # (N, 1)
    p = binom * lam64**k * (1 - lam64) ** (trials - k)  # (N, L)
    return -torch.log(p + _EPS)


def boundary_differences(a: Tensor, b: Tensor, grid: int) -> tuple[Tensor, Tensor]:
    """Mean absolute difference across the boundaries of a ``grid × grid`` partition.

    Args:
        a: Images (N, C, S, S) whose regions lie *above* / *left of* each boundary.
        b: Images (N, C, S, S) whose regions lie *below* / *right of* it.
        grid: Regions per side (divides S).

    Returns:
        ``(vertical, horizontal)``: (N, grid−1, grid), the difference between the last pixel
        row of region (r, c) of ``a`` and the first row of region (r+1, c) of ``b``, averaged
        over channels and the region's columns; and (N, grid, grid−1), the same across
        vertical boundaries.
    """
    n, _, size, _ = a.shape
    cell = size // grid
    last = torch.arange(1, grid) * cell - 1  # rows/cols just before each boundary, (grid−1,)
    rows = (a[:, :, last, :] - b[:, :, last + 1, :]).abs().mean(dim=1)  # (N, grid−1, S)
    cols = (a[:, :, :, last] - b[:, :, :, last + 1]).abs().mean(dim=1)  # (N, S, grid−1)
    vertical = rows.view(n, grid - 1, grid, cell).mean(dim=3)  # (N, grid−1, grid)
    horizontal = cols.view(n, grid, cell, grid - 1).mean(dim=2)  # (N, grid, grid−1)
    return vertical, horizontal


def grid_cut_energies(
    s_i: Tensor,
    s_j: Tensor,
    x_i: Tensor,
    x_j: Tensor,
    lam: Tensor,
    n_labels: int,
    beta: float,
    gamma: float,
    eta: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The graph cut's terms for a batch of pairs on a ``B × B`` grid (PuzzleMix eq. 3).

    The data smoothness of two neighbouring regions depends on which images they show: with
    ``ψ_ab`` the boundary difference between a region of image a and the next region of image
    b, the pairwise energy ``ψ(z, z')`` for z, z' ∈ {0, 1} is split, as a graph cut needs, into
    unary parts (half of ``ψ_{a·}`` and ``ψ_{·b}`` to each side's label) and a symmetric edge
    weight ``(ψ_ij + ψ_ji − ψ_ii − ψ_jj) / 2``, added to the label smoothness β.

    Args:
        s_i, s_j: Saliency pooled to the grid, each summing to 1 per sample, (N, B, B).
        x_i, x_j: The images, pooled to the data-smoothness neighbourhood, (N, C, S', S').
        lam: Requested share of ``x_i`` (N,).
        n_labels: L, the number of mixing ratios.
        beta, gamma, eta: Label smoothness, data smoothness and prior weight (already scaled
            to the grid, see :class:`PuzzleMix`).

    Returns:
        ``unary`` (N, B, B, L), the edge weights ``vertical`` (N, B−1, B) and ``horizontal``
        (N, B, B−1), and the label-compatibility matrix ``(k − k')² / (L − 1)²`` (L, L).
    """
    grid = s_i.shape[-1]
    ratios = torch.linspace(0, 1, n_labels, dtype=torch.float64, device=s_i.device)  # (L,)
    s_i64, s_j64 = s_i.to(torch.float64), s_j.to(torch.float64)
    # Showing share z of x_i drops (1 − z) of x_i's saliency and z of x_j's.
    unary = (1 - ratios) * s_i64.unsqueeze(-1) + ratios * s_j64.unsqueeze(-1)  # (N, B, B, L)
    unary = unary + eta * binomial_prior(lam, n_labels).view(-1, 1, 1, n_labels) / grid**2

    # ψ for every (shown above/left, shown below/right) pair of images: (N, B−1, B), (N, B, B−1).
    images = (("i", x_i), ("j", x_j))
    pairs = {(a, b): boundary_differences(xa, xb, grid) for a, xa in images for b, xb in images}
    scale = beta * gamma
    v = {key: scale * val[0].to(torch.float64) for key, val in pairs.items()}
    h = {key: scale * val[1].to(torch.float64) for key, val in pairs.items()}
    # Unary share of the data term, for the two extreme labels (z = 1 shows x_i, z = 0 x_j),
    # interpolated linearly for the labels between.
    show_i = torch.zeros_like(s_i64)  # (N, B, B)
    show_j = torch.zeros_like(s_i64)
    show_i[:, :-1, :] += (v["i", "j"] + v["i", "i"]) / 2  # region above a boundary shows x_i
    show_j[:, :-1, :] += (v["j", "i"] + v["j", "j"]) / 2
    show_i[:, 1:, :] += (v["j", "i"] + v["i", "i"]) / 2  # region below shows x_i
    show_j[:, 1:, :] += (v["i", "j"] + v["j", "j"]) / 2
    show_i[:, :, :-1] += (h["i", "j"] + h["i", "i"]) / 2
    show_j[:, :, :-1] += (h["j", "i"] + h["j", "j"]) / 2
    show_i[:, :, 1:] += (h["j", "i"] + h["i", "i"]) / 2
    show_j[:, :, 1:] += (h["i", "j"] + h["j", "j"]) / 2
    unary = unary + ratios * show_i.unsqueeze(-1) + (1 - ratios) * show_j.unsqueeze(-1)
    vertical = (v["i", "j"] + v["j", "i"] - v["i", "i"] - v["j", "j"]) / 2 + beta
    horizontal = (h["i", "j"] + h["j", "i"] - h["i", "i"] - h["j", "j"]) / 2 + beta
    labels = torch.arange(n_labels, dtype=torch.float64)
    compat = (labels.view(-1, 1) - labels.view(1, -1)) ** 2 / (n_labels - 1) ** 2  # (L, L)
    return unary, vertical.clamp_min(0), horizontal.clamp_min(0), compat


def transport_plan(mask: Tensor, saliency: Tensor, eps: float) -> Tensor:
    """PuzzleMix's transport (Algorithm 1): where each of a ``T × T`` grid's cells moves.

    Minimises ``ε·C(a, b) − s(a)·[z(b) > 0]`` over assignments of source cells a to target
    cells b, by repeated row-wise arg-min with conflicts on a target resolved in favour of the
    cheapest source (the losers' cost of that target rises by 1), T rounds.

    Args:
        mask: Share of the image at each target cell, (N, T, T).
        saliency: The image's saliency per source cell, summing to 1, (N, T, T).
        eps: ε, the weight of the distance a cell travels.

    Returns:
        The plan (N, T², T²): ``plan[n, a, b] = 1`` when cell a moves to cell b.
    """
    n, cells = mask.shape[0], mask.shape[-1]
    coords = (
        torch.stack(torch.meshgrid(torch.arange(cells), torch.arange(cells), indexing="ij"), dim=-1)
        .view(-1, 2)
        .to(mask.device, torch.float32)
    )  # (T², 2)
    distance = torch.cdist(coords, coords).pow(2) / max(cells - 1, 1) ** 2  # (T², T²)
    shown = (mask > 0).float().view(n, 1, -1)  # (N, 1, T²)
    cost = eps * distance - saliency.float().reshape(n, -1, 1) * shown  # (N, T², T²)
    plan = cost  # replaced in the first round
    for _ in range(cells):
        best_target = cost.argmin(dim=2, keepdim=True)  # (N, T², 1)
        plan = torch.zeros_like(cost).scatter_(2, best_target, 1.0)  # each source picks one
        contested = plan * cost + (1 - plan) * (4 * cost.abs().amax() + 1)  # others out of race
        best_source = contested.argmin(dim=1, keepdim=True)  # (N, 1, T²)
        winner = torch.zeros_like(cost).scatter_(1, best_source, 1.0) * plan
        cost = cost + (plan - winner)  # losers pay 1 more for the target they lost
        plan = winner
    return plan


def apply_transport(images: Tensor, plan: Tensor, cells: int) -> Tensor:
    """Moves the ``cells × cells`` blocks of ``images`` (N, C, S, S) as ``plan`` says.

    A target no source was assigned to becomes 0 (it is covered by the other image wherever
    the mask gives it weight 0, as PuzzleMix's transport intends).
    """
    n, c, size, _ = images.shape
    block = size // cells
    patches = images.view(n, c, cells, block, cells, block).permute(0, 2, 4, 1, 3, 5)
    patches = patches.reshape(n, cells * cells, c * block * block)  # (N, T², C·b·b)
    moved = plan.transpose(1, 2).to(images.dtype) @ patches  # (N, T², C·b·b)
    moved = moved.view(n, cells, cells, c, block, block).permute(0, 3, 1, 4, 2, 5)
    return moved.reshape(n, c, size, size)


class PuzzleMix(Mixup):
    """PuzzleMix: a graph-cut mask over saliency and local statistics, plus transport.

    ``forward`` takes, besides the batch, the saliency of every sample (:func:`input_saliency`);
    its ``needs_saliency`` attribute tells a training step to compute it.

    Args:
        n_labels: L, the number of mixing ratios per region (2: hard masks, 3: {0, ½, 1}).
        beta: Label smoothness β (scaled by ``1 / (16 B)`` on a B × B grid).
        gamma: Data smoothness γ (relative to β).
        eta: Weight η of the binomial prior on the labels (scaled by ``1 / B²``).
        neighborhood: Pixels pooled for the data smoothness (the largest divisor of a region's
            size up to this).
        grid_sizes: Regions per side, one drawn per batch among those dividing the image size.
        transport: Whether to move salient regions (§3.2).
        transport_eps: ε of the transport cost.
        transport_cell: Pixels per side of a transport cell (the largest divisor of the image
            size up to this and a region's size).

    Raises:
        ValueError: On an argument out of range.

    Examples:
        >>> out = PuzzleMix()(images, perm, 0.7, saliency=saliency, generator=g)
        >>> torch.allclose(out.lam, out.mask.mean(dim=(1, 2, 3)))
        True
    """

    name = "puzzlemix"
    needs_saliency = True

    def __init__(
        self,
        n_labels: int = 3,
        beta: float = 1.2,
        gamma: float = 0.5,
        eta: float = 0.2,
        neighborhood: int = 4,
        grid_sizes: Sequence[int] = (2, 4, 8, 16),
        transport: bool = True,
        transport_eps: float = 0.8,
        transport_cell: int = 4,
    ) -> None:
        super().__init__()
        if n_labels < 2:
            raise ValueError(f"n_labels must be >= 2, got {n_labels}.")
        if min(beta, gamma, eta, transport_eps) < 0:
            raise ValueError("beta, gamma, eta and transport_eps must be >= 0.")
        if neighborhood < 1 or transport_cell < 1 or not grid_sizes or min(grid_sizes) < 2:
            raise ValueError(
                "neighborhood and transport_cell must be >= 1 and grid_sizes a non-empty "
                f"list of sizes >= 2, got {neighborhood}, {transport_cell}, {list(grid_sizes)}."
            )
        self.n_labels = n_labels
        self.beta, self.gamma, self.eta = beta, gamma, eta
        self.neighborhood = neighborhood
        self.grid_sizes = tuple(int(g) for g in grid_sizes)
        self.transport = transport
        self.transport_eps = transport_eps
        self.transport_cell = transport_cell

    def valid_grids(self, size: int) -> list[int]:
        """The configured grid sizes that divide an image side of ``size`` pixels."""
        return [g for g in self.grid_sizes if size % g == 0 and size // g >= 1]

    def forward(
        self,
        images: Tensor,
        perm: Tensor,
        lam: Tensor | float,
        generator: torch.Generator | None = None,
        saliency: Tensor | None = None,
    ) -> MixOutput:
        """Mixes ``images`` (N, C, S, S) with ``images[perm]`` guided by ``saliency`` (N, S, S).

        Returns:
            The mixed batch, the effective λ (the mask's mean) and the mask (N, 1, S, S).

        Raises:
            ValueError: Without saliency, on non-square images, or when no grid size divides
                the image size.
        """
        check_batch(images, perm)
        lam_t = as_lambda(lam, images.shape[0], images.device)  # (N,)
        n, _, height, width = images.shape
        if saliency is None:
            raise ValueError(
                "PuzzleMix needs the saliency of every image (N, H, W): compute it with "
                "lightly_amix.mixing.puzzle.input_saliency(loss_fn, images)."
            )
        if saliency.shape != (n, height, width):
            raise ValueError(
                f"saliency must have shape ({n}, {height}, {width}), got {tuple(saliency.shape)}."
            )
        if height != width:
            raise ValueError(f"PuzzleMix needs square images, got {height}x{width}.")
        grids = self.valid_grids(height)
        if not grids:
            raise ValueError(
                f"None of the grid sizes {list(self.grid_sizes)} divides the image size {height}."
            )
        grid = grids[int(torch.randint(len(grids), (1,), generator=generator))]
        region = height // grid
        # The mask and the transport are exact selections of pixels: they run in fp32 (or the
        # images' dtype) also under autocast, whose bf16 matmul would round the moved pixels
        # and hand back images of another dtype than the batch's.
        with torch.autocast(device_type=images.device.type, enabled=False):
            x = images.detach().float()
            sal = saliency.detach().float().unsqueeze(1)  # (N, 1, S, S)

            pooled = F.avg_pool2d(sal, region).squeeze(1)  # (N, B, B)
            pooled = pooled / pooled.sum(dim=(1, 2), keepdim=True).clamp_min(_EPS)
            neighborhood = _divisor_at_most(region, self.neighborhood)
            x_pool = F.avg_pool2d(x, neighborhood)  # (N, C, S', S')
            unary, vertical, horizontal, compat = grid_cut_energies(
                pooled, pooled[perm], x_pool, x_pool[perm], lam_t, self.n_labels,
                beta=self.beta / grid / 16, gamma=self.gamma, eta=self.eta,
            )  # fmt: skip
            labels = self._cut(unary, vertical, horizontal, compat)  # (N, B, B) in {0..L−1}
            mask = (labels.to(images.device, torch.float32) / (self.n_labels - 1)).unsqueeze(1)

            x_i, x_j = images, images[perm]
            if self.transport:
                cell = _divisor_at_most(height, min(self.transport_cell, region))
                cells = height // cell
                grid_mask = F.interpolate(mask, size=cells, mode="nearest").squeeze(1)  # (N, T, T)
                sal_t = F.avg_pool2d(sal, cell).squeeze(1)  # (N, T, T)
                sal_t = sal_t / sal_t.sum(dim=(1, 2), keepdim=True).clamp_min(_EPS)
                plan_i = transport_plan(grid_mask, sal_t, self.transport_eps)
                plan_j = transport_plan(1 - grid_mask, sal_t[perm], self.transport_eps)
                x_i = apply_transport(x_i, plan_i, cells)
                x_j = apply_transport(x_j, plan_j, cells)
            full = F.interpolate(mask, size=(height, width), mode="nearest")  # (N, 1, S, S)
            mixed = torch.lerp(x_j, x_i, full.to(images.dtype))
        return MixOutput(images=mixed, lam=full.mean(dim=(1, 2, 3)), mask=full.to(images.dtype))

    def _cut(self, unary: Tensor, vertical: Tensor, horizontal: Tensor, compat: Tensor) -> Tensor:
        """Minimum-energy labels (N, B, B) from one graph cut per pair (alpha-beta swaps)."""
        gco = _gco()
        # gco-wrapper turns float energies into integers with fixed precisions (edge weights
        # to 1e-3); scaled by _CUT_SCALE, β/(16 B) ≈ 0.005 keeps 4 digits and a whole grid's
        # energy (≈ 1–5 before scaling) stays far inside int32. The arg-min does not change.
        unary_np = unary.cpu().numpy() * _CUT_SCALE
        vertical_np = vertical.cpu().numpy() * _CUT_SCALE
        horizontal_np = horizontal.cpu().numpy() * _CUT_SCALE
        compat_np = np.ascontiguousarray(compat.numpy())
        labels = [
            gco.cut_grid_graph(
                np.ascontiguousarray(unary_np[k]),
                compat_np,
                np.ascontiguousarray(vertical_np[k]),
                np.ascontiguousarray(horizontal_np[k]),
                algorithm="swap",
            ).reshape(unary_np.shape[1], unary_np.shape[2])
            for k in range(unary_np.shape[0])
        ]
        return torch.as_tensor(np.stack(labels))
