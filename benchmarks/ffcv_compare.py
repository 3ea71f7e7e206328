"""stoke against FFCV: the same JPEGs, the same cores, measured in the same run.

Writes the image folder twice, timed: into an FFCV ``.beton`` (``RGBImageField(write_mode='jpg',
jpeg_quality=90)``, no ``max_resolution``: full-size JPEGs, which FFCV decodes and re-encodes) and into a
stoke pack (``image_mode='keep'``: the original JPEG bytes). Then loads both, epoch by epoch in turn
(the order alternates each epoch), batch 64, RandomResizedCrop(224) + horizontal flip, uint8 NCHW images
and int labels, random order, ``threads`` threads each. The first epoch of each is warm-up (it includes
FFCV's numba JIT compile) and is excluded; each figure is the median of the other epochs. Reports
images/s, the ratio stoke / FFCV, CPU % and the writers' images/s.

stoke never depends on FFCV; this script imports it and needs a venv holding both::

    apt-get install pkg-config libturbojpeg0-dev libopencv-dev
    python3.11 -m venv /tmp/ffcv-venv && /tmp/ffcv-venv/bin/pip install torch==2.13.0
    /tmp/ffcv-venv/bin/pip install ffcv==1.0.2 && /tmp/ffcv-venv/bin/pip install -e .
    /tmp/ffcv-venv/bin/python benchmarks/ffcv_compare.py [--images-dir DIR] [--epochs 4] [--json]
"""

from __future__ import annotations

import argparse
import functools
import importlib.metadata
import json
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

import stoke
from stoke.bench.images import bench_images
from stoke.bench.meter import Meter
from stoke.bench.run import describe_machine
from stoke.machine import available_cores
from stoke.ops import RandomHorizontalFlip, RandomResizedCrop
from stoke.pack import pack
from stoke.sources import ImageFolderSource

SIZE = 224
INSTALL = (
    "ffcv is not importable: run `apt-get install pkg-config libturbojpeg0-dev libopencv-dev`, then "
    "`pip install ffcv` in a separate venv that also has stoke installed via `pip install -e /work/main`, "
    "and run this script with that venv's python."
)


class FolderImages:
    """The ImageFolder as FFCV's writer wants it: ``(RGB uint8 HWC array, label)`` per index."""

    def __init__(self, folder: Path) -> None:
        source = ImageFolderSource(folder)
        self.paths = [folder / path for path in source.paths]
        self.labels = [int(label) for label in source.labels]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        with Image.open(self.paths[index]) as image:
            return np.asarray(image.convert("RGB")), self.labels[index]


def write_ffcv(folder: Path, beton: Path, threads: int) -> Meter:
    import ffcv.writer
    from ffcv.fields import IntField, RGBImageField
    from ffcv.writer import DatasetWriter

    ffcv.writer.tqdm = functools.partial(ffcv.writer.tqdm, disable=True)  # its progress bar, on stderr
    fields = {"image": RGBImageField(write_mode="jpg", jpeg_quality=90), "label": IntField()}
    with Meter() as meter:
        DatasetWriter(str(beton), fields, num_workers=threads).from_indexed_dataset(FolderImages(folder))
    return meter


def ffcv_loader(beton: Path, threads: int, batch_size: int) -> Any:
    from ffcv.fields.decoders import IntDecoder, RandomResizedCropRGBImageDecoder
    from ffcv.loader import Loader, OrderOption
    from ffcv.transforms import RandomHorizontalFlip as FlipFFCV
    from ffcv.transforms import ToTensor, ToTorchImage

    pipelines = {
        "image": [RandomResizedCropRGBImageDecoder((SIZE, SIZE)), FlipFFCV(), ToTensor(), ToTorchImage()],
        "label": [IntDecoder(), ToTensor()],
    }
    return Loader(
        str(beton),
        batch_size=batch_size,
        num_workers=threads,
        order=OrderOption.RANDOM,
        seed=0,
        os_cache=True,
        drop_last=False,
        pipelines=pipelines,
    )


def drain(batches: Any, layouts: dict[str, str], name: str) -> int:
    """Consume an epoch, checking every image batch is uint8 N x 3 x 224 x 224; returns the image count."""
    count = 0
    for batch in batches:
        images = batch["image"] if isinstance(batch, dict) else batch[0]
        if images.dtype != torch.uint8 or tuple(images.shape[1:]) != (3, SIZE, SIZE):
            raise AssertionError(f"{name} gave {images.dtype} {tuple(images.shape)}")
        layouts.setdefault(name, "contiguous NCHW" if images.is_contiguous() else "channels_last strides")
        count += len(images)
    return count


