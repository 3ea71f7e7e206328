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
  adds causality itself; ``block_size²`` bytes per block, 4 MiB at 2,048). A view that holds one
  document twice in a row holds two documents: ``position_ids`` restart and the mask has two blocks;
* with ``packing="documents"``, ``padding``: bool, True on the padding (leave it out of the loss).

Blocks are samples of a map-style dataset, so the Loader's exactly-once, resumable order over blocks is
exactly-once over tokens, across ranks and world-size changes. ``stoke.mix`` takes TokenBlocks as sources:
``stoke.mix({"web": TokenBlocks(web, 2048), "code": TokenBlocks(code, 2048)}, weights=...)`` mixes the
sources' blocks, so the weights are shares of tokens (docs/mixtures.md).

Per document, only its token count, the place of its ids in its shard and the shard are held (int64,
int64, int32 arrays, computed from the shards' offset tables without reading any token: the record size
of a ``(None,)`` ndarray gives its length; each table is checked against its checksum first, see
:func:`token_layout`), with the cumulative ends; per block, its first document (int64, searched for once
here rather than in every batch). ``blocks[b]`` checks the documents block ``b`` reads
against their checksums (``verify``), then fills it; a document longer than a block is read once per
block it spans (zero-copy). :meth:`TokenBlocks.fill` writes many blocks into rows of a batch's arrays at
once, through a small C gather (``pipeline/_tokens.c``, the GIL released) or, without a compiler, numpy.

