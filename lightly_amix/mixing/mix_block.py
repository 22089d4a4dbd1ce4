"""Mix Block+: the learned mixed-sample generator of AMix (paper §3.2, eq. 5).

Given the stage-3 feature maps ``z_i, z_j`` (N, C, h, w) of two images and the ratio λ, the
Mix Block predicts a pixel mask ``s_i`` (N, 1, H, W) with values in [0, 1], the share of
``x_i`` at every pixel; ``x_mix = s_i ⊙ x_i + (1 − s_i) ⊙ x_j``. (The reference code predicts
the partner's mask ``s_j`` instead; here λ and ``s_i`` always mean the share of ``x_i``.)

Every row of the paper's Table 8 is a switch of :class:`MixBlockConfig`, so the AutoMix Mix
Block (:meth:`MixBlockConfig.automix_paper`) and each step towards Mix Block+ are the same class:

=====================  ==============================  ================================
switch                 Mix Block+ (default)             AutoMix Mix Block (paper)
=====================  ==============================  ================================
``lam_encoding``       ``adaptive``: (1 + γλ) z_i       ``concat``: λ as an extra channel
``content``            ``nonlinear``: conv-BN-act-conv  ``linear``: one 1x1 conv C → 1
``attention``          ``self`` over concat(z_i', z_j') ``cross`` between z_i' and z_j'
``upsample``           ``bilinear``                     ``nearest``
``mask_loss``          ``mean_var`` (L_mean − L_var)    ``mean`` (L_mean only)
``lambda_adjust``      True                             False
=====================  ==============================  ================================

Every difference between the paper's text and the authors' public code (OpenMixup's
``PixelMixBlock`` and its CIFAR configs) is a switch too; :meth:`MixBlockConfig.automix` and
:meth:`MixBlockConfig.samix` set them as that code does (``docs/methods.md`` has the table).

Initialisation: with every layer at the reference code's normal(0, 0.01), the attention logits
are ≈ 0, so the attention is uniform and ``P ⊗ C`` is the same at every position: the first
masks are spatially constant, and the gradient that would make the attention selective is a
product of two small weights. ``small_init="output"`` keeps only the mask-logit layer small
(the first masks are still ≈ 0.5) and leaves query, key and hidden layer at PyTorch's default;
with ``mixing.block_lr_scale`` it lets the masks become spatial within tens of steps (on
28 px Fashion-MNIST, with 2x2 stage-3 maps, the block's own loss later turned them back into
blends: ``benchmarks/RESULTS.md``).

Reference: "Improving Discriminative Visual Representation Learning via Automatic Mixup"
(AMix), ICLR 2022 submission, §3.2; Liu et al., "AutoMix: Unveiling the Power of Mixup", 2021.

Examples:
    >>> block = MixBlock(in_channels=256)
    >>> z = torch.randn(8, 256, 6, 6)  # stage-3 features of a ResNet-18 at 96 px
    >>> perm = torch.randperm(8)
    >>> mask = block(z, z[perm], lam=torch.full((8,), 0.3), out_size=(96, 96))  # (8, 1, 96, 96)
    >>> mixed = mix_images(images, perm, mask)
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightly_amix.mixing.base import as_lambda, mix_with_mask
from lightly_amix.mixing.mix_block_config import (  # noqa: F401  (re-exported)
    MixBlockConfig,
    table8_rows,
)


class MixBlock(nn.Module):
    """Predicts the pixel mask ``s_i`` of ``x_i`` from stage-3 features (Mix Block+ by default).

    The feature maps are treated as inputs without gradient (they are detached), so the Mix
    Block's loss cannot reach the encoder that produced them. Attention logits and softmax are
    computed in fp32, also under autocast (they overflow in fp16).

    Args:
        in_channels: Channels ``C`` of the stage-3 maps (256 for ResNet-18, 1024 for ResNet-50).
        config: The switches; Mix Block+ by default.

    Attributes:
        gamma: The λ-encoding scale γ: a parameter with adaptive encoding and a learnable γ,
            otherwise a buffer holding 1 (unused with the ``concat`` encoding).
    """

    def __init__(self, in_channels: int, config: MixBlockConfig | None = None) -> None:
        super().__init__()
        if in_channels < 2:
            raise ValueError(f"in_channels must be >= 2, got {in_channels}.")
        self.config = cfg = config or MixBlockConfig()
        self.in_channels = in_channels
        if cfg.shared_qk and cfg.attention != "cross":
            raise ValueError("shared_qk needs attention='cross' (one projection for both maps).")
        c_in = in_channels + (1 if cfg.lam_encoding == "concat" else 0)
        d = max(in_channels // 2, 1)
        self.key_dim = d

        self.gamma: Tensor
        if cfg.gamma == "learnable" and cfg.lam_encoding == "adaptive":
            self.gamma = nn.Parameter(torch.zeros(()))
        else:
            self.register_buffer("gamma", torch.ones(()))

        # The paper's 1x1 convolutions are per-position linear layers: they act on the maps as
        # token matrices (N, hw, C), which avoids the transposes around the attention and the
        # slow weight-gradient kernels of 1x1 convolutions on 6x6 maps.
        if cfg.content == "nonlinear":
            self.content: nn.Module = NonLinearContent(
                c_in, d, cfg.activation, cfg.dropout, cfg.content_bias
            )
        else:
            self.content = LinearContent(c_in)
        attn_in = 2 * c_in if cfg.attention == "self" else c_in
        self.query = nn.Linear(attn_in, d)
        self.key = self.query if cfg.shared_qk else nn.Linear(attn_in, d)
        self._init_weights(cfg.init_std, cfg.small_init)

    def _init_weights(self, std: float, which: str) -> None:
        if which == "all":
            layers = [m for m in self.modules() if isinstance(m, nn.Linear)]
        else:
            content = self.content
            assert isinstance(content, (NonLinearContent, LinearContent))
            layers = [content.output_layer]
        for layer in layers:
            nn.init.normal_(layer.weight, std=std)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)

    def gamma_value(self) -> Tensor:
        """γ clamped to [0, 1] (the value actually used), with a straight-through gradient.

        ``torch.clamp`` passes no gradient at its bounds, and γ starts exactly at the lower
        bound 0: a plain clamp would leave γ at 0 for the whole run and the Mix Block blind to
        λ. The value is clamped; the gradient reaches γ as if it were not. The parameter itself
        is projected back into [0, 1] at each training forward (:meth:`project_gamma_`).
        """
        if not self.gamma.requires_grad:
            return self.gamma.clamp(0.0, 1.0)
        return self.gamma + (self.gamma.clamp(0.0, 1.0) - self.gamma).detach()

    @torch.no_grad()
    def project_gamma_(self) -> None:
        """Projects a learnable γ back into [0, 1] (projected gradient descent).

        Without it the straight-through gradient can drive the raw parameter far outside the
        bounds while the value used stays clamped: on Fashion-MNIST a noisy start pushed it to
        −9 (value 0, the block blind to λ for the rest of the run) and it never came back
        (``benchmarks/RESULTS.md``). Projected, γ sits at the bound and leaves it as soon as
        the gradient turns.
        """
        if isinstance(self.gamma, nn.Parameter):
            self.gamma.clamp_(0.0, 1.0)

    def encode_lambda(self, z_i: Tensor, z_j: Tensor, lam: Tensor) -> tuple[Tensor, Tensor]:
        """λ-encoded maps ``(z_i', z_j')``; λ has shape (N,)."""
        if self.config.lam_encoding == "none":
            return z_i, z_j
        if self.config.lam_rescale is not None:
            lam = rescale_lambda(lam, self.config.lam_rescale)
        lam4 = lam.to(z_i.dtype).view(-1, 1, 1, 1)  # (N, 1, 1, 1)
        if self.config.lam_encoding == "adaptive":
            g = self.gamma_value().to(z_i.dtype)
            return (1 + g * lam4) * z_i, (1 + g * (1 - lam4)) * z_j
        n, _, h, w = z_i.shape
        lam_map = lam4.expand(n, 1, h, w)  # (N, 1, h, w)
        return torch.cat([z_i, lam_map], dim=1), torch.cat([z_j, 1 - lam_map], dim=1)

    def attention(self, t_i: Tensor, t_j: Tensor) -> Tensor:
        """Attention weights P (N, hw, hw) of λ-encoded tokens (N, hw, C'); softmax over keys."""
        if self.config.attention == "self":
            t_cat = torch.cat([t_i, t_j], dim=-1)  # (N, hw, 2C')
            q, k = self.query(t_cat), self.key(t_cat)  # (N, hw, d) each
        else:
            q, k = self.query(t_i), self.key(t_j)
        with torch.autocast(device_type=q.device.type, enabled=False):
            logits = torch.bmm(q.float(), k.float().transpose(1, 2))  # (N, hw, hw)
            return (logits / math.sqrt(self.key_dim)).softmax(dim=-1)

    def forward(
        self, z_i: Tensor, z_j: Tensor, lam: Tensor | float, out_size: tuple[int, int]
    ) -> Tensor:
        """Returns the mask ``s_i`` (N, 1, H, W) in [0, 1] for the share of ``x_i``.

        Args:
            z_i: Stage-3 features of the images ``x_i``, shape (N, C, h, w).
            z_j: Stage-3 features of their partners ``x_j = x[perm]``, same shape.
            lam: λ, a scalar or shape (N,): the intended share of ``x_i``.
            out_size: Image size (H, W) of the mask.
        """
        if z_i.dim() != 4 or z_i.shape != z_j.shape or z_i.shape[1] != self.in_channels:
            raise ValueError(
                f"z_i and z_j must both have shape (N, {self.in_channels}, h, w), got "
                f"{tuple(z_i.shape)} and {tuple(z_j.shape)}."
            )
        n, _, h, w = z_i.shape
        lam_t = as_lambda(lam, n, z_i.device)
        if self.training:
            self.project_gamma_()  # after the optimiser's last step, before γ is used
        z_i, z_j = self.encode_lambda(z_i.detach(), z_j.detach(), lam_t)
        t_i = z_i.flatten(2).transpose(1, 2)  # (N, hw, C')
        t_j = z_j.flatten(2).transpose(1, 2)  # (N, hw, C')
        p = self.attention(t_i, t_j)  # (N, hw, hw), fp32
        cross = self.config.attention == "cross"
        # Cross attention weighs the partner's key positions, so the values are the partner's
        # content too (and the result is the partner's share); otherwise the values are z_i's.
        content = self.content(t_j if cross else t_i)  # (N, hw)
        if self.config.transpose_attention:
            p = p.transpose(1, 2)
        with torch.autocast(device_type=p.device.type, enabled=False):
            c = content.float().unsqueeze(2)  # (N, hw, 1)
            low = torch.bmm(p, c).view(n, h, w)  # (N, h, w) mask logits
            if not self.config.upsample_logits:
                low = torch.sigmoid(low)
            # U(·): upsampling is linear and separable, so it is two small matrix products
            # A_h · s · A_wᵀ with the matrices of F.interpolate. Same values, and a backward
            # pass without the atomics of interpolate's own backward (the slowest kernel of
            # the Mix Block on a GPU).
            a_h = _upsampling_matrix(out_size[0], h, self.config.upsample, low.device)  # (H, h)
            a_w = _upsampling_matrix(out_size[1], w, self.config.upsample, low.device)  # (W, w)
            mask = torch.matmul(torch.matmul(a_h, low), a_w.T)  # (N, H, W)
            if self.config.upsample_logits:
                mask = torch.sigmoid(mask)
            if cross:  # s_i = 1 − s_j
                mask = 1 - mask
            return mask.unsqueeze(1)  # (N, 1, H, W), fp32


class NonLinearContent(nn.Module):
    """``C_NCL``: linear C' → d, BatchNorm, activation, dropout, linear d → 1 per position.

    Args:
        in_dim: Token width C'.
        hidden_dim: d.
        activation: ``relu`` or ``elu``.
        dropout: Dropout ratio (training mode only).
    """

    def __init__(
        self, in_dim: int, hidden_dim: int, activation: str, dropout: float, bias: bool = True
    ) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden_dim, bias=bias)
        self.bn = nn.BatchNorm1d(hidden_dim)
        self.act: nn.Module = nn.ReLU(inplace=True) if activation == "relu" else nn.ELU()
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden_dim, 1, bias=bias)

    @property
    def output_layer(self) -> nn.Linear:
        """The layer that produces the mask logits."""
        return self.fc2

    def forward(self, tokens: Tensor) -> Tensor:
        """Tokens (N, hw, C') -> content logits (N, hw)."""
        n, p, _ = tokens.shape
        x = self.fc1(tokens).reshape(n * p, -1)  # (N·hw, d): BN over batch and positions
        x = self.drop(self.act(self.bn(x)))
        return self.fc2(x).view(n, p)


