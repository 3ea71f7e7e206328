"""Batched RandomResizedCrop + flip on a tensor (``GeometryOnBatch``) against the CPU path's per-image render.

A fixed-size uint8 batch (``--batch`` images of ``--source`` pixels, smooth noise) is cropped to
``--size`` with ``RandomResizedCrop`` and ``RandomHorizontalFlip`` drawn for batch after batch:

* ``render``: the CPU image stage's OpenCV ``render`` of each image, one thread (the baseline);
* ``torch <device>``: ``GeometryOnBatch.apply`` on the whole batch (planning included), on CPU torch and
  on CUDA when available (synchronised before the clock stops).

It prints the median milliseconds per batch of each and the ratio to the baseline. The defaults are the
ImageNet shape (256 images of 256x256 to 224x224); try it small first.

Run:  .venv/bin/python benchmarks/device_ops.py [--batch 256] [--source 256] [--size 224] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from stoke.ops import RandomHorizontalFlip, RandomResizedCrop
from stoke.ops.base import BatchContext
from stoke.ops.geometry_batch import GeometryOnBatch, plan_geometries
from stoke.pipeline.image import render
from stoke.rng import sample_uniforms, stream_id


def median_ms(run: Callable[[int], object], repeats: int, synchronize: Callable[[], None] = lambda: None) -> float:
    run(0)  # warm-up: allocator, kernels
    synchronize()
    times = []
    for repeat in range(1, repeats + 1):
        started = time.perf_counter()
        run(repeat)
        synchronize()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--source", type=int, default=256, help="side of the square source images")
    parser.add_argument("--size", type=int, default=224, help="side of the square crops")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)  # like one loader worker; the CUDA timing does not depend on it
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, (args.batch, 3, args.source // 8 + 1, args.source // 8 + 1), dtype=np.uint8)
    images = torch.nn.functional.interpolate(torch.from_numpy(coarse).float(), size=(args.source, args.source))
    images = images.to(torch.uint8).contiguous()
    hwc = images.permute(0, 2, 3, 1).numpy().copy()
    ops = [RandomResizedCrop(args.size), RandomHorizontalFlip()]
    streams = [stream_id("image", 0), stream_id("image", 1)]
    batched = GeometryOnBatch(ops, streams)
    indices = np.arange(args.batch)
    out = np.empty((args.batch, 3, args.size, args.size), np.uint8)

    def per_image(epoch: int) -> None:
        uniforms = [sample_uniforms(0, epoch, s, indices, op.draws) for op, s in zip(ops, streams)]
        for row, geometry in enumerate(plan_geometries(ops, args.source, args.source, uniforms, args.batch)):
            render(hwc[row], args.source, args.source, geometry, out[row], channels_last=False)

    baseline = median_ms(per_image, args.repeats)
    print(f"{args.batch} images {args.source}x{args.source} -> {args.size}x{args.size}, median of {args.repeats}")
    print(f"  render (OpenCV, per image)  {baseline:9.1f} ms/batch")
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        batch = images.to(device)
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        took = median_ms(
            lambda epoch, batch=batch: batched.apply(batch, BatchContext(0, epoch, indices)), args.repeats, sync
        )
        print(f"  torch {device:<4} (whole batch)    {took:9.1f} ms/batch   {baseline / took:6.2f}x the render")


if __name__ == "__main__":
    main()
