"""Tokens per second for 2,048-token blocks: stoke.TokenBlocks through the Loader, against memcpy of the same
bytes and against the numpy-memmap loader users write, in one run.

The corpus: ``--documents`` synthetic documents of log-normal lengths (median 400 tokens), uint16 ids,
packed with stoke (a variable-length ndarray field). The contenders, each over every block of the stream,
interleaved round by round (median of ``--rounds``):

* ``memcpy``: one copy of the whole stream's bytes (uint16) into a preallocated buffer: the ceiling;
* ``memmap``: the stream written to one flat ``.bin`` file, a ``torch.utils.data.Dataset`` whose
  ``__getitem__`` slices a ``numpy.memmap`` and widens to int64, under ``DataLoader(num_workers=2,
  batch_size=16, shuffle=True)``: the loader most nanoGPT-style scripts write (no document boundaries);
* ``stoke``: ``Loader(TokenBlocks(dataset, 2048), batch_size=16, shuffle=True, num_threads=2,
  workers="process")``: int64 tokens, with ``document`` and ``position_ids`` per token, checksummed reads,
  exactly-once resume. A block is assembled in Python (a few documents each), so process workers, which
  do not share a GIL, are the right kind; ``stoke-threads`` is the same with thread workers;
* ``litdata``: LitData's ``TokensLoader`` path, where litdata is installed (it is not on the dev machine).

Run:  .venv/bin/python benchmarks/tokens.py [--documents 20000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import tempfile
import time
from pathlib import Path

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
    rng = np.random.default_rng(0)
    lengths = np.maximum(1, rng.lognormal(np.log(400), 0.8, documents).astype(np.int64))
    stream = rng.integers(0, 50_000, int(lengths.sum()), dtype=np.uint16)
    ends = np.cumsum(lengths)
    docs = [{"tokens": stream[end - n : end]} for end, n in zip(ends, lengths)]
    packed = root / "corpus"
    stoke.pack(docs, packed, fields={"tokens": stoke.NDArrayField("uint16", (None,))}, progress=False)
    flat = root / "corpus.bin"
    stream.tofile(flat)
    return packed, flat, int(stream.size)


def tokens_per_second(batches, tokens_of) -> float:
    start, total = time.perf_counter(), 0
    for batch in batches:
        total += tokens_of(batch)
    return total / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        packed, flat, total = corpus(Path(tmp), args.documents)
        stream = np.fromfile(flat, dtype=np.uint16)
        target = np.empty_like(stream)
        blocks = stoke.TokenBlocks(stoke.open(packed), block_size=BLOCK)
        loader = stoke.Loader(blocks, batch_size=16, shuffle=True, num_threads=2, prefetch=4, workers="process")
        threads = stoke.Loader(blocks, batch_size=16, shuffle=True, num_threads=2, prefetch=4)
        memmap = DataLoader(
            MemmapBlocks(flat, BLOCK), batch_size=16, shuffle=True, num_workers=2, persistent_workers=True
        )
        contenders = {
            "memcpy": lambda: total / _timed(lambda: np.copyto(target, stream)),
            "memmap": lambda: tokens_per_second(memmap, lambda batch: batch.numel()),
            "stoke": lambda: tokens_per_second(loader, lambda batch: batch["tokens"].numel()),
            "stoke-threads": lambda: tokens_per_second(threads, lambda batch: batch["tokens"].numel()),
        }
        if importlib.util.find_spec("litdata") is not None:
            print("litdata is installed, but its TokensLoader path is not wired into this benchmark yet")
        for run in contenders.values():  # warm-up: page cache, workers, tuner
            run()
        rates: dict[str, list[float]] = {name: [] for name in contenders}
        for _ in range(args.rounds):
            for name, run in contenders.items():
                rates[name].append(run())
        loader.close()
        threads.close()
    medians = {name: statistics.median(values) for name, values in rates.items()}
    print(f"{total:,} tokens, {len(blocks):,} blocks of {BLOCK}; median of {args.rounds} rounds")
    for name, rate in medians.items():
        print(f"{name:>13}: {rate / 1e6:9,.1f} M tokens/s")
    print(
        f"stoke / memcpy = {medians['stoke'] / medians['memcpy']:.3f}; "
        f"stoke / memmap loader = {medians['stoke'] / medians['memmap']:.2f}"
    )


def _timed(work) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
