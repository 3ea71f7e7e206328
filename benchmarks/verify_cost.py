"""What checking every sample's checksum costs the Loader, on the `stoke bench` set, in one run.

Loads the packed benchmark set (JPEGs as stored, and the same images as raw pixels) with
RandomResizedCrop(224) + flip, with ``verify=True`` and ``verify=False``, interleaved epoch by epoch, one
warm-up then ``--epochs`` measured; prints the medians and the cost of verifying as a share of
throughput. Issue 4 keeps verification on by default where it costs under 3%.

Run:  .venv/bin/python benchmarks/verify_cost.py [--images 5000] [--epochs 3] [--modes keep,raw]
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
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--modes", default="keep,raw")
    args = parser.parse_args()
    cache = default_home() / "bench"
    folder = bench_images(cache, args.images)
    transforms = {"image": [RandomResizedCrop(224), RandomHorizontalFlip()]}
    loaders = {}
    for mode in args.modes.split(","):
        packed = cache / "packs" / f"{folder.name}-verify-{mode}"
        if not (packed / "manifest.json").exists():
            stoke.pack(folder, packed, image_mode=mode, overwrite=True, progress=False)
        dataset = stoke.open(packed)
        for verify in (True, False):
            loaders[(mode, verify)] = stoke.Loader(dataset, 64, transforms=transforms, fields=["image"], verify=verify)
    medians = median_rates(loaders, args.epochs)
    result = {}
    for mode in args.modes.split(","):
        checked, unchecked = medians[(mode, True)], medians[(mode, False)]
        result[mode] = {
            "verify_images_per_s": checked,
            "no_verify_images_per_s": unchecked,
            "cost": 1 - checked / unchecked,
        }
        print(
            f"{mode:>5}: verify {checked:8,.0f} images/s, no verify {unchecked:8,.0f}: "
            f"costs {1 - checked / unchecked:+.1%}"
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
