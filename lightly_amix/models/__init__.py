"""Backbones and pre-training methods."""

from lightly_amix.models.amix import AMix
from lightly_amix.models.backbones import ResNetBackbone
from lightly_amix.models.base import MomentumContrastMethod
from lightly_amix.models.byol import BYOL, AMixBYOL
from lightly_amix.models.classifier import AutoMixClassifier, MixupClassifier
from lightly_amix.models.imix import IMix
from lightly_amix.models.mix_moco import MixMoCo
from lightly_amix.models.mixing_method import MixingMethod
from lightly_amix.models.mochi import MoCHi
from lightly_amix.models.mocov2 import MoCoV2
from lightly_amix.models.puzzlemix import PuzzleMixMoCo
from lightly_amix.models.simclr import AMixSimCLR, SimCLR
from lightly_amix.models.unmix import UnMix

__all__ = [
    "BYOL",
    "AMix",
    "AMixBYOL",
    "AMixSimCLR",
    "AutoMixClassifier",
    "IMix",
    "MixMoCo",
    "MixingMethod",
    "MixupClassifier",
    "MoCHi",
    "MoCoV2",
    "MomentumContrastMethod",
    "PuzzleMixMoCo",
    "ResNetBackbone",
    "SimCLR",
    "UnMix",
]
