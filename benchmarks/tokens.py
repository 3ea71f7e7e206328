"""Tokens per second for 2,048-token blocks: stoke.TokenBlocks through the Loader, against memcpy of the same
bytes, the numpy-memmap loader users write, and LitData's TokensLoader, in one run.

The corpus: ``--documents`` synthetic documents of log-normal lengths (median 400 tokens), uint16 ids,
packed with stoke (a variable-length ndarray field); the default 100,000 make 55M tokens, 110 MB, more
than the caches hold, as a real corpus is. The contenders, each over every block of the stream,
interleaved round by round (median of ``--rounds``), at each of ``--batch-size`` blocks a batch, 2 workers each:

* ``memcpy``: one copy of the whole stream's bytes (uint16) into a preallocated buffer: the ceiling of
  reading the bytes; ``memcpy-2``: the same copy by two threads, a half each (numpy releases the GIL),
  the ceiling on 2 cores; ``widen``: the same stream widened to int64 into a preallocated buffer (numpy), the
  ceiling of delivering int64 ids, which is what an embedding layer takes;
* ``shuffled-copy``, ``shuffled-widen``: the ceilings of a loader that shuffles. The flat stream's blocks,
  in a fresh random order each round, copied a batch at a time into a ring of 8 preallocated batches
  (numpy, no loader around it, no document boundaries), as they are (uint16) or widened to int64. Random
  4 KiB blocks out of the page cache cost more than one sequential copy, and a widened batch writes four
  times the bytes: these say how much of ``memcpy`` any loader that shuffles can reach on this machine;
* ``memmap``: the stream written to one flat ``.bin`` file, a ``torch.utils.data.Dataset`` whose
  ``__getitem__`` slices a ``numpy.memmap`` and widens to int64, under ``DataLoader(num_workers=2,
  shuffle=True)``: the loader most nanoGPT-style scripts write (tokens only, no document boundaries);
* ``litdata``: LitData's ``StreamingDataset(item_loader=TokensLoader(block_size=2048), shuffle=True)``
  under its ``StreamingDataLoader(num_workers=2, persistent_workers=True)``, over the same documents written
  by ``litdata.optimize`` as int32 tensors (its users' usual ids; tokens only). Only where litdata is
  installed: ``make peers``;
* ``stoke-tokens``: ``Loader(TokenBlocks(dataset, 2048), fields=["tokens"], shuffle=True, num_threads=2)``:
  int64 tokens, the memmap loader's output, checked against their checksums ("once") and resumable;
* ``stoke-inline``: ``stoke-tokens`` with ``workers="inline", timeout=None``: each batch made in the
  loop's own thread, one C call, with no handoff to a worker (``stoke.pipeline.inline``), shared with
  the gather's helper thread (``num_threads="auto"``: 2 on 2 cores), which copies the next batch while
  the loop goes on;
* ``stoke-stored``: ``stoke-inline`` with the ids delivered as stored, ``transforms={"tokens":
  [ToDtype(blocks.id_dtype)]}`` (uint16: a copy of the same bytes ``memcpy`` and ``shuffled-copy``
  copy; widened on the GPU after the copy, docs/sources/text.md); ``stoke-stored-1``: the same with
  ``num_threads=1``, the loop's thread alone;
* ``stoke``: the same with every field, ``tokens``, ``document`` and ``position_ids`` (3 int64 per token);
* ``stoke-process``: ``stoke`` with ``workers="process"``.

Then a training loop's view, for ``stoke-stored-1`` and ``stoke-stored``: the microseconds the loop spends
in ``next()`` a batch when each step takes ``--step`` ms away from the CPU (a GPU step: the loop's thread
waits and the cores are free), the median of ``--rounds`` runs of 100 batches. With a helper the next
batch is copied during the step, and the loop pays only the Loader's Python.

Run:  .venv/bin/python benchmarks/tokens.py [--documents 100000] [--rounds 5] [--batch-size 16,64,256] [--step 1]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

import stoke

BLOCK = 2048


class MemmapBlocks(TorchDataset):
    """The usual hand-written loader: a flat token file, one block per item."""

    def __init__(self, path: Path, block: int) -> None:
        self.path, self.block = path, block
        self.tokens: np.memmap | None = None
        self.count = np.memmap(path, dtype=np.uint16, mode="r").size // block

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> torch.Tensor:
        if self.tokens is None:  # opened in each worker
            self.tokens = np.memmap(self.path, dtype=np.uint16, mode="r")
        start = index * self.block
        return torch.from_numpy(self.tokens[start : start + self.block].astype(np.int64))


def corpus(root: Path, documents: int) -> tuple[Path, Path, int]:
    """(packed dataset, flat .bin file, tokens) of one synthetic corpus."""
    lengths = _lengths(documents)
    stream = np.random.default_rng(1).integers(0, 50_000, int(lengths.sum()), dtype=np.uint16)
    ends = np.cumsum(lengths)
    docs = [{"tokens": stream[end - n : end]} for end, n in zip(ends, lengths)]
    packed = root / "corpus"
    stoke.pack(docs, packed, fields={"tokens": stoke.NDArrayField("uint16", (None,))}, progress=False)
    flat = root / "corpus.bin"
    stream.tofile(flat)
    return packed, flat, int(stream.size)


def shuffled(flat_stream: np.ndarray, batch_size: int, dtype: type) -> float:
    """Tokens/s of copying the stream's blocks in a random order, batch by batch, into a ring of 8
    preallocated ``dtype`` batches: a shuffling loader's ceiling (see the module docstring)."""
    count = flat_stream.size // BLOCK
    blocks = flat_stream[: count * BLOCK].reshape(count, BLOCK)
    ring = [np.empty((batch_size, BLOCK), dtype) for _ in range(8)]
    gathered = np.empty((batch_size, BLOCK), flat_stream.dtype)  # where a widened batch is gathered first
    order = np.random.default_rng().permutation(count)
    batches = count // batch_size
    start = time.perf_counter()
    for number in range(batches):
        chosen = order[number * batch_size : (number + 1) * batch_size]
        out = ring[number % 8]
        if dtype == flat_stream.dtype:
            np.take(blocks, chosen, axis=0, out=out)
        else:
            np.copyto(out, np.take(blocks, chosen, axis=0, out=gathered))  # gathered, then widened
    return batches * batch_size * BLOCK / (time.perf_counter() - start)


