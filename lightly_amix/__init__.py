"""lightly-amix: automatic mixup (AMix) for contrastive self-supervised pre-training.

The parts a user composes into their own training loop, next to Lightly's heads, losses and
memory banks:

- the learned mixup: :class:`MixBlock` and :class:`MixBlockConfig` (Mix Block+ and AutoMix's
  block), :class:`LearnedMixup` (the block with its two samples per step), :func:`mask_loss`
  and :func:`adjust_lambda`;
- the fixed mixups behind one interface (:class:`Mixup`, :data:`MIXUPS`, :func:`build_mixup`,
  :class:`PuzzleMix` with :func:`input_saliency`);
- the mixup losses (:func:`mixup_info_nce`, :func:`mixup_bce`, :func:`mixup_cross_entropy`);
- the clustering of AMix-C (:class:`ODCMemory`, :class:`ClusterPseudoLabels`, :func:`kmeans`);
- the methods as LightningModules (:class:`AMix`, :class:`MoCoV2`, :class:`MixMoCo`,
  :class:`MoCHi`, :class:`IMix`, :class:`UnMix`, :class:`PuzzleMixMoCo`, :class:`SimCLR`,
  :class:`AMixSimCLR`, :class:`BYOL`, :class:`AMixBYOL`,
  :class:`MixupClassifier`, :class:`AutoMixClassifier`).

Examples:
    >>> from lightly_amix import LearnedMixup, MixBlockConfig
    >>> mixer = LearnedMixup(in_channels=256, config=MixBlockConfig())
"""

from lightly_amix.clustering import ODCMemory, kmeans
from lightly_amix.clustering.pseudo_labels import ClusterPseudoLabels
from lightly_amix.losses import mixup_bce, mixup_cross_entropy, mixup_info_nce
from lightly_amix.mixing import (
    MIXUPS,
    SALIENCY_MIXUPS,
    CutMix,
    FMix,
    ManifoldMix,
    MixBlock,
    MixBlockConfig,
    MixOutput,
    MixUp,
    Mixup,
    PuzzleMix,
    ResizeMix,
    SaliencyMix,
    adjust_lambda,
    build_mixup,
    input_saliency,
    mask_loss,
    random_partner,
    sample_lambda,
)
from lightly_amix.mixing.learned import LearnedMixup
from lightly_amix.models import (
    BYOL,
    AMix,
    AMixBYOL,
    AMixSimCLR,
    AutoMixClassifier,
    IMix,
    MixMoCo,
    MixupClassifier,
    MoCHi,
    MoCoV2,
    PuzzleMixMoCo,
    ResNetBackbone,
    SimCLR,
    UnMix,
)

__version__ = "0.1.0"

__all__ = [
    "MIXUPS",
    "SALIENCY_MIXUPS",
    "BYOL",
    "AMix",
    "AMixBYOL",
    "AMixSimCLR",
    "AutoMixClassifier",
    "ClusterPseudoLabels",
    "CutMix",
    "FMix",
    "IMix",
    "LearnedMixup",
    "ManifoldMix",
    "MixBlock",
    "MixBlockConfig",
    "MixMoCo",
    "MixOutput",
    "MixUp",
    "MixupClassifier",
    "Mixup",
    "MoCHi",
    "MoCoV2",
    "ODCMemory",
    "PuzzleMix",
    "PuzzleMixMoCo",
    "ResNetBackbone",
    "ResizeMix",
    "SaliencyMix",
    "SimCLR",
    "UnMix",
    "__version__",
    "adjust_lambda",
    "build_mixup",
    "input_saliency",
    "kmeans",
    "mask_loss",
    "mixup_bce",
    "mixup_cross_entropy",
    "mixup_info_nce",
    "random_partner",
    "sample_lambda",
]
