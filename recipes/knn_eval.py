#!/usr/bin/env python
"""Weighted kNN evaluation (k = 200, t = 0.1) of a pre-trained backbone; see `--help`."""

import sys

from lightly_amix.eval.cli import knn_main

if __name__ == "__main__":
    sys.exit(knn_main())
