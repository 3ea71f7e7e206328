"""Batch buffers in shared memory, for process workers: anonymous, passed by file descriptor, never named.

A :class:`SharedBlock` is an anonymous memory file (Linux ``memfd_create``; an unlinked temporary file
elsewhere) mapped into this process. Worker processes receive its file descriptor over a Unix socket and
map the same pages, so a worker writes decoded images straight into the array the training loop gets:
the batch itself is never pickled or copied between processes.

Why not ``multiprocessing.shared_memory``: its segments are named files in ``/dev/shm`` (64 MB in a default
Docker container, the classic cause of DataLoader bus errors), they outlive a crashed process unless a
tracker process cleans up, and its ``close()`` fails while a tensor still views the memory. An anonymous
block has none of these problems: the kernel frees it when the last mapping and descriptor are gone, and
numpy arrays keep their mapping alive for exactly as long as something uses them.

Example:
    >>> block = SharedBlock(4 * 8)
    >>> array = block.array((4,), np.dtype("int64"))
    >>> array[:] = 7
    >>> other = np.frombuffer(map_descriptor(os.dup(block.fd), block.nbytes), np.int64)
    >>> other.tolist(); block.close()
    [7, 7, 7, 7]
"""

from __future__ import annotations

import itertools
import logging
import mmap
import os
import tempfile
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

log = logging.getLogger("stoke")

_ids = itertools.count(1)


class SharedBlock:
    """``nbytes`` of memory that worker processes can map too; ``fd`` stays open until :meth:`close`."""

    def __init__(self, nbytes: int) -> None:
        self.id = next(_ids)
        self.nbytes = max(1, int(nbytes))
        self.fd = _anonymous_file()
        try:
            os.ftruncate(self.fd, self.nbytes)
            self._map = mmap.mmap(self.fd, self.nbytes)
        except BaseException:
            os.close(self.fd)
            raise

    def array(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """The whole block as an array; the array keeps the mapping alive after :meth:`close`."""
        # One ndarray straight on the mapping: views of it then name it as their base, so its reference
        # count tells whether a batch tensor still uses it (``stoke.pipeline.buffers``); a reshaped
        # ``frombuffer`` array would hand its base to the views and look free while in use.
        return np.ndarray(shape, dtype=dtype, buffer=self._map)

    def pin(self, cudart: Any = None) -> bool:
        """Page-lock the block (``cudaHostRegister``) so that copies from it to a CUDA device run
        asynchronously, as from ``pin_memory`` tensors; the registration ends when the block is collected,
        before its pages can be unmapped. Returns False, leaving the block as it was, if CUDA refuses
        (copies are then staged through a pinned bounce buffer: correct, slower). ``cudart`` is
        ``torch.cuda.cudart()``; tests pass a stand-in."""
        if cudart is None:
            import torch

            cudart = torch.cuda.cudart()
        address = np.frombuffer(self._map, np.uint8).ctypes.data
        status = cudart.cudaHostRegister(address, self.nbytes, 0)
        if int(status) != 0:
            log.info("could not pin a shared batch buffer of %d bytes (CUDA error %s)", self.nbytes, status)
            return False
        # The finalizer holds the mapping, so the pages stay mapped until they are unregistered.
        weakref.finalize(self, _unpin, cudart, address, self._map).atexit = False
        return True

    def close(self, _close: Callable[[int], None] = os.close) -> None:
        """Close the descriptor (no new worker can map the block); existing mappings stay valid."""
        # ``os.close`` bound at definition: a block collected while the interpreter exits (a Loader left
        # alive by a script that ended on Ctrl-C) may find the ``os`` module already torn down.
        if self.fd >= 0:
            _close(self.fd)
            self.fd = -1

    def __del__(self) -> None:
        self.close()


def _unpin(cudart: Any, address: int, mapping: mmap.mmap) -> None:
    """Unregister a pinned block; ``mapping`` is only held so that it outlives the registration."""
    cudart.cudaHostUnregister(address)


def map_descriptor(fd: int, nbytes: int) -> mmap.mmap:
    """Map a block received from the parent and close the descriptor (the mapping keeps the memory)."""
    try:
        return mmap.mmap(fd, nbytes)
    finally:
        os.close(fd)


def shared_array(shape: tuple[int, ...], dtype: np.dtype) -> tuple[np.ndarray, SharedBlock]:
    """A new array in its own shared block."""
    block = SharedBlock(int(np.prod(shape, dtype=np.int64)) * dtype.itemsize)
    return block.array(shape, dtype), block


def _anonymous_file() -> int:
    if hasattr(os, "memfd_create"):
        return os.memfd_create("stoke-batch", os.MFD_CLOEXEC)
    handle, path = tempfile.mkstemp(prefix="stoke-batch-")
    os.unlink(path)
    return handle
