"""stoke's errors: a bad argument is a ConfigError, damaged bytes a FormatError with its reason.

``test_no_bare_builtin_raises`` parses every module under ``src/stoke`` with ``ast`` and fails on a
``raise`` of a built-in exception (``ValueError``, ``TypeError``, ``KeyError``, ...) that is not in
:data:`ALLOWED`, each entry of which says why the built-in is right there. A new bad-argument check that
raises ``ValueError`` fails here: raise :class:`~stoke.errors.ConfigError` (one sentence: what is wrong,
what to do), or :class:`~stoke.errors.FormatError` / :class:`~stoke.errors.SampleError` for damaged data.
"""

from __future__ import annotations

import ast
import builtins
import pickle
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

import stoke
from stoke.errors import ConfigError, FormatError, SampleError, VersionError
from stoke.format.shard import DATA_START, ShardReader
from stoke.storage.retry import DownloadMismatch

SRC = Path(__file__).resolve().parents[1] / "src" / "stoke"

BUILTIN_ERRORS = frozenset(
    name
    for name in dir(builtins)
    if isinstance(getattr(builtins, name), type) and issubclass(getattr(builtins, name), BaseException)
)

# (file under src/stoke, the enclosing function's qualified name, the built-in) -> why it stays built-in.
# An entry that no longer matches a raise fails the test too: remove it with the raise.
ALLOWED: dict[tuple[str, str, str], str] = {
    # Python's protocols
    ("__init__.py", "__getattr__", "AttributeError"): "a module's __getattr__: hasattr() and imports expect it",
    ("profile/__init__.py", "__getattr__", "AttributeError"): "a module's __getattr__: hasattr() and imports expect it",
    ("read.py", "Dataset._check_index", "TypeError"): "ds[i] with an index that is no integer, as list and numpy say",
    ("read.py", "Dataset._check_index", "IndexError"): "ds[i] out of range: iteration and Sequence code rely on it",
    ("read.py", "selection", "TypeError"): "ds[array] of non-integers, as numpy indexing says",
    ("read.py", "selection", "IndexError"): "ds[[i, j]] or a mask out of range, as numpy indexing says",
    ("read.py", "DatasetView.__init__", "IndexError"): "select(indices) out of range: the IndexError ds[[i]] raises",
    ("read.py", "DatasetView.__getitem__", "TypeError"): "view[i] with an index that is no integer",
    ("read.py", "DatasetView.__getitem__", "IndexError"): "view[i] out of range: iteration relies on it",
    ("pipeline/blocks.py", "TokenBlocks.__getitem__", "TypeError"): "blocks[i] with an index that is no integer",
    ("pipeline/blocks.py", "TokenBlocks.__getitem__", "IndexError"): "blocks[i] out of range: iteration relies on it",
    ("format/shard.py", "ShardReader._bounds", "IndexError"): "a sample number outside the shard, as for any sequence",
    ("pipeline/epoch.py", "EpochIterator.__next__", "StopIteration"): "the iterator protocol: the epoch is over",
    ("pipeline/epoch.py", "EpochIterator._end_without_samples", "StopIteration"): "the iterator protocol (__next__)",
    ("pipeline/executor.py", "weak_method.call", "ReferenceError"): "what a dead weak reference raises (weakref.proxy)",
    # lookups by name: callers catch KeyError, as for a dict
    ("format/manifest.py", "Manifest.field_entry", "KeyError"): "a lookup by field name, like a dict's",
    ("format/manifest.py", "Manifest.attachment", "KeyError"): "a lookup by file name, like a dict's",
    ("read.py", "Dataset.attachment", "KeyError"): "a lookup by file name, like a dict's (documented)",
    # json.loads's contract: callers handle a parse error and a refused constant in one except ValueError
    ("format/strict_json.py", "_refuse", "ValueError"): "json.loads raises ValueError (JSONDecodeError) for non-JSON",
    ("format/strict_json.py", "loads", "ValueError"): "json.loads raises ValueError (JSONDecodeError) for non-JSON",
    # what the condition is
    ("format/fields/jpeg_region.py", "_Handle.__init__", "MemoryError"): "libturbojpeg could not allocate: memory",
    ("storage/cache.py", "_HashingWriter.write", "OSError"): "a short write reported as the OS reports ENOSPC, caught "
    "a line below",
    ("storage/retry.py", "Retry.call", "AssertionError"): "an unreachable line, for the type checker",
}


