"""``stoke train``: a named model trained on a packed dataset, its splits giving train and validation.

It chooses what a script would: the ``train`` split (or every sample when the dataset has no stored
splits), the ImageNet recipe of transforms (RandomResizedCrop and flip for training, resize and centre crop
for validation, then Normalize), a model from ``stoke.train.models`` sized to the dataset's channels and
classes, and hands the rest to ``stoke.train.loop.fit``. Not for: datasets without an image field and an
int label (write your own loop from ``fit``), or other losses and tasks.

Example (``stoke train photos.stoke --model small-cnn --batch-size 2 --image-size 8`` does the same):
    >>> import pathlib, tempfile, numpy as np, stoke
    >>> from PIL import Image
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for i in range(4):
    ...     (root / "photos" / f"class{i % 2}").mkdir(parents=True, exist_ok=True)
    ...     Image.fromarray(np.full((8, 8, 3), 60 * i, np.uint8)).save(root / "photos" / f"class{i % 2}" / f"{i}.png")
    >>> _ = stoke.pack(root / "photos", root / "photos.stoke", workers=1, progress=False)
    >>> summary = run_training(
    ...     root / "photos.stoke", model="small-cnn", batch_size=2, image_size=8, device="cpu", log=lambda line: None
    ... )
    >>> summary["steps"], summary["val_accuracy"]  # no stored splits: every sample trains, none validates
    (2, None)
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stoke.errors import ConfigError
from stoke.format.fields import ImageField
from stoke.loader import Loader
from stoke.ops import CenterCrop, Normalize, RandomHorizontalFlip, RandomResizedCrop, Resize
from stoke.read import open as open_dataset
from stoke.train.loop import fit, pick_device
from stoke.train.models import MODELS, build_model

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def run_training(
    dataset: str | os.PathLike[str],
    *,
    model: str = "resnet18",
    epochs: int = 1,
    batch_size: int = 256,
    lr: float = 3e-3,
    amp: str = "auto",
    channels_last: bool = True,
    compile_model: bool = False,
    logdir: str | os.PathLike[str] | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    checkpoint_every: int = 0,
    resume: bool = False,
    val_split: str | None = "val",
    image_size: int = 224,
    seed: int = 0,
    device: str | None = None,
    progress: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train ``model`` on ``dataset`` for ``epochs``; returns the summary ``stoke train --json`` prints.

    ``val_split`` None (or ``"none"``) trains without validation. See ``fit`` for the other settings.
    """
    if model not in MODELS:
        raise ConfigError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
    if image_size < 1 or batch_size < 1:
        raise ConfigError(f"image size and batch size must be positive, got {image_size} and {batch_size}")
    started = time.perf_counter()
    opened = open_dataset(dataset)
    image_name, label_name = _image_and_label(opened)
    train_view, val_view = _train_and_val(opened, None if val_split in (None, "none") else val_split, log)
    channels = opened.fields[image_name].channels
    num_classes = _num_classes(opened, label_name)

    torch_device = pick_device(device)
    on_cuda = torch_device.type == "cuda"
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else ([0.5] * channels, [0.5] * channels)
    loader_options = {
        "fields": [image_name, label_name],
        "device": torch_device if on_cuda else None,  # pinned buffers; Normalize then runs on the GPU
        "channels_last": channels_last and on_cuda,
        "seed": seed,
    }
    train = Loader(
        train_view,
        batch_size,
        shuffle=True,
        drop_last=True,  # equal batches: BatchNorm needs more than one sample, and compiled graphs one shape
        transforms={image_name: [RandomResizedCrop(image_size), RandomHorizontalFlip(), Normalize(mean, std)]},
        **loader_options,
    )
    if len(train) == 0:
        raise ConfigError(
            f"{dataset} has {len(train_view)} training samples, fewer than one batch of {batch_size}; "
            f"pass a smaller --batch-size"
        )
    val = None
    if val_view is not None:
        resize = Resize(max(image_size, round(image_size / 0.875)))  # the usual 256 -> 224 ratio
        val = Loader(
            val_view,
            batch_size,
            shuffle=False,
            transforms={image_name: [resize, CenterCrop(image_size), Normalize(mean, std)]},
            **loader_options,
        )
    log(
        f"training {model} ({channels} channel{'s' if channels > 1 else ''}, {num_classes} classes) on "
        f"{len(train_view):,} samples of {dataset}, validating on {len(val_view) if val_view is not None else 0:,}"
    )

    torch.manual_seed(seed)
    network = build_model(model, channels, num_classes)
    try:
        result = fit(
            network,
            train,
            val,
            epochs=epochs,
            lr=lr,
            device=torch_device,
            amp=amp,
            channels_last=channels_last,
            compile_model=compile_model,
            logdir=logdir,
            checkpoint_dir=checkpoint,
            checkpoint_every=checkpoint_every,
            resume=resume,
            progress=progress,
            log=log,
        )
    finally:
        train.close()
        if val is not None:
            val.close()
    history = result.history
    seconds = sum(entry["seconds"] for entry in history)
    return {
        "dataset": str(dataset),
        "model": model,
        "device": result.device,
        "amp": result.amp,
        "steps": result.steps,
        "val_accuracy": history[-1]["val_accuracy"] if history else None,
        "samples_per_s": sum(entry["samples"] for entry in history) / seconds if seconds > 0 else 0.0,
        "data_wait_fraction": sum(entry["wait_seconds"] for entry in history) / seconds if seconds > 0 else 0.0,
        "seconds": time.perf_counter() - started,
        "checkpoint": str(Path(checkpoint) / "last.pt") if checkpoint is not None else None,
        "logdir": str(logdir) if logdir is not None else None,
        "epochs": history,
    }


