"""``stoke.TokenBlocks``: fixed-length blocks of a token stream, for language-model training.

The documents' token fields, in dataset (or view) order, are concatenated into one stream, optionally
with ``eos_id`` after every document. Two packings:

* ``packing="stream"`` (default): block ``b`` is stream tokens ``[b·block_size, (b+1)·block_size)``: no
  padding, every token of the stream in exactly one block, in order; a document may start in one block
  and end in the next. The last ``total % block_size`` tokens, fewer than a block, are left out
  (``dropped_tokens`` says how many).
* ``packing="documents"``: whole documents, in order, as many as fit in each block, the rest of the
  block ``pad_id`` (``padding`` marks it); a document longer than a block fills whole blocks and its tail
  starts the next. Every token in exactly one block, none dropped, no document cut unless it is longer
  than a block.

Each block is a dict of int64 arrays of length ``block_size``:

* ``tokens``: the ids;
* ``document``: the dataset index of the document each token comes from (an ``eos_id`` belongs to the
  document it ends; -1 for padding), so a boundary is wherever it changes;
* ``position_ids``: the token's position inside its document, 0 at each document's first token (and on
  padding): position ids that restart per document;
* with ``attention_mask=True``, ``attention_mask``: bool ``[block_size, block_size]``, True where two
  tokens belong to the same document: a block-diagonal mask with no attention across documents (a model
  adds causality itself; ``block_size²`` bytes per block, 4 MiB at 2,048);
* with ``packing="documents"``, ``padding``: bool, True on the padding (leave it out of the loss).

Blocks are samples of a map-style dataset, so the Loader's exactly-once, resumable order over blocks is
exactly-once over tokens, across ranks and world-size changes. ``stoke.mix`` takes TokenBlocks as sources:
``stoke.mix({"web": TokenBlocks(web, 2048), "code": TokenBlocks(code, 2048)}, weights=...)`` mixes the
sources' blocks, so the weights are shares of tokens (docs/mixtures.md).

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
    >>> blocks[1]["document"].tolist(), blocks[1]["position_ids"].tolist()
    ([0, 1, 1], [3, 0, 1])
    >>> aligned = TokenBlocks(stoke.open(out), block_size=5, eos_id=0, packing="documents")
    >>> [aligned[b]["tokens"].tolist() for b in range(len(aligned))]  # 3+1 tokens, then 1+1, 4+1: no cut
    [[30, 31, 32, 0, 0], [10, 0, 0, 0, 0], [40, 41, 42, 43, 0]]
    >>> aligned[1]["padding"].tolist(), aligned[1]["document"].tolist()
    ([False, False, True, True, True], [1, 1, -1, -1, -1])
"""

from __future__ import annotations

import struct

import numpy as np

from stoke.errors import ConfigError, SampleError
from stoke.format.fields import NDArrayField
from stoke.read import Dataset, DatasetView

_VARIABLE_HEADER = 16  # u32 ndim, u32 zero, u64 length: a 1-D variable ndarray record's header
_RECORD = struct.Struct("<IIQ")
PACKINGS = ("stream", "documents")


