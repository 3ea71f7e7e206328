"""Does stoke keep a GPU fed? The training loop fed by stoke, by a cached batch, and by the DataLoader baseline.

For: issue 8's bar, measured in one run on one machine: ResNet-50, AMP bf16, channels_last, batch 256,
16 CPU threads, the ``stoke bench`` JPEGs packed with ``--max-side 256``. The bars: the share of step time
the loop spends waiting for input under 5%, and training images/s at least 0.95 of the same loop fed from
a cached device batch. Not for: comparing loader settings without a model (``stoke bench``,
``benchmarks/autotune.py``) or profiling a user's own script (``stoke profile``).

Three phases train the same model with the same loop (``stoke.train.train_one_epoch``: autocast, one
optimizer step per batch, channels_last input), interleaved round by round in an order that rotates
(baseline, stoke, cached; then stoke, cached, baseline; ...) so that drift hits all three alike:

1. **stoke**: ``stoke.Loader`` on the pack, ``num_threads`` = threads, ``device=`` the device,
   ``channels_last``, transforms ``[RandomResizedCrop(224), RandomHorizontalFlip(), ToDevice, Normalize]``;
2. **cached**: one batch of phase 1, already on the device and normalised, fed again and again: the
   loop with input for free, the ceiling;
3. **baseline**: ``torch.utils.data.DataLoader`` over the generated JPEG files with the Pillow dataset of
   ``stoke bench`` (``stoke.bench.baseline.ImageFiles``: RandomResizedCrop(224) and flip as torchvision
   does them), ``num_workers`` = threads, ``pin_memory`` (on CUDA), ``persistent_workers``; the uint8
   batch goes to the device and is normalised there, as users write it. It reads the original files,
   as ``stoke bench --max-side 256`` does: the baseline is what a user runs before packing.

**Where the crop runs.** On the CPU, before ``ToDevice``, with only ``Normalize`` on the device.
docs/augmentation.md allows the crop after ``ToDevice`` only for images of one size, and a
``--max-side 256`` pack keeps each image's aspect ratio, so the Loader would refuse it; making the
sizes equal first (``Resize((256, 256))`` on the CPU) would distort the aspect ratio and resample every
pixel twice. On the CPU the crop is nearly free: the image stage decodes only the JPEG region the crop
needs, at a reduced DCT scale, and copies 224x224 uint8 rows, 4x fewer bytes than float32, to the device.
Normalizing there turns uint8 into float32 where memory bandwidth is plentiful. ``--decode device``
measures the other way, nvJPEG on the GPU with the crop batched there (docs/device.md), when a CUDA
build of torchvision is installed; otherwise the Loader says why and decodes on the CPU.

**Timing.** Each phase is one fresh epoch of exactly ``warmup + steps`` batches (``drop_last``): the
first ``warmup`` steps (filling the pipeline, cuDNN's autotuning in the first round) are excluded, then
``steps`` are timed from the first request to a ``torch.cuda.synchronize()`` after the last step, so
the GPU's queued work counts. A 5,000-image set is 19 batches of 256. The stoke phase therefore loads a
``DatasetView`` that repeats the images and the baseline samples with ``RandomSampler(num_samples=...)``.
That way an epoch boundary, which a real dataset of a million images meets once in thousands of
steps, does not restart either pipeline in the middle of a phase. Repeated images in a view share their
crop (augmentation is keyed by dataset index); every one is still read and decoded.

**Input-bound share.** ``stoke.profile(loader)`` is attached for each stoke phase with the same warm-up.
On CUDA it records CUDA events when the loop asks for a batch and when it gets one, and reads them
without a per-step synchronisation. The share is the GPU's own idle time waiting for input over its
step time (``timing: cuda events``). The CPU's time inside ``next()`` would overstate it: the CPU runs
ahead of the GPU, and time it waits while the GPU still has queued work costs nothing. On the CPU the
share is the time inside ``next()`` over the step time (``timing: cpu``). ``wait_share`` in the JSON is
that CPU-side figure for every phase, as the loop measures it.

Run on the GPU machine (a few minutes; the first run also generates and packs the set, once, under
``$STOKE_HOME/bench``):

    .venv/bin/python benchmarks/gpu_feed.py --json gpu_feed.json

A CPU smoke run (small CNN, a few tiny batches; ``tests/train/test_gpu_feed_script.py`` runs it):

    .venv/bin/python benchmarks/gpu_feed.py --quick --device cpu

Example (the pieces, without the rounds):
    >>> rotated(("baseline", "stoke", "cached"), 1)
    ['stoke', 'cached', 'baseline']
    >>> bars(stoke_vs_cached=0.97, input_bound_share=0.02)
    {'stoke_vs_cached': {'bar': '>= 0.95', 'met': True}, 'input_bound_share': {'bar': '< 0.05', 'met': True}}
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

import stoke
from stoke.bench.baseline import SIZE, ImageFiles
from stoke.bench.run import benchmark_dataset, describe_machine
from stoke.errors import ConfigError, StokeError
from stoke.home import default_home
from stoke.machine import available_cores
from stoke.ops import Normalize, RandomHorizontalFlip, RandomResizedCrop, ToDevice
from stoke.train.loop import AMP_CHOICES, autocast_dtype, pick_device, train_one_epoch
from stoke.train.models import MODELS, SmallCNN, build_model

PHASES = ("baseline", "stoke", "cached")
MIN_STOKE_VS_CACHED = 0.95
MAX_INPUT_BOUND_SHARE = 0.05
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ImageNet's, as torchvision's recipes use
NUM_CLASSES = 1000  # ResNet-50's ImageNet head; the ten generated classes are labels 0-9 of it
QUICK_WIDTH = 8  # --quick's small CNN is this narrow (the demo's is 32): a CPU step in a fraction of a second
# The settings, and the CPU smoke run's (--quick); an argument given on the command line wins.
FULL = {
    "model": "resnet50",
    "batch_size": 256,
    "threads": 16,
    "images": 5000,
    "steps": 100,
    "warmup": 20,
    "repeats": 3,
    "amp": "bf16",
}
QUICK = {
    "model": "small-cnn",
    "batch_size": 4,
    "threads": 2,
    "images": 16,
    "steps": 2,
    "warmup": 1,
    "repeats": 1,
    "amp": "off",
}


def rotated(names: Sequence[str], round_number: int) -> list[str]:
    """The phases' order in round ``round_number``: rotated by one each round, so none always goes first."""
    shift = round_number % len(names)
    return [*names[shift:], *names[:shift]]


