"""Text augmentation on the words of a ``text`` field: random deletion, swap, insertion, synonym replacement.

The four operations of EDA (Wei and Zou, 2019). Words are the text's whitespace-separated pieces
(punctuation stays attached to its word), and the result joins them with single spaces; an empty or
all-whitespace text comes back unchanged. Synonyms come only from the table the user gives
(``{"word": ["synonym", ...]}``), looked up case-insensitively; nothing is downloaded.

Every op is deterministic: in the Loader (``transforms={"text": [...]}`` on a ``text`` field) its random
choices come from (seed, epoch, sample index, op position) like the image ops, so batches do not depend
on threads or workers. As a plain function, ``op(text, seed)`` gives the same result for the same seed,
for augmenting at pack time.

Not for: tokenization (``stoke.prepare.tokenize``) or tensors of tokens.

Example:
    >>> swap = RandomSwap(1)
    >>> swap("the quick brown fox", seed=3) == swap("the quick brown fox", seed=3)
    True
    >>> sorted(swap("the quick brown fox", seed=3).split()) == sorted("the quick brown fox".split())
    True
    >>> SynonymReplacement(1, {"quick": ["fast"]})("the quick fox", seed=0)
    'the fast fox'
    >>> RandomDeletion(1.0)("", seed=0)
    ''
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence

import numpy as np

from stoke.errors import ConfigError
from stoke.ops.base import Op


class TextOp(Op, ABC):
    """An op on the words of one text; draws one uniform per sample, the key of its own generator."""

    draws = 1

    @abstractmethod
    def apply_words(self, words: list[str], rng: np.random.Generator) -> list[str]:
        """The augmented words of a non-empty list of ``words``, choices drawn from ``rng``."""

    def apply_text(self, text: str, uniforms: np.ndarray) -> str:
        """``text`` augmented with this sample's uniform (the Loader's path)."""
        return self._run(text, _generator(int(uniforms[0] * (1 << 53))))  # 53 random bits from the counters

    def __call__(self, text: str, seed: int | np.random.Generator = 0) -> str:
        """``text`` augmented; the same ``seed`` gives the same result."""
        return self._run(text, seed if isinstance(seed, np.random.Generator) else _generator(seed))

    def _run(self, text: str, rng: np.random.Generator) -> str:
        if not isinstance(text, str):
            raise ConfigError(
                f"{type(self).__name__} works on text, got {type(text).__name__}; apply it to a text field"
            )
        words = text.split()
        if not words:
            return text
        return " ".join(self.apply_words(words, rng))


class RandomDeletion(TextOp):
    """Delete each word with probability ``p``; one random word is kept when all would go."""

    def __init__(self, p: float) -> None:
        if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0.0 <= p <= 1.0:
            raise ConfigError(f"RandomDeletion's p must be a probability in [0, 1], got {p!r}")
        self.p = float(p)

    def apply_words(self, words: list[str], rng: np.random.Generator) -> list[str]:
        keep = rng.random(len(words)) >= self.p
        if not keep.any():
            keep[rng.integers(len(words))] = True
        return [word for word, kept in zip(words, keep.tolist()) if kept]


class RandomSwap(TextOp):
    """Swap two words at random positions, ``n`` times (texts of one word are left alone)."""

    def __init__(self, n: int) -> None:
        self.n = _count(n, "RandomSwap")

    def apply_words(self, words: list[str], rng: np.random.Generator) -> list[str]:
        words = list(words)
        if len(words) < 2:
            return words
        for first, second in rng.integers(0, len(words), size=(self.n, 2)).tolist():
            if first == second:
                second = (second + 1) % len(words)  # always two different positions
            words[first], words[second] = words[second], words[first]
        return words


class RandomInsertion(TextOp):
    """Insert a synonym of a random word (one that has synonyms) at a random position, ``n`` times."""

    def __init__(self, n: int, synonyms: Mapping[str, Sequence[str]]) -> None:
        self.n = _count(n, "RandomInsertion")
        self.synonyms = _synonym_table(synonyms, "RandomInsertion")

    def apply_words(self, words: list[str], rng: np.random.Generator) -> list[str]:
        words = list(words)
        for _ in range(self.n):
            candidates = [options for word in words if (options := self.synonyms.get(word.lower()))]
            if not candidates:
                break
            options = candidates[rng.integers(len(candidates))]
            words.insert(int(rng.integers(len(words) + 1)), options[rng.integers(len(options))])
        return words


class SynonymReplacement(TextOp):
    """Replace up to ``n`` words that have synonyms, at distinct random positions, by one of them."""

    def __init__(self, n: int, synonyms: Mapping[str, Sequence[str]]) -> None:
        self.n = _count(n, "SynonymReplacement")
        self.synonyms = _synonym_table(synonyms, "SynonymReplacement")

    def apply_words(self, words: list[str], rng: np.random.Generator) -> list[str]:
        words = list(words)
        positions = [position for position, word in enumerate(words) if word.lower() in self.synonyms]
        for position in rng.permutation(positions)[: self.n].tolist() if positions else []:
            options = self.synonyms[words[position].lower()]
            words[position] = options[rng.integers(len(options))]
        return words


def _generator(key: int) -> np.random.Generator:
    return np.random.Generator(np.random.Philox(key=key))


def _count(n: int, what: str) -> int:
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ConfigError(f"{what}'s n must be a non-negative integer, got {n!r}")
    return n


def _synonym_table(synonyms: Mapping[str, Sequence[str]], what: str) -> dict[str, tuple[str, ...]]:
    """The table with lower-cased keys, each word's own spelling removed from its synonyms; validated."""
    if not isinstance(synonyms, Mapping):
        raise ConfigError(f"{what}'s synonyms must be a mapping of word to synonyms, got {type(synonyms).__name__}")
    table: dict[str, tuple[str, ...]] = {}
    for word, options in synonyms.items():
        if (
            not isinstance(word, str)
            or isinstance(options, str)
            or not isinstance(options, Sequence)
            or not all(isinstance(option, str) and option.strip() and len(option.split()) == 1 for option in options)
        ):
            raise ConfigError(
                f"{what}'s synonyms[{word!r}] must be a list of single words, got {options!r}; "
                f"give {{'word': ['synonym', ...]}}"
            )
        kept = tuple(option for option in options if option.lower() != word.lower())
        if kept:
            key = word.lower()
            table[key] = tuple(dict.fromkeys(table.get(key, ()) + kept))
    return table
