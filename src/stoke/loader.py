"""``stoke.Loader``: order + pipeline + device, composed; each part lives in its own module.

The order (``stoke.pipeline.ordering``) fixes each epoch's positions; ``stoke.pipeline.epoch`` keeps a few
of this rank's batches in flight. The batch line (``stoke.pipeline.line``) starts each on an executor
(``stoke.pipeline.executor``: threads or processes), which reads every sample (``stoke.pipeline.reader``)
and runs one stage per field (``stoke.pipeline.stage``) into preallocated buffers; ``stoke.pipeline.finish``
makes the batch (failures settled by ``stoke.pipeline.quarantine``, tensors moved, batch ops). The Loader
builds the parts from its arguments and connects them. Every random choice is drawn from (seed, epoch,
sample index, op), so a fixed seed gives the same batches whatever the thread count.

Example:
    >>> import numpy as np, stoke
    >>> loader = stoke.Loader({"x": np.arange(10.0), "y": np.arange(10) % 2}, batch_size=4, shuffle=False)
    >>> [batch["index"].tolist() for batch in loader]
    [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
"""

from __future__ import annotations

import atexit
import contextlib
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from stoke.device.jpeg import check_decode
from stoke.device.stream import CopyStream
from stoke.errors import ConfigError
from stoke.ops.base import Op
from stoke.ops.batch_transform import BatchTransform
from stoke.order import Order, batches_in_share
from stoke.pipeline import arguments
from stoke.pipeline.autotune import AutoTuner, tuner_for
from stoke.pipeline.batch import chunk_size
from stoke.pipeline.buffers import batch_buffers
from stoke.pipeline.epoch import EpochHost, EpochIterator, EpochPlan
from stoke.pipeline.finish import BatchFinisher, goes_to_device, stream_device
from stoke.pipeline.line import BatchLine
from stoke.pipeline.observer import UNOBSERVED, Observer
from stoke.pipeline.ordering import order_for
from stoke.pipeline.produce import SampleProducer
from stoke.pipeline.quarantine import FailureSettler, LoadQuarantine
from stoke.pipeline.reader import reader_for, verify_mode
from stoke.pipeline.stage import FieldStage, pipeline_facts, stage_for
from stoke.pipeline.state import Position, loader_state, resume_point
from stoke.pipeline.structure import BatchStructure
from stoke.pipeline.timing import Timing
from stoke.profile.profiler import Profiler, from_setting

