"""stoke at internet scale, on paper: 1 billion samples, 100 TB, 1,000 GPUs, backed by measurements.

Nothing of that size is written. What is measured, and how it is scaled (every figure says which):

1. **Shard geometry** (arithmetic): shard count and samples per shard for target shard sizes.
2. **Manifest** (measured at full size): a synthetic ``manifest.json`` with one entry per shard of the
   full dataset (plausible names, sizes, checksums; no shard files), written by ``Manifest.write``; its
   size, ``Manifest.read`` time, ``stoke.open`` time (open reads the manifest only) and the memory the
   opened dataset holds, in a fresh process per shard size.
3. **Per-shard cost of reading** (measured on a sample, extrapolated): a rank maps each shard it reads
   once and keeps the mapping; measured on ``--probe-shards`` real tiny shards: time and memory maps per
   shard, against the kernel's ``vm.max_map_count``.
4. **Per-rank order memory and time** (measured at ``--measure-samples``, extrapolated linearly to 1e9):
   today's epoch order (``RandomOrder.indices``: a permutation of every sample) and the rank's share of
   it (``rank_share``), with peak memory from ``tracemalloc`` (numpy reports its buffers to it), and the
   Loader's checked-sample bits (one bit per sample, measured at full size: the mapping is allocated).
5. **A two-level shuffle** (measured at full size, per rank): shuffle the shard list, give each rank its
   shards, shuffle positions within the rank's share; what stoke would change to, with its memory and
   time for one rank of 1,000.

Run:  .venv/bin/python benchmarks/scaling.py [--measure-samples 100000000] [--json]
Quick check:  .venv/bin/python benchmarks/scaling.py --measure-samples 1000000 --shard-mb 256 --probe-shards 200
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np

SAMPLES = 1_000_000_000
TOTAL_BYTES = 100 * 10**12
RANKS = 1_000
BATCH = 256
SEED = 0

MEASURE_OPEN = """
import json, sys, time, resource
def rss_mb():
    with open("/proc/self/statm") as stream:
        return int(stream.read().split()[1]) * 4096 / 1e6
