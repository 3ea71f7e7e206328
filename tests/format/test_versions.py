"""The version history a grown dataset's manifest keeps (docs/format.md §3.7), validated before it is trusted.

Hypothesis builds histories and checks that every valid one round-trips through the manifest, and that any
value changed in it (a count, a version number, a checksum, a type) is refused with a ``FormatError``
naming ``versions``, never another exception; the manifest's own checksum covers the history.
"""

from __future__ import annotations

import copy
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stoke.errors import FormatError
from stoke.format.fields import IntField
from stoke.format.manifest import FieldEntry, Manifest, ShardEntry
from stoke.format.versions import VersionEntry, read_versions

HEX = st.text("0123456789abcdef", min_size=16, max_size=16)


@st.composite
def histories(draw) -> tuple[list[ShardEntry], list[VersionEntry]]:
    """Shards of one record each, and a history whose versions cover a growing prefix of them."""
    steps = draw(st.lists(st.integers(0, 3), min_size=2, max_size=6))
    shards = [ShardEntry(f"shard-{n:06d}.stk", 1, 64 + 8 * 2 + 8 + 8, "0" * 16, n + 1) for n in range(sum(steps))]
    history, total = [], 0
    for number, step in enumerate(steps, start=1):
        total += step
        newest = number == len(steps)
        history.append(
            VersionEntry(
                number,
                num_samples=total,
                num_shards=total,
                num_quarantined=draw(st.integers(0, 5)),
                created=None if number == 1 else draw(st.sampled_from(["2026-12-05T10:00:00Z", None])),
                manifest_checksum=None if newest else draw(HEX),
                source=None if number == 1 else {"kind": "arrays", "num_items": step},
                pack_id=None if number == 1 else draw(HEX),
            )
        )
    return shards, history


def manifest_of(shards: list[ShardEntry], history: list[VersionEntry]) -> Manifest:
    return Manifest(
        fields=[FieldEntry("y", IntField())],
        shards=shards,
        num_samples=len(shards),
        version=len(history),
        versions=history,
    )


@settings(max_examples=60, deadline=None)
@given(histories())
def test_every_valid_history_round_trips_through_the_manifest(drawn):
    shards, history = drawn
    document = manifest_of(shards, history).to_dict()
    read = Manifest.from_dict(json.loads(json.dumps(document)), where="manifest.json")
    assert read.version == len(history) and read.versions == history and read.history == history


MUTATIONS = [
    lambda versions: versions[-1].update(num_samples=versions[-1]["num_samples"] + 1),
    lambda versions: versions[0].update(num_shards=versions[-1]["num_shards"] + 1),
    lambda versions: versions[0].update(version=2),
    lambda versions: versions[0].update(manifest_xxh3_64="not hex"),
    lambda versions: versions[0].pop("manifest_xxh3_64"),
    lambda versions: versions[-1].update(manifest_xxh3_64="0" * 16),
    lambda versions: versions[-1].update(num_quarantined=-1),
    lambda versions: versions[-1].update(created=5),
    lambda versions: versions[-1].update(source="text"),
    lambda versions: versions[-1].update(pack_id=7),
    lambda versions: versions.pop(),
    lambda versions: versions.append(dict(versions[-1])),
    lambda versions: versions.__setitem__(0, "v1"),
    lambda versions: versions[0].update(num_samples=True),
]


@settings(max_examples=60, deadline=None)
@given(histories(), st.sampled_from(range(len(MUTATIONS))))
def test_a_changed_history_is_refused_naming_versions(drawn, mutation):
    from stoke.format.manifest import MANIFEST_CHECKSUM, manifest_digest

    document = manifest_of(*drawn).to_dict()
    damaged = copy.deepcopy(document)
    MUTATIONS[mutation](damaged["versions"])
    if damaged == document:
        return
    with pytest.raises(FormatError, match=r"does not match its manifest_checksum"):  # the checksum covers it
        Manifest.from_dict(damaged, where="manifest.json")
    damaged[MANIFEST_CHECKSUM] = manifest_digest(damaged)  # sealed again: the history's own rules refuse it
    with pytest.raises(FormatError, match=r"versions"):
        Manifest.from_dict(damaged, where="manifest.json")


def test_a_version_without_its_history_and_a_bad_version_number_are_refused():
    from stoke.format.manifest import MANIFEST_CHECKSUM, manifest_digest

    plain = manifest_of([ShardEntry("shard-000000.stk", 1, 96, "0" * 16, 1)], [VersionEntry(1, 1, 1)]).to_dict()
    for change in ({"version": 2}, {"version": "2"}, {"version": 0}, {"version": 1, "versions": {}}):
        document = {**plain, **change}
        document[MANIFEST_CHECKSUM] = manifest_digest(document)
        with pytest.raises(FormatError, match=r"version"):
            Manifest.from_dict(document, where="manifest.json")


def test_read_versions_needs_one_entry_per_version_ending_at_the_manifest():
    entries = [VersionEntry(1, 2, 1, manifest_checksum="a" * 16).to_dict(), VersionEntry(2, 5, 2).to_dict()]
    assert [entry.num_samples for entry in read_versions(entries, 2, 5, 2, "m")] == [2, 5]
    with pytest.raises(FormatError, match=r"versions say version 2 holds 5 samples in 2 shards, but it lists 6"):
        read_versions(entries, 2, 6, 2, "m")
    with pytest.raises(FormatError, match=r"must list 3 entries"):
        read_versions(entries, 3, 5, 2, "m")
