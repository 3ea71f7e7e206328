"""The reference training loop: short, explicit, the loop PyTorch users know, fed by a stoke Loader.

It measures the one number a data loader answers for: how long each step waited for its batch. Copy it
into your own script; there is nothing here but a timer around ``next(batches)``.

Example:
    >>> import numpy as np, torch, stoke
    >>> data = {"image": np.zeros((8, 1, 8, 8), np.float32), "label": np.zeros(8, np.int64)}
    >>> loader = stoke.Loader(data, batch_size=4)
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    >>> stats = train_one_epoch(model, loader, torch.optim.SGD(model.parameters(), lr=0.1), torch.device("cpu"))
    >>> stats.samples
    8
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - the name every PyTorch tutorial uses


@dataclass
class EpochStats:
    samples: int
    seconds: float
    wait_seconds: float
    loss: float

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else 0.0

    @property
    def data_wait_fraction(self) -> float:
        return self.wait_seconds / self.seconds if self.seconds > 0 else 0.0


def train_one_epoch(
    model: torch.nn.Module,
    loader: Iterable[dict[str, Any]],
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
) -> EpochStats:
    """One pass over ``loader`` (``scheduler`` steps per batch); returns throughput, data wait and mean loss."""
    model.train()
    samples, wait, total_loss = 0, 0.0, torch.zeros((), device=device)
    started = time.perf_counter()
    batches = iter(loader)
    while True:
        waiting = time.perf_counter()
        batch = next(batches, None)
        wait += time.perf_counter() - waiting
        if batch is None:
            break
        images = batch["image"].to(device, non_blocking=True)
        labels = batch["label"].to(device, non_blocking=True)
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total_loss += loss.detach() * len(labels)
        samples += len(labels)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    return EpochStats(samples, seconds, wait, float(total_loss) / max(samples, 1))


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: Iterable[dict[str, Any]], device: torch.device) -> float:
    """Top-1 accuracy of ``model`` over ``loader``."""
    model.eval()
    correct, total = 0, 0
    for batch in loader:
        images = batch["image"].to(device, non_blocking=True)
        labels = batch["label"].to(device, non_blocking=True)
        correct += int((model(images).argmax(dim=1) == labels).sum())
        total += len(labels)
    return correct / max(total, 1)