def bare_raises(tree: ast.AST) -> Iterator[tuple[str, str, int]]:
    """(enclosing qualified name, built-in exception, line) of each ``raise`` of a built-in in ``tree``."""

    def visit(node: ast.AST, scope: list[str]) -> Iterator[tuple[str, str, int]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                yield from visit(child, [*scope, child.name])
                continue
            if isinstance(child, ast.Raise) and child.exc is not None:
                raised = child.exc.func if isinstance(child.exc, ast.Call) else child.exc
                if isinstance(raised, ast.Name) and raised.id in BUILTIN_ERRORS:
                    yield ".".join(scope) or "<module>", raised.id, child.lineno
            yield from visit(child, scope)

    yield from visit(tree, [])


def found_raises() -> dict[tuple[str, str, str], list[int]]:
    found: dict[tuple[str, str, str], list[int]] = {}
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for scope, name, line in bare_raises(tree):
            found.setdefault((path.relative_to(SRC).as_posix(), scope, name), []).append(line)
    return found


def test_the_scanner_finds_raises_by_scope() -> None:
    code = """
def check(x):
    if x:
        raise ValueError("bad")
    raise error
class A:
    def f(self):
        def inner():
            raise KeyError
        raise ConfigError("fine")
raise RuntimeError("at import")
"""
    assert list(bare_raises(ast.parse(code))) == [
        ("check", "ValueError", 4),
        ("A.f.inner", "KeyError", 9),
        ("<module>", "RuntimeError", 11),
    ]


def test_no_bare_builtin_raises() -> None:
    found = found_raises()
    unexplained = [
        f"src/stoke/{file}:{lines[0]} ({scope}): raise {name}"
        for (file, scope, name), lines in found.items()
        if (file, scope, name) not in ALLOWED
    ]
    assert not unexplained, (
        "built-in exceptions raised where a stoke error belongs (ConfigError for a bad argument, FormatError or "
        "SampleError for damaged data), or add them to ALLOWED with the reason:\n" + "\n".join(unexplained)
    )
    stale = [f"{entry}" for entry in ALLOWED if entry not in found]
    assert not stale, "ALLOWED entries that match no raise any more; remove them:\n" + "\n".join(stale)


# -- ConfigError -------------------------------------------------------------------------------------------
def test_bad_arguments_are_config_errors_and_still_value_errors(tmp_path: Path) -> None:
    from stoke.ops import Map, Normalize, RandomHorizontalFlip

    out = tmp_path / "ds"
    stoke.pack({"y": np.arange(4), "name": np.array(["a", "b", "c", "d"])}, out, progress=False)
    dataset = stoke.open(out)
    for make in (
        lambda: Map(5),  # a type, still a bad argument
        lambda: Normalize([0.5], [0.0]),
        lambda: RandomHorizontalFlip(p=2),
        lambda: dataset.column("name"),
        lambda: dataset.field_positions(["nothing"]),
    ):
        with pytest.raises(ConfigError) as caught:
            make()
        assert isinstance(caught.value, ValueError) and "\n" not in str(caught.value)
        assert caught.value.exit_code == 2


def test_protocol_errors_stay_built_in(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    stoke.pack({"y": np.arange(3)}, out, progress=False)
    dataset = stoke.open(out)
    assert [sample["y"] for sample in dataset] == [0, 1, 2]  # iteration ends on IndexError
    with pytest.raises(IndexError):
        dataset[3]
    with pytest.raises(TypeError):
        dataset["y"]
    with pytest.raises(KeyError, match="attaches no file"):
        dataset.attachment("tokenizer.json")


# -- FormatError.reason ------------------------------------------------------------------------------------
def test_reason_is_the_cause_without_the_place_and_defaults_to_the_message() -> None:
    error = FormatError("sample 3 of shard shard-000000.stk has damaged offsets", reason="its offsets are damaged")
    assert str(error) == "sample 3 of shard shard-000000.stk has damaged offsets"
    assert error.reason == "its offsets are damaged"
    assert FormatError("the manifest is not JSON").reason == "the manifest is not JSON"
    assert VersionError("format version 9", reason="too new").reason == "too new"  # subclasses take it too


def test_reason_survives_pickling_whatever_the_subclass_takes() -> None:
    for error in (
        FormatError("shard x: its bytes do not match", reason="its bytes do not match"),
        VersionError("format version 9"),
        DownloadMismatch("shard x arrived short", short=True),  # an __init__ with a keyword of its own
    ):
        again = pickle.loads(pickle.dumps(error))
        assert type(again) is type(error) and str(again) == str(error) and again.reason == error.reason
    assert pickle.loads(pickle.dumps(DownloadMismatch("cut", short=True))).short is True


def _damaged(tmp_path: Path, damage: Callable[[bytearray], None]) -> tuple[stoke.Dataset, Path]:
    """A dataset of 8 float samples, 4 per shard, whose first shard ``damage`` changed in place."""
    out = tmp_path / "ds"
    stoke.pack({"y": np.arange(8, dtype=np.float64)}, out, shard_items=4, progress=False)
    shard = out / stoke.open(out).manifest.shards[0].file
    raw = bytearray(shard.read_bytes())
    damage(raw)
    shard.write_bytes(bytes(raw))
    return stoke.open(out), shard


def test_the_shard_reader_gives_the_reason_a_sample_error_quotes(tmp_path: Path) -> None:
    def flip(raw: bytearray) -> None:
        raw[DATA_START + 1] ^= 0xFF  # a byte of sample 0's value

    dataset, shard = _damaged(tmp_path, flip)
    entry = dataset.manifest.shards[0]
    reader = ShardReader(shard, 1, entry.num_samples, entry.file_size, dataset.manifest.format_version, entry.seed)
    with pytest.raises(FormatError) as caught:
        reader.fields_checked(0)
    assert caught.value.reason == "its bytes or field boundaries do not match their checksum"
    assert shard.name in str(caught.value) and shard.name not in caught.value.reason
    reader.close()
    with pytest.raises(SampleError) as sample:
        dataset.read_fields(0, verify=True)
    assert str(sample.value) == f"sample 0 in {shard} is damaged: {caught.value.reason}"


def test_damaged_offsets_have_a_reason_too(tmp_path: Path) -> None:
    def move_the_end_of_sample_0(raw: bytearray) -> None:
        offsets = len(raw) - 4 * 8 - 5 * 8  # before the checksums (4 samples): 4 samples x 1 field + 1 offsets
        raw[offsets + 8 : offsets + 16] = (1 << 40).to_bytes(8, "little")  # far past the records

    dataset, shard = _damaged(tmp_path, move_the_end_of_sample_0)
    with pytest.raises(FormatError) as caught:
        dataset.shard_reader(0).fields(0)
    assert caught.value.reason == "its offsets are damaged" and shard.name in str(caught.value)
    with pytest.raises(SampleError, match=rf"^sample 0 in \S+{shard.name} is damaged: its offsets are damaged$"):
        dataset.read_fields(0)