def _image_and_label(dataset: Any) -> tuple[str, str]:
    """The image field (``image``, or the only one) and the int ``label`` field, or a ConfigError."""
    images = [name for name, field in dataset.fields.items() if isinstance(field, ImageField)]
    image = "image" if "image" in images else images[0] if len(images) == 1 else None
    if image is None:
        raise ConfigError(
            f"{dataset.root} has {len(images)} image fields ({', '.join(images) or 'none'}); stoke train needs one "
            f"named 'image' (or exactly one)"
        )
    label = dataset.fields.get("label")
    if label is None or label.type_name != "int":
        raise ConfigError(f"{dataset.root} has no int field 'label'; stoke train needs class labels to learn")
    return image, "label"


def _train_and_val(dataset: Any, val_split: str | None, log: Callable[[str], None]) -> tuple[Any, Any]:
    """The train and validation views: stored splits when there are any, else every sample and no validation."""
    if not dataset.has_splits():  # a remote dataset too: its root is a URL
        log(f"{dataset.root} has no splits: training on every sample, no validation (`stoke split` makes them)")
        return dataset, None
    parts = dataset.splits().parts
    if "train" not in parts:
        raise ConfigError(f"{dataset.root} has no 'train' split (its splits are {sorted(parts)}); run `stoke split`")
    if val_split is not None and val_split not in parts:
        raise ConfigError(
            f"{dataset.root} has no split {val_split!r} to validate on (its splits are {sorted(parts)}); "
            f"pass --val-split NAME, or --val-split none"
        )
    return dataset.select(parts["train"]), dataset.select(parts[val_split]) if val_split is not None else None


def _num_classes(dataset: Any, label: str) -> int:
    """The class names' count when the dataset lists them, else the largest label plus one."""
    classes = dataset.manifest.field_entry(label).classes
    labels = dataset.column(label)
    if len(labels) and labels.min() < 0:
        raise ConfigError(f"{dataset.root} has negative labels (sample {int(np.argmin(labels))}); labels are 0..C-1")
    largest = int(labels.max()) + 1 if len(labels) else 0
    if classes is not None and largest > len(classes):
        raise ConfigError(f"{dataset.root} has label {largest - 1} but lists only {len(classes)} classes; re-pack it")
    return len(classes) if classes is not None else max(largest, 1)
