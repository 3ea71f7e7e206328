"""Text augmentation: deterministic per seed, the counts each op promises, synonyms only from the table."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import stoke
from stoke.errors import ConfigError
from stoke.ops import RandomDeletion, RandomInsertion, RandomSwap, SynonymReplacement
from stoke.rng import sample_uniforms, stream_id

SYNONYMS = {"quick": ["fast", "speedy"], "dog": ["hound"], "lazy": ["idle", "sluggish"]}
SENTENCE = "the quick brown fox jumps over the lazy dog"
WORDS = st.lists(st.sampled_from(["the", "quick", "brown", "Dog", "lazy", "fox", "a,"]), max_size=12)
SEEDS = st.integers(0, 2**63)


def ops():
    return [RandomDeletion(0.3), RandomSwap(2), RandomInsertion(2, SYNONYMS), SynonymReplacement(2, SYNONYMS)]


@pytest.mark.parametrize("op", ops(), ids=lambda op: type(op).__name__)
def test_the_same_seed_gives_the_same_text_and_seeds_vary_it(op):
    results = {op(SENTENCE, seed=seed) for seed in range(20)}
    assert all(op(SENTENCE, seed=seed) == op(SENTENCE, seed=seed) for seed in range(5))
    assert len(results) > 1


@pytest.mark.parametrize("op", ops(), ids=lambda op: type(op).__name__)
@pytest.mark.parametrize("text", ["", "   ", "\n"])
def test_empty_text_comes_back_unchanged(op, text):
    assert op(text, seed=1) == text


@settings(max_examples=80, deadline=None)
@given(WORDS, SEEDS, st.floats(0, 1))
def test_deletion_keeps_the_words_whose_draw_is_at_least_p_in_order(words, seed, p):
    out = RandomDeletion(p)(" ".join(words), seed=seed).split()
    if not words:
        assert out == []
        return
    keep = np.random.Generator(np.random.Philox(key=seed)).random(len(words)) >= p
    expected = [word for word, kept in zip(words, keep) if kept]
    assert out == expected or (not expected and len(out) == 1 and out[0] in words)


def test_deletion_extremes():
    assert RandomDeletion(0.0)(SENTENCE, seed=3) == SENTENCE
    assert len(RandomDeletion(1.0)(SENTENCE, seed=3).split()) == 1  # one word always survives


@settings(max_examples=80, deadline=None)
@given(WORDS, SEEDS, st.integers(0, 5))
def test_swap_permutes_and_moves_at_most_two_words_per_swap(words, seed, n):
    out = RandomSwap(n)(" ".join(words), seed=seed).split()
    assert sorted(out) == sorted(words)
    assert sum(a != b for a, b in zip(out, words)) <= 2 * n


def test_one_swap_exchanges_exactly_two_distinct_words():
    words = [f"w{i}" for i in range(6)]
    for seed in range(20):
        out = RandomSwap(1)(" ".join(words), seed=seed).split()
        assert sum(a != b for a, b in zip(out, words)) == 2


@settings(max_examples=80, deadline=None)
@given(WORDS, SEEDS, st.integers(0, 4))
def test_insertion_adds_n_synonyms_from_the_table(words, seed, n):
    out = RandomInsertion(n, SYNONYMS)(" ".join(words), seed=seed).split()
    has_synonyms = any(word.lower() in SYNONYMS for word in words)
    assert len(out) == len(words) + (n if has_synonyms else 0)
    remaining = iter(out)  # the original words are still there, in order
    assert all(any(word == other for other in remaining) for word in words)
    added = list(out)
    for word in words:
        added.remove(word)
    allowed = {option for options in SYNONYMS.values() for option in options}
    assert set(added) <= allowed


@settings(max_examples=80, deadline=None)
@given(WORDS, SEEDS, st.integers(0, 4))
def test_replacement_changes_at_most_n_words_each_to_one_of_its_synonyms(words, seed, n):
    out = SynonymReplacement(n, SYNONYMS)(" ".join(words), seed=seed).split()
    assert len(out) == len(words)
    changed = [(before, after) for before, after in zip(words, out) if before != after]
    replaceable = sum(word.lower() in SYNONYMS for word in words)
    assert len(changed) == min(n, replaceable)
    assert all(after in SYNONYMS[before.lower()] for before, after in changed)


def test_a_table_entry_never_replaces_a_word_by_itself_and_lookup_ignores_case():
    op = SynonymReplacement(5, {"Big": ["big", "large"]})
    assert op("BIG big", seed=0) == "large large"


@pytest.mark.parametrize(
    "make",
    [
        lambda: RandomDeletion(1.5),
        lambda: RandomSwap(-1),
        lambda: RandomSwap(1.0),
        lambda: RandomInsertion(1, {"a": "b"}),  # a string, not a list of synonyms
        lambda: SynonymReplacement(1, {"a": ["two words"]}),
        lambda: SynonymReplacement(1, ["a"]),
    ],
)
def test_bad_settings_are_config_errors(make):
    with pytest.raises(ConfigError):
        make()


def test_text_ops_in_the_loader_are_keyed_by_sample_not_by_thread(tmp_path):
    texts = [f"sample {i} the quick brown fox jumps over the lazy dog" for i in range(12)]
    stoke.pack({"text": np.array(texts), "y": np.arange(12)}, tmp_path / "ds", progress=False, workers=1)
    dataset = stoke.open(tmp_path / "ds")
    transforms = {"text": [SynonymReplacement(2, SYNONYMS), RandomSwap(1)]}

    def epoch(threads, epoch_number=0):
        loader = stoke.Loader(dataset, batch_size=5, seed=7, num_threads=threads, transforms=transforms)
        loader.load_state_dict({**loader.state_dict(), "epoch": epoch_number})
        out = {}
        for batch in loader:
            out.update(zip(batch["index"].tolist(), batch["text"]))
        loader.close()
        return out

    one, three = epoch(1), epoch(3)
    assert one == three and sorted(one) == list(range(12))
    assert epoch(1, epoch_number=1) != one  # a new epoch draws anew
    for index, text in one.items():  # each is the ops applied with this sample's counters
        expected = texts[index]
        for position, op in enumerate(transforms["text"]):
            uniforms = sample_uniforms(7, 0, stream_id("text", position), np.array([index]), 1)
            expected = op.apply_text(expected, uniforms[0])
        assert text == expected


def test_the_loader_refuses_text_ops_on_other_fields_and_batch_ops_on_text():
    records = [{"text": "a b", "y": 1.0}] * 2
    with pytest.raises(ConfigError, match="batch ops"):
        stoke.Loader(records, batch_size=2, transforms={"y": [RandomSwap(1)]})
    with pytest.raises(ConfigError, match="text ops"):
        stoke.Loader(records, batch_size=2, transforms={"text": [stoke.ops.Normalize([0.0], [1.0])]})
