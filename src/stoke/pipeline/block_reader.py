"""How the Loader reads :class:`~stoke.pipeline.blocks.TokenBlocks`: a block at a time, or a whole chunk of
a batch's rows in one call.

:class:`BlockReader` is a :class:`~stoke.pipeline.reader.SampleReader` whose positions are block numbers
and whose values are a block's arrays. Besides ``read``, it has ``fill(positions, rows, arrays)``: the
blocks at ``positions`` written straight into those rows of the batch's preallocated arrays, by the
compiled gather (``pipeline/_tokens.c``) in one call with the GIL released; no per-row Python, no per-row
copy. The worker loop (``stoke.pipeline.produce``) takes that path whenever the reader has it and the
batch holds every field in a dtype the gather writes (ids int64 or int32, flags bool, and the tokens
also at their stored width: ``ToDtype(blocks.id_dtype)``, a plain copy); otherwise it reads row by row,
with the same arrays.

Checksums follow the Loader's ``verify`` over the *documents* a block reads: ``"once"`` checks each
document the first time any block of this Loader reads it (a bit per document, shared with forked
workers), ``"always"`` on every read, ``"never"`` not at all. A block that reads a damaged document
fails alone, as a SampleError naming the document; the rest of its chunk is delivered.

Not for the blocks themselves (``stoke.pipeline.blocks``) nor for a mixture of them
(``stoke.pipeline.mixture_reader``, which hands each source's rows to that source's reader).

Example:
    >>> import numpy as np, stoke, tempfile
    >>> out = tempfile.mkdtemp() + "/docs"
    >>> docs = [np.arange(n, dtype=np.uint16) + 10 * n for n in (3, 1, 4)]
    >>> _ = stoke.pack(docs, out, names=["tokens"], fields={"tokens": stoke.NDArrayField("uint16", (None,))},
    ...                progress=False, workers=1)
    >>> reader = stoke.TokenBlocks(stoke.open(out), block_size=4).sample_reader(None, "once")
    >>> arrays = {name: np.zeros((2, 4), np.int64) for name in reader.fields}
    >>> reader.fill(np.array([1, 0]), np.array([0, 1]), arrays)
    []
    >>> arrays["tokens"].tolist(), arrays["position_ids"].tolist()
    ([[40, 41, 42, 43], [30, 31, 32, 10]], [[0, 1, 2, 3], [0, 1, 2, 0]])
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from stoke.errors import ConfigError, SampleError, StokeError
from stoke.format.fields import Field
from stoke.pipeline.inputs import LiveValues, live_input
from stoke.pipeline.reader import CheckedSamples, verify_mode
from stoke.pipeline.timing import Timing

_FLAGS = ("padding", "attention_mask")  # bool; the ids int64 or int32 (tokens also stored): the gather's (_tokens.c)
_IDS = (np.dtype(np.int64), np.dtype(np.int32))


class BlockReader:
    """The blocks of a :class:`~stoke.pipeline.blocks.TokenBlocks` for the Loader; a SampleReader with a
    chunk path (``fill``)."""

    packed = False  # values are arrays made here, not stored records
    layout = "dict"
    own_order = None
    fills_rows = True  # ``fill`` writes a chunk of rows in one call: a chunk is a whole batch

    def __init__(
        self, blocks: Any, names: Sequence[str] | None, verify: bool | str, timing: Timing | None = None
    ) -> None:
        self.blocks = blocks  # a stoke.pipeline.blocks.TokenBlocks (not imported: the blocks make this reader)
        available = blocks.fields
        chosen = list(available) if names is None else list(names)
        unknown = [name for name in chosen if name not in available]
        if unknown:
            raise ConfigError(f"the blocks have no field {unknown[0]!r}; they have {', '.join(available)}")
        if "tokens" not in chosen:
            raise ConfigError("fields= must include 'tokens': the other fields of a block describe its tokens")
        self.fields: dict[str, Field] = {name: available[name] for name in chosen}
        # The ids' dtypes the gather writes: int64, int32, and the stored dtype itself where the eos and pad
        # ids fit it (``ToDtype(blocks.id_dtype)`` first in the tokens' transforms: a plain copy).
        self._tokens = _IDS + ((blocks.id_dtype,) if blocks.holds_special_ids(blocks.id_dtype) else ())
        self.verify = verify_mode(verify)
        self._checked = CheckedSamples(len(blocks.counts)) if self.verify == "once" else None
        self._complete = False  # with "once": whether every document has passed (then nothing is checked)
        if self._checked is not None:  # nothing to check where no block reads a byte: empty, or past the end
            lengths = blocks.counts + (0 if blocks.eos_id is None else 1)
            read_up_to = blocks.spans(np.array([len(blocks) - 1]))[1][0] if len(blocks) else 0
            self._checked.add_all((lengths == 0) | (blocks.ends - lengths >= read_up_to))
        self.timing = timing = timing if timing is not None else Timing()
        self._slots = (timing.slot("read", "read"), timing.slot("read and checksum", "checksum"))

    def __len__(self) -> int:
        return len(self.blocks)

    def read(self, position: int) -> list[Any]:
        """Block ``position``'s arrays, in ``fields``' order, its documents checked as ``verify`` says."""
        arrays = {name: np.empty((1, *field.spec.shape), field.spec.dtype) for name, field in self.fields.items()}
        failures = self.fill(np.array([position], np.int64), np.zeros(1, np.int64), arrays)
        if failures:
            raise failures[0][1]
        return [arrays[name][0] for name in self.fields]

    def fill(
        self, positions: np.ndarray, rows: np.ndarray, arrays: Mapping[str, np.ndarray], threads: int = 1
    ) -> list | None:
        """Write the blocks at ``positions`` into rows ``rows`` of ``arrays`` (the batch's buffers, by field),
        the gather shared by up to ``threads`` threads (:meth:`TokenBlocks.fill`).

        Returns the rows that failed, as ``(row, SampleError)`` pairs (the others are filled), or None when
        ``arrays`` lacks a field or holds one in a dtype the gather does not write (then read row by row).
        """
        finish = self.start_fill(positions, rows, arrays, threads, background=False)
        return None if finish is None else finish()

    def start_fill(
        self,
        positions: np.ndarray,
        rows: np.ndarray,
        arrays: Mapping[str, np.ndarray],
        threads: int = 1,
        background: bool = True,
    ) -> Callable[[], list] | None:
        """:meth:`fill`, begun (:meth:`TokenBlocks.start_fill`): the rows may still be being copied by the
        gather's helpers when it returns. The function it returns finishes it and gives the failed rows;
        None, having done nothing, where :meth:`fill` gives None."""
        out = {name: arrays.get(name) for name in self.fields}
        for name, array in out.items():
            wanted = (np.dtype(bool),) if name in _FLAGS else self._tokens if name == "tokens" else _IDS
            if array is None or array.dtype not in wanted or not array.flags.c_contiguous:
                return None
        blocks, timing = self.blocks, self.timing
        slot = self._slots[self.verify != "never"]
        started = timing.start()
        positions, rows = np.asarray(positions, dtype=np.int64), np.asarray(rows, dtype=np.int64)
        failed = self._check(positions)
        keep = np.ones(len(rows), bool) if failed else None
        if keep is not None:
            keep[list(failed)] = False
        try:  # the usual case: every row, without masking
            chosen = (rows, positions) if keep is None else (rows[keep], positions[keep])
            finish: Callable[[], None] | None = blocks.start_fill(out, *chosen, threads, background)  # type: ignore[arg-type]
        except (StokeError, OSError):  # read row by row below, which names the document
            finish = None
        timing.stop(slot, started)

        def finished() -> list:
            lap = timing.start()
            whole = finish is not None
            if finish is not None:
                try:
                    finish()
                except (StokeError, OSError):
                    whole = False
            if not whole:  # a document that cannot be read: find the blocks it costs, one by one
                for j in np.flatnonzero(keep).tolist() if keep is not None else range(len(rows)):
                    try:
                        blocks.fill(out, rows[j : j + 1], positions[j : j + 1])  # type: ignore[arg-type]
                    except (StokeError, OSError) as error:
                        failed[j] = self._failure(int(positions[j]), error)
            timing.stop(slot, lap)
            return [(int(rows[j]), error) for j, error in sorted(failed.items())]

        return finished

    def _check(self, positions: np.ndarray) -> dict[int, SampleError]:
        """The documents of these blocks against their checksums, as ``verify`` says: the failed blocks, by
        their place in ``positions``."""
        checked = self._checked
        if self.verify == "never" or self._complete:
            return {}
        documents, block_of = self.blocks.documents(*self.blocks.spans(positions))
        if checked is not None:
            unchecked = ~checked.holds(documents)
            if not unchecked.any():
                self._complete = checked.complete()  # every document passed: no more checks for this Loader
                return {}
            documents, block_of = documents[unchecked], block_of[unchecked]
        failed: dict[int, SampleError] = {}
        for document, j in zip(documents.tolist(), block_of.tolist()):
            if j in failed:
                continue
            try:
                self.blocks.check((document,))
            except (StokeError, OSError) as error:
                failed[j] = self._failure(int(positions[j]), error)
            else:
                if checked is not None:
                    checked.add(document)
        return failed

    def _failure(self, block: int, error: BaseException) -> SampleError:
        """The error of block ``block`` that could not be read because of ``error`` (a document's)."""
        return SampleError(f"block {block}: {error}", index=block, shard=getattr(error, "shard", None))

    def check_read(self, position: int) -> None:
        """Nothing left to check: ``fill`` checked the mappings it read from after copying."""

    def dataset_index(self, positions: np.ndarray) -> np.ndarray:
        """The block numbers themselves: what randomness and failures are keyed on."""
        return np.asarray(positions, dtype=np.int64)

    def origin(self, indices: np.ndarray) -> dict[str, Any]:
        """``index``: the rows' block numbers."""
        return {"index": torch.from_numpy(indices)}

    def check_delivery(self, dtypes: Mapping[str, np.dtype]) -> None:
        """A ConfigError unless each field's batch dtype (``ToDtype`` first in its transforms, else int64)
        holds every value the blocks put there: the stored ids (any dtype that holds the stored one, or
        int32, which holds every vocabulary) and ``eos_id``/``pad_id``, the document indices, the positions.
        Checked once, when the Loader is made: a narrower dtype would wrap ids silently."""
        blocks = self.blocks
        for name, dtype in dtypes.items():
            dtype = np.dtype(dtype)
            if name not in ("tokens", "document", "position_ids") or dtype.kind not in "iu":
                continue  # flags, the index; floats are exact for these values up to their mantissa: the user's call
            info = np.iinfo(dtype)
            if name == "tokens" and dtype.itemsize < 4 and not np.can_cast(blocks.id_dtype, dtype):
                what = f"every id stored as {blocks.id_dtype}"
            elif name == "tokens" and not blocks.holds_special_ids(dtype):
                what = (
                    f"eos_id {blocks.eos_id}"
                    if blocks.eos_id is not None and blocks.eos_id > info.max
                    else (f"pad_id {blocks.pad_id}")
                )
            elif name == "document" and (info.min >= 0 or info.max < len(blocks.dataset)):
                what = f"the document indices (0 to {len(blocks.dataset) - 1:,}, and -1 on padding)"
            elif name == "position_ids" and len(blocks.counts) and info.max < int(blocks.counts.max()):
                what = f"the positions (up to {int(blocks.counts.max()):,})"
            else:
                continue
            as_stored = name == "tokens" and blocks.holds_special_ids(blocks.id_dtype)
            advice = ", or as stored: stoke.ops.ToDtype(blocks.id_dtype)" if as_stored else ""
            raise ConfigError(
                f"field {name!r} of the blocks would be delivered as {dtype}, which cannot hold {what}; deliver it "
                f"as int64 (the default) or int32{advice}"
            )

    def will_read(self, positions: np.ndarray) -> None:
        """Tell a remote dataset the documents the epoch's blocks read, in their order, so that it fetches
        ahead (a local one has nothing to do with them: not worked out)."""
        if len(positions) and self.blocks.remote:
            documents = self.blocks.documents(*self.blocks.spans(np.asarray(positions, dtype=np.int64)))[0]
            self.blocks.dataset.will_read(documents)

    def describe(self, position: int) -> str:
        """``"block <position>"``."""
        return f"block {position}"

    def field_stats(self, name: str) -> dict[str, int] | None:
        """None: blocks have no image fields."""
        return None

    def input_for(self, name: str) -> LiveValues:
        """Live values: the arrays ``read`` makes, coerced by their field."""
        return live_input(self.fields[name])  # type: ignore[return-value]
