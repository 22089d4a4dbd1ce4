"""Mixed-sample generators: the learned Mix Block+ and the fixed mixups, behind one interface."""

from lightly_amix.mixing.base import MixOutput, Mixup, random_partner, sample_lambda
from lightly_amix.mixing.fixed import CutMix, FMix, MixUp, ResizeMix, SaliencyMix
from lightly_amix.mixing.manifold import ManifoldMix, manifold_features
from lightly_amix.mixing.masks import adjust_lambda, mask_diagnostics, mask_loss
from lightly_amix.mixing.mix_block import MixBlock, MixBlockConfig, mix_images, table8_rows
from lightly_amix.mixing.puzzle import PuzzleMix, input_saliency
from lightly_amix.mixing.registry import MIXUPS, SALIENCY_MIXUPS, build_mixup

__all__ = [
    "MIXUPS",
    "SALIENCY_MIXUPS",
    "CutMix",
    "FMix",
    "ManifoldMix",
    "MixBlock",
    "MixBlockConfig",
    "MixOutput",
    "MixUp",
    "Mixup",
    "PuzzleMix",
    "ResizeMix",
    "SaliencyMix",
    "adjust_lambda",
    "build_mixup",
    "input_saliency",
    "manifold_features",
    "mask_diagnostics",
    "mask_loss",
    "mix_images",
    "random_partner",
    "sample_lambda",
    "table8_rows",
]
