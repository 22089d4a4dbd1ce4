"""Backbones and pre-training methods."""

from lightly_amix.models.amix import AMix
from lightly_amix.models.backbones import ResNetBackbone
from lightly_amix.models.base import MomentumContrastMethod
from lightly_amix.models.mix_moco import MixMoCo
from lightly_amix.models.mocov2 import MoCoV2

__all__ = ["AMix", "MixMoCo", "MoCoV2", "MomentumContrastMethod", "ResNetBackbone"]
