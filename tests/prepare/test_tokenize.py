"""Tokenization at pack time: the byte-level tokenizer and a BPE trained on Python's own documentation."""

from __future__ import annotations

import pickle
from pydoc_data.topics import topics

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stoke.errors import ConfigError, FormatError, InvalidItem
from stoke.prepare.tokenize import (
    BYTE_EOS_ID,
    EOS_TOKEN,
    TextTokenizer,
    byte_tokenizer,
    tokenizer_from_json,
    train_bpe,
)

CORPUS = [topics[name] for name in sorted(topics)]
BYTES = byte_tokenizer()


@pytest.fixture(scope="module")
def bpe() -> TextTokenizer:
    return train_bpe(CORPUS, vocab_size=600)


@settings(max_examples=60, deadline=None)
@given(st.text())
def test_byte_ids_are_the_utf8_bytes_and_hugging_face_agrees(text):
    ids = BYTES.encode(text)
    assert ids.dtype == np.uint16
    assert ids.tolist() == list(text.encode("utf-8"))
    assert BYTES.hf.encode(text).ids == ids.tolist()  # the saved tokenizer.json encodes the same way
    assert BYTES.decode(ids) == text


def test_byte_tokenizer_has_one_special_end_of_text_id():
    assert BYTES.vocab_size == 257 and BYTES.eos_id == BYTE_EOS_ID == BYTES.hf.token_to_id(EOS_TOKEN)
    assert BYTES.decode([104, 105, BYTE_EOS_ID]) == "hi"  # special tokens are left out of the text


def test_text_that_is_not_unicode_is_an_invalid_item():
    with pytest.raises(InvalidItem, match="not valid Unicode") as raised:
        BYTES.encode("a\ud800b")
    assert raised.value.code == "invalid_value"


def test_bpe_on_the_python_docs_round_trips_every_topic(bpe):
    assert bpe.kind == "bpe" and bpe.vocab_size <= 600 and bpe.eos_id == 0
    assert bpe.dtype == np.uint16
    for text in CORPUS:
        ids = bpe.encode(text)
        assert ids.max() < bpe.vocab_size
        assert bpe.decode(ids) == text
    total_bytes = sum(len(text.encode()) for text in CORPUS)
    total_tokens = sum(len(bpe.encode(text)) for text in CORPUS)
    assert total_tokens < total_bytes / 2  # it learned merges: much shorter than bytes


def test_bpe_training_is_deterministic(bpe):
    assert train_bpe(CORPUS, vocab_size=600).to_json() == bpe.to_json()


def test_tokenizers_pickle_as_their_json(bpe):
    for tokenizer in (BYTES, bpe):
        copy = pickle.loads(pickle.dumps(tokenizer))
        assert copy.kind == tokenizer.kind and copy.to_json() == tokenizer.to_json()
        assert copy.encode("def f(): pass").tolist() == tokenizer.encode("def f(): pass").tolist()


def test_the_saved_json_reads_back_as_the_same_kind(bpe):
    for tokenizer in (BYTES, bpe):
        again = tokenizer_from_json(tokenizer.to_json().encode(), "tokenizer.json")
        assert again.kind == tokenizer.kind and again.vocab_size == tokenizer.vocab_size


def test_a_damaged_tokenizer_json_is_a_format_error():
    with pytest.raises(FormatError, match=r"ds/tokenizer.json is not a valid tokenizer"):
        tokenizer_from_json(b'{"version": "1.0", "model": 3', "ds/tokenizer.json")


def test_large_vocabularies_are_stored_as_int32():
    class Large:  # what TextTokenizer asks of a tokenizers.Tokenizer
        def get_vocab_size(self, with_added_tokens=True):
            return 70_000

        def token_to_id(self, token):
            return None

    tokenizer = TextTokenizer("bpe", Large())
    assert tokenizer.dtype == np.int32 and tokenizer.eos_id is None


@pytest.mark.parametrize("vocab_size", [0, 257, 1.5, True, 1 << 30])
def test_bpe_vocab_size_is_checked(vocab_size):
    with pytest.raises(ConfigError, match="vocab_size must be an integer"):
        train_bpe(["a b"], vocab_size=vocab_size)
