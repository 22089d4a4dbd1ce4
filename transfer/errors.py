"""The error type of the VOC fine-tuning: a user error that the command line reports.

Examples:
    >>> str(FinetuneError("--weights: no such file: x.pt"))
    '--weights: no such file: x.pt'
"""

from __future__ import annotations


class FinetuneError(Exception):
    """A user error (bad weights, data or arguments); ``main`` prints it and exits with 2."""
