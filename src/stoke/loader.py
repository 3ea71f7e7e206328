"""``stoke.Loader``: order + pipeline + device, composed; each part lives in its own module.

For each epoch the order (``stoke.order``) fixes the sequence of positions; consecutive slices of it are
the batches. A few batches are kept in flight: each becomes a :class:`~stoke.pipeline.batch.BatchJob`
whose samples are split into chunks for the worker threads (``stoke.pipeline.threads``); every sample is
read (``stoke.pipeline.reader``) and run through one stage per field (``stoke.pipeline.image``,
``stoke.pipeline.values``) straight into preallocated buffers (``stoke.pipeline.buffers``). The batch the
loop asks for next is collected into tensors, its batch ops run (on the device, if one is given), and the
next batch is started before it is handed over.

Every random choice is drawn from (seed, epoch, sample index, op), so a fixed seed gives the same batches,
with the same augmentations, whatever the thread count.

Example:
    >>> import numpy as np, stoke
    >>> loader = stoke.Loader({"x": np.arange(10.0), "y": np.arange(10) % 2}, batch_size=4, shuffle=False)
    >>> [batch["index"].tolist() for batch in loader]
    [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import os
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import psutil
import torch

from stoke.dataloader_compat import translate
from stoke.device.jpeg import CompressedImageStage, check_decode, image_stage
from stoke.device.stream import CopyStream
from stoke.engines.local import available_cores
from stoke.errors import ConfigError, ErrorBudgetExceeded, SampleError, StokeError
from stoke.format.fields import ImageField
from stoke.ops.base import BatchContext, Op
from stoke.ops.batch_transform import BatchTransform
from stoke.ops.device import ToDevice
from stoke.order import (
    Order,
    RandomOrder,
    SequentialOrder,
    WeightedOrder,
    batches_in_share,
    class_balance,
    rank_share,
)
from stoke.pipeline.arguments import field_transforms, with_features
from stoke.pipeline.arguments import translated as from_dataloader
from stoke.pipeline.autotune import AutoTuner
from stoke.pipeline.batch import BatchJob
from stoke.pipeline.buffers import BufferPool, BufferSet
from stoke.pipeline.image import ImageStage
from stoke.pipeline.processes import ProcessPool
from stoke.pipeline.quarantine import MAX_REPLACEMENT_ATTEMPTS, LoadQuarantine
from stoke.pipeline.reader import reader_for, verify_mode
from stoke.pipeline.shared import SharedBlock
from stoke.pipeline.structure import BatchStructure
from stoke.pipeline.threads import WorkerPool
from stoke.pipeline.values import ValueStage
from stoke.profile.profiler import Profiler, from_setting

STATE_FORMAT = "stoke.loader.v1"
# Loaders whose workers may be running: closed at interpreter exit, because a script that breaks out of an
# epoch and ends would otherwise tear down OpenCV and libjpeg-turbo under threads still inside them (abort).
_LIVE_LOADERS: weakref.WeakSet[Loader] = weakref.WeakSet()
DEFAULT_PREFETCH = 3
MAX_PREFETCH = 32
MAX_CHUNK = 16  # images per task: fewer, larger tasks measured best (stoke bench, 2 cores)
_WAIT_SLICE = 0.1


class Loader:
    """Batches of a dataset as dicts of tensors, assembled by a pool of threads.

    Args:
        dataset: a packed dataset (``stoke.open``), a view of one, any map-style dataset, or numpy arrays.
        batch_size: samples per batch; the last batch is shorter unless ``drop_last``.
        shuffle: a new random order every epoch, derived from (``seed``, epoch); off by default, as in
            DataLoader, so a validation loader written the usual way is in order.
        seed: the seed of every random choice: order and augmentations (default 0).
        drop_last: drop the last, incomplete batch of each epoch.
        transforms: ``{field: [op, ...]}`` (a single op is a list of one; the fields of tuple items may be
            keyed by position); images are decoded without asking.
        device: move tensor fields to this device before their batch ops. On CUDA the copies run from
            pinned buffers on a dedicated stream, and the next batch is finished one ahead of the loop, so
            its copy overlaps the step on the current one (``stoke.device.stream``).
        num_threads: workers; ``"auto"`` starts at the cores this process may run on and (for threads) tunes.
        prefetch: batches in flight ahead of the training loop; ``"auto"`` starts at 3 and tunes.
        fields: the fields to load (default: all).
        names: names for the values of tuple items (a user's Dataset returning tuples, or arrays given as
            a tuple): the batches are then dicts with these keys instead of tuples.
        collate_fn: build each batch yourself, as with DataLoader: called with the batch's samples, each
            shaped like the dataset's items (``stoke.pipeline.structure``); its result is the batch.
        channels_last: images in channels_last memory format (the NCHW shape is unchanged).
        verify: check samples against their stored checksums before decoding them: ``"once"`` (the first
            time this Loader reads each sample, in any worker), ``"always"`` (every read, every epoch) or
            ``"never"``; True and False mean "always" and "never". A sample that fails is never marked
            checked. "once" finds the damage a dataset had when training started at the cost of one check
            per sample; "always" also finds bytes that change on disk during training, at the cost of reading
            every record twice each epoch (a third of the time for raw records).
        fast_decode: decode JPEGs with libjpeg-turbo's fast inverse DCT and chroma upsampling (FFCV does
            the same): about 12% less decode work, a grey level or two from the accurate decode.
        cpu_budget: cores the worker threads may keep busy when tuning (default: the cores available).
        ram_budget: bytes the batch buffers may take when tuning prefetch (default: a quarter of the
            available memory).
        rank: this process's rank (default: ``torch.distributed``'s when it is initialized, else 0).
        world_size: the number of ranks (default: ``torch.distributed``'s when initialized, else 1). Each
            rank gets a disjoint part of every epoch and the same number of batches
            (``stoke.order.partition``); unless ``drop_last``, the epoch is padded to a multiple of the
            world size with duplicates flagged in the batch's ``is_padding``.
        weights: sample with replacement in proportion to these per-sample weights (``stoke.order.weighted``).
        balance_by: an int field (such as ``"label"``): weights that give each of its values the same share.
        on_error: what a batch does with a sample that fails (damaged, undecodable, or a transform raised):
            ``"skip"`` (a shorter batch), ``"replace"`` (a deterministic stand-in) or ``"raise"``; every
            failure is listed in ``loader.quarantine`` (``stoke.pipeline.quarantine``).
        max_bad_fraction: the error budget: more failures in one epoch than this fraction of it, or than
            ``stoke.pipeline.quarantine.MIN_BAD_SAMPLES`` (10) when that is more, stop it with one error naming
            the first causes; 0 tolerates none.
        timeout: seconds the loop may wait for one batch before the Loader reports the samples still in
            work as stuck (a transform or read that hangs) instead of waiting forever; None (or 0, as in
            DataLoader) waits forever.
        batch_transforms: ops on the whole batch dict (``stoke.ops.BatchTransform``), run in order once the
            batch is complete, after each field's ops and device moves: ``MixUp`` and ``CutMix``
            (``stoke.ops.mix``), which mix images and labels together (docs/augmentation.md).
        workers: ``"thread"`` (default: decoding and resizing release the GIL, and threads share
            everything) or ``"process"``, for transforms or datasets written in pure Python that hold the
            GIL: the same pipeline in forked processes writing into shared-memory batches
            (``stoke.pipeline.processes``), with the same batches. Auto-tuning then tunes prefetch only.
        profile: measure where the time goes (``stoke.profile``, docs/profiling.md): True, a directory to
            write the report into, or a ``stoke.profile.Profiler``; ``$STOKE_PROFILE`` (set by ``stoke
            profile``) turns it on for every Loader. Off, it costs one None check per step and stage.
        decode: where JPEG image fields are decoded: ``"cpu"`` (default), ``"device"`` (nvJPEG on the CUDA
            ``device``, batched; falls back to the CPU with a warning when it cannot) or ``"auto"`` (the
            device when it can, silently); ``stoke.device.jpeg``, docs/device.md.
        **dataloader_options: ``torch.utils.data.DataLoader``'s own arguments: ``num_workers``,
            ``prefetch_factor``, ``generator``, ``pin_memory`` and ``persistent_workers`` are translated
            (``stoke.dataloader_compat``); the others raise a ConfigError saying what to use instead.

    Each ``iter(loader)`` after a finished epoch starts the next one. An ``iter()`` while an epoch is
    unfinished (a loop that broke out, a ``next(iter(loader))`` to look at one batch) continues that epoch
    with the batches not yet handed out, exactly as ``load_state_dict(state_dict())`` would: no sample is
    skipped or repeated. To look at a batch without consuming it, save ``state_dict()`` first and load it
    after. ``load_state_dict`` abandons an unfinished epoch.

    With ``"auto"`` settings the Loader hill-climbs on its measured delivery rate while the training
    loop waits for data (``stoke.pipeline.autotune``); ``stats()["autotune"]`` shows what it chose.

    Each batch has the structure of the dataset's items (``stoke.pipeline.structure``): a dict keyed by
    field name for a packed dataset or dict items, a tuple for tuple items (``for x, y in loader``), the
    value for single values. Images are uint8 ``[B, C, H, W]`` (float after ``Normalize``), ``int`` fields
    int64 ``[B]``, ``float`` fields float32 ``[B]``, arrays ``[B, ...]`` (float32 for float64 ones, int64 for
    integers wider than a byte, such as token ids; ``stoke.ops.ToDtype`` first in a field's ops chooses
    another dtype), variable-size fields padded with ``<name>_lengths``, text and JSON as lists; ``index``
    holds the dataset indices (int64, on the CPU). A dataset packed from a table also gets ``features``,
    float32 ``[B, F]`` of its numeric columns (``stoke.ops.Features``).
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int = 1,
        shuffle: bool = False,
        seed: int | None = None,
        drop_last: bool = False,
        transforms: Mapping[str | int, Sequence[Op] | Op] | None = None,
        device: str | torch.device | None = None,
        num_threads: int | str = "auto",
        prefetch: int | str = "auto",
        fields: Sequence[str] | None = None,
        names: Sequence[str] | None = None,
        collate_fn: Callable[[list[Any]], Any] | None = None,
        channels_last: bool = False,
        verify: bool | str = "once",
        fast_decode: bool = True,
        cpu_budget: int | None = None,
        ram_budget: int | None = None,
        workers: str = "thread",
        rank: int | None = None,
        world_size: int | None = None,
        weights: Sequence[float] | np.ndarray | None = None,
        balance_by: str | None = None,
        on_error: str = "skip",
        max_bad_fraction: float = 0.001,
        timeout: float | None = 600.0,
        batch_transforms: Sequence[BatchTransform] | None = None,
        profile: bool | str | Profiler = False,
        decode: str = "cpu",
        **dataloader_options: Any,
    ) -> None:
        translated = translate(dataloader_options)
        if batch_size is None:
            raise ConfigError(
                "batch_size=None (DataLoader's unbatched mode) has no meaning here; give a batch size, or read "
                "samples one at a time with dataset[i]"
            )
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
        if workers not in ("thread", "process"):
            raise ConfigError(f"workers must be 'thread' or 'process', got {workers!r}")
        if "seed" in translated and seed is not None and seed != translated["seed"]:
            raise ConfigError(f"seed={seed} and a generator seeded with {translated['seed']} disagree; give one")
        num_threads = from_dataloader(num_threads, translated, "num_threads", "num_workers")
        prefetch = from_dataloader(prefetch, translated, "prefetch", "prefetch_factor")
        if collate_fn is not None and not callable(collate_fn):
            raise ConfigError(f"collate_fn must be callable, got {type(collate_fn).__name__}")
        if collate_fn is not None and batch_transforms:
            raise ConfigError(
                "batch_transforms run on stoke's batch dict, and collate_fn makes the batch itself; "
                "do the batch transform's work in collate_fn"
            )
        self.batch_size = batch_size
        self.workers = workers
        self.shuffle = bool(shuffle)
        self.seed = int(translated.get("seed", 0) if seed is None else seed)
        self.drop_last = drop_last
        self.device = torch.device(device) if device is not None else None
        cores = available_cores()
        self.num_threads = _resolve_count(num_threads, cores, "num_threads")
        self.prefetch = _resolve_count(prefetch, DEFAULT_PREFETCH, "prefetch")
        self.channels_last = channels_last
        self.fast_decode = fast_decode
        self.decode = check_decode(decode)
        self._reader = reader_for(dataset, fields, verify_mode(verify), names)
        transforms = field_transforms(transforms, list(self._reader.fields))
        self._stages = [
            self._stage(name, field, transforms.get(name, ())) for name, field in self._reader.fields.items()
        ]
        outputs = ["index"] + [key for stage in self._stages for key in stage.output_names()]
        clashes = sorted({key for key in outputs if outputs.count(key) > 1})
        if clashes:
            raise ConfigError(
                f"the batch key {clashes[0]!r} would hold two things (a field's name, its lengths, or 'index'); "
                f"rename the field or leave it out with fields="
            )
        self.batch_transforms = with_features(batch_transforms, self._reader, collate_fn is None)
        for position, transform in enumerate(self.batch_transforms):
            if not isinstance(transform, BatchTransform):
                raise ConfigError(
                    f"batch_transforms[{position}] is {transform!r}, not a stoke.ops.BatchTransform "
                    f"(per-field ops go in transforms=)"
                )
            missing = [key for key in transform.needs() if key not in outputs]
            if missing:
                raise ConfigError(
                    f"batch_transforms[{position}] {transform!r} needs the batch key {missing[0]!r}, which this "
                    f"Loader does not load (keys: {', '.join(outputs)})"
                )
        size = len(self._reader)
        self.rank, self.world_size = _distributed(rank, world_size)
        if timeout == 0:  # DataLoader's "wait forever"
            timeout = None
        if timeout is not None and not timeout > 0:
            raise ConfigError(f"timeout must be a positive number of seconds or None, got {timeout!r}")
        self.timeout = timeout
        self.structure = BatchStructure(self._reader.layout, list(self._reader.fields), collate_fn)
        self.quarantine_log = LoadQuarantine(on_error, max_bad_fraction)
        self.order: Order = RandomOrder(size, self.seed) if shuffle else SequentialOrder(size)
        if weights is not None and balance_by is not None:
            raise ConfigError("give weights= or balance_by=, not both")
        if balance_by is not None:
            weights = class_balance(self._column(balance_by))
        if weights is not None:
            if len(weights) != size:
                raise ConfigError(f"weights has {len(weights)} values for {size} samples; give one per sample")
            self.order = WeightedOrder(np.asarray(weights, dtype=np.float64), self.seed)
        specs: dict[str, tuple[tuple[int, ...], np.dtype]] = {"index": ((), np.dtype(np.int64))}
        lists: list[str] = []
        for stage in self._stages:
            specs.update(stage.buffer_specs())
            lists.extend(stage.list_names())
        shared = workers == "process"
        self._copy_stream = CopyStream(self._stream_device())  # checks that CUDA is there if asked for
        # Batches that go to a device are finished one ahead of the loop (its copy overlaps the loop's step):
        # one more buffer set then stays out of the pool.
        self._finishes_ahead = self._goes_to_device()
        self._spare_sets = 3 if self._finishes_ahead else 2
        self._buffers = BufferPool(
            specs,
            batch_size,
            self._copy_stream.active or bool(translated.get("pin_memory")),  # pinned: copies run asynchronously
            max_sets=self.prefetch + self._spare_sets,
            list_names=tuple(lists),
            shared=shared,
            on_retire=_weak_method(self._retire),
        )
        self._chunk = max(1, min(MAX_CHUNK, -(-batch_size // self.num_threads)))
        self._tuner: AutoTuner | None = None
        if num_threads == "auto" or prefetch == "auto":
            set_bytes = sum(int(np.prod(shape)) * dtype.itemsize for shape, dtype in specs.values()) * batch_size
            budget = ram_budget if ram_budget is not None else psutil.virtual_memory().available // 4
            self._tuner = AutoTuner(
                self.num_threads,
                self.prefetch,
                max_threads=2 * (cpu_budget or cores) if num_threads == "auto" and not shared else self.num_threads,
                max_prefetch=max(self.prefetch, min(MAX_PREFETCH, budget // max(set_bytes, 1) - 2))
                if prefetch == "auto"
                else self.prefetch,
                cpu_budget=float(cpu_budget or cores),
            )
        self._pool: WorkerPool | ProcessPool | None = None
        # The unfinished epoch's iterator, held weakly: the iterator holds the Loader, and a cycle between
        # them would keep both (and the workers) alive until the cyclic GC ran, possibly in a forked worker.
        # An iterator dropped unfinished hands its position back first (_EpochIterator.__del__).
        self._active_ref: weakref.ref[_EpochIterator] | None = None
        self._pid = os.getpid()  # a forked copy of this Loader (in a worker) must never touch its pools
        self._weak_produce = _weak_method(self._produce)  # what worker threads call: they must not hold the Loader
        self.epoch = 0
        self._resume_start = 0  # samples of epoch ``self.epoch`` the job had consumed (load_state_dict)
        self._stats = {"batches": 0, "samples": 0, "wait_seconds": 0.0}
        self._profiler: Profiler | None = None
        self._clock: Any = None  # the profiler's StageClock while profiled
        profiler = from_setting(profile)
        if profiler is not None:
            profiler.attach(self)
        _LIVE_LOADERS.add(self)

    @property
    def _active(self) -> _EpochIterator | None:
        return self._active_ref() if self._active_ref is not None else None

    @_active.setter
    def _active(self, iterator: _EpochIterator | None) -> None:
        self._active_ref = weakref.ref(iterator) if iterator is not None else None

    # ---- public -----------------------------------------------------------------------------------
    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        return batches_in_share(self.order.length, 0, self.batch_size, self.world_size, self.drop_last)

    @property
    def quarantine(self) -> list[dict[str, Any]]:
        """The samples that failed while loading: index, epoch, shard, reason (one record per sample)."""
        return self.quarantine_log.records

    def state_dict(self) -> dict[str, Any]:
        """Where the job is: small, JSON-serialisable, the same on every rank; save it with the model.

        Batches prefetched but not yet handed to the loop are not counted. ``load_state_dict`` on a new
        Loader (in a new process, with any world size) continues with exactly the samples not yet
        consumed, with the same augmentations.
        """
        active = self._active
        if active is not None and not active.finished:
            epoch, consumed = active.epoch, active.consumed
        else:
            epoch, consumed = self.epoch, self._resume_start
        return {
            "format": STATE_FORMAT,
            "epoch": epoch,
            "samples_consumed": consumed,
            "seed": self.seed,
            "epoch_length": self.order.length,
            "order": type(self.order).__name__,
            "batch_size": self.batch_size,
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from ``state`` (from :meth:`state_dict`): the next ``iter()`` resumes its epoch."""
        problem = _state_problem(state, self)
        if problem:
            raise ConfigError(f"cannot resume from this loader state: {problem}")
        if self._active is not None:
            self._active.cancel()
            self._active = None
        self.epoch = int(state["epoch"])
        self._resume_start = int(state["samples_consumed"])

    def __iter__(self) -> Iterator[Any]:
        """The unfinished epoch's iterator, continuing where the loop left it; else the next epoch's (the
        first iteration is epoch 0, or the one a loaded state names)."""
        if self._active is not None and not self._active.finished:
            return self._active
        if isinstance(self._pool, ProcessPool) and self._pool.broken:
            self._pool.shutdown()  # a worker died: start afresh
            self._pool = None
        if self._pool is None:
            self._pool = (
                ProcessPool(self.num_threads, _weak_method(self._produce), _weak_method(self._draw))
                if self.workers == "process"
                else WorkerPool(self.num_threads)
            )
        iterator = _EpochIterator(self, self.epoch, self._resume_start)
        self._active = iterator
        self._resume_start = 0
        self.epoch += 1
        return iterator

    def stats(self) -> dict[str, Any]:
        """Settings in use and counters: batches and samples delivered, seconds the loop waited for data."""
        return {
            "workers": self.workers,
            "num_threads": self.num_threads,
            "prefetch": self.prefetch,
            "chunk": self._chunk,
            "epoch": self.epoch,
            "buffer_sets": self._buffers.sets,
            "buffer_allocations": self._buffers.allocations,
            "quarantined": len(self.quarantine),
            "autotune": self._tuner.as_dict() if self._tuner is not None else None,
            **self._stats,
        }

    def close(self) -> None:
        """Stop the workers; the Loader starts them again if iterated. An unfinished epoch is kept: the
        next ``iter()`` continues it."""
        if os.getpid() != self._pid:
            return  # a copy inherited by a forked process: its workers and batches belong to the parent
        if isinstance(self._pool, ProcessPool):  # first: it stops busy workers now, failing their chunks,
            self._pool.shutdown()  # so that the epoch's batches in flight are not waited for (Ctrl-C, exit)
            self._pool = None
        active = self._active
        if active is not None and not active.finished:
            self._keep_position(active)
        self._active = None
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def __enter__(self) -> Loader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        # not contextlib.suppress: at interpreter shutdown the module's globals may already be None
        try:  # noqa: SIM105
            self.close()
        except Exception:  # at interpreter shutdown there is nothing useful to do
            pass

    # ---- internals --------------------------------------------------------------------------------
    def _keep_position(self, iterator: _EpochIterator) -> None:
        """Stop ``iterator``'s batches in flight and keep its position: the next ``iter()`` continues there."""
        epoch, consumed = iterator.epoch, iterator.consumed
        iterator.cancel()
        self.epoch, self._resume_start = epoch, consumed

    def _stage(self, name: str, field: Any, ops: Sequence[Op]) -> ImageStage | CompressedImageStage | ValueStage:
        if isinstance(field, ImageField):
            stats = self._reader.field_stats(name)
            if self.decode != "cpu":
                device, options = self.device, (self.channels_last, self.fast_decode)
                return image_stage(self.decode, name, field, ops, self._reader, stats, device, *options)
            return ImageStage(name, field, ops, self._reader.packed, stats, self.channels_last, self.fast_decode)
        return ValueStage(name, field, ops, self._reader.packed)

    def _goes_to_device(self) -> bool:
        """Whether batches move to a device (``device=`` or a ``ToDevice`` in some field's ops)."""
        return self.device is not None or any(
            isinstance(op, ToDevice) for stage in self._stages for op in stage.batch_ops
        )

    def _stream_device(self) -> torch.device | None:
        """The CUDA device the batches are copied to, if any: ``device=``, else the first ``ToDevice``'s."""
        devices = [self.device] if self.device is not None else []
        devices += [op.device for stage in self._stages for op in stage.batch_ops if isinstance(op, ToDevice)]
        cuda = next((device for device in devices if device.type == "cuda"), None)
        if cuda is not None and not torch.cuda.is_available():
            why = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise ConfigError(
                f"batches are to go to {cuda}, but {why}; pass device='cpu' (or leave device out), or run where "
                f"a GPU and a CUDA build of torch are"
            )
        return cuda

    def _column(self, name: str) -> np.ndarray:
        """Every sample's value of an int field (for ``balance_by``)."""
        field = self._reader.fields.get(name)
        if field is None or field.type_name != "int":
            raise ConfigError(f"balance_by names {name!r}, which is not an int field of the loaded fields")
        if self._reader.packed:
            return self._reader.dataset.column(name)  # type: ignore[union-attr]
        position = list(self._reader.fields).index(name)
        return np.array([int(self._reader.read(i)[position]) for i in range(len(self._reader))], dtype=np.int64)

    def _start(self, epoch: int, number: int, positions: np.ndarray) -> BatchJob:
        buffers = self._buffers.acquire()
        indices = self._reader.dataset_index(positions)
        buffers.arrays["index"][: len(indices)] = indices
        if isinstance(self._pool, ProcessPool):
            job = BatchJob(number, positions, indices, buffers, {}, self._chunk, epoch)  # workers draw
            self._pool.dispatch(job)
            return job
        job = BatchJob(number, positions, indices, buffers, self._draw(epoch, indices), self._chunk, epoch)
        assert self._pool is not None
        for start, stop in job.chunks():
            self._pool.submit(job.run, self._weak_produce, start, stop)
        return job

    def _draw(self, epoch: int, indices: np.ndarray) -> dict[str, Any]:
        """Every stage's random numbers for these samples: a function of (seed, epoch, index) only."""
        return {stage.name: stage.draw(self.seed, epoch, indices) for stage in self._stages}

    def _abandon_pool(self) -> None:
        """Drop a pool with stuck work: stuck processes are killed, stuck threads are left to finish alone."""
        pool, self._pool = self._pool, None
        if isinstance(pool, ProcessPool):
            pool.shutdown(timeout=0.5)
        elif pool is not None:
            pool.resize(0)  # idle threads leave; a stuck one leaves once its task returns

    def _retire(self, block: SharedBlock) -> None:
        if isinstance(self._pool, ProcessPool):
            self._pool.retire(block)

    def _produce(self, job: BatchJob, j: int) -> None:
        clock = self._clock
        if clock is not None:
            started, cpu = time.perf_counter_ns(), time.thread_time_ns()
        position = int(job.positions[j])
        try:
            values = self._reader.read(position)
            for stage, value in zip(self._stages, values):
                stage.run(value, job.params[stage.name], j, job.buffers)
        except Exception:
            self._reader.check_read(position)  # zeros from a shard truncated meanwhile: name it, not what they gave
            raise
        else:
            self._reader.check_read(position)  # the same after a decode that went through (stoke.format.mapguard)
        finally:
            if clock is not None:
                clock.add(clock.busy, time.perf_counter_ns() - started)
                clock.add(clock.cpu, time.thread_time_ns() - cpu)

    def _finish(self, job: BatchJob, epoch: int, epoch_size: int) -> tuple[dict[str, Any], Any]:
        """The job's batch, its failures settled, moved and transformed on the copy stream; with the
        copy stream's event after it (None off CUDA), for ``CopyStream.hand_over``."""
        buffers: BufferSet = job.buffers
        count = self._settle_failures(job, epoch, epoch_size) if job.failures else job.size
        if count == 0:  # every sample failed and was skipped: nothing to collect, the epoch goes on
            return {"index": torch.empty(0, dtype=torch.int64)}, None
        with self._copy_stream.issuing():
            batch = self._transfer(buffers, count, epoch, job.padding)
            ready = self._copy_stream.record()
        if ready is not None and self._buffers.pin:
            buffers.copy_done = ready  # the pinned buffers are refilled once the copies have run
        return batch, ready

    def _transfer(self, buffers: BufferSet, count: int, epoch: int, padding: np.ndarray | None) -> dict[str, Any]:
        """The buffers' first ``count`` rows as tensors, moved, through the batch ops and batch transforms."""
        batch: dict[str, Any] = {}
        context = BatchContext(self.seed, epoch, buffers.arrays["index"][:count].copy())
        profiler, clock = self._profiler, self._clock
        lap = time.perf_counter_ns() if clock is not None else 0
        for position, stage in enumerate(self._stages):
            outputs = stage.collect(buffers, count)
            if clock is not None:
                lap = clock.lap(profiler.slots["collate"], lap)
            if self.device is not None:
                copy = profiler.copy_started() if profiler is not None else None
                moves_itself = any(isinstance(op, ToDevice) for op in stage.batch_ops)
                outputs = {
                    key: value.to(self.device, non_blocking=True)
                    if isinstance(value, torch.Tensor) and not (moves_itself and key == stage.name)
                    else value
                    for key, value in outputs.items()
                }
                if copy is not None:
                    lap = profiler.copy_ended(copy)
            for index, op in enumerate(stage.batch_ops):
                outputs[stage.name] = op.apply(outputs[stage.name], context)
                if clock is not None:
                    lap = clock.lap(profiler.slots[("batch_op", position, index)], lap)
            batch.update(outputs)
        batch["index"] = torch.from_numpy(buffers.arrays["index"][:count])
        if padding is not None:
            batch["is_padding"] = torch.from_numpy(padding[:count].copy())
        for index, transform in enumerate(self.batch_transforms):
            batch = transform.apply(batch, context)
            if clock is not None:
                lap = clock.lap(profiler.slots[("batch_transform", index)], lap)
        return batch

    def _after_batch(self, samples: int, waited: float) -> None:
        """Let the tuner see the batch just delivered, and apply any settings it asks for."""
        if self._tuner is None or self._pool is None:
            return
        change = self._tuner.after_batch(samples, waited, self._pool.cpu_stat_paths)
        if change is not None:
            self.num_threads, self.prefetch = change
            if isinstance(self._pool, WorkerPool):
                self._pool.resize(self.num_threads)
            self._buffers.max_sets = self.prefetch + self._spare_sets

    def _settle_failures(self, job: BatchJob, epoch: int, epoch_size: int) -> int:
        """Quarantine the batch's failed samples and apply the policy; returns the rows left."""
        failures = sorted(job.failures, key=lambda failure: failure[0])
        job.failures.clear()  # the failures are data now (loader.quarantine); see quarantine._without_frames
        for row, error in failures:
            self.quarantine_log.admit(self._describe(job, row, error), epoch, epoch_size)
        buffers = job.buffers
        if self.quarantine_log.policy == "replace":
            for row, _ in failures:
                self._replace(job, row, epoch, epoch_size)
            return job.size
        failed = {row for row, _ in failures}
        keep = np.array([row for row in range(job.size) if row not in failed], dtype=np.int64)
        for array in buffers.arrays.values():
            array[: len(keep)] = array[keep]
        for values in buffers.lists.values():
            values[: len(keep)] = [values[row] for row in keep]
        if job.padding is not None:
            job.padding = job.padding[keep]
        return len(keep)

    def _replace(self, job: BatchJob, row: int, epoch: int, epoch_size: int) -> None:
        """Fill ``row`` with the failed sample's deterministic stand-in (produced here, in this thread)."""
        failed_index = int(job.indices[row])
        buffers = job.buffers
        for attempt in range(MAX_REPLACEMENT_ATTEMPTS):
            position = self.quarantine_log.replacement(self.seed, epoch, failed_index, attempt, len(self._reader))
            index = self._reader.dataset_index(np.array([position]))
            rows = BufferSet(
                {name: array[row : row + 1] for name, array in buffers.arrays.items()},
                {name: [None] for name in buffers.lists},
            )
            single = BatchJob(0, np.array([position]), index, rows, self._draw(epoch, index), 1, epoch)
            single.run(self._produce, 0, 1)
            if single.error is not None:
                raise single.error
            if not single.failures:
                buffers.arrays["index"][row] = index[0]
                for name, values in rows.lists.items():
                    buffers.lists[name][row] = values[0]
                return
            self.quarantine_log.admit(self._describe(single, 0, single.failures[0][1]), epoch, epoch_size)
        raise SampleError(
            f"no stand-in for sample {failed_index} loaded in {MAX_REPLACEMENT_ATTEMPTS} attempts; "
            f"the dataset looks mostly damaged: run stoke verify",
            index=failed_index,
        )

    def _describe(self, job: BatchJob, row: int, error: BaseException) -> SampleError:
        """``error`` as a SampleError naming the sample in ``row`` (index, shard), chained to the original."""
        if isinstance(error, SampleError) and error.index is not None:
            return error  # already names its sample
        index = int(job.indices[row])
        where = self._reader.describe(int(job.positions[row]))
        failure = SampleError(f"{where} failed: {type(error).__name__}: {error}", index=index)
        failure.__cause__ = error
        return failure

    def _describe_failure(self, job: BatchJob) -> StokeError:
        """The job's fatal error (not one sample's fault), named by the first sample it held."""
        error = job.error
        assert error is not None
        if getattr(error, "ends_epoch", False):
            return error  # says what is wrong with the machine, whatever the sample
        return self._describe(job, job.error_position or 0, error)


class _EpochIterator:
    """One epoch's batches, with a bounded number in flight; see the Loader docstring."""

    def __init__(self, loader: Loader, epoch: int, start: int = 0) -> None:
        self.loader = loader
        self.epoch = epoch
        order = loader.order.indices(epoch)
        self._order_length = len(order)
        self._start = min(start, len(order))
        self._positions, padding = rank_share(
            order, self._start, loader.batch_size, loader.rank, loader.world_size, loader.drop_last
        )
        self._padding = padding if loader.world_size > 1 and not loader.drop_last else None
        loader._reader.will_read(self._positions)  # a remote dataset fetches its shards ahead, in this order
        self._count = -(-len(self._positions) // loader.batch_size)
        self._next_start = 0
        self._next_yield = 0
        self._delivered = 0  # samples handed out in this epoch on this rank
        self._in_flight: collections.deque[BatchJob] = collections.deque()
        # A batch finished ahead of the loop (batch, ready event, samples, seconds waited), or the error that
        # finishing it raised; see _finish_ahead.
        self._ahead: tuple[dict[str, Any], Any, int, float] | BaseException | None = None

    def __iter__(self) -> _EpochIterator:
        return self

    def __len__(self) -> int:
        return self._count - self._next_yield

    @property
    def finished(self) -> bool:
        return self._next_yield >= self._count

    @property
    def consumed(self) -> int:
        """Samples of the epoch's order the whole job has consumed (every rank has had as many batches)."""
        global_batch = self.loader.batch_size * self.loader.world_size
        return min(self._start + self._next_yield * global_batch, self._order_length)

    def __next__(self) -> dict[str, Any]:
        profiler = self.loader._profiler
        if profiler is not None:
            profiler.requested(self._in_flight)
        if isinstance(self._ahead, BaseException):  # finishing the batch ahead failed, and ended the epoch
            error, self._ahead = self._ahead, None
            raise error
        if self._next_yield >= self._count:
            raise StopIteration
        if profiler is not None and profiler.serving_headspace:
            # a repeated batch, for profiling only: the epoch does not advance
            return self.loader.structure.shape(profiler.serve_headspace())
        waited = 0.0
        while True:  # a batch whose every sample failed and was skipped is not handed out: on to the next
            if self._next_yield >= self._count:
                self._end_without_samples()
            if self._ahead is not None:
                (batch, ready, size, waited_now), self._ahead = self._ahead, None
            else:
                self._fill()
                job = self._in_flight.popleft()
                waited_now = self._wait(job)
                batch, ready = self._take(job)
                size = len(batch["index"])
            waited += waited_now
            self._next_yield += 1
            if size:
                break
        self._delivered += size
        self._fill()
        if self.loader._finishes_ahead:
            self._finish_ahead()
        self.loader._stats["batches"] += 1
        self.loader._stats["samples"] += size
        self.loader._after_batch(size, waited)
        # The loop's stream waits for the copy before the profiler marks the hand-over on it, so a GPU
        # idling for the copy counts as waiting for input.
        batch = self.loader._copy_stream.hand_over(batch, ready)
        if profiler is not None:
            profiler.handed_out(batch, waited)
        return self.loader.structure.shape(batch)

    def _end_without_samples(self) -> None:
        """The epoch ends after batches that all failed: an error if it delivered no sample at all."""
        if self._delivered == 0 and self._positions.size:
            failed = self.loader.quarantine_log.failed_in(self.epoch)
            raise ErrorBudgetExceeded(
                f"every one of the {self._positions.size:,} samples of epoch {self.epoch} failed "
                f"({failed:,} are listed in loader.quarantine), so it delivered no batch; fix the data (stoke verify "
                f"lists damaged samples) or the transform"
            )
        raise StopIteration

    def _wait(self, job: BatchJob) -> float:
        """Seconds spent waiting for ``job``'s samples (raises if it is stuck past the timeout)."""
        started = time.perf_counter()
        while not job.done.wait(_WAIT_SLICE):
            if self.loader.timeout is not None and time.perf_counter() - started > self.loader.timeout:
                raise self._stuck(job)
        waited = time.perf_counter() - started
        self.loader._stats["wait_seconds"] += waited
        return waited

    def _take(self, job: BatchJob) -> tuple[dict[str, Any], Any]:
        """The finished ``job``'s batch and its ready event; its buffers go back to the pool either way."""
        try:
            if job.error is not None:
                raise self.loader._describe_failure(job)
            return self.loader._finish(job, self.epoch, len(self._positions))
        except BaseException as error:
            if getattr(error, "ends_epoch", False):  # the machine's fault: the next iter() retries from here
                self.loader._keep_position(self)
            else:
                self.cancel()
            raise
        finally:
            self.loader._buffers.release(job.buffers)

    def _finish_ahead(self) -> None:
        """Finish the next batch now if its samples are all in, so that its copy to the device runs while
        the loop computes on the batch just handed out.

        Only a batch without failures: settling failures changes the quarantine, which must happen in the
        order batches are handed out. An error while finishing it is raised by the next ``next()``, as it
        would have been without finishing ahead; the batch handed out now is not lost.
        """
        if self._ahead is not None or not self._in_flight or self._next_yield >= self._count:
            return
        job = self._in_flight[0]
        if not job.done.is_set() or job.error is not None or job.failures:
            return
        self._in_flight.popleft()
        try:
            batch, ready = self._take(job)
        except Exception as error:  # raised by the next next()
            self._ahead = error
            return
        self._ahead = (batch, ready, job.size, 0.0)
        self._fill()

    def _fill(self) -> None:
        size = self.loader.batch_size
        while self._next_start < self._count and len(self._in_flight) < self.loader.prefetch:
            number = self._next_start
            positions = self._positions[number * size : (number + 1) * size]
            job = self.loader._start(self.epoch, number, positions)
            if self._padding is not None:
                job.padding = self._padding[number * size : (number + 1) * size]
            self._in_flight.append(job)
            self._next_start += 1

    def _stuck(self, job: BatchJob) -> SampleError:
        """Give up on a batch that has not finished in time: name its samples still in work, leave the
        workers behind (a stuck thread cannot be stopped; stuck processes are killed) and end the epoch."""
        rows = sorted(job.running.values()) or list(range(job.size))  # processes: the whole batch
        indices = [int(job.indices[row]) for row in rows]
        for pending in [job, *self._in_flight]:
            pending.cancelled = True
        self._in_flight.clear()  # their buffers may still be written: they are not reused
        self._next_yield = self._next_start = self._count
        self.loader._abandon_pool()
        shown = ", ".join(map(str, indices[:8])) + (", ..." if len(indices) > 8 else "")
        return SampleError(
            f"batch {job.number} of epoch {self.epoch} did not finish in {self.loader.timeout:g} s; samples still "
            f"in work: {shown}; a transform or the dataset's read is stuck or far too slow (pass a larger "
            f"timeout= if it is just slow)",
            index=indices[0] if indices else None,
        )

    def __del__(self) -> None:
        """Dropped unfinished (``next(iter(loader))``, a loop that broke out): hand the position back."""
        loader = self.loader
        try:
            if not self.finished and os.getpid() == loader._pid and loader._active is self:
                loader._keep_position(self)  # (not an iterator that load_state_dict replaced)
        except Exception:  # at interpreter shutdown there is nothing useful to do
            pass

    def cancel(self) -> None:
        """Stop the batches in flight and give their buffers back; the epoch ends here."""
        for job in self._in_flight:
            job.cancelled = True
        while self._in_flight:
            job = self._in_flight.popleft()
            job.done.wait()
            self.loader._buffers.release(job.buffers)
        if not isinstance(self._ahead, BaseException):
            self._ahead = None  # a finished batch: its buffers are back in the pool already
        self._next_yield = self._next_start = self._count


def _weak_method(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` without a strong reference to its object (the Loader): pools and buffers hold this, and a
    reference back to the Loader would make a cycle."""
    reference = weakref.WeakMethod(method)

    def call(*args: Any, **kwargs: Any) -> Any:
        bound = reference()
        if bound is None:
            raise ReferenceError("the Loader this worker served has been closed")
        return bound(*args, **kwargs)

    return call


@atexit.register
def _close_live_loaders() -> None:
    for loader in list(_LIVE_LOADERS):
        with contextlib.suppress(Exception):
            loader.close()


def _distributed(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """(rank, world size): as given, else from an initialized ``torch.distributed``, else (0, 1)."""
    if rank is None and world_size is None and torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    world_size = 1 if world_size is None else world_size
    rank = 0 if rank is None else rank
    if not isinstance(world_size, int) or world_size < 1:
        raise ConfigError(f"world_size must be a positive integer, got {world_size!r}")
    if not isinstance(rank, int) or not 0 <= rank < world_size:
        raise ConfigError(f"rank must be an integer in [0, {world_size}), got {rank!r}")
    return rank, world_size


def _state_problem(state: Mapping[str, Any], loader: Loader) -> str | None:
    """Why ``state`` cannot resume ``loader``, or None."""
    if not isinstance(state, Mapping) or state.get("format") != STATE_FORMAT:
        return f"it is not a stoke loader state (expected format {STATE_FORMAT!r})"
    for key in ("epoch", "samples_consumed", "seed", "epoch_length"):
        if not isinstance(state.get(key), int) or isinstance(state.get(key), bool) or state[key] < 0:
            return f"{key!r} must be a non-negative integer, got {state.get(key)!r}"
    if state["seed"] != loader.seed:
        return f"it was saved with seed {state['seed']}, this Loader has seed {loader.seed}"
    if state["order"] != type(loader.order).__name__ or state["epoch_length"] != loader.order.length:
        return (
            f"it was saved for a {state['order']} of {state['epoch_length']} samples per epoch, this Loader "
            f"has a {type(loader.order).__name__} of {loader.order.length} (a different dataset, view or sampling)"
        )
    if state["samples_consumed"] > state["epoch_length"]:
        return f"samples_consumed {state['samples_consumed']} exceeds the epoch's {state['epoch_length']} samples"
    return None


def _resolve_count(value: int | str, automatic: int, name: str) -> int:
    if value == "auto":
        return automatic
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name} must be a positive integer or 'auto', got {value!r}")
    return value