class TokenBlocks:
    """Blocks of ``block_size`` tokens from the stream of ``field`` over ``dataset``; see the module docstring."""

    def __init__(
        self,
        dataset: Dataset | DatasetView,
        field: str = "tokens",
        block_size: int = 512,
        eos_id: int | None = None,
        verify: bool = True,
        packing: str = "stream",
        pad_id: int = 0,
        attention_mask: bool = False,
    ) -> None:
        if not isinstance(dataset, (Dataset, DatasetView)):
            raise ConfigError(f"TokenBlocks reads a packed dataset (stoke.open), got {type(dataset).__name__}")
        if not isinstance(block_size, int) or isinstance(block_size, bool) or block_size < 1:
            raise ConfigError(f"block_size must be a positive integer, got {block_size!r}")
        if eos_id is not None and (not isinstance(eos_id, int) or isinstance(eos_id, bool) or eos_id < 0):
            raise ConfigError(f"eos_id must be a non-negative integer or None, got {eos_id!r}")
        if packing not in PACKINGS:
            raise ConfigError(f"packing must be one of {', '.join(map(repr, PACKINGS))}, got {packing!r}")
        if not isinstance(pad_id, int) or isinstance(pad_id, bool) or pad_id < 0:
            raise ConfigError(f"pad_id must be a non-negative integer, got {pad_id!r}")
        self.dataset = dataset
        self.field = field
        self.block_size = block_size
        self.eos_id = eos_id
        self.verify = verify
        self.packing, self.pad_id, self.attention_mask = packing, pad_id, bool(attention_mask)
        self._position = dataset.field_positions([field])[0]
        self.counts = token_counts(dataset, field)
        declared = dataset.fields[field]
        assert isinstance(declared, NDArrayField)  # token_counts checked it
        self._dtype, self._fixed = declared.dtype.newbyteorder("<"), declared.is_fixed
        lengths = self.counts + (0 if eos_id is None else 1)
        self.ends = np.cumsum(lengths, dtype=np.int64)
        self.total_tokens = int(self.ends[-1]) if len(self.ends) else 0
        if packing == "stream":
            self.num_blocks = self.total_tokens // block_size
            self.dropped_tokens = self.total_tokens - self.num_blocks * block_size
        else:
            self._block_starts = _aligned_block_starts(lengths, block_size)  # stream offset of each block
            self.num_blocks = len(self._block_starts)
            self.dropped_tokens = 0

    def __len__(self) -> int:
        return self.num_blocks

    def __getitem__(self, block: int) -> dict[str, np.ndarray]:
        if isinstance(block, (bool, np.bool_)) or not isinstance(block, (int, np.integer)):
            raise TypeError(f"block numbers are integers, not {type(block).__name__}")
        block = int(block) + (self.num_blocks if block < 0 else 0)
        if not 0 <= block < self.num_blocks:
            raise IndexError(f"block {block} is out of range for {self.num_blocks:,} blocks")
        if self.packing == "stream":
            start, stop = block * self.block_size, (block + 1) * self.block_size
        else:  # whole documents from this block's start up to the next block's (or the stream's end)
            start = int(self._block_starts[block])
            stop = int(self._block_starts[block + 1]) if block + 1 < self.num_blocks else self.total_tokens
        first = int(np.searchsorted(self.ends, start, side="right"))
        last = int(np.searchsorted(self.ends, stop - 1, side="right"))
        # The documents the block overlaps, and the span [low, high) of each it holds (vectorised).
        ends = self.ends[first : last + 1]
        doc_starts = ends - self.counts[first : last + 1] - (0 if self.eos_id is None else 1)
        lows, highs = np.maximum(start, doc_starts) - doc_starts, np.minimum(stop, ends) - doc_starts
        spans = highs - lows
        filled = stop - start
        assert int(spans.sum()) == filled <= self.block_size
        tokens = np.full(self.block_size, self.pad_id, np.int64)
        document = np.full(self.block_size, -1, np.int64)
        position = np.zeros(self.block_size, np.int64)
        document[:filled] = np.repeat(self.dataset.dataset_index(np.arange(first, last + 1)), spans)
        offsets = np.cumsum(spans) - spans  # where each span begins in the block
        position[:filled] = np.arange(filled) - np.repeat(offsets - lows, spans)
        if self.eos_id is not None:
            tokens[:filled] = self.eos_id  # every span's last token that is past its document's body
        for doc, low, high, at in zip(range(first, last + 1), lows.tolist(), highs.tolist(), offsets.tolist()):
            ids = self._document(doc)
            body = ids[low : min(high, len(ids))]
            tokens[at : at + len(body)] = body
            self.dataset.check_read(doc)  # copied from a shard truncated meanwhile: zeros (stoke.format.mapguard)
        block_dict = {"tokens": tokens, "document": document, "position_ids": position}
        if self.packing == "documents":
            block_dict["padding"] = document < 0
        if self.attention_mask:
            same = document[:, None] == document[None, :]
            same &= (document >= 0)[:, None]  # padding attends to nothing and is attended by nothing
            block_dict["attention_mask"] = same
        return block_dict

    def __repr__(self) -> str:
        return (
            f"stoke.TokenBlocks({self.num_blocks:,} blocks of {self.block_size} from {len(self.counts):,} documents, "
            f"field {self.field!r}, eos_id={self.eos_id}, packing={self.packing!r})"
        )

    def _document(self, doc: int) -> np.ndarray:
        """Document ``doc``'s token ids (a zero-copy view), checked against the length its offsets gave.

        The record of a 1-D variable ndarray is its 16-byte header (ndim 1, 0, the length) and the ids:
        checked here directly rather than through the field's general decoder, a third of a block's time.
        """
        data = self.dataset.read_fields(doc, [self._position], self.verify)[0]
        count = int(self.counts[doc])
        size = count * self._dtype.itemsize
        if self._fixed and len(data) == size:
            return np.frombuffer(data, self._dtype)
        if not self._fixed and len(data) == _VARIABLE_HEADER + size and _RECORD.unpack_from(data) == (1, 0, count):
            return np.frombuffer(data, self._dtype, count, _VARIABLE_HEADER)
        raise SampleError(
            f"{self.dataset.describe(doc)} does not hold the {count} tokens its offsets say; the dataset is "
            f"damaged: run stoke verify",
            index=doc,
        )


def _aligned_block_starts(lengths: np.ndarray, block_size: int) -> np.ndarray:
    """The stream offset each block of ``packing="documents"`` starts at: a document that does not fit in
    what is left of a block starts the next; one longer than a block fills whole blocks, and its tail
    starts the next block (which later documents may share). int64, one per block."""
    starts: list[int] = []
    offset, room = 0, 0  # the stream offset of the next document; the room left in the open block
    for length in lengths.tolist():
        if length == 0:
            continue
        if length > room:  # a new block for it (and for each whole block of a long document)
            starts.append(offset)
            whole = (length - 1) // block_size
            starts.extend(offset + block_size * (k + 1) for k in range(whole))
            room = block_size * (whole + 1) - length
        else:
            room -= length
        offset += length
    return np.asarray(starts, dtype=np.int64)


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
