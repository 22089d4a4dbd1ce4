"""The switches of the Mix Block (:class:`MixBlockConfig`) and its named profiles.

One dataclass holds every choice of the Mix Block: the paper's Table 8 rows (AutoMix's Mix
Block → Mix Block+), every point where the authors' public code (OpenMixup) differs from the
paper's text, and the mask lab's own fixes (``benchmarks/mask_lab.py``). The profiles
(:meth:`MixBlockConfig.paper`, :meth:`~MixBlockConfig.automix`, ...) set them as a named source
does; the module :mod:`lightly_amix.mixing.mix_block` builds the block from a config.

Examples:
    >>> config = MixBlockConfig.automix()  # AutoMix's block as the authors' CIFAR code
    >>> config.lam_encoding, config.attention
    ('none', 'cross')
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from lightly_amix.mixing.masks import MASK_LOSS_REDUCTIONS

LAM_ENCODINGS = ("adaptive", "concat", "none")
GAMMAS = ("learnable", "fixed")
CONTENTS = ("nonlinear", "linear")
ACTIVATIONS = ("relu", "elu")
ATTENTIONS = ("self", "cross")
UPSAMPLES = ("bilinear", "nearest")
MASK_LOSSES = ("mean_var", "mean")
SMALL_INITS = ("all", "output")


@dataclass
class MixBlockConfig:
    """Switches of the Mix Block and of its mask loss (paper §3.2, Table 8).

    Attributes:
        lam_encoding: ``adaptive`` (``z_i' = (1 + γλ) z_i``, ``z_j' = (1 + γ(1 − λ)) z_j``),
            ``concat`` (λ and 1 − λ as an extra constant channel, AutoMix's paper) or ``none``
            (the block does not see λ: the authors' AutoMix code on CIFAR, ``lam_concat=False``).
        lam_rescale: With ``adaptive``: encode ``r(λ) = (4/3 λ³ − 2λ² + (k + 1)λ) / (k + 1/3)``
            instead of λ (the authors' SAMix code, ``lam_mul_k``; CIFAR k = 0.25); ``None``: λ.
        gamma: ``learnable`` (γ a scalar parameter clamped to [0, 1], initialised 0, the
            paper) or ``fixed`` (γ = 1, the reference code).
        content: ``nonlinear`` (1x1 conv C → C/2, BN, activation, dropout, 1x1 conv C/2 → 1)
            or ``linear`` (1x1 conv C → 1, AutoMix); the 1x1 convs are per-position linear
            layers on the token matrix (N, hw, C).
        activation: ``relu`` (paper) or ``elu`` (reference code) in the non-linear content.
        dropout: Dropout ratio in the non-linear content (paper 0.1; reference code 0 on
            small images). Active only in training mode.
        attention: ``self`` (softmax attention over the concatenation of both maps) or
            ``cross`` (AutoMix: queries from ``z_i'``, keys *and values* from ``z_j'``; the
            block predicts the partner's share ``s_j = U(σ(P ⊗ C(z_j')))`` and returns
            ``s_i = 1 − s_j``, as the authors' code does).
        shared_qk: Keys use the query projection (the authors' code with ``cross`` attention,
            where ``key`` is ``None``); otherwise a separate key projection.
        transpose_attention: Aggregate with ``Pᵀ`` instead of ``P`` (the authors' SAMix code,
            ``mask_mode="none"``: ``mask = Pᵀ v`` with the softmax over the other index).
        content_bias: Biases in the non-linear content's layers (paper: yes; the authors' SAMix
            value neck: no).
        upsample_logits: Upsample the mask *logits*, then apply the sigmoid (the authors' code)
            instead of upsampling the sigmoid's output (the paper's ``U(σ(P ⊗ C))``).
        upsample: ``bilinear`` (paper) or ``nearest`` (AutoMix) from h x w to the image size.
        mask_loss: ``mean_var`` (``β (L_mean − L_var)``, variance rewarded) or ``mean``
            (``β L_mean``, AutoMix).
        mask_loss_reduction: ``sample`` (each mask against its own λ, spatial variance per
            sample: the paper's text) or ``batch`` (the batch's mean mask against the mean λ,
            variance around the batch mean: the authors' code); see :func:`mask_loss`.
        variance_weight: Weight of the variance term (paper 1; the authors' SAMix code 2;
            default 2 with ``variance_norm``, chosen in the mask lab).
        variance_norm: Divide the variance by ``μ (1 − μ)``, its value for a binary mask of
            that mean (see :func:`~lightly_amix.mixing.masks.mask_loss`); not in the paper.
            The default: in the mask lab (``benchmarks/RESULTS.md``, "The mask lab") the
            paper's plain term left the masks soft (spatial std 0.10), a plain term × 5 made
            them spatial but held their means at 1/2, blind to λ (correlation 0.00); the
            normalised term × 2 gave spatial, λ-following masks (std 0.29, correlation 0.95)
            and the best accuracy of the lab.
        mask_loss_weight: β, paper 0.1.
        mask_margin: ε of ``L_mean``, paper 0.1.
        lambda_adjust: Adjust the backbone's mask so its mean is within ``adjust_margin`` of λ.
        adjust_probability: Share of batches whose backbone mask is λ-adjusted (the authors'
            SAMix code on CIFAR: ``mask_adjust=0.25``; the paper: always).
        adjust_margin: Margin of the λ adjusting rule, paper 0.1.
        init_std: Standard deviation of the small normal init (bias 0) that makes the first
            masks ≈ 0.5 everywhere (reference code 0.01).
        small_init: Which layers get the small init: ``all`` (every layer, the reference code)
            or ``output`` (only the layer that produces the mask logits; query, key and the
            content's hidden layer keep PyTorch's default init).
    """

    lam_encoding: str = "adaptive"
    gamma: str = "learnable"
    lam_rescale: float | None = None
    content: str = "nonlinear"
    activation: str = "relu"
    dropout: float = 0.1
    content_bias: bool = True
    attention: str = "self"
    shared_qk: bool = False
    transpose_attention: bool = False
    upsample: str = "bilinear"
    upsample_logits: bool = False
    mask_loss: str = "mean_var"
    mask_loss_reduction: str = "sample"
    variance_weight: float = 2.0
    variance_norm: bool = True
    mask_loss_weight: float = 0.1
    mask_margin: float = 0.1
    lambda_adjust: bool = True
    adjust_probability: float = 1.0
    adjust_margin: float = 0.1
    init_std: float = 0.01
    small_init: str = "all"

    def __post_init__(self) -> None:
        for value, valid, key in (
            (self.lam_encoding, LAM_ENCODINGS, "lam_encoding"),
            (self.gamma, GAMMAS, "gamma"),
            (self.content, CONTENTS, "content"),
            (self.activation, ACTIVATIONS, "activation"),
            (self.attention, ATTENTIONS, "attention"),
            (self.upsample, UPSAMPLES, "upsample"),
            (self.mask_loss, MASK_LOSSES, "mask_loss"),
            (self.small_init, SMALL_INITS, "small_init"),
            (self.mask_loss_reduction, MASK_LOSS_REDUCTIONS, "mask_loss_reduction"),
        ):
            if value not in valid:
                raise ValueError(f"Invalid {key} '{value}'. Expected one of: {', '.join(valid)}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}.")
        for key in ("mask_loss_weight", "mask_margin", "adjust_margin", "init_std",
                    "variance_weight"):  # fmt: skip
            if getattr(self, key) < 0:
                raise ValueError(f"{key} must be >= 0, got {getattr(self, key)}.")
        if not 0.0 <= self.adjust_probability <= 1.0:
            raise ValueError(
                f"adjust_probability must be in [0, 1], got {self.adjust_probability}."
            )
        if self.lam_rescale is not None and not 0.0 <= self.lam_rescale <= 10.0:
            raise ValueError(
                f"lam_rescale must be None or in [0, 10] (SAMix's code: 0.25), got "
                f"{self.lam_rescale}."
            )

    @classmethod
    def paper(cls) -> MixBlockConfig:
        """Mix Block+ exactly as the paper's text describes it (§3.2): the plain variance term."""
        return cls(variance_weight=1.0, variance_norm=False)

    @classmethod
    def automix_paper(cls) -> MixBlockConfig:
        """AutoMix's Mix Block as the AMix paper describes it: Table 8's first row ("MixBlock")."""
        return replace(
            cls.paper(),
            lam_encoding="concat",
            content="linear",
            attention="cross",
            upsample="nearest",
            mask_loss="mean",
            lambda_adjust=False,
        )

    @classmethod
    def automix(cls) -> MixBlockConfig:
        """AutoMix's Mix Block as the authors' code runs it on CIFAR (OpenMixup, ResNet-18).

        Point by point (``configs/classification/cifar100/automix/``, ``PixelMixBlock``): λ not
        given to the block (``lam_concat=False``), one 1x1 conv for the value, cross attention
        with keys from the query projection (``key=None``), values from the partner's map and
        the partner's mask returned (``mask_mode="none_v_"``), nearest upsampling of the
        logits before the sigmoid, the L1 mask loss on the batch mean (margin 0.1, weight 0.1),
        no λ adjusting, every layer at normal(0, 0.01).
        """
        return replace(
            cls.paper(),
            lam_encoding="none",
            content="linear",
            attention="cross",
            shared_qk=True,
            upsample="nearest",
            upsample_logits=True,
            mask_loss="mean",
            mask_loss_reduction="batch",
            lambda_adjust=False,
        )

    @classmethod
    def automix_tuned(cls) -> MixBlockConfig:
        """AutoMix's block of the ``automix`` classifier: :meth:`automix` and the mask lab's fixes.

        λ is given to the block as a channel (the paper's AutoMix; the authors' CIFAR code
        gives it none, so its masks cannot follow a λ' drawn per sample), the mask loss is
        taken per sample without a margin, the variance term divided by ``μ (1 − μ)`` is added,
        and the area term is 3 × the authors' (mask lab row ``b7``, ``benchmarks/RESULTS.md``;
        over 3 seeds: spatial std 0.35–0.38, correlation with λ' ≥ 0.91, |mean − λ'| ≤ 0.10).
        The rows before it: with the normalised term × 2 (``b2``) the masks followed λ but
        stayed blends (std 0.07); × 5 (``b3``) or × 3 (``b4``) made them sharp but blind to λ
        in seed 1; × 4 (``b5``) followed λ in every seed but ended 0.13 away from it in two,
        and no margin (``b6``) in one. ``mask_loss_weight`` scales both terms, so the variance
        weight is divided by 3 to keep that term's strength (0.1 × 4) unchanged.
        """
        return replace(
            cls.automix(),
            lam_encoding="concat",
            mask_loss="mean_var",
            mask_loss_reduction="sample",
            mask_margin=0.0,
            mask_loss_weight=0.3,
            variance_norm=True,
            variance_weight=4.0 / 3.0,
        )

    @classmethod
    def samix(cls) -> MixBlockConfig:
        """Mix Block+ as the authors' code runs it on CIFAR (OpenMixup's SAMix, ResNet-18).

        Point by point (``configs/classification/cifar100/samix/``, ``PixelMixBlock``):
        adaptive λ encoding with a fixed γ = 1 (``lam_mul=True, lam_residual=True``) of the
        rescaled λ (``lam_mul_k=0.25``), self attention over the concatenated maps with its
        own key projection (``x_qk_concat=True``), mask ``Pᵀ v`` (``mask_mode="none"``),
        a two-layer value network without biases, ELU, dropout 0, bilinear upsampling of the
        logits before the sigmoid, mask loss ``L1 − 2 Var`` on the batch (margin 0.1, weight
        0.1), λ adjusting of the backbone's mask in a quarter of the batches
        (``mask_adjust=0.25``).
        """
        return replace(
            cls.paper(),
            gamma="fixed",
            lam_rescale=0.25,
            activation="elu",
            dropout=0.0,
            content_bias=False,
            transpose_attention=True,
            upsample_logits=True,
            mask_loss_reduction="batch",
            variance_weight=2.0,
            adjust_probability=0.25,
        )


def table8_rows() -> list[tuple[str, MixBlockConfig]]:
    """The cumulative rows of the paper's Table 8, from AutoMix's Mix Block to Mix Block+ as the
    paper describes it (:meth:`MixBlockConfig.paper`)."""
    rows = [("MixBlock", MixBlockConfig.automix_paper())]
    steps: list[tuple[str, dict[str, Any]]] = [
        ("+adaptive λ", {"lam_encoding": "adaptive"}),
        ("+non-linear content", {"content": "nonlinear"}),
        ("+global attention", {"attention": "self"}),
        ("+L_mask (variance)", {"mask_loss": "mean_var"}),
        ("+bilinear upsampling", {"upsample": "bilinear"}),
        ("+λ adjusting", {"lambda_adjust": True}),
    ]
    for name, change in steps:
        rows.append((name, replace(rows[-1][1], **change)))
    return rows
