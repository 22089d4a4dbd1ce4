#!/usr/bin/env python
"""Self-supervised pre-training on STL-10 (96 px, train+unlabeled).

Run `python recipes/pretrain_stl10.py --help` for every option; the defaults are the paper's
settings in `recipes/configs/stl10.yaml` + `recipes/configs/methods/<method>.yaml`.
"""

import sys
from pathlib import Path

from lightly_amix.cli import pretrain_main

if __name__ == "__main__":
    sys.exit(
        pretrain_main(
            dataset="stl10",
            config_dir=Path(__file__).resolve().parent / "configs",
            prog="pretrain_stl10.py",
        )
    )
