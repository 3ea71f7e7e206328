"""How long `stoke.open` takes, and what it costs in memory, as the sample count grows.

Packs datasets of 10,000 and 1,000,000 samples (an int label and a 16-float vector each), then in a
fresh process per size measures: the time to open (median of 5), the time to the first random sample,
and the memory the open dataset adds (RSS). Opening reads the manifest only, so its time must stay flat
as the dataset grows; reading all 1,000,000 samples touches the offset tables, never Python objects
per sample.

Run:  .venv/bin/python benchmarks/open_time.py [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import stoke

MEASURE = """
import json, statistics, sys, time
import stoke
path = sys.argv[1]
def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 1e6
before = rss_mb()
times = []
for _ in range(5):
    started = time.perf_counter(); dataset = stoke.open(path); times.append(time.perf_counter() - started)
after_open = rss_mb()
started = time.perf_counter(); dataset[len(dataset) // 2]; first = time.perf_counter() - started
started = time.perf_counter(); labels = dataset.column("label"); column = time.perf_counter() - started
print(json.dumps({"samples": len(dataset), "open_s": statistics.median(times), "first_sample_s": first,
                  "column_s": column, "open_rss_mb": after_open - before}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="where to pack (default: a temporary directory)")
    args = parser.parse_args()
    root = args.out or Path(tempfile.mkdtemp(prefix="stoke-open-"))
    rows = []
    for size in (10_000, 1_000_000):
        path = root / f"ds-{size}"
        if not (path / "manifest.json").exists():
            started = time.perf_counter()
            data = {"label": np.arange(size) % 1000, "vector": np.ones((size, 16), np.float32)}
            stoke.pack(data, path, progress=False)
            print(f"packed {size:,} samples in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        completed = subprocess.run(
            [sys.executable, "-c", MEASURE, str(path)], capture_output=True, text=True, check=True
        )
        rows.append(json.loads(completed.stdout))
    print(
        f"{'samples':>10} {'open (ms)':>10} {'first sample (ms)':>18} {'label column (ms)':>18} {'open RSS (MB)':>14}"
    )
    for row in rows:
        print(
            f"{row['samples']:>10,} {row['open_s'] * 1e3:>10.2f} {row['first_sample_s'] * 1e3:>18.2f} "
            f"{row['column_s'] * 1e3:>18.1f} {row['open_rss_mb']:>14.2f}"
        )
    print(f"open time ratio 1,000,000 / 10,000 samples: {rows[1]['open_s'] / rows[0]['open_s']:.2f}")
    print(json.dumps({"rows": rows, "open_ratio": rows[1]["open_s"] / rows[0]["open_s"]}))


if __name__ == "__main__":
    main()
