"""A batch job whose samples are in, made into the batch dict: failures settled, rows collected, moved.

:class:`BatchFinisher` takes a finished :class:`~stoke.pipeline.batch.BatchJob` and returns its batch:
the job's fatal error raised (named by its first sample), failed samples settled by the quarantine's
policy (``stoke.pipeline.quarantine``), each stage's rows collected into tensors, moved to the device and
through the stage's batch ops, then the batch transforms (MixUp, ...). On CUDA all of it is issued on the
copy stream (``stoke.device.stream``), and the batch comes with the event recorded after it: the loop's
stream waits on it at hand-over, and the pinned buffers are refilled only after it.

:func:`stream_device` and :func:`goes_to_device` say where batches go: ``device=``, or a ``ToDevice`` in
some field's ops.

Not for the batches in flight (``stoke.pipeline.epoch``) nor for the shape the loop sees
(``stoke.pipeline.structure``).

Example:
    >>> import numpy as np, torch
    >>> from stoke.device.stream import CopyStream
    >>> from stoke.pipeline.batch import BatchJob
    >>> from stoke.pipeline.buffers import BufferSet
    >>> from stoke.pipeline.quarantine import FailureSettler, LoadQuarantine
    >>> class Stage:
    ...     name, batch_ops = "x", []
    ...     def collect(self, buffers, count): return {"x": torch.from_numpy(buffers.arrays["x"][:count])}
    >>> rows = BufferSet({"index": np.array([5, 6]), "x": np.array([0.5, 1.5])})
    >>> job = BatchJob(0, np.arange(2), np.array([5, 6]), rows, {}, chunk=2)
    >>> settler = FailureSettler(LoadQuarantine(), reader=None, seed=0, draw=None, produce=None)
    >>> finisher = BatchFinisher([Stage()], None, 0, [], CopyStream(None), settler)
    >>> batch, ready = finisher.finish(job, epoch_size=2)
    >>> batch["x"].tolist(), batch["index"].tolist(), ready
    ([0.5, 1.5], [5, 6], None)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from stoke.device.stream import CopyStream
from stoke.errors import ConfigError
from stoke.ops.base import BatchContext
from stoke.ops.device import ToDevice
from stoke.pipeline.batch import BatchJob
from stoke.pipeline.buffers import BufferSet
from stoke.pipeline.observer import UNOBSERVED, Observer
from stoke.pipeline.quarantine import FailureSettler
from stoke.pipeline.timing import Timing, op_label


class BatchFinisher:
    """Makes finished jobs into batches; see the module docstring.

    Args:
        stages: the field stages, whose ``collect`` makes their tensors and whose ``batch_ops`` run on them.
        device: where tensors go before their batch ops (``device=``), or None.
        seed: the seed of the batch ops' and transforms' random choices.
        batch_transforms: ops on the whole batch dict, in order.
        copy_stream: the stream copies and batch ops are issued on.
        settler: settles the failed samples of a job (``stoke.pipeline.quarantine``).
        pinned: whether the buffers are pinned, so refilling them must wait for the copies.
        timing: the Loader's timing hook (``stoke.pipeline.timing``): collating, the copy, each batch op
            and each batch transform are timed into it.
        origin: the batch entries saying where rows came from, from their dataset indices (the reader's
            ``origin``; default: just ``index``).
    """

    def __init__(
        self,
        stages: Sequence[Any],
        device: torch.device | None,
        seed: int,
        batch_transforms: Sequence[Any],
        copy_stream: CopyStream,
        settler: FailureSettler,
        pinned: bool = False,
        timing: Timing | None = None,
        origin: Callable[[np.ndarray], dict[str, Any]] | None = None,
    ) -> None:
        self.stages = stages
        self.origin = origin if origin is not None else _index
        self.device = device
        self.seed = seed
        self.batch_transforms = batch_transforms
        self.copy_stream = copy_stream
        self.settler = settler
        self.pinned = pinned
        self.timing = timing = timing if timing is not None else Timing()
        self._collate, self._copy = timing.slot("collate", "collate"), timing.slot("copy to device", "copy")
        self._op_slots = [
            [timing.slot(f"{stage.name}: {op_label(op)} (batch op)", "batch_op") for op in stage.batch_ops]
            for stage in stages
        ]
        self._transform_slots = [
            timing.slot(f"batch: {op_label(transform)}", "batch_transform") for transform in batch_transforms
        ]

    def finish(self, job: BatchJob, epoch_size: int, observer: Observer = UNOBSERVED) -> tuple[dict[str, Any], Any]:
        """The job's batch, failures settled, moved and transformed on the copy stream; with the copy
        stream's event after it (None off CUDA), for ``CopyStream.hand_over``. Raises the job's fatal error,
        or what the quarantine raises (``on_error="raise"``, the error budget). ``observer`` is told
        when the copy to the device starts and ends."""
        if job.error is not None:
            raise self.settler.fatal(job)
        buffers: BufferSet = job.buffers
        count = self.settler.settle(job, epoch_size) if job.failures else job.size
        if count == 0:  # every sample failed and was skipped: nothing to collect, the epoch goes on
            return {"index": torch.empty(0, dtype=torch.int64)}, None
        with self.copy_stream.issuing():
            batch = self._transfer(buffers, count, job.epoch, job.padding, observer)
            ready = self.copy_stream.record()
        if ready is not None and self.pinned:
            buffers.copy_done = ready  # the pinned buffers are refilled once the copies have run
        return batch, ready

    def _transfer(
        self, buffers: BufferSet, count: int, epoch: int, padding: np.ndarray | None, observer: Observer
    ) -> dict[str, Any]:
        """The buffers' first ``count`` rows as tensors, moved, through the batch ops and batch transforms."""
        batch: dict[str, Any] = {}
        context = BatchContext(self.seed, epoch, buffers.arrays["index"][:count].copy())
        timing = self.timing
        lap = timing.start()
        for stage, op_slots in zip(self.stages, self._op_slots):
            outputs = stage.collect(buffers, count)
            lap = timing.stop(self._collate, lap)
            if self.device is not None:
                copy = observer.copy_started()
                moves_itself = any(isinstance(op, ToDevice) for op in stage.batch_ops)
                outputs = {
                    key: value.to(self.device, non_blocking=True)
                    if isinstance(value, torch.Tensor) and not (moves_itself and key == stage.name)
                    else value
                    for key, value in outputs.items()
                }
                observer.copy_ended(copy)
                lap = timing.stop(self._copy, lap)
            for op, slot in zip(stage.batch_ops, op_slots):
                outputs[stage.name] = op.apply(outputs[stage.name], context)
                lap = timing.stop(slot, lap)
            batch.update(outputs)
        batch.update(self.origin(buffers.arrays["index"][:count]))  # index (and a mixture's source)
        if padding is not None:
            batch["is_padding"] = torch.from_numpy(padding[:count].copy())
        for transform, slot in zip(self.batch_transforms, self._transform_slots):
            batch = transform.apply(batch, context)
            lap = timing.stop(slot, lap)
        return batch


def _index(indices: np.ndarray) -> dict[str, Any]:
    return {"index": torch.from_numpy(indices)}


def goes_to_device(device: torch.device | None, stages: Sequence[Any]) -> bool:
    """Whether batches move to a device (``device=`` or a ``ToDevice`` in some field's ops)."""
    return device is not None or any(isinstance(op, ToDevice) for stage in stages for op in stage.batch_ops)


def stream_device(device: torch.device | None, stages: Sequence[Any]) -> torch.device | None:
    """The CUDA device the batches are copied to, if any: ``device=``, else the first ``ToDevice``'s; a
    ConfigError when CUDA is asked for and not there."""
    devices = [device] if device is not None else []
    devices += [op.device for stage in stages for op in stage.batch_ops if isinstance(op, ToDevice)]
    cuda = next((candidate for candidate in devices if candidate.type == "cuda"), None)
    if cuda is not None and not torch.cuda.is_available():
        why = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
        raise ConfigError(
            f"batches are to go to {cuda}, but {why}; pass device='cpu' (or leave device out), or run where "
            f"a GPU and a CUDA build of torch are"
        )
    return cuda
