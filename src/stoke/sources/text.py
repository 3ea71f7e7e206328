"""Text documents as a source, tokenized at pack time: a ``.txt`` file, a folder of them, or JSON Lines.

What counts as one document (one sample):

* a ``.txt`` file: each paragraph, paragraphs being separated by blank lines (a single file is usually a
  corpus, and one sample per corpus would leave nothing to shuffle); surrounding whitespace is stripped
  and empty paragraphs are skipped;
* a folder: each ``*.txt`` file under it (recursively, sorted by relative path, hidden ones skipped),
  whole, with a ``path`` field holding its relative path;
* a ``.jsonl``/``.ndjson`` file: each line, a JSON object whose ``text_field`` holds the text; its other
  keys become fields as in a listing (``stoke.sources.listing``: numbers, text, numeric lists as
  ndarrays, text labels as class ids).

Each document gets a ``tokens`` field: a variable-length 1-D ``ndarray`` of token ids (``uint16`` when the
vocabulary fits, else ``int32``) from ``tokenizer``: ``"byte"`` (UTF-8 bytes, the default), ``"bpe"``
(trained on these documents with ``vocab_size`` ids before packing), or a ready ``tokenizers.Tokenizer``
(``stoke.prepare.tokenize``). The tokenizer goes into the dataset as ``tokenizer.json``; read it back with
``dataset.tokenizer()``. With ``keep_text`` the text itself is stored too, in the ``text_field`` field.

Appended to a dataset (``stoke.pack(..., append=True)``), the documents are tokenized with the dataset's
own ``tokenizer.json``, never a tokenizer trained on them (whose ids would mean other text): leave
``tokenizer`` out, or name the kind the dataset has; nothing is trained then.

A document that cannot be read (a file that is not UTF-8, an invalid JSON line, a missing text) is
quarantined with its reason; an empty document is kept, with no tokens.

Not for: batching tokens into training blocks (``stoke.TokenBlocks``) or augmenting text
(``stoke.ops.text``).

Example:
    >>> import tempfile, pathlib
    >>> corpus = pathlib.Path(tempfile.mkdtemp()) / "notes.txt"
    >>> _ = corpus.write_text("First paragraph.\\n\\nSecond\\none.\\n")
    >>> source = TextSource(corpus)
    >>> [entry.name for entry in source.schema()], len(source)
    (['text', 'tokens'], 2)
    >>> text, tokens = source.read(1)
    >>> text, tokens[:3].tolist(), source.name_of(1)
    ('Second\\none.', [83, 101, 99], 'notes.txt paragraph 2 (line 3)')
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

from stoke.errors import AppendError, ConfigError, InvalidItem, SourceError
from stoke.format.fields import NDArrayField, TextField
from stoke.format.manifest import RESERVED_FIELD_NAMES, FieldEntry
from stoke.prepare.tokenize import TOKENIZER_FILE, TextTokenizer, byte_tokenizer, tokenizer_from_json, train_bpe
from stoke.sources.base import AppendTarget, Source, read_file
from stoke.sources.listing import ListingSource

_PARAGRAPH_BREAK = re.compile(r"\n[ \t\r\f\v]*\n\s*")
TOKENS_FIELD = "tokens"


class TextSource(Source):
    """Documents from a ``.txt`` file, a folder of them, or a ``.jsonl`` file; see the module docstring."""

    kind = "text"

    def __init__(
        self,
        path: str | Path,
        text_field: str = "text",
        tokenizer: str | Any | None = None,
        vocab_size: int = 8000,
        keep_text: bool = True,
        label_column: str | None = "label",
    ) -> None:
        self.path = Path(path)
        self.text_field = text_field
        self.keep_text = keep_text
        self._listing: ListingSource | None = None
        self._files: list[str] = []
        self._text = ""
        self._bounds = np.empty((0, 2), np.int64)
        if text_field in RESERVED_FIELD_NAMES or text_field in (TOKENS_FIELD, "path"):
            raise ConfigError(f"text_field {text_field!r} clashes with a field stoke adds; choose another name")
        if self.path.is_dir():
            self.layout = "files"
            self._files = sorted(
                file.relative_to(self.path).as_posix()
                for file in self.path.rglob("*.txt")
                if not any(part.startswith(".") for part in file.relative_to(self.path).parts)
            )
            if not self._files:
                raise SourceError(f"{self.path} holds no .txt files; give a folder of .txt files, a .txt or a .jsonl")
        elif self.path.is_file() and self.path.suffix.lower() == ".txt":
            self.layout = "paragraphs"
            self._text = _read_text(self.path)
            self._bounds = _paragraphs(self._text)
        elif self.path.is_file() and self.path.suffix.lower() in (".jsonl", ".ndjson"):
            self.layout = "jsonl"
            self._listing = ListingSource(self.path, label_column=label_column, images=False)
            self._check_jsonl()
        elif not self.path.exists():
            raise SourceError(f"{self.path} does not exist; give a .txt file, a folder of .txt files or a .jsonl")
        else:
            raise SourceError(
                f"{self.path} is not text stoke reads; give a .txt file, a folder of .txt files or a .jsonl"
            )
        if not (tokenizer is None or _is_tokenizer(tokenizer) or tokenizer in ("byte", "bpe")):
            raise ConfigError(f"tokenizer must be 'byte', 'bpe' or a tokenizers.Tokenizer, got {tokenizer!r}")
        self._requested = tokenizer
        self._vocab_size = vocab_size
        self._tokenizer: TextTokenizer | None = None  # made when first needed: an append adopts the dataset's
        self._attached: bytes | None = None  # the dataset's tokenizer.json, byte for byte, once adopted

    @property
    def tokenizer(self) -> TextTokenizer:
        """The tokenizer the documents are encoded with (a BPE is trained the first time it is asked for)."""
        if self._tokenizer is None:
            self._tokenizer = self._make_tokenizer(self._requested or "byte", self._vocab_size)
        return self._tokenizer

    # ---- the Source protocol ------------------------------------------------------------------------
    def __len__(self) -> int:
        if self._listing is not None:
            return len(self._listing)
        return len(self._files) if self.layout == "files" else len(self._bounds)

    def schema(self) -> list[FieldEntry]:
        tokens = FieldEntry(TOKENS_FIELD, NDArrayField(self.tokenizer.dtype, (None,)))
        text = [FieldEntry(self.text_field, TextField())] if self.keep_text else []
        if self._listing is None:
            return [*text, tokens, *([FieldEntry("path", TextField())] if self.layout == "files" else [])]
        entries: list[FieldEntry] = []
        for entry in self._listing.schema():
            entries.extend([*text, tokens] if entry.name == self.text_field else [entry])
        return entries

    def read(self, index: int) -> list[Any]:
        if self._listing is not None:
            values = self._listing.read(index)
            position = self._text_position
            text = values[position]
            extra = [text] if self.keep_text else []
            return [*values[:position], *extra, self.tokenizer.encode(text), *values[position + 1 :]]
        if self.layout == "files":
            relative = self._files[index]
            text = _decode(read_file(self.path / relative))
            return [*([text] if self.keep_text else []), self.tokenizer.encode(text), relative]
        start, stop = self._bounds[index]
        text = self._text[start:stop]
        return [*([text] if self.keep_text else []), self.tokenizer.encode(text)]

    def name_of(self, index: int) -> str:
        if self._listing is not None:
            return self._listing.name_of(index)
        if self.layout == "files":
            return self._files[index]
        line = self._text.count("\n", 0, int(self._bounds[index, 0])) + 1
        return f"{self.path.name} paragraph {index + 1} (line {line})"

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "path": str(self.path.resolve()),
            "num_items": len(self),
            "layout": self.layout,
            "text_field": self.text_field if self.keep_text else None,
            "tokens_field": TOKENS_FIELD,
            "tokenizer": self.tokenizer.kind,
            "tokenizer_file": TOKENIZER_FILE,
            "vocab_size": self.tokenizer.vocab_size,
            "eos_id": self.tokenizer.eos_id,
        }

    def fingerprint(self) -> str:
        digest = xxhash.xxh3_64()
        digest.update(f"{self.layout}|{self.text_field}|{self.keep_text}|{self.tokenizer.kind}".encode())
        if self.layout == "files":
            for relative in self._files:
                digest.update(relative.encode() + b"\0")
                try:
                    digest.update((self.path / relative).read_bytes())
                except OSError:
                    digest.update(b"\1unreadable")
        else:
            digest.update(self.path.read_bytes())
        return digest.hexdigest()

    def attachments(self) -> dict[str, bytes]:
        if self._attached is not None:
            return {TOKENIZER_FILE: self._attached}
        return {TOKENIZER_FILE: self.tokenizer.to_json().encode("utf-8")}

    def for_append(self, target: AppendTarget) -> TextSource:
        """These documents tokenized with ``target``'s ``tokenizer.json`` (and labelled by its class list).

        A tokenizer given as an object is kept (the packer refuses it unless it is the dataset's, byte for
        byte); a kind given by name must be the dataset's.
        """
        adopted = copy.copy(self)
        if self._listing is not None:
            adopted._listing = self._listing.for_append(target)
        stored = target.attachments.get(TOKENIZER_FILE)
        if stored is None or _is_tokenizer(self._requested):
            return adopted
        existing = tokenizer_from_json(stored, f"{target.location}/{TOKENIZER_FILE}")
        if self._requested is not None and self._requested != existing.kind:
            raise AppendError(
                f"{target.location} was tokenized with its {existing.kind} tokenizer ({TOKENIZER_FILE}), and an "
                f"append reuses it, so that token ids keep their meaning: leave the tokenizer out (--tokenizer), "
                f"or give {existing.kind!r}"
            )
        adopted._tokenizer, adopted._attached = existing, stored
        return adopted

    # ---- internals ----------------------------------------------------------------------------------
    def _check_jsonl(self) -> None:
        assert self._listing is not None
        fields = {entry.name: entry.field for entry in self._listing.schema()}
        if self.text_field not in fields:
            raise SourceError(
                f"{self.path} has no key {self.text_field!r} (its keys: {', '.join(fields)}); "
                f"name the text key with text_field="
            )
        if not isinstance(fields[self.text_field], TextField):
            raise SourceError(
                f"key {self.text_field!r} of {self.path} holds {fields[self.text_field].type_name} values, not text"
            )
        if TOKENS_FIELD in fields:
            raise SourceError(f"{self.path} has a key {TOKENS_FIELD!r}, which stoke adds; rename the key")
        self._text_position = list(fields).index(self.text_field)

    def _texts(self) -> Iterator[str]:
        """Every readable document's text, for training a tokenizer (unreadable ones are skipped here and
        quarantined when packed)."""
        if self._listing is not None:
            for row in self._listing._rows:
                value = row.get(self.text_field) if isinstance(row, dict) else None
                if isinstance(value, str):
                    yield value
        elif self.layout == "files":
            for relative in self._files:
                try:
                    yield _decode(read_file(self.path / relative))
                except InvalidItem:
                    continue
        else:
            for start, stop in self._bounds.tolist():
                yield self._text[start:stop]

    def _make_tokenizer(self, tokenizer: str | Any, vocab_size: int) -> TextTokenizer:
        if isinstance(tokenizer, TextTokenizer):
            return tokenizer
        if tokenizer == "byte":
            return byte_tokenizer()
        if tokenizer == "bpe":
            return train_bpe(self._texts(), vocab_size)
        if hasattr(tokenizer, "to_str") and hasattr(tokenizer, "encode"):  # a tokenizers.Tokenizer
            return TextTokenizer("bpe", tokenizer)
        raise ConfigError(f"tokenizer must be 'byte', 'bpe' or a tokenizers.Tokenizer, got {tokenizer!r}")


def _is_tokenizer(tokenizer: Any) -> bool:
    """Whether ``tokenizer`` is a tokenizer object (stoke's or Hugging Face's) rather than a kind's name."""
    return isinstance(tokenizer, TextTokenizer) or (hasattr(tokenizer, "to_str") and hasattr(tokenizer, "encode"))


def _paragraphs(text: str) -> np.ndarray:
    """(start, stop) of each non-empty paragraph of ``text``, whitespace stripped, as an int64 array."""
    bounds: list[tuple[int, int]] = []
    start = 0
    for match in [*_PARAGRAPH_BREAK.finditer(text), None]:
        stop = len(text) if match is None else match.start()
        chunk = text[start:stop]
        stripped = chunk.strip()
        if stripped:
            left = start + (len(chunk) - len(chunk.lstrip()))
            bounds.append((left, left + len(stripped)))
        if match is not None:
            start = match.end()
    return np.array(bounds, dtype=np.int64).reshape(-1, 2)


def _read_text(path: Path) -> str:
    try:
        return _decode(path.read_bytes())
    except InvalidItem as error:
        raise SourceError(f"{path} cannot be packed: {error}") from None
    except OSError as error:
        raise SourceError(f"{path} cannot be read ({error.strerror or error})") from None


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise InvalidItem(
            "invalid_value", f"the file is not UTF-8 text (byte {error.start} is {data[error.start]:#04x})"
        ) from None
