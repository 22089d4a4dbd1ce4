#!/usr/bin/env python
"""Self-supervised pre-training on Fashion-MNIST (28 px, offline small runs).

Run `python recipes/pretrain_fashion_mnist.py --help` for every option; the defaults are the paper's
settings in `recipes/configs/fashion_mnist.yaml` + `recipes/configs/methods/<method>.yaml`.
"""

import sys
from pathlib import Path

from lightly_amix.cli import pretrain_main

if __name__ == "__main__":
    sys.exit(
        pretrain_main(
            dataset="fashion-mnist",
            config_dir=Path(__file__).resolve().parent / "configs",
            prog="pretrain_fashion_mnist.py",
        )
    )
