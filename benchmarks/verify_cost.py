"""What checking samples' checksums costs the Loader, on the `stoke bench` set, in one run.

Loads the packed benchmark set (JPEGs as stored, and the same images as raw pixels) with
RandomResizedCrop(224) + flip, with ``verify="always"``, ``"once"`` (the default) and ``"never"``,
interleaved epoch by epoch, one warm-up then ``--epochs`` measured; prints the medians and each mode's
cost as a share of the unchecked throughput. The warm-up epoch is where "once" does its checking.

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
from stoke.pipeline.reader import VERIFY_MODES


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
        for verify in VERIFY_MODES:
            loaders[(mode, verify)] = stoke.Loader(
                dataset, 64, shuffle=True, transforms=transforms, fields=["image"], verify=verify
            )
    medians = median_rates(loaders, args.epochs)
    result = {}
    for mode in args.modes.split(","):
        unchecked = medians[(mode, "never")]
        result[mode] = {f"{verify}_images_per_s": medians[(mode, verify)] for verify in VERIFY_MODES}
        result[mode].update({f"{verify}_cost": 1 - medians[(mode, verify)] / unchecked for verify in VERIFY_MODES})
        print(
            f"{mode:>5}: "
            + ", ".join(f"{verify} {medians[(mode, verify)]:8,.0f} images/s" for verify in VERIFY_MODES)
            + "; checking costs "
            + ", ".join(f"{1 - medians[(mode, verify)] / unchecked:+.1%} ({verify})" for verify in ("always", "once"))
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
