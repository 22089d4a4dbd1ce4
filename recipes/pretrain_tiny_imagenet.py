#!/usr/bin/env python
"""Self-supervised pre-training on Tiny-ImageNet-200 (64 px).

Run `python recipes/pretrain_tiny_imagenet.py --help` for every option; the defaults are the paper's
settings in `recipes/configs/tiny_imagenet.yaml` + `recipes/configs/methods/<method>.yaml`.
"""

import sys
from pathlib import Path

from lightly_amix.cli import pretrain_main

if __name__ == "__main__":
    sys.exit(
        pretrain_main(
            dataset="tiny-imagenet",
            config_dir=Path(__file__).resolve().parent / "configs",
            prog="pretrain_tiny_imagenet.py",
        )
    )
