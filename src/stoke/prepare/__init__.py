"""Once, before training: splits now; cleaning, statistics and tokenization beside it."""

from stoke.prepare.split import split_indices

__all__ = ["split_indices"]
