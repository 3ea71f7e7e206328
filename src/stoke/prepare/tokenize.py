"""Tokenization at pack time: text to token ids, byte-level by default or a BPE trained on the corpus.

Two kinds, one interface (:class:`TextTokenizer`):

* ``byte`` — the UTF-8 bytes of the text, ids 0-255, plus one special id, 256 = ``<|endoftext|>``
  (:data:`EOS_TOKEN`), which never occurs inside a document: it is what ``stoke.TokenBlocks`` may put
  between documents. Nothing to train, nothing unknown, 257 ids. Encoding is one ``numpy.frombuffer``.
* ``bpe`` — a byte-level BPE (GPT-2 style) trained with Hugging Face ``tokenizers`` on the documents
  being packed, ``vocab_size`` ids; ``<|endoftext|>`` is id 0.

Either way the tokenizer is saved inside the dataset as ``tokenizer.json``, Hugging Face's own JSON
serialisation (data, not code), and ``dataset.tokenizer()`` gives it back as a ``tokenizers.Tokenizer``.
The byte-level one is written as a BPE with no merges whose vocabulary maps each byte to its own value,
so Hugging Face's ``decode`` turns byte ids back into the text too.

Token ids are stored as ``uint16`` when every id fits (vocabularies up to 65,536), else ``int32``.

Not for: choosing which documents to pack (``stoke.sources.text``) or batching tokens (the Loader and
``stoke.TokenBlocks``).

Example:
    >>> tokenizer = byte_tokenizer()
    >>> ids = tokenizer.encode("héllo")
    >>> ids.dtype.name, ids.tolist(), tokenizer.decode(ids), tokenizer.eos_id
    ('uint16', [104, 195, 169, 108, 108, 111], 'héllo', 256)
    >>> bpe = train_bpe(["the cat sat on the mat"] * 20, vocab_size=300)
    >>> bpe.decode(bpe.encode("the cat")), bpe.vocab_size <= 300
    ('the cat', True)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from stoke.errors import ConfigError, FormatError, InvalidItem
from stoke.extras import require

EOS_TOKEN = "<|endoftext|>"
TOKENIZER_FILE = "tokenizer.json"
BYTE_EOS_ID = 256
MIN_BPE_VOCAB = 258  # the 256 byte symbols, the end-of-text token and at least one merge
MAX_VOCAB = 1 << 24


class TextTokenizer:
    """Text to token ids and back, wrapping a Hugging Face ``tokenizers.Tokenizer``.

    ``kind`` is ``"byte"`` or ``"bpe"``; :meth:`encode` returns a 1-D array of :attr:`dtype`.
    Picklable (it pickles as its JSON), so pack workers in other processes can encode.
    """

    def __init__(self, kind: str, tokenizer: Any) -> None:
        self.kind = kind
        self.hf = tokenizer
        self.vocab_size = int(tokenizer.get_vocab_size(with_added_tokens=True))
        eos = tokenizer.token_to_id(EOS_TOKEN)
        self.eos_id: int | None = None if eos is None else int(eos)
        self.dtype = np.dtype("<u2") if self.vocab_size <= 1 << 16 else np.dtype("<i4")

    def encode(self, text: str) -> np.ndarray:
        """The token ids of ``text``; raises InvalidItem for text that is not Unicode (lone surrogates)."""
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError as error:
            raise InvalidItem("invalid_value", f"the text is not valid Unicode ({error.reason})") from None
        if self.kind == "byte":
            return np.frombuffer(data, np.uint8).astype(self.dtype)
        return np.asarray(self.hf.encode(text).ids, dtype=self.dtype)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """The text of ``ids``; special tokens (``<|endoftext|>``) are left out."""
        return self.hf.decode(np.asarray(ids, dtype=np.int64).tolist())

    def to_json(self) -> str:
        """Hugging Face's JSON serialisation: what ``tokenizer.json`` holds."""
        return self.hf.to_str()

    def __getstate__(self) -> dict[str, Any]:
        return {"kind": self.kind, "json": self.to_json()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        require("tokenizers", extra="text", what="a text tokenizer")
        from tokenizers import Tokenizer

        self.__init__(state["kind"], Tokenizer.from_str(state["json"]))  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"TextTokenizer(kind={self.kind!r}, vocab_size={self.vocab_size})"


def byte_tokenizer() -> TextTokenizer:
    """The byte-level tokenizer: ids 0-255 are the UTF-8 bytes, 256 is ``<|endoftext|>``."""
    # Byte-level too: it is saved in the dataset as Hugging Face's tokenizer.json, and decodes through it.
    require("tokenizers", extra="text", what="packing text (its tokenizer is saved as a Hugging Face tokenizer.json)")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    symbols = _bytes_to_unicode()
    vocab = {symbols[byte]: byte for byte in range(256)}
    vocab[EOS_TOKEN] = BYTE_EOS_ID
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([EOS_TOKEN])
    return TextTokenizer("byte", tokenizer)


def train_bpe(texts: Iterable[str], vocab_size: int) -> TextTokenizer:
    """A byte-level BPE of at most ``vocab_size`` ids trained on ``texts`` (deterministic for the same texts)."""
    require("tokenizers", extra="text", what="a BPE tokenizer (--tokenizer bpe)")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if not isinstance(vocab_size, int) or isinstance(vocab_size, bool) or not MIN_BPE_VOCAB <= vocab_size <= MAX_VOCAB:
        raise ConfigError(
            f"vocab_size must be an integer from {MIN_BPE_VOCAB} to {MAX_VOCAB:,} for a BPE tokenizer, "
            f"got {vocab_size!r}"
        )
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    return TextTokenizer("bpe", tokenizer)


def tokenizer_from_json(data: bytes | str, where: str) -> TextTokenizer:
    """A tokenizer from the bytes of a ``tokenizer.json``; FormatError naming ``where`` if it is not one."""
    require("tokenizers", extra="text", what=f"the tokenizer of {where}")
    from tokenizers import Tokenizer

    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        tokenizer = Tokenizer.from_str(text)
    except Exception as error:  # tokenizers raises a bare Exception for malformed JSON
        raise FormatError(f"{where} is not a valid tokenizer ({error}); re-pack the dataset") from None
    vocab = tokenizer.get_vocab()
    is_bytes = tokenizer.get_vocab_size() == BYTE_EOS_ID + 1 and vocab.get(EOS_TOKEN) == BYTE_EOS_ID
    return TextTokenizer("byte" if is_bytes else "bpe", tokenizer)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte → printable character table, which Hugging Face's ByteLevel pre-tokenizer uses."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {byte: chr(byte) for byte in printable}
    extra = 0
    for byte in range(256):
        if byte not in table:
            table[byte] = chr(256 + extra)
            extra += 1
    return table
