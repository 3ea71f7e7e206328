"""Auto-tuning against every hand-picked setting, on the `stoke bench` set, in one run.

For threads in {1, 2, 3, 4} x prefetch in {1, 2, 4, 8}, and for the default ``"auto"``, this loads the
packed benchmark set with RandomResizedCrop(224) + flip, one warm-up epoch then ``--epochs`` measured
(median). Configurations are interleaved epoch by epoch so that drift hits them alike. It prints each
rate and the ratio of auto to the best hand-picked setting.

Run:  .venv/bin/python benchmarks/autotune.py [--images 5000] [--epochs 3]
"""

from __future__ import annotations

import argparse
import itertools
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
    args = parser.parse_args()
    cache = default_home() / "bench"
    folder = bench_images(cache, args.images)
    packed = cache / "packs" / f"{folder.name}-autotune"
    if not (packed / "manifest.json").exists():
        stoke.pack(folder, packed, overwrite=True, progress=False)
    dataset = stoke.open(packed)
    transforms = {"image": [RandomResizedCrop(224), RandomHorizontalFlip()]}
    settings = [(t, p) for t, p in itertools.product((1, 2, 3, 4), (1, 2, 4, 8))] + [("auto", "auto")]
    loaders = {
        key: stoke.Loader(
            dataset, 64, shuffle=True, transforms=transforms, fields=["image"], num_threads=key[0], prefetch=key[1]
        )
        for key in settings
    }
    medians = median_rates(loaders, args.epochs)
    best = max((key for key in settings if key != ("auto", "auto")), key=medians.get)
    for key in settings:
        print(f"threads {key[0]!s:>4} prefetch {key[1]!s:>4}: {medians[key]:7,.0f} images/s")
    auto = loaders[("auto", "auto")].stats()["autotune"]
    ratio = medians[("auto", "auto")] / medians[best]
    print(
        f"best hand-picked: threads {best[0]}, prefetch {best[1]}; auto settled on threads {auto['threads']}, "
        f"prefetch {auto['prefetch']} ({auto['state']}); auto / best = {ratio:.3f}"
    )
    print(
        json.dumps(
            {
                "best": list(best),
                "best_rate": medians[best],
                "auto_rate": medians[("auto", "auto")],
                "auto_over_best": ratio,
                "auto": {k: auto[k] for k in ("threads", "prefetch", "state")},
            }
        )
    )


if __name__ == "__main__":
    main()
