"""Once, before training: split.py (splits), impute.py (missing values), stats.py (column statistics),
tokenize.py (byte-level or BPE tokenizers)."""

from stoke.prepare.split import split_indices

__all__ = ["split_indices"]
