"""What profiling costs the Loader's throughput, on the `stoke bench` set, in one run.

Loads the packed benchmark set with RandomResizedCrop(224) + flip twice, unprofiled and with
``profile=True`` (every step and stage timed, no step limit), plus a second unprofiled loader as a control
for the noise, interleaved epoch by epoch, one warm-up then ``--epochs`` measured; prints the medians and
the overhead against the mean of the two unprofiled loaders. The issue's budget is 3%.

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
    # A second unprofiled loader is the control: its gap to the first is the noise of the measurement.
    settings = {"unprofiled": False, "control": False, "profiled": True}
    loaders = {
        name: stoke.Loader(
            dataset, 64, shuffle=True, transforms=transforms, fields=["image"], num_threads=threads, profile=profiled
        )
        for name, profiled in settings.items()
    }
    medians = median_rates(loaders, args.epochs)
    reference = (medians["unprofiled"] + medians["control"]) / 2
    overhead = 1 - medians["profiled"] / reference
    noise = abs(medians["unprofiled"] - medians["control"]) / reference
    print(
        f"unprofiled {medians['unprofiled']:8,.0f} and {medians['control']:8,.0f} images/s (noise {noise:.1%}), "
        f"profiled {medians['profiled']:8,.0f} images/s: profiling costs {overhead:+.1%} (budget 3%)"
    )
    print(json.dumps({**{f"{name}_images_per_s": rate for name, rate in medians.items()}, "cost": overhead}))
    for loader in loaders.values():
        loader.close()


if __name__ == "__main__":
    main()