def bars(stoke_vs_cached: float, input_bound_share: float) -> dict[str, dict[str, Any]]:
    """Issue 8's two bars and whether these figures meet them."""
    return {
        "stoke_vs_cached": {"bar": f">= {MIN_STOKE_VS_CACHED}", "met": bool(stoke_vs_cached >= MIN_STOKE_VS_CACHED)},
        "input_bound_share": {
            "bar": f"< {MAX_INPUT_BOUND_SHARE}",
            "met": bool(input_bound_share < MAX_INPUT_BOUND_SHARE),
        },
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available, else cpu)")
    parser.add_argument("--model", choices=sorted(MODELS), default=None, help="default resnet50")
    parser.add_argument("--batch-size", type=int, default=None, help="default 256")
    parser.add_argument("--threads", type=int, default=None, help="loader threads and DataLoader workers (16)")
    parser.add_argument("--images", type=int, default=None, help="generated benchmark images (5000)")
    parser.add_argument("--max-side", type=int, default=256, help="pack images with this longest side (256)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per phase and round (100)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps before them (20)")
    parser.add_argument("--amp", choices=AMP_CHOICES, default=None, help="mixed precision (bf16)")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (off)")
    parser.add_argument(
        "--decode",
        choices=("cpu", "device", "auto"),
        default="cpu",
        help="where stoke decodes the JPEGs: Loader(decode=...), docs/device.md (cpu)",
    )
    parser.add_argument("--repeats", type=int, default=None, help="rounds; figures are medians over them (3)")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the JSON object here")
    parser.add_argument(
        "--quick", action="store_true", help=f"CPU smoke run: small CNN of width {QUICK_WIDTH}, tiny set, few steps"
    )
    args = parser.parse_args(argv)
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    for name in ("batch_size", "threads", "images", "steps", "warmup", "repeats", "max_side"):
        if getattr(args, name) < 1:
            raise ConfigError(
                f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}; pass a positive number"
            )
    return args