class LinearContent(nn.Module):
    """AutoMix's content: one linear layer C' → 1 per position."""

    def __init__(self, in_dim: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_dim, 1)

    @property
    def output_layer(self) -> nn.Linear:
        """The layer that produces the mask logits."""
        return self.fc

    def forward(self, tokens: Tensor) -> Tensor:
        """Tokens (N, hw, C') -> content logits (N, hw)."""
        return self.fc(tokens).squeeze(-1)


def rescale_lambda(lam: Tensor, k: float) -> Tensor:
    """SAMix's λ rescaling ``(4/3 λ³ − 2λ² + (k + 1)λ) / (k + 1/3)``: 0 → 0, 1/2 → 1/2, 1 → 1.

    The authors' code (``rescale_lam_mult``) bends λ towards 1/2 for ``k`` near 0 and leaves it
    closer to the identity for larger ``k``.
    """
    k1 = k + 1.0
    return (4.0 / 3.0 * lam**3 - 2.0 * lam**2 + k1 * lam) / (k1 - 2.0 / 3.0)


def _upsampling_matrix(size_out: int, size_in: int, mode: str, device: torch.device) -> Tensor:
    """The (size_out, size_in) matrix of 1-D ``F.interpolate`` (``align_corners=False``).

    Cached in eager mode; built in the graph under ``torch.compile`` (the cache would break it).
    """
    if torch.compiler.is_compiling():
        return _build_upsampling_matrix(size_out, size_in, mode, device)
    return _cached_upsampling_matrix(size_out, size_in, mode, device)


def _build_upsampling_matrix(
    size_out: int, size_in: int, mode: str, device: torch.device
) -> Tensor:
    eye = torch.eye(size_in, device=device).unsqueeze(1)  # (size_in, 1, size_in)
    align = False if mode == "bilinear" else None
    mode_1d = "linear" if mode == "bilinear" else "nearest"
    columns = F.interpolate(eye, size=size_out, mode=mode_1d, align_corners=align)
    return columns.squeeze(1).T.contiguous()  # (size_out, size_in)


_cached_upsampling_matrix = functools.lru_cache(maxsize=32)(_build_upsampling_matrix)


def mix_images(images: Tensor, perm: Tensor, mask: Tensor) -> Tensor:
    """The mixed images ``mask ⊙ x + (1 − mask) ⊙ x[perm]`` for a mask (N, 1, H, W)."""
    if mask.dim() != 4 or mask.shape[0] != images.shape[0] or mask.shape[2:] != images.shape[2:]:
        raise ValueError(
            f"mask must have shape ({images.shape[0]}, 1, {images.shape[2]}, {images.shape[3]}), "
            f"got {tuple(mask.shape)}."
        )
    return mix_with_mask(images, perm, mask)
