#!/usr/bin/env python
"""Self-supervised pre-training on ImageNet-1k or any ImageFolder with train/ and val/ (224 px).

Run `python recipes/pretrain_imagenet.py --help` for every option; the defaults are the paper's
settings in `recipes/configs/imagenet.yaml` + `recipes/configs/methods/<method>.yaml`.
"""

import sys
from pathlib import Path

from lightly_amix.cli import pretrain_main

if __name__ == "__main__":
    sys.exit(
        pretrain_main(
            dataset="imagenet",
            config_dir=Path(__file__).resolve().parent / "configs",
            prog="pretrain_imagenet.py",
        )
    )