def run(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    """Measure the three phases ``args.repeats`` times and return the JSON object; see the module docstring."""
    device = pick_device(args.device)
    cores = available_cores()
    threads = min(args.threads, cores)
    if threads < args.threads:
        log(f"asked for {args.threads} threads; this machine lets the process use {cores} cores: using {threads}")
    amp_dtype = autocast_dtype(args.amp, device)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels once

    folder, dataset = benchmark_dataset(None, args.images, "keep", args.max_side, default_home() / "bench", log)
    assert folder is not None  # generated here, so the image files exist for the baseline
    batches_per_phase = args.warmup + args.steps
    samples_per_phase = batches_per_phase * args.batch_size
    repeats = -(-samples_per_phase // len(dataset))
    view = dataset.select(np.tile(np.arange(len(dataset)), repeats)[:samples_per_phase])
    loader = stoke.Loader(
        view,
        args.batch_size,
        shuffle=True,
        drop_last=True,
        transforms={
            "image": [
                RandomResizedCrop(SIZE),
                RandomHorizontalFlip(),
                ToDevice(device),
                Normalize(MEAN, STD),
            ]
        },
        fields=["image", "label"],
        device=device,
        channels_last=args.channels_last,
        num_threads=threads,
        decode=args.decode,
    )
    files = ImageFiles.from_folder(folder)
    baseline_loader = torch.utils.data.DataLoader(
        files,
        batch_size=args.batch_size,
        sampler=torch.utils.data.RandomSampler(files, num_samples=samples_per_phase),
        num_workers=threads,
        pin_memory=device.type == "cuda",
        persistent_workers=True,
        drop_last=True,
    )
    baseline_normalize = Normalize(MEAN, STD)

    if args.quick and args.model == "small-cnn":
        model: torch.nn.Module = SmallCNN(3, NUM_CLASSES, width=QUICK_WIDTH)
    else:
        model = build_model(args.model, in_channels=3, num_classes=NUM_CLASSES)
    model = model.to(device, memory_format=memory_format)
    runner = torch.compile(model) if args.compile else model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-5)
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None

    def train(batches: Any) -> Any:
        return train_one_epoch(
            runner,
            batches,
            optimizer,
            device,
            scaler=scaler,
            amp_dtype=amp_dtype,
            channels_last=args.channels_last,
        )

    start = loader.state_dict()  # a look at one batch, for the cached phase, that consumes nothing
    first = next(iter(loader))
    cached = {key: value.clone() for key, value in first.items() if key in ("image", "label")}
    del first
    loader.load_state_dict(start)

    def stoke_phase() -> dict[str, float | str]:
        profiler = stoke.profile(loader, steps=args.steps, warmup=args.warmup)
        batches = iter(loader)
        train(itertools.islice(batches, args.warmup))
        stats = train(batches)  # the rest of the epoch; its end lets the profiler close the last step
        report = profiler.finish()
        return {
            "images_per_s": stats.samples_per_s,
            "timed_steps": stats.samples / args.batch_size,
            "input_bound_share": report.input_share,
            "timing": report.timing,
            "wait_share": stats.data_wait_fraction,
        }

    def cached_phase() -> dict[str, float | str]:
        train(itertools.repeat(cached, args.warmup))
        stats = train(itertools.repeat(cached, args.steps))
        return {
            "images_per_s": stats.samples_per_s,
            "timed_steps": stats.samples / args.batch_size,
            "wait_share": stats.data_wait_fraction,
        }

    def baseline_phase() -> dict[str, float | str]:
        batches = _on_device(iter(baseline_loader), device, baseline_normalize)
        train(itertools.islice(batches, args.warmup))
        stats = train(batches)
        return {
            "images_per_s": stats.samples_per_s,
            "timed_steps": stats.samples / args.batch_size,
            "wait_share": stats.data_wait_fraction,
        }

    phases = {"baseline": baseline_phase, "stoke": stoke_phase, "cached": cached_phase}
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else describe_machine(threads)["cpu"]
    log(
        f"{args.model} on {device_name}, batch {args.batch_size}, amp {args.amp}, "
        f"{'channels_last' if args.channels_last else 'NCHW'}, {threads} threads, {len(dataset):,} images "
        f"(max side {args.max_side}), {args.steps} steps + {args.warmup} warm-up per phase, {args.repeats} rounds"
    )
    rounds: dict[str, list[dict[str, float | str]]] = {name: [] for name in PHASES}
    try:
        for round_number in range(args.repeats):
            for name in rotated(PHASES, round_number):
                figures = phases[name]()
                rounds[name].append(figures)
                share = f"  input-bound {figures['input_bound_share']:.1%}" if name == "stoke" else ""
                log(f"  round {round_number + 1} {name:<9}{figures['images_per_s']:>10,.0f} images/s{share}")
    finally:
        loader.close()  # the DataLoader's persistent workers end when it is collected, on return

    def per_round(name: str, key: str = "images_per_s") -> list[float]:
        return [float(figures[key]) for figures in rounds[name]]

    rates = {name: statistics.median(per_round(name)) for name in PHASES}
    input_share = statistics.median(per_round("stoke", "input_bound_share"))
    stoke_vs_cached = rates["stoke"] / rates["cached"]
    machine = describe_machine(threads)
    return {
        "device": {
            "type": device.type,
            "name": device_name,
            "memory_gib": round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1)
            if device.type == "cuda"
            else None,
            "cuda": torch.version.cuda if device.type == "cuda" else None,
            "cpu": machine["cpu"],
            "cpu_count": machine["cpu_count"],
            "cores_available": cores,
            "cores_used": threads,
            "torch": machine["torch"],
            "python": machine["python"],
            "platform": machine["platform"],
        },
        "settings": {
            "model": args.model + (f" (width {QUICK_WIDTH})" if args.quick and args.model == "small-cnn" else ""),
            "batch_size": args.batch_size,
            "amp": args.amp,
            "channels_last": args.channels_last,
            "decode": args.decode,
            "compile": args.compile,
            "threads": threads,
            "threads_requested": args.threads,
            "images": len(dataset),
            "max_side": args.max_side,
            "steps": args.steps,
            "warmup": args.warmup,
            "repeats": args.repeats,
            "quick": args.quick,
            "dataset": str(dataset.root),
            "stoke_transforms": "RandomResizedCrop(224), RandomHorizontalFlip() in the workers; ToDevice, Normalize",
            "baseline": "DataLoader + Pillow on the original JPEGs, crop and flip in its workers, Normalize on device",
        },
        "images_per_s": rates,
        "per_round_images_per_s": {name: per_round(name) for name in PHASES},
        "timed_steps": {name: per_round(name, "timed_steps") for name in PHASES},  # full batches: settings' steps
        "input_bound_share": input_share,
        "input_bound_share_per_round": per_round("stoke", "input_bound_share"),
        "input_bound_timing": str(rounds["stoke"][0]["timing"]),
        "wait_share": {name: statistics.median(per_round(name, "wait_share")) for name in PHASES},
        "stoke_vs_cached": stoke_vs_cached,
        "stoke_vs_baseline": rates["stoke"] / rates["baseline"],
        "bars": bars(stoke_vs_cached, input_share),
    }


