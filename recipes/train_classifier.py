#!/usr/bin/env python
"""Supervised image classification with a fixed or learned mixup (AMix paper §4.1).

Run `python recipes/train_classifier.py --help` for every option; the defaults are the paper's
settings in `recipes/configs/classify/<dataset>.yaml`.
"""

import sys
from pathlib import Path

from lightly_amix.classify_cli import classify_main

if __name__ == "__main__":
    sys.exit(
        classify_main(
            config_dir=Path(__file__).resolve().parent / "configs",
            prog="train_classifier.py",
        )
    )