def tokens_per_second(batches, tokens_of) -> float:
    start, total = time.perf_counter(), 0
    for batch in batches:
        total += tokens_of(batch)
    return total / (time.perf_counter() - start)


def in_next(blocks: stoke.TokenBlocks, size: int, stored: dict, threads: int, step: float, rounds: int) -> float:
    """Microseconds a loop spends in ``next()`` a batch, inline with ``threads``, when each step takes ``step``
    seconds away from the CPU; the median of ``rounds`` runs of 100 batches (after a whole epoch, and 10
    batches, to warm up)."""
    loader = stoke.Loader(blocks, batch_size=size, shuffle=True, fields=["tokens"], transforms=stored,
                          workers="inline", timeout=None, num_threads=threads)  # fmt: skip
    for _ in loader:  # an epoch first: every document's checksum checked ("once"), as in a long run
        pass
    runs = []
    for _ in range(rounds):
        iterator, spent = iter(loader), []
        for _ in range(110):
            start = time.perf_counter()
            try:
                next(iterator)
            except StopIteration:
                iterator = iter(loader)
                continue
            spent.append(time.perf_counter() - start)
            time.sleep(step)
        runs.append(statistics.mean(spent[10:]) * 1e6)
    loader.close()
    return statistics.median(runs)


def litdata_dataset(root: Path, flat: Path, documents: int) -> Any:
    """LitData's token dataset over the same documents (its ``optimize``), or None where litdata is not installed."""
    if importlib.util.find_spec("litdata") is None:
        return None
    import contextlib
    import io

    from litdata import StreamingDataset, TokensLoader, optimize

    out = root / "litdata"
    lengths = _lengths(documents)
    ends = np.cumsum(lengths)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        optimize(
            fn=_lit_document, inputs=[(str(flat), end - n, end) for end, n in zip(ends.tolist(), lengths.tolist())],
            output_dir=str(out),
            chunk_bytes="64MB", item_loader=TokensLoader(), num_workers=2,
        )  # fmt: skip
    return StreamingDataset(input_dir=str(out), item_loader=TokensLoader(block_size=BLOCK), shuffle=True)


def _lit_document(task: tuple[str, int, int]) -> Iterator[torch.Tensor]:  # litdata's optimize calls it
    path, start, stop = task
    yield torch.from_numpy(np.memmap(path, dtype=np.uint16, mode="r")[start:stop].astype(np.int32))


