"""Backbones and pre-training methods."""

from lightly_amix.models.backbones import ResNetBackbone
from lightly_amix.models.base import MomentumContrastMethod
from lightly_amix.models.mocov2 import MoCoV2

METHODS = {"mocov2": MoCoV2}

__all__ = ["METHODS", "MoCoV2", "MomentumContrastMethod", "ResNetBackbone"]
