"""stoke's crop-resize-flip kernel against OpenCV's resize + flip + CHW split, one thread, in one run.

For a few RandomResizedCrop-like crops (shrinking, enlarging, nearly 2× down) of a photograph
(scikit-learn's 427×640 china.jpg), it times the OpenCV route the image stage takes without the kernel
(``cv2.resize`` into an HWC buffer, ``cv2.flip`` in place, ``cv2.split`` into CHW planes) and the kernel
writing the flipped CHW planes, or the HWC row, in one pass. Rounds alternate between the routes; it
prints the median µs per image of each and the ratio, plus the largest difference in grey levels between
the two routes' pixels.

Run:  .venv/bin/python benchmarks/resize_kernel.py [--rounds 7] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable

import cv2
import numpy as np
from sklearn.datasets import load_sample_image

from stoke.pipeline import resample

CROPS = {  # name: (top, left, bottom, right) in the photograph, resized to 224x224
    "300x300 -> 224 (shrink 1.34)": (20, 40, 320, 340),
    "150x150 -> 224 (enlarge 1.49)": (100, 100, 250, 250),
    "375x430 -> 224 (shrink 1.67/1.92)": (0, 0, 375, 430),
    "90x400 -> 224 (mixed)": (5, 7, 95, 407),
}


def per_call_us(call: Callable[[], object], calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - started) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=300, help="calls per timed round")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not resample.available():
        sys.exit(f"stoke's kernel does not run here (backend: {resample.backend()}); nothing to compare")
    cv2.setNumThreads(1)
    image = load_sample_image("china.jpg")
    hwc, planes = np.empty((224, 224, 3), np.uint8), np.empty((3, 224, 224), np.uint8)
    kernel_planes = np.empty_like(planes)

    def opencv_route(region: np.ndarray) -> None:
        cv2.resize(region, (224, 224), dst=hwc, interpolation=cv2.INTER_LINEAR)
        cv2.flip(hwc, 1, dst=hwc)
        cv2.split(hwc, [planes[0], planes[1], planes[2]])

    results = {}
    for name, (top, left, bottom, right) in CROPS.items():
        region = image[top:bottom, left:right]
        routes = {
            "opencv_chw": lambda region=region: opencv_route(region),
            "stoke_chw": lambda region=region: resample.resize(
                region, kernel_planes, planar=True, flip_x=True, flip_y=False
            ),
            "stoke_hwc": lambda region=region: resample.resize(region, hwc, planar=False, flip_x=True, flip_y=False),
        }
        times: dict[str, list[float]] = {route: [] for route in routes}
        for round_ in range(args.rounds + 1):
            for route, call in routes.items():
                took = per_call_us(call, args.calls)
                if round_:  # the first round warms up
                    times[route].append(took)
        opencv_route(region)
        resample.resize(region, kernel_planes, planar=True, flip_x=True, flip_y=False)
        medians = {route: statistics.median(values) for route, values in times.items()}
        results[name] = {
            **{f"{route}_us": value for route, value in medians.items()},
            "speedup_chw": medians["opencv_chw"] / medians["stoke_chw"],
            "max_grey_level_difference": int(np.abs(planes.astype(np.int16) - kernel_planes).max()),
        }
    if args.json:
        print(json.dumps({"backend": resample.backend(), "crops": results}))
        return
    print(f"one thread, median of {args.rounds} rounds of {args.calls} calls; kernel: {resample.backend()}")
    print(f"{'crop':36} {'OpenCV CHW':>11} {'stoke CHW':>10} {'stoke HWC':>10} {'speed-up':>9} {'max diff':>9}")
    for name, row in results.items():
        print(
            f"{name:36} {row['opencv_chw_us']:>9.1f}µs {row['stoke_chw_us']:>8.1f}µs {row['stoke_hwc_us']:>8.1f}µs "
            f"{row['speedup_chw']:>8.2f}x {row['max_grey_level_difference']:>9}"
        )


if __name__ == "__main__":
    main()