``TokenBlocks`` is a map-style dataset the Loader reads through its own reader
(``stoke.pipeline.block_reader``: a whole batch in one call, checksums per the Loader's ``verify``), so
``stoke.Loader(blocks, batch_size=..., shuffle=True)`` gives batches ``{"tokens": [B, block_size],
"document": ..., "position_ids": ..., "index": ...}`` where ``index`` is the block number, and the
Loader's exactly-once, resumable order applies to blocks. ``fields=["tokens"]`` loads the ids alone.

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
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

import numpy as np

from stoke.errors import ConfigError, FormatError, SampleError
from stoke.format import mapguard
from stoke.format.fields import Field, NDArrayField
from stoke.format.shard import DATA_START
from stoke.pipeline.timing import Timing
from stoke.read import Dataset, DatasetView

if TYPE_CHECKING:
    from stoke.pipeline.block_reader import BlockReader

try:  # the kernel that fills rows straight from the mapped shards (pipeline/_tokens.c); numpy otherwise
    from stoke.pipeline import _tokens
except ImportError:  # pragma: no cover - exercised by the fallback tests, which hide it
    _tokens = None


def _nothing_left() -> None:
    """What finishes a fill that was done when it returned."""


def _not_read() -> bool:
    """What finishes a kernel fill that could not read its rows: they are to be read row by row."""
    return False


_VARIABLE_HEADER = 16  # u32 ndim, u32 zero, u64 length: a 1-D variable ndarray record's header
_RECORD = struct.Struct("<IIQ")
PACKINGS = ("stream", "documents")
_ID_CODES = {(kind, size): code for kind, size, code in [("u", 1, "B"), ("i", 1, "b"), ("u", 2, "H"), ("i", 2, "h"),
             ("u", 4, "I"), ("i", 4, "i"), ("u", 8, "Q"), ("i", 8, "q")]}  # fmt: skip


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
        self.counts, self._payload, self._shard = token_layout(dataset, field)
        declared = dataset.fields[field]
        assert isinstance(declared, NDArrayField)  # token_layout checked it
        self._dtype, self._fixed = declared.dtype.newbyteorder("<"), declared.is_fixed
        self._code = _ID_CODES[self._dtype.kind, self._dtype.itemsize]  # the kernel's name for the stored ids
        base = dataset.base if isinstance(dataset, DatasetView) else dataset
        self._base, self._num_shards = base, len(base.manifest.shards)
        self._ids = dataset.indices if isinstance(dataset, DatasetView) else None  # a document's dataset index
        self._maps: list | None = None  # each shard's mapping, for the kernel (a local store keeps them mapped)
        self._readers: list = []  # and its reader, to check the mapping after the kernel read it
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
        # Each block's first document, and the one shard its ids lie in (or -1), for the kernel (which checks
        # both): worked out once here, not per batch.
        spans = self.spans(np.arange(self.num_blocks))
        self._firsts, self._one_shard = _block_layout(self.ends, self.counts, self._shard, *spans)

    def __len__(self) -> int:
        return self.num_blocks

    @property
    def id_dtype(self) -> np.dtype:
        """The dtype the ids are stored in (uint16 for a vocabulary under 65,536). Blocks hold them as int64,
        what an embedding takes; ``transforms={"tokens": [stoke.ops.ToDtype(blocks.id_dtype)]}`` has the Loader
        deliver them as stored instead, a plain copy of a quarter of the bytes, widened on the GPU after the
        copy (docs/sources/text.md)."""
        return self._dtype

    @property
    def remote(self) -> bool:
        """Whether the dataset's shards are fetched (a remote dataset, ``stoke.storage.remote_store``)."""
        return bool(self._base.store.fetches)

    def holds_special_ids(self, dtype: np.dtype) -> bool:
        """Whether ``dtype`` holds the ids blocks add themselves: ``eos_id`` and, with document packing,
        ``pad_id`` (the Loader's gather writes ids at the stored width only then)."""
        info = np.iinfo(dtype)
        special = [self.eos_id] if self.eos_id is not None else []
        if self.packing == "documents":
            special.append(self.pad_id)
        return all(info.min <= value <= info.max for value in special)

    @property
    def fields(self) -> dict[str, Field]:
        """What each block holds, by name: int64 ids of ``block_size``, bool flags (and the mask)."""
        ids = NDArrayField("int64", (self.block_size,))
        fields: dict[str, Field] = {"tokens": ids, "document": ids, "position_ids": ids}
        if self.packing == "documents":
            fields["padding"] = NDArrayField("bool", (self.block_size,))
        if self.attention_mask:
            fields["attention_mask"] = NDArrayField("bool", (self.block_size, self.block_size))
        return fields

    def __getitem__(self, block: int) -> dict[str, np.ndarray]:
        if isinstance(block, (bool, np.bool_)) or not isinstance(block, (int, np.integer)):
            raise TypeError(f"block numbers are integers, not {type(block).__name__}")
        block = int(block) + (self.num_blocks if block < 0 else 0)
        if not 0 <= block < self.num_blocks:
            raise IndexError(f"block {block} is out of range for {self.num_blocks:,} blocks")
        blocks = np.array([block], np.int64)
        if self.verify:
            self.check(self.documents(*self.spans(blocks))[0].tolist())
        out = {name: np.empty((1, *field.spec.shape), field.spec.dtype) for name, field in self.fields.items()}
        self.fill(out, np.zeros(1, np.int64), blocks)
        return {name: array[0] for name, array in out.items()}

    def __repr__(self) -> str:
        return (
            f"stoke.TokenBlocks({self.num_blocks:,} blocks of {self.block_size} from {len(self.counts):,} documents, "
            f"field {self.field!r}, eos_id={self.eos_id}, packing={self.packing!r})"
        )

    def sample_reader(self, fields: list[str] | None, verify: bool | str, timing: Timing | None = None) -> BlockReader:
        """The Loader's reader of these blocks (``stoke.pipeline.block_reader``): the Loader's ``verify``
        applies, and it fills whole chunks of a batch at once."""
        from stoke.pipeline.block_reader import BlockReader  # it imports this module

        return BlockReader(self, fields, verify, timing)

    def spans(self, blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The stream range ``[start, stop)`` of each of ``blocks`` (int64 arrays)."""
        blocks = np.asarray(blocks, dtype=np.int64)
        if self.packing == "stream":
            starts = blocks * self.block_size
            return starts, starts + self.block_size
        following = blocks + 1
        stops = np.where(
            following < self.num_blocks,
            self._block_starts[np.minimum(following, self.num_blocks - 1)],
            self.total_tokens,
        )
        return self._block_starts[blocks], stops

    def documents(self, starts: np.ndarray, stops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The documents the stream ranges ``[starts, stops)`` overlap, range by range and in order, and
        which range each belongs to (int64 arrays of the same length)."""
        first = np.searchsorted(self.ends, starts, side="right")
        last = np.searchsorted(self.ends, stops - 1, side="right")
        sizes = last - first + 1
        range_of = np.repeat(np.arange(len(sizes), dtype=np.int64), sizes)
        within = np.arange(int(sizes.sum()), dtype=np.int64) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        return np.repeat(first, sizes) + within, range_of

    def check(self, documents: Iterable[int]) -> None:
        """Check ``documents`` against their checksums; a SampleError naming the first that fails."""
        for document in documents:
            self.dataset.read_fields(int(document), [self._position], True)

    def fill(self, out: Mapping[str, np.ndarray], rows: np.ndarray, blocks: np.ndarray, threads: int = 1) -> None:
        """Write ``blocks`` into rows ``rows`` of the arrays of ``out``: ``tokens`` and whichever of
        ``document``, ``position_ids``, ``padding`` and ``attention_mask`` it holds (C-contiguous, rows
        first; ids int64 or int32, tokens also as stored (:attr:`id_dtype`), flags bool). Checksums are the
        caller's (:meth:`check`); a SampleError names a document that cannot be read.

        With the compiled kernel (``pipeline/_tokens.c``) one call fills every row, the GIL released, and
        up to ``threads`` threads share the rows (the caller's and the kernel's own helpers; for 32 rows
        or more): a shuffled block is a cache miss, and two cores have twice the misses in flight. Without
        the kernel, or when a document is damaged, row by row in numpy, which names the document. Over
        a store that evicts shards (a remote cache), the kernel fills a row at a time holding one shard,
        as any read does, and a row that spans shards is filled in numpy: a small cache never waits on
        shards this call holds itself.
        """
        self.start_fill(out, rows, blocks, threads, background=False)()

    def start_fill(
        self,
        out: Mapping[str, np.ndarray],
        rows: np.ndarray,
        blocks: np.ndarray,
        threads: int = 1,
        background: bool = True,
    ) -> Callable[[], None]:
        """:meth:`fill`, begun: with ``threads`` > 1 and ``background``, the kernel's helper threads may still
        be copying the rows when it returns, and the caller goes on meanwhile (the Loader's inline
        executor: the next batch is copied while the loop trains on this one). The function it returns
        finishes the fill: it copies the rows no helper has taken yet, waits for the helpers, checks the
        shards read, and raises as :meth:`fill` does. Call it before ``out`` is read or reused.

        >>> import numpy as np, stoke, tempfile
        >>> out = tempfile.mkdtemp() + "/docs"
        >>> docs = [np.arange(n, dtype=np.uint16) for n in (40, 30, 50)]
        >>> _ = stoke.pack(docs, out, names=["tokens"], progress=False,
        ...                fields={"tokens": stoke.NDArrayField("uint16", (None,))})
        >>> blocks = stoke.TokenBlocks(stoke.open(out), block_size=4)
        >>> tokens = np.zeros((30, 4), np.int64)
        >>> finish = blocks.start_fill({"tokens": tokens}, np.arange(30), np.arange(30), threads=2)
        >>> finish()  # the rows are all there once it returns
        >>> tokens[10].tolist(), tokens[29].tolist()
        ([0, 1, 2, 3], [46, 47, 48, 49])
        """
        rows, blocks = np.asarray(rows, dtype=np.int64), np.asarray(blocks, dtype=np.int64)
        starts, stops = self.spans(blocks)
        if _tokens is not None and self._maps_kept():
            hints = self._firsts[blocks], self._one_shard[blocks]
            copied = self._kernel_fill(out, rows, starts, stops, hints, True, threads, background)

            def finish() -> None:
                if not copied():  # a document that could not be read: row by row, which names it
                    self._numpy_rows(out, rows, starts, stops)

            return finish
        if _tokens is not None:
            firsts, shards = self._firsts[blocks], self._one_shard[blocks]
            for j in range(len(rows)):
                one = slice(j, j + 1)
                if not self._kernel_fill(out, rows[one], starts[one], stops[one], (firsts[one], shards[one]), False)():
                    self._numpy_fill(out, int(rows[j]), int(starts[j]), int(stops[j]))
        else:
            self._numpy_rows(out, rows, starts, stops)
        return _nothing_left

    def _maps_kept(self) -> bool:
        """Whether the kernel may keep every shard's mapping: a local store keeps its shards mapped, and the
        SIGBUS guard watches them."""
        return not self._base.store.evicts and mapguard.available()

    def _kernel_fill(
        self,
        out: Mapping[str, np.ndarray],
        rows: np.ndarray,
        starts: np.ndarray,
        stops: np.ndarray,
        hints: tuple[np.ndarray, np.ndarray],
        kept: bool,
        threads: int = 1,
        background: bool = False,
    ) -> Callable[[], bool]:
        """:meth:`start_fill` through the kernel: the function that finishes it, which returns False when a
        document could not be read (a shard missing or damaged), for the row-by-row path to name it.
        ``hints``: each row's first document and the one shard its ids lie in, or -1 (the kernel checks both:
        it searches where the first does not hold, and fails the call where the shard does not).

        The kernel asks for each shard it needs that ``maps`` lacks; this opens it through the store.
        ``kept`` (:meth:`_maps_kept`): the mappings are kept here too and a chunk costs no store call;
        else the one shard the call needs is held for it until it is finished (False if it needs a
        second). Either way each shard read is checked against its size after the copies: a shard
        truncated meanwhile fails the chunk, and the row-by-row path then names it.
        """
        store = self._base.store
        if kept:
            if self._maps is None:
                self._maps, self._readers = [None] * self._num_shards, [None] * self._num_shards
            maps, readers = self._maps, self._readers
        else:
            maps, readers = [None] * self._num_shards, [None] * self._num_shards
        used = np.empty(min(self._num_shards, 2 * len(rows) + 2), np.int32)  # the shards read, -1 after
        held: list[int] = []  # shards held for this call

        def let_go() -> None:
            for shard in held:
                store.release(shard, sample_read=True)

        try:
            while True:
                result = _tokens.gather(
                    out["tokens"], out.get("document"), out.get("position_ids"), out.get("padding"),
                    out.get("attention_mask"), rows, starts, stops, self.ends, self.counts, self._payload,
                    self._shard, self._ids, maps, self._code, not self._fixed,
                    -1 if self.eos_id is None else self.eos_id, self.pad_id, self.block_size, used, hints[0],
                    threads, background, hints[1],
                )  # fmt: skip
                if not isinstance(result, int) or result >= -1:  # a Pending: the helpers are copying
                    break
                shard = -2 - result  # the kernel needs this shard's mapping
                if held and not kept:
                    let_go()
                    return _not_read  # a second shard held by this call could wait on a cache this call fills
                reader = store.open_shard(shard)
                held.append(shard)
                reader.check_mapping()  # shrunk since it was mapped: the row-by-row path names it
                maps[shard], readers[shard] = reader.mapping, reader
        except (FormatError, OSError):
            let_go()
            return _not_read

        def copied() -> bool:
            try:
                code = result if isinstance(result, int) else result.wait()
                # A shard cut while the kernel copied reads zeros past its new end, with no fault inside its
                # last page: each shard read is checked against its size (one fstat), as a record's reader would.
                read = used[used >= 0] if used[-1] < 0 else range(self._num_shards)  # all of them if too many
                for shard in read:
                    if readers[shard] is not None:
                        readers[shard].check_mapping(thorough=True)
            except (FormatError, OSError):
                return False
            finally:
                let_go()
            return code < 0  # else a document that could not be read

        return copied

    def _numpy_rows(
        self, out: Mapping[str, np.ndarray], rows: np.ndarray, starts: np.ndarray, stops: np.ndarray
    ) -> None:
        """:meth:`fill` in numpy, row by row: each row through :meth:`_numpy_fill`."""
        for row, start, stop in zip(rows.tolist(), starts.tolist(), stops.tolist()):
            self._numpy_fill(out, row, start, stop)

    def _numpy_fill(self, out: Mapping[str, np.ndarray], row: int, start: int, stop: int) -> None:
        """One row of :meth:`fill`, in numpy: the reference the kernel is tested against."""
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
        values = {"tokens": tokens, "document": document, "position_ids": position, "padding": document < 0}
        if "attention_mask" in out:  # by span: a view that repeats a document holds two documents
            span = np.full(self.block_size, -1, np.int64)
            span[:filled] = np.repeat(np.arange(len(spans)), spans)
            values["attention_mask"] = (span[:, None] == span[None, :]) & (span >= 0)[:, None]
        for name, array in out.items():
            array[row] = values[name]

    def _document(self, doc: int) -> np.ndarray:
        """Document ``doc``'s token ids (a zero-copy view), checked against the length its offsets gave.

        The record of a 1-D variable ndarray is its 16-byte header (ndim 1, 0, the length) and the ids:
        checked here directly rather than through the field's general decoder, a third of a block's time.
        """
        data = self.dataset.read_fields(doc, [self._position])[0]
        count = int(self.counts[doc])
        size = count * self._dtype.itemsize
        if self._fixed and len(data) == size:
            return np.frombuffer(data, self._dtype)
        if not self._fixed and len(data) == _VARIABLE_HEADER + size and _RECORD.unpack_from(data) == (1, 0, count):
            return np.frombuffer(data, self._dtype, count, _VARIABLE_HEADER)
        self.dataset.check_read(doc, thorough=True)  # zeros from a shard truncated meanwhile: say that instead
        raise SampleError(
            f"{self.dataset.describe(doc)} does not hold the {count} tokens its offsets say; the dataset is "
            f"damaged: run stoke verify",
            index=doc,
        )


def _block_layout(
    ends: np.ndarray, counts: np.ndarray, shard: np.ndarray, starts: np.ndarray, stops: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """For the blocks ``[starts, stops)`` of the stream whose documents end at ``ends``: each one's first
    document (int64), and the one shard all its documents' ids lie in, or -1 where they lie in several or
    it reads none (int32). The kernel takes both as hints and checks them; a row in one shard costs its
    call nothing before the copies begin (``pipeline/_tokens.c``).

    >>> ends, counts, shard = np.array([3, 5, 9]), np.array([3, 2, 4]), np.array([0, 0, 1], np.int32)
    >>> [a.tolist() for a in _block_layout(ends, counts, shard, np.array([0, 3, 4]), np.array([3, 6, 5]))]
    [[0, 1, 1], [0, -1, 0]]
    """
    firsts = np.searchsorted(ends, starts, side="right")
    read = np.flatnonzero(counts > 0)  # documents with ids: the only ones a row needs a shard for
    one = np.full(len(starts), -1, np.int32)
    if len(read) and len(starts):
        lasts = np.searchsorted(ends, stops - 1, side="right")
        low, high = np.searchsorted(read, firsts, side="left"), np.searchsorted(read, lasts, side="right") - 1
        shards = shard[read]
        run = np.concatenate([[0], np.cumsum(shards[1:] != shards[:-1])])  # the run of equal shards of each
        some = low <= high
        low, high = np.minimum(low, len(read) - 1), np.maximum(high, 0)
        single = some & (run[low] == run[high])
        one[single] = shards[low[single]]
    return firsts, one


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
    return token_layout(dataset, field)[0]


def token_layout(dataset: Dataset | DatasetView, field: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where each sample's token ids of ``field`` lie: ``(counts, payload, shard)``, the number of ids
    (int64), the byte offset of the first inside its shard file (int64) and the shard's number (int32),
    from the offset tables alone and checked as :func:`token_counts` says. Sixteen bytes a document, the
    only per-document state TokenBlocks keeps besides its cumulative ends. A remote shard's table is read
    alone where the store can (``Store.shard_table``: two range reads, no download); else each shard is
    held only while its table is read, so a remote dataset's cache need not hold them all."""
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
    itemsize = declared.dtype.itemsize
    header = 0 if declared.is_fixed else _VARIABLE_HEADER
    position = base.field_positions([field])[0]

    def layout_of(shard: int, local: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        table = base.store.shard_table(shard)  # a remote shard's table alone, by range, where it can be
        if table is not None:
            starts, stops, damaged = table.field_spans(position, local)
            samples = table.num_samples
        else:
            reader = base.store.open_shard(shard)  # held only while its table is read: a cache may evict it
            try:
                starts, stops, damaged = reader.field_spans(position, local)  # copies
                samples = reader.num_samples
            finally:
                base.store.release(shard)
        sizes = stops - starts - header
        wrong = (sizes < 0) | (sizes % itemsize != 0)
        if declared.is_fixed:
            wrong |= sizes != declared.shape[0] * itemsize
        if np.any(wrong):
            every = np.arange(samples) if local is None else local
            damaged = np.union1d(damaged, every[wrong])
        if damaged.size:
            raise base.damaged_samples_error(shard, f"the token count of field {field!r}", damaged)
        return sizes // itemsize, starts + DATA_START + header

    counts, payload = np.empty(len(dataset), np.int64), np.empty(len(dataset), np.int64)
    shards = np.empty(len(dataset), np.int32)
    if not isinstance(dataset, DatasetView):
        at = 0
        for shard, entry in enumerate(base.manifest.shards):
            counts[at : at + entry.num_samples], payload[at : at + entry.num_samples] = layout_of(shard, None)
            shards[at : at + entry.num_samples] = shard
            at += entry.num_samples
        return counts, payload, shards
    for shard, chosen, local in base.by_shard(dataset.indices):
        counts[chosen], payload[chosen] = layout_of(shard, local)
        shards[chosen] = shard
    return counts, payload, shards