import stoke
from stoke.format.manifest import Manifest
before = rss_mb()
started = time.perf_counter(); manifest = Manifest.read(sys.argv[1]); read_s = time.perf_counter() - started
del manifest
started = time.perf_counter(); dataset = stoke.open(sys.argv[1]); open_s = time.perf_counter() - started
print(json.dumps({"read_s": read_s, "open_s": open_s, "open_rss_mb": rss_mb() - before, "samples": len(dataset)}))
"""


def shard_geometry(shard_mb: int) -> dict[str, float]:
    sample_bytes = TOTAL_BYTES / SAMPLES
    per_shard = max(1, int(shard_mb * 2**20 // sample_bytes))
    return {"shard_mb": shard_mb, "samples_per_shard": per_shard, "shards": -(-SAMPLES // per_shard)}


def write_synthetic_manifest(directory: Path, shards: int, per_shard: int) -> None:
    """A manifest of ``shards`` entries summing to SAMPLES samples; no shard file is written."""
    from stoke.format.fields import ImageField, IntField
    from stoke.format.manifest import FieldEntry, Manifest, ShardEntry, shard_file_name

    counts = np.full(shards, per_shard, np.int64)
    counts[-1] = SAMPLES - per_shard * (shards - 1)
    sizes = (counts * (TOTAL_BYTES // SAMPLES) + 4096).tolist()
    checksums = np.random.default_rng(0).integers(0, 2**63, shards)
    entries = [
        ShardEntry(shard_file_name(k), int(count), int(size), f"{int(checksum):016x}")
        for k, (count, size, checksum) in enumerate(zip(counts.tolist(), sizes, checksums.tolist()))
    ]
    fields = [FieldEntry("image", ImageField()), FieldEntry("label", IntField())]
    Manifest(fields=fields, shards=entries, num_samples=SAMPLES, source={"kind": "synthetic"}).write(directory)


def measure_manifest(shard_mb: int) -> dict[str, Any]:
    geometry = shard_geometry(shard_mb)
    with tempfile.TemporaryDirectory(prefix="stoke-scaling-") as work:
        started = time.perf_counter()
        write_synthetic_manifest(Path(work), int(geometry["shards"]), int(geometry["samples_per_shard"]))
        write_s = time.perf_counter() - started
        size = (Path(work) / "manifest.json").stat().st_size
        measured = subprocess.run(
            [sys.executable, "-c", MEASURE_OPEN, work], capture_output=True, text=True, check=True
        ).stdout
    result = json.loads(measured.strip().splitlines()[-1])
    assert result["samples"] == SAMPLES
    return {**geometry, "manifest_bytes": size, "write_s": write_s, **result, "scaled": "measured at full size"}


def measure_shard_mapping(probe_shards: int) -> dict[str, Any]:
    """Open ``probe_shards`` tiny real shards through a Dataset: seconds and memory maps per shard."""
    import stoke

    with tempfile.TemporaryDirectory(prefix="stoke-scaling-shards-") as work:
        out = Path(work) / "ds"
        stoke.pack({"y": np.arange(probe_shards * 2)}, out, shard_items=2, workers=1, progress=False)
        dataset = stoke.open(out)
        maps_before = len(Path("/proc/self/maps").read_text().splitlines())
        started = time.perf_counter()
        for shard in range(probe_shards):
            dataset.shard_reader(shard)
        seconds = time.perf_counter() - started
        maps_after = len(Path("/proc/self/maps").read_text().splitlines())
        del dataset
    try:
        max_maps = int(Path("/proc/sys/vm/max_map_count").read_text())
    except OSError:
        max_maps = 65530
    return {
        "probe_shards": probe_shards,
        "seconds_per_shard": seconds / probe_shards,
        "maps_per_shard": (maps_after - maps_before) / probe_shards,
        "vm_max_map_count": max_maps,
        "scaled": f"measured on {probe_shards} shards, per-shard figures",
    }


def traced(function: Any) -> tuple[Any, float, float]:
    """(result, seconds, peak MB of memory allocated while it ran, numpy buffers included)."""
    tracemalloc.start()
    started = time.perf_counter()
    result = function()
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()
    return result, seconds, peak


def measure_order(samples: int) -> dict[str, Any]:
    """Today's per-rank epoch order at ``samples``, extrapolated linearly (x SAMPLES / samples) to 1e9."""
    from stoke.order.partition import rank_share
    from stoke.order.random import RandomOrder

    scale = SAMPLES / samples
    order, permute_s, permute_mb = traced(lambda: RandomOrder(samples, SEED).indices(0))
    (positions, _), share_s, share_mb = traced(
        lambda: rank_share(order, 0, batch_size=BATCH, rank=RANKS - 1, world_size=RANKS, drop_last=False)
    )
    return {
        "measured_samples": samples,
        "permutation_s": permute_s,
        "permutation_peak_mb": permute_mb,
        "rank_share_s": share_s,
        "rank_share_peak_mb": share_mb,
        "rank_positions": len(positions),
        "at_1e9": {
            "permutation_s": permute_s * scale,
            "permutation_peak_gb": permute_mb * scale / 1e3,
            "rank_share_s": share_s * scale,
            "rank_share_peak_gb": share_mb * scale / 1e3,
            "rank_positions": int(len(positions) * scale),
        },
        "scaled": f"measured at {samples:,} samples, x{scale:g} linearly (the permutation is O(n))",
    }


def measure_checked_bits() -> dict[str, Any]:
    from stoke.pipeline.reader import CheckedSamples

    checked, seconds, _ = traced(lambda: CheckedSamples(SAMPLES))
    return {"bytes": len(checked._bits), "seconds": seconds, "scaled": "allocated at full size (1e9 bits)"}


def two_level_share(shards: int, per_shard: int, rank: int, world: int, epoch: int) -> np.ndarray:
    """Rank ``rank``'s positions for ``epoch``: shuffled shards dealt round-robin, positions shuffled within.

    Memory is the shard list (8 bytes per shard) plus the rank's own positions; nothing is per sample of
    the whole dataset. Bias: a rank's epoch draws whole shards, so samples packed together are seen by the
    same rank in the same epoch (in a random order within its share).
    """
    from stoke.rng import epoch_generator

    shard_order = epoch_generator(SEED, epoch).permutation(shards)
    mine = np.sort(shard_order[rank::world])
    starts = mine.astype(np.int64) * per_shard
    counts = np.minimum(per_shard, SAMPLES - starts)
    positions = np.repeat(starts - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts) + np.arange(counts.sum())
    epoch_generator(SEED, epoch, stream=rank + 1).shuffle(positions)
    return positions


