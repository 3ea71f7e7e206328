"""``stoke.TokenBlocks``: fixed-length blocks of a token stream, for language-model training.

The documents' token fields, in dataset (or view) order, are concatenated into one stream, optionally
with ``eos_id`` after every document. Block ``b`` is stream tokens ``[b·block_size, (b+1)·block_size)``:
no padding, every token of the stream in exactly one block, in order. The last ``total % block_size``
tokens, fewer than a block, are left out (``dropped_tokens`` says how many).

Each block is a dict of three int64 arrays of length ``block_size``:

* ``tokens``: the ids;
* ``document``: the dataset index of the document each token comes from (an ``eos_id`` belongs to the
  document it ends), so a boundary is wherever it changes;
* ``position``: the token's position inside its document, 0 at each document's first token: the input
  for position ids that restart per document, or for a block-diagonal attention mask.

Only the per-document token counts are held, in one int64 array of cumulative ends computed from the
shards' offset tables without reading any token (the record size of a ``(None,)`` ndarray gives its
length; each table is checked against its checksum first, see :func:`token_counts`). A block reads the
few documents it overlaps, checked against their checksums; a document longer than a block is read once
per block it spans (zero-copy, checksummed each time).

``TokenBlocks`` is a map-style dataset, so ``stoke.Loader(blocks, batch_size=..., shuffle=True)`` gives
batches ``{"tokens": [B, block_size], "document": ..., "position": ..., "index": ...}`` where ``index``
is the block number, and the Loader's exactly-once, resumable order applies to blocks.

Not for: padding whole documents (the Loader pads token fields itself, with ``<name>_mask``).

Example:
    >>> import numpy as np, stoke, tempfile
    >>> out = tempfile.mkdtemp() + "/docs"
    >>> docs = [np.arange(n, dtype=np.uint16) + 10 * n for n in (3, 1, 4)]
    >>> _ = stoke.pack(docs, out, names=["tokens"], fields={"tokens": stoke.NDArrayField("uint16", (None,))},
    ...                progress=False, workers=1)
    >>> blocks = TokenBlocks(stoke.open(out), block_size=3, eos_id=0)
    >>> len(blocks), blocks.dropped_tokens
    (3, 2)
    >>> [blocks[b]["tokens"].tolist() for b in range(3)]
    [[30, 31, 32], [0, 10, 0], [40, 41, 42]]
    >>> blocks[1]["document"].tolist(), blocks[1]["position"].tolist()
    ([0, 1, 1], [3, 0, 1])
"""

from __future__ import annotations

import numpy as np

from stoke.errors import ConfigError, FormatError, SampleError
from stoke.format.fields import NDArrayField
from stoke.read import Dataset, DatasetView

_VARIABLE_HEADER = 16  # u32 ndim, u32 zero, u64 length: a 1-D variable ndarray record's header


