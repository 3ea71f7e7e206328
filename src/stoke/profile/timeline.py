"""Per-step times of a training loop fed by a Loader: the wait for a batch, the rest of the step, the copy.

For: the profiler's record of each step, seen from the two points the Loader controls: when the loop asks
for the next batch (the end of its previous step) and when the Loader hands one over. Not for: the
pipeline's stages (``stages.py``).

Each step ``k`` has an *input* part (from the request to the handout: waiting for the workers, then
collating, copying and the batch ops) and a *step* part (from the handout to the next request: the
loop's own work). The first ``capacity`` steps are kept in preallocated numpy arrays (for the plot and
medians); sums cover every step.

On CUDA the CPU runs ahead of the GPU, so the CPU's clock alone would call a busy GPU idle. The timeline
then also records a CUDA event at each request and handout (and around the host-to-device copy) on the
current stream and resolves them lazily: an event pair is read with ``elapsed_time`` once ``query()`` says
both have completed, never with a ``synchronize()`` per step. The GPU's idle gap between the end of one
step's work and its next batch being ready is the input time that matters there.

Example:
    >>> timeline = StepTimeline(capacity=4)
    >>> timeline.request(0); timeline.handout(2_000, waited=1_500, ready=0, in_flight=2)
    >>> timeline.request(10_000); timeline.steps, int(timeline.input_ns[0]), int(timeline.step_ns[0])
    (1, 2000, 8000)
"""

from __future__ import annotations

import collections
from typing import Any

import numpy as np

CAPACITY = 4096


class StepTimeline:
    """The first ``capacity`` steps' times in arrays, and running sums over all steps; see the docstring."""

    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        self.start_ns = np.zeros(capacity, np.int64)  # request time, from the first request
        self.input_ns = np.zeros(capacity, np.int64)  # request -> handout
        self.wait_ns = np.zeros(capacity, np.int64)  # of which: waiting for the workers
        self.step_ns = np.full(capacity, -1, np.int64)  # handout -> next request (-1: not ended)
        self.copy_ns = np.zeros(capacity, np.int64)  # CPU time spent issuing the device copy
        self.ready = np.zeros(capacity, np.int16)  # batches finished in the queue at the request
        self.in_flight = np.zeros(capacity, np.int16)
        self.headspace = np.zeros(capacity, bool)  # fed from the cached batch
        self.gpu_input_ms = np.full(capacity, np.nan)
        self.gpu_step_ms = np.full(capacity, np.nan)
        self.gpu_copy_ms = np.full(capacity, np.nan)
        self.steps = 0  # ended steps
        self.sums = {"input": 0, "wait": 0, "step": 0, "copy": 0, "starved": 0}  # over real (not headspace) steps
        self._origin: int | None = None
        self._requested: int | None = None
        self._handed: int | None = None
        self._handed_headspace = False
        self._request_event: Any = None
        self._copy_pending = 0
        self._events: collections.deque[tuple[int, str, Any, Any]] = collections.deque()
        self._last_handout_event: Any = None

    def request(self, now: int, event: Any = None) -> None:
        """The loop asks for a batch at ``now`` (perf_counter_ns): the step handed out before has ended."""
        if self._origin is None:
            self._origin = now
        if self._handed is not None:
            k = self.steps
            step = now - self._handed
            if k < self.capacity:
                self.step_ns[k] = step
                if event is not None and self._last_handout_event is not None:
                    self._events.append((k, "step", self._last_handout_event, event))
            if not self._handed_headspace:
                self.sums["step"] += step
            self.steps += 1
            self._handed = None
        self._requested, self._request_event = now, event
        self._resolve()

    def copied(self, nanoseconds: int, events: tuple[Any, Any] | None = None) -> None:
        """The batch about to be handed out took ``nanoseconds`` (CPU) to issue its copy to the device."""
        self._copy_pending += nanoseconds
        if events is not None and self.steps < self.capacity:
            self._events.append((self.steps, "copy", *events))

    def handout(
        self, now: int, waited: int, ready: int, in_flight: int, headspace: bool = False, event: Any = None
    ) -> None:
        """The Loader hands a batch over at ``now``, after ``waited`` ns of waiting for the workers."""
        if self._requested is None:
            return
        k, total = self.steps, now - self._requested
        if k < self.capacity:
            self.start_ns[k] = self._requested - (self._origin or 0)
            self.input_ns[k], self.wait_ns[k], self.copy_ns[k] = total, waited, self._copy_pending
            self.ready[k], self.in_flight[k], self.headspace[k] = ready, in_flight, headspace
            if event is not None and self._request_event is not None:
                self._events.append((k, "input", self._request_event, event))
        if not headspace:
            self.sums["input"] += total
            self.sums["wait"] += waited
            self.sums["copy"] += self._copy_pending
            self.sums["starved"] += ready == 0
        self._copy_pending = 0
        self._handed, self._requested, self._last_handout_event = now, None, event
        self._handed_headspace = headspace

    def real(self) -> np.ndarray:
        """Mask of the kept, ended steps that were fed by the pipeline (not the cached headspace batch)."""
        kept = min(self.steps, self.capacity)
        return ~self.headspace[:kept]

    def headspace_steps(self) -> np.ndarray:
        """The kept, ended headspace steps' total times (input + step), ns."""
        kept = min(self.steps, self.capacity)
        mask = self.headspace[:kept]
        return self.input_ns[:kept][mask] + self.step_ns[:kept][mask]

    def real_steps(self) -> int:
        return self.steps - int(self.headspace[: min(self.steps, self.capacity)].sum())

    def finish_gpu(self) -> None:
        """Wait for every recorded CUDA event once (at report time) and read them all."""
        if self._events:
            import torch

            torch.cuda.synchronize()
            self._resolve()

    def _resolve(self) -> None:
        """Read the event pairs that have completed, oldest first; stop at the first still pending."""
        columns = {"input": self.gpu_input_ms, "step": self.gpu_step_ms, "copy": self.gpu_copy_ms}
        while self._events:
            k, kind, begin, end = self._events[0]
            if not end.query():
                return
            self._events.popleft()
            columns[kind][k] = begin.elapsed_time(end)
