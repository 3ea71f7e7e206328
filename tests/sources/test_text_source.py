"""TextSource: documents from .txt, folders and JSONL, tokenized at pack time, the tokenizer attached to
the dataset and checked before use."""

from __future__ import annotations

import json
from pathlib import Path
from pydoc_data.topics import topics

import numpy as np
import pytest
from click.testing import CliRunner

import stoke
from helpers import rewrite_manifest
from stoke.cli import main
from stoke.errors import ConfigError, FormatError, SourceError
from stoke.format.checksum import file_checksum
from stoke.inspect import format_summary, summarize
from stoke.sources import TextSource, resolve_source
from stoke.verify import verify


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Python's bundled documentation topics as JSONL: one document per topic."""
    path = tmp_path_factory.mktemp("corpus") / "topics.jsonl"
    with open(path, "w", encoding="utf-8") as stream:
        for number, name in enumerate(sorted(topics)):
            stream.write(json.dumps({"topic": name, "text": topics[name], "label": "odd" if number % 2 else "even"}))
            stream.write("\n")
    return path


@pytest.fixture(scope="module")
def packed(corpus, tmp_path_factory) -> stoke.Dataset:
    out = tmp_path_factory.mktemp("packed") / "ds"
    stoke.pack(TextSource(corpus, tokenizer="bpe", vocab_size=500), out, shard_items=30, workers=1, progress=False)
    return stoke.open(out)


def test_jsonl_documents_keep_their_other_keys_as_fields(packed):
    assert {name: field.type_name for name, field in packed.fields.items()} == {
        "topic": "text",
        "text": "text",
        "tokens": "ndarray",
        "label": "int",
    }
    assert packed.fields["tokens"] == stoke.NDArrayField("uint16", (None,))
    assert len(packed) == len(topics) and packed.manifest.field_entry("label").classes == ["even", "odd"]
    names = sorted(topics)
    assert [packed[i]["topic"] for i in range(len(packed))] == names


def test_the_bpe_tokenizer_is_saved_inside_and_decodes_every_document(packed):
    (attachment,) = packed.manifest.attachments
    assert attachment.file == "tokenizer.json"
    assert attachment.file_size == (packed.root / "tokenizer.json").stat().st_size
    assert attachment.checksum == file_checksum(packed.root / "tokenizer.json")
    tokenizer = packed.tokenizer()
    assert tokenizer.get_vocab_size() <= 500
    for index in range(len(packed)):
        sample = packed[index]
        assert sample["tokens"].max() < 500
        assert tokenizer.decode(sample["tokens"].tolist()) == sample["text"] == topics[sample["topic"]]
    assert packed.manifest.source["tokenizer"] == "bpe" and packed.manifest.source["eos_id"] == 0
    shown = format_summary(summarize(packed))  # stoke inspect lists it
    assert f"attached     tokenizer.json ({attachment.file_size:,} bytes)" in shown


def test_a_tampered_tokenizer_is_refused_before_use(corpus, tmp_path):
    stoke.pack(TextSource(corpus, keep_text=False), tmp_path / "ds", workers=1, progress=False)
    path = tmp_path / "ds" / "tokenizer.json"
    data = path.read_bytes()
    path.write_bytes(data.replace(b"<|endoftext|>", b"<|endoftexT|>"))  # same size, different bytes
    with pytest.raises(FormatError, match="does not match its checksum"):
        stoke.open(tmp_path / "ds").tokenizer()
    report = verify(tmp_path / "ds")  # stoke verify reports it too, with the samples intact
    assert not report.ok and not report.damaged
    assert [problem["shard"] for problem in report.shard_problems] == ["tokenizer.json"]
    path.write_bytes(data + b" ")
    with pytest.raises(FormatError, match=f"is {len(data) + 1:,} bytes but the manifest lists {len(data):,}"):
        stoke.open(tmp_path / "ds").attachment("tokenizer.json")
    path.unlink()
    with pytest.raises(FormatError, match=r"attached file tokenizer\.json is missing"):
        stoke.open(tmp_path / "ds").tokenizer()


@pytest.mark.parametrize("name", ["../tokenizer.json", ".hidden", "manifest.json", "shard-000000.stk", "a/b"])
def test_a_manifest_naming_an_unsafe_attachment_is_refused(corpus, tmp_path, name):
    stoke.pack(TextSource(corpus), tmp_path / "ds", workers=1, progress=False)
    rewrite_manifest(tmp_path / "ds", lambda document: document["attachments"][0].update(file=name))
    with pytest.raises(FormatError, match=r"attachments\[0\]"):
        stoke.open(tmp_path / "ds")


def test_datasets_without_attachments_have_no_attachments_key_and_no_tokenizer(tmp_path):
    stoke.pack({"y": np.arange(3)}, tmp_path / "ds", workers=1, progress=False)
    assert "attachments" not in json.loads((tmp_path / "ds" / "manifest.json").read_text())
    with pytest.raises(ConfigError, match=r"no tokenizer\.json"):
        stoke.open(tmp_path / "ds").tokenizer()
    with pytest.raises(KeyError, match="attaches no file"):
        stoke.open(tmp_path / "ds").attachment("tokenizer.json")


