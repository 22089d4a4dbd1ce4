"""Evaluation of pre-trained backbones: feature extraction, kNN and linear probes."""

from lightly_amix.eval.features import EncoderInfo, extract_features, load_encoder
from lightly_amix.eval.knn import knn_accuracy
from lightly_amix.eval.linear import MoCoLinearClassifier

__all__ = [
    "EncoderInfo",
    "MoCoLinearClassifier",
    "extract_features",
    "knn_accuracy",
    "load_encoder",
]
