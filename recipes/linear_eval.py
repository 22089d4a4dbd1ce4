#!/usr/bin/env python
"""Linear-probe evaluation (MoCo protocol) of a pre-trained backbone; see `--help`."""

import sys

from lightly_amix.eval.cli import linear_main

if __name__ == "__main__":
    sys.exit(linear_main())
