"""One way for an object to serialise itself: ``to_dict()`` gives JSON-ready data, ``to_json()`` its text.

The convention, checked over every class under ``src/stoke`` with ``ast``:

* ``to_dict(self) -> dict[...]``: plain data (``str``, numbers, ``bool``, ``None``, lists, dicts with
  string keys) that ``json.dumps`` takes as it is; ``from_dict`` (a classmethod) is its inverse where one
  is needed (``Manifest.from_dict``, ``Report.from_dict``).
* ``to_json(self, ...) -> str``: where JSON text is wanted (``--json`` output, a file): always
  ``json.dumps(self.to_dict(), ...)``, so the two cannot disagree.
* No other names (``as_dict``, ``asdict``, ``json``, ``to_jsonable``, ``from_json`` on a class). Not
  covered: ``state_dict`` (PyTorch's resumable-state protocol), ``describe``/``stats`` (reports about an
  object, not the object), functions that build a report (``inspect.summarize``).
"""

from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import stoke
from stoke.cli import main
from stoke.prepare.split import make_splits
from stoke.profile.report import Report
from stoke.verify import verify

SRC = Path(__file__).resolve().parents[1] / "src" / "stoke"
OTHER_NAMES = frozenset({"as_dict", "asdict", "json", "to_jsonable", "from_json", "dict"})

# (file under src/stoke, class, name) -> why it is still there. Remove an entry with its name.
PENDING: dict[tuple[str, str, str], str] = {}


def _annotation(node: ast.AST) -> str:
    """The return annotation of a method ("" for a name assigned in the class body)."""
    returns = getattr(node, "returns", None)
    return ast.unparse(returns) if returns is not None else ""


def serialisers() -> list[tuple[str, str, str, ast.AST]]:
    """(file, class, name, node) of every method or class-level name of a serialiser kind."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        for cls in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(cls, ast.ClassDef):
                continue
            file = path.relative_to(SRC).as_posix()
            for node in cls.body:
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    found.append((file, cls.name, node.name, node))
                elif isinstance(node, ast.Assign):
                    found += [
                        (file, cls.name, target.id, node) for target in node.targets if isinstance(target, ast.Name)
                    ]
    return [entry for entry in found if entry[2] in OTHER_NAMES | {"to_dict", "to_json", "from_dict"}]


def test_every_serialiser_follows_the_convention() -> None:
    problems = []
    for file, cls, name, node in serialisers():
        where = f"src/stoke/{file}: {cls}.{name}"
        if name in OTHER_NAMES:
            if (file, cls, name) not in PENDING:
                problems.append(f"{where}: name it to_dict (data) or to_json (text)")
        elif name == "to_json" and _annotation(node) != "str":
            problems.append(f"{where} must return str (JSON text); data is to_dict's")
        elif name == "to_dict" and not _annotation(node).startswith("dict"):
            problems.append(f"{where} must return a dict of JSON-ready data")
    assert not problems, "\n".join(problems)
    names = {(file, cls, name) for file, cls, name, _ in serialisers()}
    assert not [entry for entry in PENDING if entry not in names], "PENDING entries that are gone; remove them"
    with_text = {(file, cls) for file, cls, name in names if name == "to_json"}
    with_data = {(file, cls) for file, cls, name in names if name == "to_dict"}
    tokenizer = {("prepare/tokenize.py", "TextTokenizer")}  # its JSON is the tokenizers library's own file
    assert with_text - tokenizer <= with_data, "to_json without to_dict: " + str(with_text - tokenizer - with_data)


def _dataset(tmp_path: Path) -> Path:
    out = tmp_path / "ds"
    stoke.pack({"y": np.arange(20) % 2, "x": np.arange(20, dtype=np.float32)}, out, progress=False)
    return out


def test_pack_result_serialises_itself_as_the_cli_prints_it(tmp_path: Path) -> None:
    (tmp_path / "rows.csv").write_text("x,label\n1.5,a\n2.5,b\n,a\n")
    result = stoke.pack(tmp_path / "rows.csv", tmp_path / "ds", progress=False)
    data = result.to_dict()
    assert data["path"] == str(tmp_path / "ds") and data["num_samples"] == result.num_samples == 3
    assert set(data) == {field.name for field in dataclasses.fields(result)}
    assert json.loads(result.to_json()) == data and "\n" not in result.to_json()
    assert json.loads(result.to_json(indent=2)) == data
    printed = CliRunner().invoke(main, ["pack", str(tmp_path / "rows.csv"), str(tmp_path / "again"), "--json"])
    assert printed.exit_code == 0, printed.output
    again = json.loads(printed.stdout)
    assert {key: value for key, value in again.items() if key not in ("path", "seconds")} == {
        key: value for key, value in data.items() if key not in ("path", "seconds")
    }


@pytest.mark.parametrize("kind", ["verify", "split"])
def test_reports_give_the_same_data_as_dict_and_as_text(tmp_path: Path, kind: str) -> None:
    out = _dataset(tmp_path)
    if kind == "verify":
        report = verify(out, progress=False)
        printed = CliRunner().invoke(main, ["verify", str(out), "--json"])
    else:
        report = make_splits(stoke.open(out), {"train": 0.5, "val": 0.5}, seed=3, stratify="y")
        arguments = ["--train", "0.5", "--val", "0.5", "--seed", "3", "--stratify", "y", "--json"]
        printed = CliRunner().invoke(main, ["split", str(out), *arguments])
    assert printed.exit_code == 0, printed.output
    assert json.loads(report.to_json()) == report.to_dict() == json.loads(printed.stdout)


def test_the_profile_report_follows_it_too() -> None:
    report = Report(steps=2, input_share=0.25)
    assert json.loads(report.to_json()) == report.to_dict()
    assert Report.from_dict(report.to_dict()) == report


def test_the_manifest_and_fields_round_trip_through_dicts(tmp_path: Path) -> None:
    from stoke.format.fields import field_from_dict
    from stoke.format.manifest import Manifest

    manifest = Manifest.read(_dataset(tmp_path))
    document = json.loads(json.dumps(manifest.to_dict()))
    assert Manifest.from_dict(document, where="manifest.json").to_dict() == manifest.to_dict()
    for entry in manifest.fields:
        assert field_from_dict(entry.field.to_dict(), where="fields[0]") == entry.field