def _lengths(documents: int) -> np.ndarray:
    return np.maximum(1, np.random.default_rng(0).lognormal(np.log(400), 0.8, documents).astype(np.int64))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-size", default="16,64,256", help="blocks a batch; several, comma-separated")
    parser.add_argument("--step", type=float, default=1.0, help="ms of a training step, for the time in next()")
    args = parser.parse_args()
    sizes = [int(size) for size in args.batch_size.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        packed, flat, total = corpus(Path(tmp), args.documents)
        blocks = stoke.TokenBlocks(stoke.open(packed), block_size=BLOCK)
        lit = litdata_dataset(Path(tmp), flat, args.documents)
        print(f"{total:,} tokens, {len(blocks):,} blocks of {BLOCK}; median of {args.rounds} interleaved rounds")
        for size in sizes:
            report(measure(blocks, flat, total, lit, size, args.rounds), size)
            stored = {"tokens": [stoke.ops.ToDtype(blocks.id_dtype)]}
            spent = {
                threads: in_next(blocks, size, stored, threads, args.step / 1e3, args.rounds) for threads in (1, 2)
            }
            print(
                f"  in next() a batch with a {args.step:g} ms step, ids as stored, inline: {spent[1]:.0f} us alone, "
                f"{spent[2]:.0f} us with a helper ({spent[1] / spent[2]:.2f}x less)"
            )
    if lit is None:
        print("litdata: not installed (make peers installs it)")


def measure(blocks: stoke.TokenBlocks, flat: Path, total: int, lit: Any, size: int, rounds: int) -> dict[str, float]:
    """Every contender's median tokens/s at batches of ``size`` blocks, interleaved round by round."""
    stream = np.fromfile(flat, dtype=np.uint16)
    target, wide = np.empty_like(stream), np.empty(stream.size, np.int64)
    inline = {"workers": "inline", "timeout": None}
    stored = {"tokens": [stoke.ops.ToDtype(blocks.id_dtype)]}  # the ids as stored (uint16): the same bytes as memcpy
    loaders = {
        "stoke-tokens": stoke.Loader(blocks, batch_size=size, shuffle=True, num_threads=2, fields=["tokens"]),
        "stoke-inline": stoke.Loader(blocks, batch_size=size, shuffle=True, fields=["tokens"], **inline),
        "stoke-stored": stoke.Loader(
            blocks, batch_size=size, shuffle=True, fields=["tokens"], transforms=stored, **inline
        ),
        "stoke-stored-1": stoke.Loader(
            blocks, batch_size=size, shuffle=True, fields=["tokens"], transforms=stored, num_threads=1, **inline
        ),
        "stoke": stoke.Loader(blocks, batch_size=size, shuffle=True, num_threads=2),
        "stoke-process": stoke.Loader(blocks, batch_size=size, shuffle=True, num_threads=2, workers="process"),
    }
    by_hand = MemmapBlocks(flat, BLOCK)
    memmap = DataLoader(by_hand, batch_size=size, shuffle=True, num_workers=2, persistent_workers=True)
    contenders = {
        "memcpy": lambda: total / _timed(lambda: np.copyto(target, stream)),
        "memcpy-2": lambda: total / _timed(lambda: _two_threads(np.copyto, target, stream)),
        "widen": lambda: total / _timed(lambda: np.copyto(wide, stream)),
        "shuffled-copy": lambda: shuffled(stream, size, np.uint16),
        "shuffled-widen": lambda: shuffled(stream, size, np.int64),
        "memmap": lambda: tokens_per_second(memmap, lambda batch: batch.numel()),
    }
    if lit is not None:
        from litdata import StreamingDataLoader

        peer = StreamingDataLoader(lit, batch_size=size, num_workers=2, persistent_workers=True)
        contenders["litdata"] = lambda: tokens_per_second(peer, lambda batch: batch.numel())
    for name, loader in loaders.items():
        contenders[name] = lambda loader=loader: tokens_per_second(loader, lambda batch: batch["tokens"].numel())
    for run in contenders.values():  # warm-up: page cache, workers, checksums ("once")
        run()
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, run in contenders.items():
            rates[name].append(run())
    for loader in loaders.values():
        loader.close()
    return {name: statistics.median(values) for name, values in rates.items()}


def report(medians: dict[str, float], size: int) -> None:
    """Each contender's rate, then stoke's as fractions of the ceilings and multiples of the peers."""
    print(f"\nbatches of {size} blocks:")
    for name, rate in medians.items():
        print(f"{name:>14}: {rate / 1e6:9,.1f} M tokens/s")
    for name in ("stoke-tokens", "stoke-inline", "stoke-stored", "stoke-stored-1", "stoke"):
        peers = ", ".join(
            f"{medians[name] / medians[peer]:.2f}x {peer}" for peer in ("memmap", "litdata") if peer in medians
        )
        ceilings = ", ".join(
            f"{medians[name] / medians[ceiling]:.3f} of {ceiling}"
            for ceiling in ("memcpy", "memcpy-2", "widen", "shuffled-copy", "shuffled-widen")
        )
        print(f"  {name}: {ceilings}, {peers}")


def _two_threads(copy, target: np.ndarray, source: np.ndarray) -> None:
    """``copy(target, source)`` by two threads, a half each."""
    half = source.size // 2
    other = threading.Thread(target=copy, args=(target[half:], source[half:]))
    other.start()
    copy(target[:half], source[:half])
    other.join()


def _timed(work) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