def measure_two_level(shard_mb: int) -> dict[str, Any]:
    geometry = shard_geometry(shard_mb)
    shards, per_shard = int(geometry["shards"]), int(geometry["samples_per_shard"])
    positions, seconds, peak = traced(lambda: two_level_share(shards, per_shard, RANKS - 1, RANKS, 0))
    assert positions.min() >= 0 and positions.max() < SAMPLES and len(np.unique(positions)) == len(positions)
    return {
        "shard_mb": shard_mb,
        "rank_positions": len(positions),
        "seconds": seconds,
        "peak_mb": peak,
        "scaled": "measured at full size for one rank of 1,000",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--measure-samples", type=int, default=100_000_000, help="order measured at this size")
    parser.add_argument("--shard-mb", default="256,64", help="shard sizes (MB) whose manifests are built")
    parser.add_argument("--probe-shards", type=int, default=2000, help="real tiny shards mapped to cost one")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    sizes = [int(value) for value in args.shard_mb.split(",")]
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    result: dict[str, Any] = {"samples": SAMPLES, "total_bytes": TOTAL_BYTES, "ranks": RANKS, "batch": BATCH}
    result["geometry"] = [shard_geometry(size) for size in (64, 128, 256, 1024)]
    result["manifest"] = []
    for size in sizes:
        log(f"manifest for {size} MB shards ...")
        result["manifest"].append(measure_manifest(size))
    log("mapping shards ...")
    result["shard_mapping"] = measure_shard_mapping(args.probe_shards)
    log(f"order at {args.measure_samples:,} samples ...")
    result["order"] = measure_order(args.measure_samples)
    result["checked_bits"] = measure_checked_bits()
    log("two-level shuffle ...")
    result["two_level"] = [measure_two_level(size) for size in sizes]
    result["machine"] = {"cpu_count": os.cpu_count(), "python": sys.version.split()[0]}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{SAMPLES:,} samples, {TOTAL_BYTES / 1e12:.0f} TB ({TOTAL_BYTES // SAMPLES:,} bytes each), {RANKS} ranks")
    for row in result["geometry"]:
        print(f"  {row['shard_mb']:>5} MB shards: {row['shards']:>10,} shards of {row['samples_per_shard']:,} samples")
    for row in result["manifest"]:
        print(
            f"  manifest, {row['shard_mb']} MB shards: {row['manifest_bytes'] / 1e6:,.0f} MB,"
            f" read {row['read_s']:.2f} s, open {row['open_s']:.2f} s, +{row['open_rss_mb']:,.0f} MB RSS"
            f" ({row['scaled']})"
        )
    mapping = result["shard_mapping"]
    print(
        f"  mapping a shard: {mapping['seconds_per_shard'] * 1e6:,.0f} us, {mapping['maps_per_shard']:.1f} memory maps"
        f" (vm.max_map_count {mapping['vm_max_map_count']:,}; {mapping['scaled']})"
    )
    order = result["order"]
    full = order["at_1e9"]
    print(
        f"  today's order per rank at 1e9: permutation {full['permutation_s']:.0f} s,"
        f" {full['permutation_peak_gb']:.1f} GB peak; rank share {full['rank_share_s']:.1f} s,"
        f" {full['rank_share_peak_gb']:.1f} GB peak ({order['scaled']})"
    )
    print(f"  checked-sample bits at 1e9: {result['checked_bits']['bytes'] / 1e6:,.0f} MB per process tree")
    for row in result["two_level"]:
        print(
            f"  two-level shuffle, {row['shard_mb']} MB shards: {row['rank_positions']:,} positions in "
            f"{row['seconds']:.2f} s, {row['peak_mb']:,.0f} MB peak ({row['scaled']})"
        )


if __name__ == "__main__":
    main()
