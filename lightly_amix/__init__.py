"""lightly-amix: automatic mixup (AMix) for contrastive self-supervised pre-training."""

__version__ = "0.1.0"
