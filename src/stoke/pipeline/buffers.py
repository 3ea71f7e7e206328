"""Preallocated batch buffers, reused without ever overwriting a batch the user still holds.

A :class:`BufferSet` holds one batch's arrays (images, labels, indices, ...), allocated once, in pinned
memory when batches go to a CUDA device (for process workers: shared blocks, page-locked with
``cudaHostRegister``), so no batch is ever pinned on its own. The tensors handed to the user are zero-copy
views made with ``torch.from_numpy``, and such a tensor keeps a reference to its array. So before a set is refilled,
each array's reference count tells whether anything outside the pool still uses it: the usual training
loop drops each batch before the next one, and its arrays are refilled in place (no allocation per
batch); a caller that keeps batches (a list of them, one label tensor for later metrics) gets a fresh
array for exactly what it kept. Nothing is ever overwritten under a live tensor.

A set whose batch was copied to a CUDA device asynchronously carries the copy's event, and is refilled
only after the copy has finished. For process workers the arrays live in shared blocks
(``stoke.pipeline.shared``) that the workers map; a block replaced because the user holds its array is
handed to ``on_retire`` so the workers can unmap it.

:func:`batch_buffers` sizes the pool for a Loader: one array per key its stages declare (and ``index``),
room for the batches in flight plus the spare sets (``spare_sets``), pinned or shared as asked.

Example:
    >>> import numpy as np, torch
    >>> pool = BufferPool({"label": ((), np.dtype("int64"))}, batch_size=4, pin=False)
    >>> first = pool.acquire(); held = torch.from_numpy(first.arrays["label"]); pool.release(first)
    >>> second = pool.acquire()
    >>> second is first, pool.allocations
    (False, 2)
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stoke.pipeline.shared import SharedBlock, shared_array


@dataclass
class BufferSet:
    """The arrays and per-sample lists one batch is assembled in."""

    arrays: dict[str, np.ndarray]
    lists: dict[str, list[Any]] = field(default_factory=dict)
    baselines: dict[str, int] = field(default_factory=dict)
    copy_done: Any = None  # a CUDA event recorded after the batch's device copy, or None
    blocks: dict[str, SharedBlock] = field(default_factory=dict)  # with shared=True: each array's block

    def is_free(self, name: str) -> bool:
        return sys.getrefcount(self.arrays[name]) <= self.baselines[name]


class BufferPool:
    """A pool of up to ``max_sets`` :class:`BufferSet` (more only while every set is in flight).

    ``acquire`` prefers an idle set whose arrays are all free, then a new set while the pool is below
    ``max_sets``, then the idle set with the fewest held arrays, replacing just those. With ``max_sets``
    = batches in flight + ``spare_sets`` (2: the batch being handed over and the one the loop still holds;
    3 when one more is finished ahead), a training loop runs without allocating after its first batches.
    """

    def __init__(
        self,
        specs: dict[str, tuple[tuple[int, ...], np.dtype]],
        batch_size: int,
        pin: bool,
        max_sets: int = 2,
        list_names: tuple[str, ...] = (),
        shared: bool = False,
        on_retire: Callable[[SharedBlock], None] | None = None,
        spare_sets: int = 2,
    ) -> None:
        self.specs = specs
        self.spare_sets = spare_sets
        self.shared = shared
        self.on_retire = on_retire
        self.list_names = list_names
        self.batch_size = batch_size
        self.pin = pin
        self.max_sets = max_sets
        self.allocations = 0
        self.sets = 0
        self._idle: list[BufferSet] = []

    @property
    def set_bytes(self) -> int:
        """Bytes of the arrays of one set."""
        return sum(int(np.prod(shape)) * dtype.itemsize for shape, dtype in self.specs.values()) * self.batch_size

    def make_room(self, in_flight: int) -> None:
        """Keep up to ``in_flight`` batches in flight, plus the spare sets."""
        self.max_sets = in_flight + self.spare_sets

    def acquire(self) -> BufferSet:
        """A set to fill (see the class docstring for which)."""
        chosen: BufferSet | None = None
        free = next((k for k, idle in enumerate(self._idle) if all(map(idle.is_free, idle.arrays))), None)
        if free is not None:  # the usual case, found without counting every set's held arrays
            chosen = self._idle.pop(free)
        elif self._idle and self.sets >= self.max_sets:
            held = [sum(not candidate.is_free(name) for name in candidate.arrays) for candidate in self._idle]
            chosen = self._idle.pop(held.index(min(held)))
        if chosen is not None:
            if chosen.copy_done is not None:
                chosen.copy_done.synchronize()  # before any array is refilled or replaced: a copy may read it
                chosen.copy_done = None
            for name in list(chosen.arrays):
                if not chosen.is_free(name):
                    self._allocate(chosen, name)
        if chosen is None:
            chosen = BufferSet({}, {name: [None] * self.batch_size for name in self.list_names})
            for name in self.specs:
                self._allocate(chosen, name)
            self.sets += 1
        for values in chosen.lists.values():
            values[:] = [None] * self.batch_size
        return chosen

    def release(self, buffers: BufferSet) -> None:
        """Return a set whose batch has been handed over; it is refilled once nothing holds its arrays."""
        self._idle.append(buffers)

    def _allocate(self, buffers: BufferSet, name: str) -> None:
        shape, dtype = self.specs[name]
        if self.shared:
            retired = buffers.blocks.pop(name, None)
            if retired is not None:
                if self.on_retire is not None:
                    self.on_retire(retired)
                retired.close()
            buffers.arrays[name], buffers.blocks[name] = shared_array((self.batch_size, *shape), dtype)
            if self.pin:
                buffers.blocks[name].pin()
        else:
            buffers.arrays[name] = allocate((self.batch_size, *shape), dtype, self.pin)
        buffers.baselines[name] = sys.getrefcount(buffers.arrays[name])
        self.allocations += 1


def batch_buffers(
    stages: Sequence[Any],
    batch_size: int,
    in_flight: int,
    *,
    finishes_ahead: bool,
    pin: bool,
    shared: bool,
    on_retire: Callable[[SharedBlock], None] | None = None,
) -> BufferPool:
    """The buffer pool of a Loader whose field ``stages`` declare their outputs (``buffer_specs``,
    ``list_names``): an ``index`` array besides, room for ``in_flight`` batches, and one more spare set when
    a batch is ``finishes_ahead`` of the loop (for its device copy). ``pin`` for CUDA copies, ``shared`` for
    workers in other processes (``stoke.pipeline.executor``).

    >>> class Stage:
    ...     def buffer_specs(self): return {"label": ((), np.dtype("int64"))}
    ...     def list_names(self): return ["path"]
    >>> pool = batch_buffers([Stage()], 4, 3, finishes_ahead=True, pin=False, shared=False)
    >>> sorted(pool.specs), pool.list_names, pool.max_sets, pool.set_bytes
    (['index', 'label'], ('path',), 6, 64)
    """
    specs: dict[str, tuple[tuple[int, ...], np.dtype]] = {"index": ((), np.dtype(np.int64))}
    lists: list[str] = []
    for stage in stages:
        specs.update(stage.buffer_specs())
        lists.extend(stage.list_names())
    pool = BufferPool(
        specs, batch_size, pin, list_names=tuple(lists), shared=shared, on_retire=on_retire,
        spare_sets=3 if finishes_ahead else 2,
    )  # fmt: skip
    pool.make_room(in_flight)
    return pool


def allocate(shape: tuple[int, ...], dtype: np.dtype, pin: bool) -> np.ndarray:
    """An uninitialised array, in page-locked (pinned) memory when ``pin``."""
    if not pin:
        return np.empty(shape, dtype)
    import torch

    return torch.empty(shape, dtype=torch.from_numpy(np.empty(0, dtype)).dtype, pin_memory=True).numpy()
