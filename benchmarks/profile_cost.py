"""What profiling costs the Loader's throughput, on the `stoke bench` set, in one run.

Loads the packed benchmark set with RandomResizedCrop(224) + flip twice, unprofiled and with
``profile=True`` (every step and stage timed, no step limit), interleaved epoch by epoch, one warm-up then
``--epochs`` measured; prints the medians and the overhead ratio. The issue's budget is 3%.

Run:  .venv/bin/python benchmarks/profile_cost.py [--images 5000] [--epochs 5] [--threads N]
"""

from __future__ import annotations

import argparse
import json

import stoke
from stoke.bench.images import bench_images
from stoke.bench.interleave import median_rates
from stoke.home import default_home
from stoke.ops import RandomHorizontalFlip, RandomResizedCrop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="worker threads (default: auto)")
    args = parser.parse_args()
    cache = default_home() / "bench"
    folder = bench_images(cache, args.images)
    packed = cache / "packs" / f"{folder.name}-profile"
    if not (packed / "manifest.json").exists():
        stoke.pack(folder, packed, overwrite=True, progress=False)
    dataset = stoke.open(packed)
    transforms = {"image": [RandomResizedCrop(224), RandomHorizontalFlip()]}
    threads = args.threads or "auto"
    loaders = {
        profiled: stoke.Loader(
            dataset, 64, transforms=transforms, fields=["image"], num_threads=threads, profile=profiled
        )
        for profiled in (False, True)
    }
    medians = median_rates(loaders, args.epochs)
    overhead = 1 - medians[True] / medians[False]
    print(
        f"unprofiled {medians[False]:8,.0f} images/s, profiled {medians[True]:8,.0f} images/s: "
        f"profiling costs {overhead:+.1%} (budget 3%)"
    )
    print(
        json.dumps(
            {"unprofiled_images_per_s": medians[False], "profiled_images_per_s": medians[True], "cost": overhead}
        )
    )
    for loader in loaders.values():
        loader.close()


if __name__ == "__main__":
    main()
