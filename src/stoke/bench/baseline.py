"""The baseline stoke is measured against: the DataLoader users write today.

A ``torch.utils.data.Dataset`` that opens each file with Pillow, converts it to RGB, and applies
RandomResizedCrop(224) and a horizontal flip, then turns it into a uint8 CHW tensor. These are
torchvision's transforms re-implemented line for line, since torchvision does not load on every machine
stoke runs on: ``get_params`` draws the crop the same way, the crop and bilinear resize go through Pillow as
``torchvision.transforms.functional`` does for Pillow images, and ``PILToTensor`` is ``np.array`` plus a
permute. Batched by ``DataLoader(num_workers=cores, persistent_workers=True, batch_size=64, shuffle=True)``.

Two additions no user would notice, for an interrupted benchmark: each worker dies with the benchmark
(``stoke.lifecycle.prepare_worker``, also leaving Ctrl-C to it), and :meth:`ImageFiles.stop` makes the
items still to come in the workers' batches cheap blanks, so that the DataLoader's own shutdown, which
lets each worker finish the batch in hand, is over in a moment rather than a batch of decodes later.

Example:
    >>> import tempfile, pathlib
    >>> from stoke.bench.images import bench_images
    >>> folder = bench_images(pathlib.Path(tempfile.mkdtemp()), count=2)
    >>> image, label = ImageFiles.from_folder(folder)[0]
    >>> tuple(image.shape), image.dtype, label
    ((3, 224, 224), torch.uint8, 0)
"""

from __future__ import annotations

import ctypes
import io
import math
import multiprocessing
import random
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from stoke.lifecycle import prepare_worker

SIZE = 224
SCALE = (0.08, 1.0)
RATIO = (3 / 4, 4 / 3)


class ImageFiles(torch.utils.data.Dataset):
    """Image files (or stored image bytes) with labels, decoded and augmented with Pillow per item."""

    def __init__(
        self,
        items: Sequence[Path | bytes],
        labels: Sequence[int],
        transform: Callable[[np.ndarray], np.ndarray | None] | None = None,
    ) -> None:
        self.items = list(items)
        self.labels = list(labels)
        self.transform = transform  # on the HWC uint8 array after crop and flip (``--user-transform``)
        # Shared with the forked workers: set when the benchmark is interrupted.
        self._stopped = multiprocessing.RawValue(ctypes.c_bool, False)

    @classmethod
    def from_folder(
        cls, folder: Path, transform: Callable[[np.ndarray], np.ndarray | None] | None = None
    ) -> ImageFiles:
        """Every image below ``folder/CLASS/`` (ImageFolder layout), classes numbered in name order."""
        from stoke.sources import ImageFolderSource

        source = ImageFolderSource(folder)
        return cls([folder / path for path in source.paths], source.labels.tolist(), transform)

    def __len__(self) -> int:
        return len(self.items)

    def stop(self) -> None:
        """From now on, in every worker, items are blank images made at once (see the module docstring)."""
        self._stopped.value = True

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if self._stopped.value:
            return torch.zeros((3, SIZE, SIZE), dtype=torch.uint8), self.labels[index]
        item = self.items[index]
        image = Image.open(item if isinstance(item, Path) else io.BytesIO(item)).convert("RGB")
        top, left, height, width = random_resized_crop_params(image.height, image.width)
        image = image.crop((left, top, left + width, top + height)).resize((SIZE, SIZE), Image.BILINEAR)
        if random.random() < 0.5:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        pixels = np.array(image)
        if self.transform is not None:
            changed = self.transform(pixels)
            pixels = pixels if changed is None else changed
        return torch.from_numpy(pixels).permute(2, 0, 1), self.labels[index]


def random_resized_crop_params(height: int, width: int) -> tuple[int, int, int, int]:
    """torchvision's ``RandomResizedCrop.get_params`` with Python's ``random`` (what workers seed)."""
    area = height * width
    log_ratio = (math.log(RATIO[0]), math.log(RATIO[1]))
    for _ in range(10):
        target_area = area * random.uniform(*SCALE)
        aspect = math.exp(random.uniform(*log_ratio))
        crop_width = round(math.sqrt(target_area * aspect))
        crop_height = round(math.sqrt(target_area / aspect))
        if 0 < crop_width <= width and 0 < crop_height <= height:
            return (
                random.randint(0, height - crop_height),
                random.randint(0, width - crop_width),
                crop_height,
                crop_width,
            )
    in_ratio = width / height
    if in_ratio < RATIO[0]:
        crop_width, crop_height = width, round(width / RATIO[0])
    elif in_ratio > RATIO[1]:
        crop_height, crop_width = height, round(height * RATIO[1])
    else:
        crop_height, crop_width = height, width
    return (height - crop_height) // 2, (width - crop_width) // 2, crop_height, crop_width


def baseline_loader(dataset: ImageFiles, workers: int, batch_size: int = 64) -> torch.utils.data.DataLoader:
    """The DataLoader as users configure it for speed (its workers die with this process)."""
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        persistent_workers=workers > 0,
        worker_init_fn=_prepare_worker,
    )


def _prepare_worker(worker_id: int) -> None:
    prepare_worker()
