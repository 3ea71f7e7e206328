"""The seeded fuzzer (``fuzzing.py``): damaged and hostile datasets of every field kind, every promise checked.

The fast tier runs in ``make test``: ``FAST_TRIALS`` damaged and ``FAST_HOSTILE`` hostile trials, seeds fixed,
so a failure is reproducible by its seed. The long tier runs as many as you ask:

    STOKE_FUZZ_TRIALS=20000 STOKE_FUZZ_HOSTILE=5000 pytest tests/chaos/test_fuzz.py

and ``STOKE_FUZZ_REPORT=fuzz.json`` writes the run's figures (the ones docs/guarantees.md quotes). Trials run
in child processes watched from here, so a crash or a signal is reported with the seed it happened on, and a
trial that does not end within ``TRIAL_TIMEOUT`` seconds is reported as a hang.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
FAST_TRIALS = 600
FAST_HOSTILE = 240
CHILDREN = 2
TRIAL_TIMEOUT = 60.0


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    sys.path.insert(0, str(HERE))
    import fuzzing

    root = tmp_path_factory.mktemp("fuzz-corpus")
    fuzzing.build_corpus(root)
    return root


def run_trials(corpus: Path, first: int, count: int, scratch: Path, hostile: bool) -> list[dict]:
    """Run trials ``first..first+count-1`` in ``CHILDREN`` watched child processes; returns their records."""
    records: list[dict] = []
    children = []
    for number in range(CHILDREN):
        out = scratch / f"{'hostile' if hostile else 'damage'}-{number}.jsonl"
        seeds = f"{first + number}:{first + count}:{CHILDREN}"
        command = [sys.executable, str(HERE / "fuzzing.py"), str(corpus), seeds, str(out)]
        if hostile:
            command.append("--hostile")
        children.append((subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT), out))
    for process, out in children:
        running = out.with_suffix(".running")
        last_progress, seen = time.monotonic(), 0
        while process.poll() is None:
            time.sleep(0.2)
            lines = out.read_text().count("\n") if out.exists() else 0
            if lines != seen:
                last_progress, seen = time.monotonic(), lines
            elif time.monotonic() - last_progress > TRIAL_TIMEOUT:
                process.kill()
                seed = running.read_text() if running.exists() else "?"
                pytest.fail(f"trial {seed} did not end in {TRIAL_TIMEOUT:g} s: a hang")
        output = process.stdout.read().decode(errors="replace") if process.stdout else ""
        if process.returncode != 0:
            seed = running.read_text() if running.exists() else "?"
            how = f"signal {-process.returncode}" if process.returncode < 0 else f"exit {process.returncode}"
            pytest.fail(f"the fuzzing child died ({how}) during trial {seed}:\n{output[-3000:]}")
        records += [json.loads(line) for line in out.read_text().splitlines()]
    return records


def summarise(records: list[dict]) -> dict:
    return {
        "trials": len(records),
        "mutations": dict(collections.Counter(record["mutation"]["kind"] for record in records)),
        "kinds": dict(collections.Counter(record["kind"] for record in records)),
        "refused_at_open": sum("refused" in record for record in records),
        "samples_delivered": sum(record.get("delivered", 0) for record in records),
        "samples_quarantined": sum(record.get("quarantined", 0) for record in records),
        "samples_lost_or_repeated": sum(record.get("lost_or_repeated", 0) for record in records),
        "with_problems": sum(bool(record["problems"]) for record in records),
    }


def check(records: list[dict], tier: str) -> None:
    report_path = os.environ.get("STOKE_FUZZ_REPORT")
    if report_path:
        path = Path(report_path)
        document = json.loads(path.read_text()) if path.exists() else {}
        document[tier] = summarise(records)
        path.write_text(json.dumps(document, indent=2) + "\n")
    broken = [record for record in records if record["problems"]]
    shown = "\n".join(
        f"  seed {record['seed']} ({record['kind']}, {record['mutation']}): {record['problems'][:3]}"
        for record in broken[:10]
    )
    assert not broken, f"{len(broken)} of {len(records)} {tier} trials broke a promise:\n{shown}"


def test_damaged_datasets_of_every_kind_keep_every_promise(corpus, tmp_path):
    count = int(os.environ.get("STOKE_FUZZ_TRIALS", FAST_TRIALS))
    records = run_trials(corpus, 0, count, tmp_path, hostile=False)
    assert len(records) == count
    assert {record["kind"] for record in records} == {"jpeg", "png", "raw", "ndarray", "text", "table"}
    check(records, "damaged")


def test_hostile_self_consistent_datasets_never_crash_the_decoders(corpus, tmp_path):
    count = int(os.environ.get("STOKE_FUZZ_HOSTILE", FAST_HOSTILE))
    records = run_trials(corpus, 1_000_000, count, tmp_path, hostile=True)
    assert len(records) == count
    check(records, "hostile")