def run(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    folder = args.images_dir
    if not folder.is_dir():
        folder = bench_images(folder.parent, count=5000)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="ffcv-compare-"))
    work.mkdir(parents=True, exist_ok=True)
    for path in folder.rglob("*"):  # both writers then read the source from the page cache
        if path.is_file():
            path.read_bytes()

    with Meter() as stoke_writer:
        packed = pack(
            folder, work / "stoke-pack", image_mode="keep", workers=args.threads, overwrite=True, progress=False
        )
    ffcv_writer = write_ffcv(folder, work / "images.beton", args.threads)
    count = packed.num_samples
    log(f"writers: stoke pack {count / stoke_writer.seconds:,.0f} images/s, FFCV {count / ffcv_writer.seconds:,.0f}")

    dataset = stoke.open(work / "stoke-pack")
    transforms = {"image": [RandomResizedCrop(SIZE), RandomHorizontalFlip()]}
    loaders = {
        "ffcv": ffcv_loader(work / "images.beton", args.threads, args.batch_size),
        "stoke": stoke.Loader(
            dataset,
            args.batch_size,
            shuffle=True,
            seed=0,
            transforms=transforms,
            fields=["image", "label"],
            num_threads=args.threads,
        ),
    }
    rates: dict[str, list[float]] = {name: [] for name in loaders}
    cpu: dict[str, list[float]] = {name: [] for name in loaders}
    rss: dict[str, float] = dict.fromkeys(loaders, 0.0)
    layouts: dict[str, str] = {}
    for epoch in range(args.epochs):
        for name in sorted(loaders, reverse=epoch % 2 == 1):  # ffcv first on even epochs, stoke on odd
            with Meter(children=False) as meter:
                images = drain(iter(loaders[name]), layouts, name)
            rates[name].append(images / meter.seconds)
            cpu[name].append(meter.cpu_percent)
            rss[name] = max(rss[name], meter.peak_rss_mb)
            warm = " (warm-up)" if epoch == 0 else ""
            log(f"  epoch {epoch}{warm} {name:<5} {rates[name][-1]:>7,.0f} images/s  {meter.cpu_percent:>4.0f}% CPU")
    loaders["stoke"].close()

    median = {name: statistics.median(values[1:]) for name, values in rates.items()}
    result = {
        "machine": describe_machine(args.threads),
        "versions": {name: importlib.metadata.version(name) for name in ("stoke", "ffcv", "numba", "numpy")},
        "images_dir": str(folder),
        "work_dir": str(work),
        "images": count,
        "threads": args.threads,
        "batch_size": args.batch_size,
        "measured_epochs": args.epochs - 1,
        "images_per_s": median,
        "ratio_stoke_over_ffcv": median["stoke"] / median["ffcv"],
        "cpu_percent": {name: statistics.median(values[1:]) for name, values in cpu.items()},
        "process_peak_rss_mb": rss,
        "per_epoch_images_per_s": rates,
        "output_layout": layouts,
        "writer_images_per_s": {"stoke": count / stoke_writer.seconds, "ffcv": count / ffcv_writer.seconds},
        "writer_cpu_percent": {"stoke": stoke_writer.cpu_percent, "ffcv": ffcv_writer.cpu_percent},
        "stored_mb": {"stoke": packed.total_bytes / 1e6, "ffcv": (work / "images.beton").stat().st_size / 1e6},
    }
    if args.work_dir is None:  # a temporary directory of our own: about 2x the images' size
        shutil.rmtree(work)
    return result


def report(result: dict[str, Any]) -> str:
    machine, versions = result["machine"], result["versions"]
    lines = [
        f"{result['images']:,} images from {result['images_dir']}, {result['threads']} threads, batch "
        f"{result['batch_size']}, median of {result['measured_epochs']} epochs after a warm-up",
        f"{machine['cpu']} ({machine['cpu_count']} CPUs), Python {machine['python']}, torch {machine['torch']}, "
        + ", ".join(f"{name} {version}" for name, version in versions.items()),
        f"{'':8} {'images/s':>9} {'CPU %':>6} {'proc RSS':>9} {'warm-up':>8} {'write/s':>8} {'stored':>8}  output",
    ]
    for name in ("ffcv", "stoke"):
        lines.append(
            f"{name:8} {result['images_per_s'][name]:>9,.0f} {result['cpu_percent'][name]:>5.0f}% "
            f"{result['process_peak_rss_mb'][name]:>6,.0f} MB {result['per_epoch_images_per_s'][name][0]:>8,.0f} "
            f"{result['writer_images_per_s'][name]:>8,.0f} {result['stored_mb'][name]:>5,.0f} MB  "
            f"{result['output_layout'][name]}"
        )
    lines.append(
        f"stoke / FFCV: {result['ratio_stoke_over_ffcv']:.2f}x loading (proc RSS: the whole process, which holds both "
        "loaders, while that one ran)"
    )
    lines.append(
        f"stoke / FFCV: {result['writer_images_per_s']['stoke'] / result['writer_images_per_s']['ffcv']:.2f}x writing "
        "(FFCV decodes and re-encodes every JPEG at quality 90; stoke keeps the original bytes)"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--images-dir",
        type=Path,
        default=Path("/tmp/bench-cache/images-v1-5000-seed0"),
        help="an ImageFolder; if missing, stoke's 5,000 benchmark JPEGs are generated beside it",
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="where the .beton and the stoke pack go (default: a temporary directory, removed)",
    )
    parser.add_argument("--epochs", type=int, default=4, help="epochs per loader, the first one warm-up")
    parser.add_argument("--threads", type=int, default=available_cores(), help="default: the cores available")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: the first is warm-up")
    try:
        import ffcv  # noqa: F401
    except (ImportError, OSError):
        print(INSTALL, file=sys.stderr)
        sys.exit(2)
    result = run(args, lambda line: print(line, file=sys.stderr, flush=True))
    print(json.dumps(result) if args.json else report(result))


if __name__ == "__main__":
    main()
