"""The seeded fuzzer behind tests/chaos/test_fuzz.py: damaged and hostile datasets of every field kind.

A *corpus* holds one small packed dataset per field kind (JPEG, PNG and raw images, fixed and ragged
ndarrays, text and JSON, a table), each of several shards and several fields per sample, so that shard
headers, offset tables, checksums and manifests all matter. A *trial* copies one of them, damages it
with a mutation drawn from its seed, and checks what stoke promises:

* nothing crashes, raises anything but a ``StokeError`` where an error is due, dies by a signal or hangs
  (trials run in a child process watched by the parent: see ``test_fuzz.py``);
* every sample the Loader delivers, and every ``dataset[i]`` that returns, is identical to the intact
  dataset's;
* the samples the Loader quarantines are exactly those ``stoke verify`` lists as damaged, every other
  sample is delivered exactly once, and the damage is confined: a flipped byte loses at most the two
  samples whose records or boundaries it touches;
* a damaged manifest is refused at open in one sentence (its own checksum covers what it says).

Hostile trials (``hostile=True``) then rewrite the damaged record so that it is *self-consistent*: its
shard's checksums are recomputed from docs/format.md, so only the decoders stand between the bytes and
the process. Those trials check that decoding either gives a value or fails as a quarantined sample,
within the documented limits (a decompression bomb is refused by the pixel limit), never a crash.

Run: ``python fuzzing.py CORPUS START:STOP:STEP OUT [--hostile]`` runs the trials of those seeds, appending
one JSON line per trial to OUT and writing the trial in progress to OUT.running first (so a crash names
its seed).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

import numpy as np

KINDS = ("jpeg", "png", "raw", "ndarray", "text", "table")
SHARD_ITEMS = 6
SAMPLES = 20


# ---- the corpus ----------------------------------------------------------------------------------
def build_corpus(root: Path) -> dict[str, Path]:
    """One packed dataset per kind under ``root`` (made once per test session)."""
    import stoke
    from helpers import photo

    root.mkdir(parents=True, exist_ok=True)
    made: dict[str, Path] = {}
    options = {"shard_items": SHARD_ITEMS, "progress": False, "workers": 1}

    class Images:
        def __len__(self) -> int:
            return SAMPLES

        def __getitem__(self, index: int) -> dict[str, Any]:
            from PIL import Image

            return {"image": Image.fromarray(photo(24, 32, seed=index)), "label": index % 3, "name": f"img{index:03d}"}

    for kind, mode in (("jpeg", "jpeg"), ("png", "png"), ("raw", "raw")):
        made[kind] = root / kind
        stoke.pack(Images(), made[kind], image_mode=mode, **options)
    rng = np.random.default_rng(0)
    made["ndarray"] = root / "ndarray"

    class Arrays:
        def __len__(self) -> int:
            return SAMPLES

        def __getitem__(self, index: int) -> dict[str, Any]:
            return {
                "fixed": rng.normal(size=(3, 4)).astype(np.float32),
                "ragged": np.arange(index % 5 + 1, dtype=np.int32) * index,
                "y": float(index) / 3,
            }

    stoke.pack(Arrays(), made["ndarray"], **options)
    made["text"] = root / "text"
    records = [
        {"name": f"user{index:03d}", "comment": f"comment {index}", "meta": {"k": index}} for index in range(SAMPLES)
    ]
    stoke.pack(records, made["text"], **options)
    table = root / "table.csv"
    rows = ["a,b,city,label"] + [f"{i * 0.5},{i % 7},{['Oslo', 'Rome', 'Lima'][i % 3]},{i % 2}" for i in range(SAMPLES)]
    table.write_text("\n".join(rows) + "\n")
    made["table"] = root / "table"
    stoke.pack(table, made["table"], **options)
    return made


def sample_values(dataset: Any, index: int) -> dict[str, Any]:
    """Sample ``index`` as comparable plain values."""
    return {name: _plain(value) for name, value in dataset[index].items()}


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return (value.dtype.str, value.shape, value.tobytes())
    return value


# ---- mutations -----------------------------------------------------------------------------------
def shard_files(dataset_dir: Path) -> list[Path]:
    return sorted(dataset_dir.glob("shard-*.stk"))


def mutate(dataset_dir: Path, rng: random.Random) -> dict[str, Any]:
    """Damage the copy at ``dataset_dir`` in one of several ways; returns what was done."""
    shards = shard_files(dataset_dir)
    manifest = dataset_dir / "manifest.json"
    choice = rng.random()
    if choice < 0.55:  # flipped bits in a shard: anywhere, or aimed at its tables
        shard = rng.choice(shards)
        data = bytearray(shard.read_bytes())
        flips = rng.randint(1, 3)
        region = rng.choice(["anywhere", "head", "tail"])
        positions = []
        for _ in range(flips):
            if region == "head":
                position = rng.randrange(min(len(data), 96))
            elif region == "tail":  # the offset and checksum tables are at the end
                position = len(data) - 1 - rng.randrange(min(len(data), 8 * (3 * SHARD_ITEMS + 8)))
            else:
                position = rng.randrange(len(data))
            data[position] ^= 1 << rng.randrange(8)
            positions.append(position)
        shard.write_bytes(bytes(data))
        return {"kind": "flip", "shard": shard.name, "positions": positions}
    if choice < 0.65:  # truncated in place
        shard = rng.choice(shards)
        size = shard.stat().st_size
        cut = rng.randrange(size)
        os.truncate(shard, cut)
        return {"kind": "truncate", "shard": shard.name, "size": cut}
    if choice < 0.72:  # extended with junk
        shard = rng.choice(shards)
        with shard.open("ab") as stream:
            stream.write(rng.randbytes(rng.randint(1, 64)))
        return {"kind": "extend", "shard": shard.name}
    if choice < 0.76:  # replaced by another shard of the same dataset
        first, second = rng.sample(shards, 2) if len(shards) > 1 else (shards[0], shards[0])
        shutil.copyfile(second, first)
        return {"kind": "swap", "shard": first.name, "with": second.name}
    if choice < 0.79:  # missing
        shard = rng.choice(shards)
        shard.unlink()
        return {"kind": "delete", "shard": shard.name}
    text = bytearray(manifest.read_bytes())
    original = bytes(text)
    if choice < 0.92:
        positions = [rng.randrange(len(text)) for _ in range(rng.randint(1, 2))]
        for position in positions:
            text[position] ^= 1 << rng.randrange(8)
        done: dict[str, Any] = {"kind": "manifest-flip", "positions": positions}
    elif choice < 0.96:
        text = text[: rng.randrange(len(text))]
        done = {"kind": "manifest-truncate"}
    else:
        text += rng.randbytes(rng.randint(1, 16))
        done = {"kind": "manifest-extend"}
    manifest.write_bytes(bytes(text))
    done["changed"] = _meaning(bytes(text)) != _meaning(original)  # a cut newline changes nothing
    return done


def _meaning(manifest: bytes) -> Any:
    """What a manifest's bytes say (its parsed JSON), or None when they are not JSON."""
    try:
        return json.loads(manifest.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None


# ---- one trial -----------------------------------------------------------------------------------
def run_trial(corpus: dict[str, Path], seed: int, intact: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Damage a copy of one corpus dataset (chosen by ``seed``) and check every promise; returns a record
    with ``problems`` (empty when every promise held)."""
    import stoke
    from stoke.errors import StokeError
    from stoke.verify import verify

    rng = random.Random(seed)
    kind = KINDS[seed % len(KINDS)]
    record: dict[str, Any] = {"seed": seed, "kind": kind, "problems": []}
    problems: list[str] = record["problems"]
    expected = intact[kind]
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / kind
        shutil.copytree(corpus[kind], copy)
        record["mutation"] = mutation = mutate(copy, rng)
        try:
            dataset = stoke.open(copy)
        except StokeError as error:
            record["refused"] = _one_line(error, problems)
            if mutation["kind"] == "flip":  # a shard's bytes never make the manifest unreadable
                problems.append(f"open refused a dataset whose shard was damaged: {error}")
            return record
        except Exception as error:  # the point: anything else is a defect
            problems.append(f"open raised {type(error).__name__}: {error}")
            return record
        if mutation["kind"].startswith("manifest") and mutation["changed"]:  # its checksum covers what it says
            problems.append(f"a damaged manifest opened ({mutation})")
            return record
        try:
            report = verify(copy, threads=2, progress=False)
            damaged = set(report.damaged_indices)
        except StokeError as error:
            _one_line(error, problems)
            damaged = None
        except Exception as error:
            problems.append(f"verify raised {type(error).__name__}: {error}")
            damaged = None
        delivered = _load_all(dataset, problems, expected)
        quarantined = set(delivered.pop("__quarantined__", ()))
        indices = delivered.pop("__indices__", [])
        if len(indices) != len(set(indices)):
            problems.append("the Loader delivered a sample twice")
        if set(indices) | quarantined != set(range(len(dataset))) or set(indices) & quarantined:
            problems.append(
                f"delivered {len(indices)} and quarantined {len(quarantined)} of {len(dataset)} samples: "
                f"not a partition of the epoch"
            )
        if damaged is not None and damaged != quarantined:
            problems.append(f"verify lists {sorted(damaged)} but the Loader quarantined {sorted(quarantined)}")
        if mutation["kind"] == "flip" and len(quarantined) > 2 * len(mutation["positions"]):
            problems.append(f"{len(mutation['positions'])} flipped bytes lost {len(quarantined)} samples")
        _check_getitem(dataset, expected, quarantined, problems)
        record["delivered"], record["quarantined"] = len(indices), len(quarantined)
        missing = set(range(len(dataset))) - set(indices) - quarantined
        record["lost_or_repeated"] = len(indices) - len(set(indices)) + len(missing)
        dataset.close()
    return record


def _load_all(dataset: Any, problems: list[str], expected: list[dict[str, Any]] | None) -> dict[str, Any]:
    """One epoch of a Loader that skips failures; checks each delivered row against the intact sample
    (when ``expected`` is given)."""
    import stoke
    from stoke.errors import StokeError

    out: dict[str, Any] = {"__indices__": []}
    try:
        loader = stoke.Loader(
            dataset,
            batch_size=4,
            verify="always",
            on_error="skip",
            max_bad_fraction=1.0,
            num_threads=2,
            timeout=30,
            fast_decode=False,  # the same pixels as dataset[i]
        )
        for batch in loader:
            for row, index in enumerate(batch["index"].tolist()):
                out["__indices__"].append(index)
                if expected is not None:
                    got = {name: _unpadded(batch, name, row) for name in dataset.fields}
                    _compare_row(got, expected[index], index, problems)
        out["__quarantined__"] = [record["index"] for record in loader.quarantine]
        loader.close()
    except StokeError as error:
        _one_line(error, problems)
        out["__quarantined__"] = list(range(len(dataset)))
        out["__indices__"] = []
    except Exception as error:
        problems.append(f"the Loader raised {type(error).__name__}: {error}\n{traceback.format_exc(limit=6)}")
        out["__quarantined__"] = []
    return out


def _unpadded(batch: dict[str, Any], name: str, row: int) -> Any:
    """Row ``row`` of field ``name``, cut back to its own length when the field is padded."""
    value = batch[name][row]
    lengths = batch.get(f"{name}_lengths")
    if lengths is None:
        return value
    extent = lengths[row].tolist()
    return value[tuple(slice(0, size) for size in (extent if isinstance(extent, list) else [extent]))]


def _compare_row(got: dict[str, Any], want: dict[str, Any], index: int, problems: list[str]) -> None:
    for name, value in got.items():
        reference = want[name]
        if isinstance(reference, tuple):  # an array: images arrive CHW
            dtype, shape, raw = reference
            array = np.frombuffer(raw, dtype).reshape(shape)
            tensor = value.numpy() if hasattr(value, "numpy") else np.asarray(value)
            if array.ndim == 3 and tensor.shape == (array.shape[2], *array.shape[:2]):
                tensor = tensor.transpose(1, 2, 0)
            if tensor.shape != array.shape or not np.array_equal(tensor.astype(array.dtype), array):
                problems.append(f"sample {index}: field {name!r} was delivered changed")
        else:
            plain = value.item() if hasattr(value, "item") else value
            if isinstance(reference, float):
                if not np.isclose(float(plain), reference, rtol=1e-6):
                    problems.append(f"sample {index}: field {name!r} is {plain!r}, not {reference!r}")
            elif plain != reference:
                problems.append(f"sample {index}: field {name!r} is {plain!r}, not {reference!r}")


def _check_getitem(dataset: Any, expected: list[dict[str, Any]], quarantined: set[int], problems: list[str]) -> None:
    from stoke.errors import SampleError, StokeError

    for index in range(len(dataset)):
        try:
            got = sample_values(dataset, index)
        except SampleError:
            if index not in quarantined:
                problems.append(f"dataset[{index}] failed but the Loader delivered it")
            continue
        except StokeError as error:
            _one_line(error, problems)
            continue
        except Exception as error:
            problems.append(f"dataset[{index}] raised {type(error).__name__}: {error}")
            continue
        if got != expected[index]:
            problems.append(f"dataset[{index}] returned a changed sample")


def _one_line(error: BaseException, problems: list[str]) -> str:
    text = str(error)
    if "\n" in text or not text:
        problems.append(f"an error that is not one sentence: {text!r}")
    return text


# ---- hostile, self-consistent datasets ----------------------------------------------------------------
BOMB_SIDE = 12_000  # a 12,000 x 12,000 RGB PNG: 432 MB of pixels in about 430 KB, over the 89M-pixel limit
RSS_GROWTH_LIMIT = 200 * 2**20  # what a child may grow by over its trials: decoders refuse before they allocate


def hostile_record(kind: str, field_type: str, original: bytes, rng: random.Random, bomb: bytes) -> bytes:
    """Bytes a hostile writer could put in a field of this type; the dataset is sealed again around them."""
    import struct

    if field_type == "image":
        header = struct.Struct("<BBBBII")
        codec, orientation, channels, _, height, width = header.unpack_from(original)
        choice = rng.randrange(7)
        if choice == 0:  # the bomb, declared as what it is
            return header.pack(2, 1, 3, 0, BOMB_SIDE, BOMB_SIDE) + bomb
        if choice == 1:  # the bomb behind a small, harmless-looking header
            return header.pack(2, 1, 3, 0, height, width) + bomb
        if choice == 2:  # a header that claims a huge image over the original payload
            return header.pack(codec, orientation, channels, 0, 60_000, 60_000) + original[header.size :]
        if choice == 3:  # random payload
            return header.pack(codec, orientation, channels, 0, height, width) + rng.randbytes(rng.randint(0, 600))
        if choice == 4:  # a truncated payload
            return original[: rng.randint(header.size, max(header.size, len(original) - 1))]
        if choice == 5:  # nonsense codec, orientation or channels
            return (
                header.pack(rng.choice([0, 1, 2, 3, 9, 255]), rng.randint(0, 12), rng.randint(0, 5), 0, height, width)
                + original[header.size :]
            )
        flipped = bytearray(original)  # a few flipped payload bytes the checksum now agrees with
        for _ in range(rng.randint(1, 8)):
            position = rng.randrange(header.size, len(flipped)) if len(flipped) > header.size else 0
            flipped[position] ^= 1 << rng.randrange(8)
        return bytes(flipped)
    if field_type == "ndarray":
        choice = rng.randrange(4)
        if choice == 0:  # a variable shape header with huge dimensions
            ndim = rng.randint(1, 40)
            return struct.pack("<II", ndim, 0) + b"".join(
                struct.pack("<Q", rng.choice([0, 1, 2**31, 2**62, 2**64 - 1])) for _ in range(ndim)
            )
        if choice == 1:
            return original[: rng.randrange(max(1, len(original)))]
        if choice == 2:
            return original + rng.randbytes(rng.randint(1, 9))
        return rng.randbytes(len(original))
    if field_type == "json":
        depth = rng.choice([10, 1_000, 100_000])
        return rng.choice(
            [b"[" * depth + b"]" * depth, b'{"a":' * depth + b"1" + b"}" * depth, b"\xff\xfe", b"NaN", b"[1,"]
        )
    if field_type in ("text", "bytes"):
        return rng.choice([b"\xff\xfe\xfd", b"\xed\xa0\x80", rng.randbytes(rng.randint(0, 50)), b""])
    # int and float: eight bytes, or not
    return rng.randbytes(rng.choice([0, 7, 8, 9]))


def reseal(dataset_dir: Path, index: int, field_position: int, data: bytes) -> None:
    """Rewrite the shard holding sample ``index`` with field ``field_position`` of that sample replaced by
    ``data``, then seal it again (its checksums, the shard's size and checksum in the manifest, the
    manifest's own checksum): a dataset no check can tell from an honest one."""
    import json

    import stoke
    from stoke.format.manifest import MANIFEST_CHECKSUM, manifest_digest
    from stoke.format.shard import ShardWriter

    dataset = stoke.open(dataset_dir)
    shard, local = dataset.locate(index)
    entry = dataset.manifest.shards[shard]
    reader = dataset.shard_reader(shard)
    samples = [[bytes(part) for part in reader.fields(i)] for i in range(entry.num_samples)]
    dataset.close()
    samples[local][field_position] = data
    writer = ShardWriter(dataset_dir / entry.file, len(samples[0]), entry.seed)
    for fields in samples:
        writer.add(fields)
    info = writer.commit()
    path = dataset_dir / "manifest.json"
    document = json.loads(path.read_text())
    document["shards"][shard].update({"bytes": info.file_size, "xxh3_64": info.checksum})
    document[MANIFEST_CHECKSUM] = manifest_digest(document)
    path.write_text(json.dumps(document, indent=1))


def run_hostile_trial(corpus: dict[str, Path], seed: int, bomb: bytes) -> dict[str, Any]:
    """Seal hostile bytes into one sample of a copy; decoding must give a value or fail as that sample."""
    import resource

    import stoke
    from stoke.errors import SampleError, StokeError

    rng = random.Random(seed)
    kind = KINDS[seed % len(KINDS)]
    record: dict[str, Any] = {"seed": seed, "kind": kind, "problems": []}
    problems: list[str] = record["problems"]
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / kind
        shutil.copytree(corpus[kind], copy)
        dataset = stoke.open(copy)
        names = list(dataset.fields)
        index = rng.randrange(len(dataset))
        position = rng.randrange(len(names))
        field_type = dataset.fields[names[position]].type_name
        original = bytes(dataset.read_fields(index)[position])
        dataset.close()
        data = hostile_record(kind, field_type, original, rng, bomb)
        record["mutation"] = {
            "kind": f"hostile-{field_type}",
            "sample": index,
            "field": names[position],
            "bytes": len(data),
        }
        reseal(copy, index, position, data)
        try:
            dataset = stoke.open(copy)
        except StokeError as error:  # records too short for what the manifest lists: refused in one sentence
            record["refused"] = _one_line(error, problems)
            return record
        for sample in range(len(dataset)):
            try:
                dataset[sample]
            except SampleError as error:
                _one_line(error, problems)
                if sample != index:
                    problems.append(f"dataset[{sample}] failed but only sample {index} was changed: {error}")
            except Exception as error:  # anything but a SampleError is a defect
                problems.append(f"dataset[{sample}] raised {type(error).__name__}: {str(error)[:300]}")
        delivered = _load_all(dataset, problems, None)
        quarantined = set(delivered.pop("__quarantined__", ()))
        indices = delivered["__indices__"]
        if sorted(indices + sorted(quarantined)) != list(range(len(dataset))):
            problems.append(f"delivered {len(indices)} and quarantined {sorted(quarantined)}: not a partition")
        if quarantined - {index}:
            problems.append(f"samples {sorted(quarantined - {index})} were quarantined, but only {index} was changed")
        record["delivered"], record["quarantined"] = len(indices), len(quarantined)
        missing = set(range(len(dataset))) - set(indices) - quarantined
        record["lost_or_repeated"] = len(indices) - len(set(indices)) + len(missing)
        dataset.close()
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - BASELINE_RSS[0]
    if grown > RSS_GROWTH_LIMIT:
        problems.append(f"the process grew by {grown / 2**20:,.0f} MiB: a decoder allocated beyond the limits")
    return record


BASELINE_RSS = [0]  # the child's peak resident memory before its first trial


# ---- the child process --------------------------------------------------------------------------
def png_bomb(width: int, height: int) -> bytes:
    from helpers import png_bomb as make

    return make(width, height)


def main(argv: list[str]) -> int:
    """``fuzzing.py CORPUS START:STOP:STEP OUT [--hostile]``: run those trials, one JSON line each in OUT."""
    corpus_dir, seeds, out = Path(argv[0]), range(*map(int, argv[1].split(":"))), Path(argv[2])
    hostile = "--hostile" in argv[3:]
    import logging

    import stoke

    logging.getLogger("stoke").setLevel(logging.ERROR)  # each quarantined sample logs a warning
    corpus = {kind: corpus_dir / kind for kind in KINDS}
    intact = {} if hostile else {kind: _intact(stoke.open(path)) for kind, path in corpus.items()}
    bomb = png_bomb(BOMB_SIDE, BOMB_SIDE) if hostile else b""
    if hostile:  # a warm-up epoch of each kind first: libraries, thread pools and buffers are not growth
        import resource

        for path in corpus.values():
            _load_all(stoke.open(path), [], None)
        BASELINE_RSS[0] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    running = out.with_suffix(".running")
    with out.open("a") as results:
        for seed in seeds:
            running.write_text(str(seed))
            record = run_hostile_trial(corpus, seed, bomb) if hostile else run_trial(corpus, seed, intact)
            results.write(json.dumps(record, default=str) + "\n")
            results.flush()
    running.unlink(missing_ok=True)
    return 0


def _intact(dataset: Any) -> list[dict[str, Any]]:
    return [sample_values(dataset, index) for index in range(len(dataset))]


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/, for helpers
    sys.exit(main(sys.argv[1:]))
