"""``stoke demo``: the whole path on real data, with no download.

It writes scikit-learn's bundled handwritten digits (1,797 real 8x8 scans) as PNG files in ImageFolder
layout, packs them (grayscale, the PNG bytes kept as they are), splits them 80/20 stratified by label,
trains a small CNN with the Loader and the reference loop (``stoke.train.fit``, what ``stoke train`` runs) on
the CPU (or the GPU when there is one), and reports per-epoch throughput, the share of time the loop waited
for data, and validation accuracy.

Example (about ten seconds on two cores; ``tests/test_demo.py`` runs it)::

    summary = run_demo(epochs=12)
    summary["val_accuracy"], summary["samples_per_s"], summary["data_wait_fraction"]
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from stoke.extras import require
from stoke.home import default_home
from stoke.loader import Loader
from stoke.ops import Normalize
from stoke.pack import pack
from stoke.prepare.split import split_indices
from stoke.read import open as open_dataset
from stoke.train import SmallCNN, fit

DIGIT_COUNT = 1797


def write_digits(folder: Path) -> int:
    """Write the digits as ``folder/<label>/<index>.png`` (uint8, 0-16 scaled to 0-255); returns the count."""
    require("sklearn.datasets", extra="demo", what="stoke demo (its digits are scikit-learn's)")
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    temporary = folder.with_name(folder.name + ".partial")
    shutil.rmtree(temporary, ignore_errors=True)
    for index, (image, label) in enumerate(zip(pixels, digits.target)):
        directory = temporary / str(int(label))
        directory.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image, "L").save(directory / f"{index:04d}.png")
    shutil.rmtree(folder, ignore_errors=True)
    temporary.rename(folder)
    return len(pixels)


def run_demo(
    out: Path | None = None, epochs: int = 12, seed: int = 0, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Pack, split, train and evaluate; returns the summary that ``stoke demo --json`` prints."""
    started = time.perf_counter()
    home = Path(out) if out is not None else default_home() / "demo"
    images, dataset_path = home / "digits-png", home / "digits"
    if sum(1 for _ in images.glob("*/*.png")) != DIGIT_COUNT:
        write_digits(images)
    packed = pack(images, dataset_path, color_mode="L", overwrite=True, progress=False)
    log(f"packed {packed.num_samples:,} digit images into {dataset_path} ({packed.num_quarantined} quarantined)")

    dataset = open_dataset(dataset_path)
    parts = split_indices(len(dataset), {"train": 0.8, "val": 0.2}, seed=seed, labels=dataset.column("label"))
    normalize = {"image": [Normalize(mean=[0.5], std=[0.5])]}
    train = Loader(
        dataset.select(parts["train"]),
        64,
        shuffle=True,
        seed=seed,
        transforms=normalize,
        fields=["image", "label"],
    )
    val = Loader(dataset.select(parts["val"]), 256, shuffle=False, transforms=normalize, fields=["image", "label"])
    log(f"split {len(parts['train']):,} train / {len(parts['val']):,} validation (stratified by label, seed {seed})")

    torch.manual_seed(seed)
    model = SmallCNN(in_channels=1, num_classes=10)
    result = fit(model, train, val, epochs=epochs, lr=3e-3, weight_decay=1e-4, log=log)
    train.close()
    val.close()
    history = result.history
    train_seconds = sum(epoch["seconds"] for epoch in history)
    wait_seconds = sum(epoch["wait_seconds"] for epoch in history)
    samples = sum(epoch["samples"] for epoch in history)
    summary = {
        "val_accuracy": history[-1]["val_accuracy"],
        "samples_per_s": samples / train_seconds,
        "data_wait_fraction": wait_seconds / train_seconds,
        "seconds": time.perf_counter() - started,
        "dataset": str(dataset_path),
        "epochs": history,
    }
    log(
        f"validation accuracy {summary['val_accuracy']:.2%} on {result.device} in {summary['seconds']:.1f} s; "
        f"{summary['samples_per_s']:,.0f} samples/s, waited for data {summary['data_wait_fraction']:.1%} of the time; "
        f"dataset in {dataset_path}"
    )
    return summary