# Loaders whose workers may be running: closed at interpreter exit, because a script that breaks out of an
# epoch and ends would otherwise tear down OpenCV and libjpeg-turbo under threads still inside them (abort).
_LIVE_LOADERS: weakref.WeakSet[Loader] = weakref.WeakSet()


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
            Or ``"inline"``: each batch made in the loop's own thread, for work cheaper than handing it to a
            worker (``TokenBlocks``: 1.6-3.3 times the tokens/s of threads on 2 cores); it takes
            ``timeout=None``, as no timeout can stop a read in the loop's thread (``stoke.pipeline.inline``).
            There ``num_threads`` is the threads that share a batch filled in one call (token blocks): the
            loop's and native helpers; ``"auto"``: the cores, at most 4. With helpers, prefetch ``"auto"``
            begins two batches ahead, which the helpers copy while the loop goes on; else one.
        profile: measure where the time goes (``stoke.profile``, docs/profiling.md): True, a directory to
            write the report into, or a ``stoke.profile.Profiler``; ``$STOKE_PROFILE`` (set by ``stoke
            profile``) turns it on for every Loader. Off, it costs one check per sample and a no-op call per step
            (``stoke.pipeline.timing``).
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
        given = arguments.settings(
            batch_size, seed, workers, num_threads, prefetch, collate_fn, batch_transforms, dataloader_options
        )
        self.batch_size, self.seed, self.workers = given.batch_size, given.seed, workers
        self.shuffle, self.drop_last = bool(shuffle), drop_last
        self.device = torch.device(device) if device is not None else None
        self.channels_last, self.fast_decode, self.decode = channels_last, fast_decode, check_decode(decode)
        self.timing = Timing()  # the parts' timing hook: a no-op until an observer connects counters
        arguments.order_fits(dataset)  # a manifest's count is checked before anything is allocated from it
        self._reader = reader_for(dataset, fields, verify_mode(verify), names, self.timing)
        fills_rows = getattr(self._reader, "fills_rows", False)  # a chunk in one call: TokenBlocks
        given = arguments.inline_settings(given, fills_rows)
        transforms = arguments.field_transforms(transforms, list(self._reader.fields))
        self._stages = [self._stage(name, transforms.get(name, ())) for name in self._reader.fields]
        check_delivery = getattr(self._reader, "check_delivery", None)  # TokenBlocks: dtypes that hold the ids
        if check_delivery is not None:
            check_delivery({name: dtype for stage in self._stages for name, (_, dtype) in stage.buffer_specs().items()})
        keys = arguments.batch_keys(self._stages)
        self.batch_transforms = arguments.checked_batch_transforms(
            batch_transforms, self._reader, keys, collate_fn is None
        )
        self.rank, self.world_size = arguments.distributed(rank, world_size)
        self.timeout = arguments.timeout_setting(timeout, given.executor)
        self.structure = BatchStructure(self._reader.layout, list(self._reader.fields), collate_fn)
        self.quarantine_log = LoadQuarantine(on_error, max_bad_fraction)
        self.order: Order = order_for(self._reader, self.seed, self.shuffle, weights, balance_by)
        self._copy_stream = CopyStream(stream_device(self.device, self._stages))  # checks that CUDA is there
        # Batches that go to a device are finished one ahead of the loop, so that its copy overlaps the step.
        self._finishes_ahead = goes_to_device(self.device, self._stages)
        buffers = batch_buffers(
            self._stages, self.batch_size, given.prefetch, finishes_ahead=self._finishes_ahead,
            pin=self._copy_stream.active or given.pin_memory,  # pinned: copies run asynchronously
            shared=given.executor.shared_buffers,
        )  # fmt: skip
        self._tuner: AutoTuner | None = tuner_for(
            given.asked, (given.num_threads, given.prefetch), resizable=given.executor.resizable, cores=given.cores,
            cpu_budget=cpu_budget, ram_budget=ram_budget, set_bytes=buffers.set_bytes,
        )  # fmt: skip
        producer = SampleProducer(self._reader, self._stages, self.seed, self.timing)  # workers hold it, not the Loader
        produce, draw = producer, producer.draw  # producer(job, row); producer.produce_rows fills chunks
        self._line = BatchLine(
            workers, given.num_threads, given.prefetch, produce, draw, buffers, self._reader.dataset_index,
            chunk_size(self.batch_size, given.num_threads, fills_rows), self._tuner,
        )  # fmt: skip
        settler = FailureSettler(self.quarantine_log, self._reader, self.seed, draw, produce)
        self._finisher = BatchFinisher(
            self._stages, self.device, self.seed, self.batch_transforms, self._copy_stream, settler, buffers.pin,
            self.timing, self._reader.origin,
        )  # fmt: skip
        self._forks_workers = given.executor.shared_buffers  # workers in other processes, forked with the hook
        self._position = Position()  # the next epoch, or the unfinished one's iterator (held weakly)
        self._observer: Observer = UNOBSERVED
        profiler = from_setting(profile)
        if profiler is not None:
            profiler.attach(self)
        _LIVE_LOADERS.add(self)

    num_threads = property(lambda self: self._line.num_workers, doc="Workers in use (the tuner moves it).")
    prefetch = property(lambda self: self._line.in_flight, doc="Batches kept in flight (the tuner moves it).")
    epoch = property(lambda self: self._position.epoch, doc="The epoch the next new iter() starts.")

    @property
    def observer(self) -> Observer | None:
        """What watches this Loader (``watch``): the Profiler of ``profile=True``, say; None if nothing does."""
        return None if self._observer is UNOBSERVED else self._observer

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
        epoch, consumed = self._position.now()
        return loader_state(
            epoch, consumed, seed=self.seed, order=self.order, batch_size=self.batch_size, world_size=self.world_size
        )

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from ``state`` (from :meth:`state_dict`): the next ``iter()`` resumes its epoch."""
        self._position.load(*resume_point(state, seed=self.seed, order=self.order))

    def __iter__(self) -> Iterator[Any]:
        """The unfinished epoch's iterator, continuing where the loop left it; else the next epoch's (the
        first iteration is epoch 0, or the one a loaded state names)."""
        if self._position.active is not None:
            return self._position.active
        self._line.ready()  # made now, or afresh after a worker died
        epoch, start = self._position.epoch, self._position.start
        plan = EpochPlan.of(
            self.order.indices(epoch), epoch, start, self.batch_size, self.rank, self.world_size, self.drop_last
        )
        self._reader.will_read(plan.positions)  # a remote dataset fetches its shards ahead, in this order
        iterator = EpochIterator(plan, self._host())
        self._position.begin(iterator)
        return iterator

    def stats(self) -> dict[str, Any]:
        """Settings in use and counters: batches and samples delivered, seconds the loop waited for data."""
        return {"workers": self.workers, "epoch": self.epoch, "quarantined": len(self.quarantine), **self._line.stats()}

    def watch(self, observer: Observer) -> None:
        """Have ``observer`` watch this Loader's steps, and time its workers' stages into the observer's
        ``counters`` if it has some (``stoke.pipeline.observer``; ``stoke.profile`` attaches its profiler
        so). One observer at a time. Process workers fork with the timing hook as it is then, so a Loader
        with ``workers="process"`` is watched before its epoch starts (its idle workers are restarted).
        """
        if self._observer is not UNOBSERVED:
            raise ConfigError(f"this Loader is already watched by {self._observer!r}; unwatch it first")
        if observer.counters is not None and self._forks_workers:
            if self._position.active is not None and not self._position.active.finished:
                raise ConfigError(
                    "attach the profiler before iterating a Loader with workers='process' (its workers are "
                    "already running without it), or pass profile= to the Loader"
                )
            self._line.shutdown()  # the workers fork again, with the counters, when the next epoch starts
        if observer.counters is not None:
            self.timing.connect(observer.counters)
        self._observer = observer

    def unwatch(self, observer: Observer) -> None:
        """Stop ``observer`` watching (if it does): every hook is a no-op again (process workers keep adding
        to its counters until they are restarted)."""
        if self._observer is observer:
            self.timing.disconnect()
            self._observer = UNOBSERVED

    def describe(self) -> dict[str, Any]:
        """What the pipeline is made of, for reports (``stoke.profile``): ``stoke.pipeline.stage.pipeline_facts``."""
        return pipeline_facts(self._reader, self._stages)

    def close(self) -> None:
        """Stop the workers; the Loader starts them again if iterated. An unfinished epoch is kept: the
        next ``iter()`` continues it."""
        if self._position.forked:
            return  # a copy inherited by a forked process: its workers and batches belong to the parent
        self._line.shutdown()  # first: the batches in flight are dropped, not waited for (Ctrl-C, exit)
        if self._position.active is not None:
            self._position.keep(self._position.active)

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

    # ---- the parts' connections -------------------------------------------------------------------
    def _stage(self, name: str, ops: Sequence[Op]) -> FieldStage:
        """The stage of field ``name``, running ``ops`` (``stoke.pipeline.stage``)."""
        return stage_for(
            name, ops, self._reader, self.decode, self.device, self.channels_last, self.fast_decode, self.timing
        )

    def _host(self) -> EpochHost:
        """What a new epoch's iterator may use of this Loader (not kept here: it holds the Loader)."""
        return EpochHost(
            line=self._line,
            finish=lambda job, epoch_size: self._finisher.finish(job, epoch_size, self._observer),
            hand_over=self._hand_over,
            hand_back=self._position.keep,
            requested=lambda in_flight: self._observer.requested(in_flight),
            stand_in=self._stand_in,
            quarantine=self.quarantine_log,
            timeout=self.timeout,
            finish_ahead=self._finishes_ahead,
        )

    def _hand_over(self, batch: dict[str, Any], ready: Any, samples: int, waited: float) -> Any:
        """The loop's value for a finished batch: counted (and tuned on), its copy awaited, shaped."""
        self._line.delivered(samples, waited)
        # The loop's stream waits for the copy before the profiler marks the hand-over on it, so a GPU
        # idling for the copy counts as waiting for input.
        batch = self._copy_stream.hand_over(batch, ready)
        self._observer.handed_out(batch, waited)
        return self.structure.shape(batch)

    def _stand_in(self) -> Any:
        """The observer's batch instead of the epoch's next (the profiler's headspace steps), or None."""
        batch = self._observer.stand_in()
        return self.structure.shape(batch) if batch is not None else None


@atexit.register
def _close_live_loaders() -> None:
    for loader in list(_LIVE_LOADERS):
        with contextlib.suppress(Exception):
            loader.close()