def test_overwrite_removes_the_old_attachments(corpus, tmp_path):
    stoke.pack(TextSource(corpus), tmp_path / "ds", workers=1, progress=False)
    stoke.pack({"y": np.arange(3)}, tmp_path / "ds", workers=1, progress=False, overwrite=True)
    assert not (tmp_path / "ds" / "tokenizer.json").exists()


def test_keep_text_false_stores_only_tokens_and_byte_tokens_are_utf8(corpus, tmp_path):
    stoke.pack(TextSource(corpus, keep_text=False), tmp_path / "ds", workers=1, progress=False)
    dataset = stoke.open(tmp_path / "ds")
    assert list(dataset.fields) == ["topic", "tokens", "label"]
    sample = dataset[0]
    assert bytes(sample["tokens"].astype(np.uint8)) == topics[sample["topic"]].encode()
    assert dataset.tokenizer().decode(sample["tokens"].tolist()) == topics[sample["topic"]]


def test_a_txt_file_is_one_document_per_paragraph(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("\n\n  First para,\nstill first.  \n\n\n\nSecond.\n \t\nThird\n")
    source = resolve_source(path)
    assert isinstance(source, TextSource) and len(source) == 3
    assert [source.read(i)[0] for i in range(3)] == ["First para,\nstill first.", "Second.", "Third"]
    assert [source.name_of(i) for i in range(3)] == [
        "notes.txt paragraph 1 (line 3)",
        "notes.txt paragraph 2 (line 8)",
        "notes.txt paragraph 3 (line 10)",
    ]


def test_a_folder_is_one_document_per_file_and_bad_files_are_quarantined(tmp_path):
    root = tmp_path / "texts"
    (root / "b").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / "a.txt").write_text("alpha")
    (root / "b" / "c.txt").write_text("gamma\n\ndelta")
    (root / "b" / "bad.txt").write_bytes(b"caf\xe9")  # Latin-1, not UTF-8
    (root / ".git" / "x.txt").write_text("hidden")
    (root / "empty.txt").write_text("")
    (root / "notes.md").write_text("not a .txt")
    source = TextSource(root, tokenizer="bpe", vocab_size=300)
    result = stoke.pack(source, tmp_path / "ds", workers=1, progress=False, max_quarantined=0.25)  # 1 of 4
    assert [(entry["source"], entry["code"]) for entry in result.quarantine] == [("b/bad.txt", "invalid_value")]
    assert "not UTF-8 text (byte 3 is 0xe9)" in result.quarantine[0]["reason"]
    dataset = stoke.open(tmp_path / "ds")
    assert [(s["path"], s["text"], len(s["tokens"]) > 0) for s in dataset] == [
        ("a.txt", "alpha", True),
        ("b/c.txt", "gamma\n\ndelta", True),
        ("empty.txt", "", False),  # an empty document is kept, with no tokens
    ]


def test_jsonl_rows_without_text_are_quarantined(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"text": "fine"}\n{"text": null}\nnot json\n{"text": ""}\n')
    result = stoke.pack(TextSource(path), tmp_path / "ds", workers=1, progress=False, max_quarantined=0.5)  # 2 of 4
    assert [(entry["item"], entry["code"]) for entry in result.quarantine] == [(1, "missing_value"), (2, "invalid_row")]
    assert [sample["text"] for sample in stoke.open(tmp_path / "ds")] == ["fine", ""]


def test_sources_that_cannot_be_text_are_refused(tmp_path):
    (tmp_path / "n.jsonl").write_text('{"text": 3}\n')
    with pytest.raises(SourceError, match="holds int values, not text"):
        TextSource(tmp_path / "n.jsonl")
    with pytest.raises(SourceError, match="has no key 'body'"):
        TextSource(tmp_path / "n.jsonl", text_field="body")
    (tmp_path / "t.jsonl").write_text('{"text": "a", "tokens": 1}\n')
    with pytest.raises(SourceError, match="'tokens', which stoke adds"):
        TextSource(tmp_path / "t.jsonl")
    (tmp_path / "latin.txt").write_bytes(b"caf\xe9")
    with pytest.raises(SourceError, match="not UTF-8"):
        TextSource(tmp_path / "latin.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match=r"holds no \.txt files"):
        TextSource(tmp_path / "empty")
    with pytest.raises(SourceError, match="does not exist"):
        TextSource(tmp_path / "missing.txt")
    with pytest.raises(ConfigError, match="tokenizer must be"):
        TextSource(_ok(tmp_path), tokenizer="x")


def test_the_cli_packs_jsonl_with_a_trained_bpe(corpus, tmp_path):
    out = tmp_path / "ds"
    args = ["pack", str(corpus), str(out), "--text-field", "text", "--tokenizer", "bpe", "--vocab-size", "400"]
    result = CliRunner().invoke(main, [*args, "--json", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["num_samples"] == len(topics)
    dataset = stoke.open(out)
    assert dataset.manifest.source["vocab_size"] <= 400 and dataset.tokenizer().get_vocab_size() <= 400
    refused = CliRunner().invoke(main, ["pack", str(corpus), str(tmp_path / "x"), "--text-field", "body"])
    assert refused.exit_code == 2 and "has no key 'body'" in refused.output


def _ok(tmp_path: Path) -> Path:
    path = tmp_path / "ok.txt"
    path.write_text("fine")
    return path
