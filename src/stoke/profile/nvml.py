"""GPU utilisation and memory while a profiled loop runs, sampled a few times a second.

For: the report's GPU line when a CUDA device is in use. Through NVML (``pynvml``, from the
``nvidia-ml-py`` package) when it is importable; otherwise torch's own memory counters only (utilisation
then is not measured, and the report says so). Without a GPU nothing is sampled and the report states it.
Not for: timing steps (``timeline.py`` uses CUDA events).

Example:
    >>> sampler = GpuSampler(None)  # no device: nothing to sample
    >>> sampler.start(); sampler.stop(); sampler.summary()
    {'available': False}
"""

from __future__ import annotations

import threading
from typing import Any

INTERVAL = 0.2  # seconds between samples


class GpuSampler:
    """A daemon thread sampling utilisation (%) and memory (bytes) of one CUDA device."""

    def __init__(self, device: Any, interval: float = INTERVAL) -> None:
        self.device = device
        self.interval = interval
        self.utilisation: list[float] = []
        self.memory: list[int] = []
        self.source = "none"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._handle: Any = None

    def start(self) -> None:
        if self.device is None:
            return
        import torch

        if not torch.cuda.is_available():
            return
        index = self.device.index if getattr(self.device, "index", None) is not None else torch.cuda.current_device()
        self._index = index
        try:
            import pynvml

            pynvml.nvmlInit()
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            self.source = "nvml"
        except Exception:  # no NVML library or bindings: memory from torch only
            self.source = "torch"
        self._thread = threading.Thread(target=self._run, name="stoke-gpu-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2 * self.interval + 1)

    def summary(self) -> dict[str, Any]:
        if self.source == "none":
            return {"available": False}
        found: dict[str, Any] = {"available": True, "source": self.source}
        if self.utilisation:
            found["mean_utilisation_percent"] = round(sum(self.utilisation) / len(self.utilisation), 1)
        else:
            found["utilisation"] = "not measured (NVML needs nvidia-ml-py: pip install 'stoke[profile]')"
        if self.memory:
            found["peak_memory_bytes"] = max(self.memory)
        return found

    def _run(self) -> None:
        import torch

        while not self._stop.wait(self.interval):
            try:
                if self._handle is not None:
                    import pynvml

                    self.utilisation.append(float(pynvml.nvmlDeviceGetUtilizationRates(self._handle).gpu))
                    self.memory.append(int(pynvml.nvmlDeviceGetMemoryInfo(self._handle).used))
                else:
                    self.memory.append(int(torch.cuda.memory_reserved(self._index)))
            except Exception:  # a sampling hiccup loses one sample, never the training loop
                continue