def format_table(result: dict[str, Any]) -> str:
    """The human-readable summary of :func:`run`'s result."""
    settings, device, rates = result["settings"], result["device"], result["images_per_s"]
    memory = f", {device['memory_gib']} GiB" if device["memory_gib"] else ""
    lines = [
        f"{settings['model']}, batch {settings['batch_size']}, amp {settings['amp']}, "
        f"{'channels_last' if settings['channels_last'] else 'NCHW'}, {settings['threads']} threads "
        f"(of {device['cores_available']} cores), {settings['images']:,} images at max side {settings['max_side']}, "
        f"{settings['steps']} steps + {settings['warmup']} warm-up, median of {settings['repeats']} rounds",
        f"device: {device['name']}{memory}; CPU {device['cpu']}; torch {device['torch']}",
        f"{'':34} {'images/s':>10} {'of cached':>10} {'in next()':>10}",
    ]
    labels = {
        "stoke": "stoke Loader",
        "cached": "cached device batch (ceiling)",
        "baseline": "DataLoader + Pillow (baseline)",
    }
    for name in ("stoke", "cached", "baseline"):
        share = result["wait_share"][name]  # the CPU's time inside next(): an upper bound on CUDA
        lines.append(f"{labels[name]:34} {rates[name]:>10,.0f} {rates[name] / rates['cached']:>10.1%} {share:>10.1%}")
    met = {name: "met" if bar["met"] else "NOT met" for name, bar in result["bars"].items()}
    lines.append(
        f"stoke / cached {result['stoke_vs_cached']:.3f} (bar >= {MIN_STOKE_VS_CACHED}: {met['stoke_vs_cached']}); "
        f"input-bound share {result['input_bound_share']:.1%} ({result['input_bound_timing']} timing, bar < "
        f"{MAX_INPUT_BOUND_SHARE:.0%}: {met['input_bound_share']}); stoke / baseline "
        f"{result['stoke_vs_baseline']:.2f}x"
    )
    return "\n".join(lines)


def _on_device(batches: Iterator[Any], device: torch.device, normalize: Normalize) -> Iterator[dict[str, Any]]:
    """The baseline's ``(images, labels)`` batches moved to ``device`` and normalised there, as dicts."""
    for images, labels in batches:
        images = images.to(device, non_blocking=True)
        yield {"image": normalize.apply(images, None), "label": labels.to(device, non_blocking=True)}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse ``argv``, measure, print the table and the JSON object (and write it to ``--json``)."""
    try:
        args = parse_args(argv)
        result = run(args, log=lambda line: print(line, file=sys.stderr, flush=True))
    except StokeError as error:
        raise SystemExit(f"gpu_feed: {error}") from None
    print(format_table(result))
    text = json.dumps(result, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")
    return result


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"took {time.perf_counter() - started:.0f} s", file=sys.stderr)
