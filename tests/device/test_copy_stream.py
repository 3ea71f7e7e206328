"""The copy stream and finishing one batch ahead: same batches, exact resume, no lost batch, pinned blocks.

The CUDA calls themselves need a GPU; here the Loader runs the same code with ``device="cpu"`` (where the
stream passes through) and :class:`CopyStream` and ``SharedBlock.pin`` are driven by stand-ins for
``torch.cuda`` and ``cudart`` that record the calls.
"""

from __future__ import annotations

import contextlib
import gc

import numpy as np
import pytest
import torch

import stoke
from stoke.device.stream import CopyStream
from stoke.ops import Normalize, RandomHorizontalFlip, RandomResizedCrop, ToDevice
from stoke.ops.base import BatchContext, BatchOp
from stoke.pipeline.buffers import BufferPool
from stoke.pipeline.shared import SharedBlock

OPS = [RandomResizedCrop(24), RandomHorizontalFlip()]


class Recorded(BatchOp):
    """A batch op that notes the first index of each batch it sees, and fails on ``fail_at`` if given."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.seen: list[int] = []
        self.fail_at = fail_at

    def apply(self, batch: torch.Tensor, context: BatchContext | None) -> torch.Tensor:
        assert context is not None
        first = int(context.indices[0])
        if first == self.fail_at:
            raise RuntimeError(f"batch op failed on the batch starting at {first}")
        self.seen.append(first)
        return batch


def loader_for(dataset, ops, **options):
    return stoke.Loader(dataset, batch_size=4, seed=3, transforms={"image": ops}, num_threads=2, prefetch=2, **options)


def epochs(loader, count=2):
    with loader:
        return [
            [
                {key: value.clone() if isinstance(value, torch.Tensor) else value for key, value in batch.items()}
                for batch in loader
            ]
            for _ in range(count)
        ]


def test_a_loader_with_a_device_gives_the_batches_of_one_without(photos):
    plain = epochs(loader_for(photos, OPS))
    moved = epochs(loader_for(photos, [*OPS, Normalize([0.5] * 3, [0.25] * 3)], device="cpu"))
    assert len(plain) == len(moved) and len(plain[0]) == len(moved[0]) > 2
    for epoch_plain, epoch_moved in zip(plain, moved):
        for a, b in zip(epoch_plain, epoch_moved):
            assert torch.equal(a["index"], b["index"])
            assert torch.equal(a["label"], b["label"])
            expected = (a["image"].float() / 255 - 0.5) / 0.25
            assert torch.allclose(b["image"], expected, atol=1e-5)


def test_the_next_batch_is_finished_while_the_loop_holds_the_current_one(photos):
    recorded = Recorded()
    loader = loader_for(photos, [*OPS, ToDevice("cpu"), recorded], shuffle=False)
    with loader:
        iterator = iter(loader)
        first = next(iterator)
        for job in list(iterator._in_flight):
            job.done.wait()
        second = next(iterator)
        # batch 2's samples were in when batch 1 was handed out: its batch op has run already
        assert recorded.seen[:3] == [0, 4, 8]
        assert first["index"].tolist() == [0, 1, 2, 3] and second["index"].tolist() == [4, 5, 6, 7]
        assert [batch["index"][0].item() for batch in iterator] == list(range(8, len(photos), 4))


def test_a_batch_finished_ahead_is_not_counted_in_the_state(photos):
    full = [batch["index"].tolist() for batch in epochs(loader_for(photos, OPS, device="cpu"), 1)[0]]
    loader = loader_for(photos, OPS, device="cpu")
    with loader:
        iterator = iter(loader)
        taken = [next(iterator)["index"].tolist() for _ in range(2)]
        for job in list(iterator._in_flight):
            job.done.wait()
        taken.append(next(iterator)["index"].tolist())  # batch 4 is finished ahead during this call
        state = loader.state_dict()
    resumed = loader_for(photos, OPS, device="cpu")
    resumed.load_state_dict(state)
    with resumed:
        rest = [batch["index"].tolist() for batch in resumed]
    assert taken + rest == full


def test_an_error_while_finishing_ahead_surfaces_at_the_batch_it_belongs_to(photos):
    loader = loader_for(photos, [*OPS, ToDevice("cpu"), Recorded(fail_at=8)], shuffle=False)
    with loader:
        iterator = iter(loader)
        assert next(iterator)["index"].tolist() == [0, 1, 2, 3]
        for job in list(iterator._in_flight):
            job.done.wait()
        assert next(iterator)["index"].tolist() == [4, 5, 6, 7]  # delivered although batch 3 failed ahead
        with pytest.raises(RuntimeError, match="starting at 8"):
            next(iterator)
        with pytest.raises(StopIteration):
            next(iterator)


class FakeEvent:
    def __init__(self, name: str) -> None:
        self.name = name


class FakeStream:
    def __init__(self, log: list, name: str) -> None:
        self.log, self.name, self.events = log, name, 0

    def record_event(self) -> FakeEvent:
        self.events += 1
        self.log.append(("record", self.name))
        return FakeEvent(f"{self.name}-{self.events}")

    def wait_event(self, event: FakeEvent) -> None:
        self.log.append(("wait", self.name, event.name))


class FakeCuda:
    """Just enough of ``torch.cuda`` for CopyStream, writing down what is asked of it."""

    def __init__(self) -> None:
        self.log: list = []
        self.current = FakeStream(self.log, "loop")
        self.active = self.current

    def is_available(self) -> bool:
        return True

    def Stream(self, device):
        self.log.append(("new stream", str(device)))
        return FakeStream(self.log, "copy")

    def current_stream(self, device=None) -> FakeStream:
        return self.active

    @contextlib.contextmanager
    def stream(self, stream: FakeStream):
        previous, self.active = self.active, stream
        self.log.append(("enter", stream.name))
        try:
            yield
        finally:
            self.active = previous
            self.log.append(("leave", stream.name))


def test_copies_and_batch_ops_are_issued_on_the_copy_stream_and_the_loop_waits_on_the_gpu():
    cuda = FakeCuda()
    stream = CopyStream(torch.device("cuda:1"), api=cuda)
    assert stream.active and cuda.log == [("new stream", "cuda:1")]
    with stream.issuing():
        issued_on = cuda.current_stream().name
        ready = stream.record()
    assert issued_on == "copy" and cuda.current_stream().name == "loop"
    batch = {"image": torch.zeros(2), "text": ["a", "b"]}
    assert stream.hand_over(batch, ready) is batch
    assert cuda.log[1:] == [("enter", "copy"), ("record", "copy"), ("leave", "copy"), ("wait", "loop", "copy-1")]


def test_without_cuda_the_stream_passes_batches_through():
    for device in (None, torch.device("cpu")):
        stream = CopyStream(device)
        assert not stream.active and stream.record() is None
        batch = {"x": torch.ones(1)}
        assert stream.hand_over(batch, None) is batch


class FakeCudart:
    def __init__(self, status: int = 0) -> None:
        self.status = status
        self.registered: dict[int, int] = {}
        self.unregistered: list[int] = []

    def cudaHostRegister(self, address: int, size: int, flags: int) -> int:
        if self.status == 0:
            self.registered[address] = size
        return self.status

    def cudaHostUnregister(self, address: int) -> int:
        self.unregistered.append(address)
        return 0


def test_a_pinned_shared_block_is_registered_whole_and_unregistered_when_collected():
    cudart = FakeCudart()
    block = SharedBlock(4096)
    array = block.array((4096,), np.dtype(np.uint8))
    assert block.pin(cudart)
    ((address, size),) = cudart.registered.items()
    assert address == array.ctypes.data and size == 4096
    block.close()
    del block
    gc.collect()
    assert cudart.unregistered == [address]
    array[:] = 7  # the pages outlive the registration while an array still maps them
    assert int(array.sum()) == 7 * 4096


def test_a_block_cuda_refuses_to_pin_stays_usable_and_is_never_unregistered():
    cudart = FakeCudart(status=2)
    block = SharedBlock(64)
    array = block.array((64,), np.dtype(np.uint8))
    assert not block.pin(cudart)
    del block
    gc.collect()
    assert cudart.unregistered == []
    array[:] = 1
    assert int(array.sum()) == 64


def test_a_buffer_still_being_copied_is_not_replaced_before_its_copy_is_done():
    class Copy:
        def __init__(self) -> None:
            self.synchronized = False

        def synchronize(self) -> None:
            self.synchronized = True

    pool = BufferPool({"label": ((), np.dtype("int64"))}, batch_size=4, pin=False, max_sets=1)
    first = pool.acquire()
    held = torch.from_numpy(first.arrays["label"])  # the loop keeps this batch's labels
    copy = first.copy_done = Copy()
    replaced = first.arrays["label"]
    pool.release(first)

    def allocate_after_sync(buffers, name, allocate=pool._allocate):
        assert copy.synchronized, "an array was replaced while its copy could still be reading it"
        allocate(buffers, name)

    pool._allocate = allocate_after_sync
    again = pool.acquire()
    assert again is first and again.arrays["label"] is not replaced and copy.synchronized
    assert held.data_ptr() == replaced.ctypes.data