class TokenBlocks:
    """Blocks of ``block_size`` tokens from the stream of ``field`` over ``dataset``; see the module docstring."""

    def __init__(
        self,
        dataset: Dataset | DatasetView,
        field: str = "tokens",
        block_size: int = 512,
        eos_id: int | None = None,
        verify: bool = True,
    ) -> None:
        if not isinstance(dataset, (Dataset, DatasetView)):
            raise ConfigError(f"TokenBlocks reads a packed dataset (stoke.open), got {type(dataset).__name__}")
        if not isinstance(block_size, int) or isinstance(block_size, bool) or block_size < 1:
            raise ConfigError(f"block_size must be a positive integer, got {block_size!r}")
        if eos_id is not None and (not isinstance(eos_id, int) or isinstance(eos_id, bool) or eos_id < 0):
            raise ConfigError(f"eos_id must be a non-negative integer or None, got {eos_id!r}")
        self.dataset = dataset
        self.field = field
        self.block_size = block_size
        self.eos_id = eos_id
        self.verify = verify
        self._position = dataset.field_positions([field])[0]
        self.counts = token_counts(dataset, field)
        lengths = self.counts + (0 if eos_id is None else 1)
        self.ends = np.cumsum(lengths, dtype=np.int64)
        self.total_tokens = int(self.ends[-1]) if len(self.ends) else 0
        self.num_blocks = self.total_tokens // block_size
        self.dropped_tokens = self.total_tokens - self.num_blocks * block_size

    def __len__(self) -> int:
        return self.num_blocks

    def __getitem__(self, block: int) -> dict[str, np.ndarray]:
        if isinstance(block, (bool, np.bool_)) or not isinstance(block, (int, np.integer)):
            raise TypeError(f"block numbers are integers, not {type(block).__name__}")
        block = int(block) + (self.num_blocks if block < 0 else 0)
        if not 0 <= block < self.num_blocks:
            raise IndexError(f"block {block} is out of range for {self.num_blocks:,} blocks")
        start, stop = block * self.block_size, (block + 1) * self.block_size
        first = int(np.searchsorted(self.ends, start, side="right"))
        last = int(np.searchsorted(self.ends, stop - 1, side="right"))
        tokens = np.empty(self.block_size, np.int64)
        document = np.empty(self.block_size, np.int64)
        position = np.empty(self.block_size, np.int64)
        documents = self.dataset.dataset_index(np.arange(first, last + 1))
        filled = 0
        for offset, doc in enumerate(range(first, last + 1)):
            doc_end = int(self.ends[doc])
            doc_start = doc_end - int(self.counts[doc]) - (0 if self.eos_id is None else 1)
            low, high = max(start, doc_start) - doc_start, min(stop, doc_end) - doc_start
            count = high - low
            ids = self._document(doc)
            body = ids[low : min(high, len(ids))]
            tokens[filled : filled + len(body)] = body
            self.dataset.check_read(doc)  # copied from a shard truncated meanwhile: zeros (stoke.format.mapguard)
            if len(body) < count:  # the span reaches the document's end-of-text token
                tokens[filled + len(body) : filled + count] = self.eos_id
            document[filled : filled + count] = documents[offset]
            position[filled : filled + count] = np.arange(low, high)
            filled += count
        assert filled == self.block_size
        return {"tokens": tokens, "document": document, "position": position}

    def __repr__(self) -> str:
        return (
            f"stoke.TokenBlocks({self.num_blocks:,} blocks of {self.block_size} from {len(self.counts):,} documents, "
            f"field {self.field!r}, eos_id={self.eos_id})"
        )

    def _document(self, doc: int) -> np.ndarray:
        """Document ``doc``'s token ids (a zero-copy view), checked against the length its offsets gave."""
        data = self.dataset.read_fields(doc, [self._position], self.verify)[0]
        field = self.dataset.fields[self.field]
        assert isinstance(field, NDArrayField)
        try:
            ids = field.decode_view(data)
        except FormatError as error:
            raise SampleError(f"{self.dataset.describe(doc)} is damaged: {error}", index=doc) from error
        if ids.shape != (int(self.counts[doc]),):
            raise SampleError(
                f"{self.dataset.describe(doc)} holds {ids.shape} tokens where its offsets say "
                f"{int(self.counts[doc])}; the dataset is damaged: run stoke verify",
                index=doc,
            )
        return ids


def token_counts(dataset: Dataset | DatasetView, field: str) -> np.ndarray:
    """Each sample's number of tokens in a 1-D ndarray ``field``, from the offset tables alone (int64).

    Each shard's offsets table is checked once against its checksum; where it does not match, each
    sample is checked against its own, and damaged samples raise a :class:`~stoke.errors.FormatError`
    naming them. A view reads only its own samples, so a view without the damaged ones still counts.
    """
    base = dataset.base if isinstance(dataset, DatasetView) else dataset
    declared = base.fields.get(field)
    if not isinstance(declared, NDArrayField) or declared.shape is None or len(declared.shape) != 1:
        kind = (
            "missing" if declared is None else f"a {declared.type_name} field of shape {getattr(declared, 'shape', '')}"
        )
        raise ConfigError(
            f"field {field!r} of {base.root} is {kind}; TokenBlocks needs a 1-D ndarray field of token ids "
            f"(as stoke.sources.TextSource packs)"
        )
    if declared.is_fixed:
        return np.full(len(dataset), declared.shape[0], np.int64)
    itemsize = declared.dtype.itemsize
    position = base.field_positions([field])[0]

    def counts_of(shard: int, local: np.ndarray | None) -> np.ndarray:
        reader = base.shard_reader(shard)
        starts, stops, damaged = reader.field_spans(position, local)
        sizes = stops - starts - _VARIABLE_HEADER
        wrong = (sizes < 0) | (sizes % itemsize != 0)
        if np.any(wrong):
            every = np.arange(reader.num_samples) if local is None else local
            damaged = np.union1d(damaged, every[wrong])
        if damaged.size:
            raise base.damaged_samples_error(shard, f"the token count of field {field!r}", damaged)
        return sizes // itemsize

    if not isinstance(dataset, DatasetView):
        parts = [np.empty(0, np.int64)] + [counts_of(shard, None) for shard in range(len(base.manifest.shards))]
        return np.concatenate(parts)
    counts = np.empty(len(dataset), np.int64)
    for shard, chosen, local in base.by_shard(dataset.indices):
        counts[chosen] = counts_of(shard, local)
    return counts
