"""ReadPlan against a slow, obvious reference: read counts per shard and shards in order of first need."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from stoke.storage.prefetch import ReadPlan


@given(st.lists(st.integers(0, 5), min_size=1, max_size=6), st.data())
def test_counts_and_first_need_match_a_reference(shard_sizes, data):
    starts = np.concatenate([[0], np.cumsum(shard_sizes)]).astype(np.int64)
    total = int(starts[-1])
    if total == 0:
        return
    indices = data.draw(st.lists(st.integers(0, total - 1), max_size=40))
    plan = ReadPlan(starts, np.array(indices, dtype=np.int64))
    shard_of = [shard for shard, size in enumerate(shard_sizes) for _ in range(size)]
    order: list[int] = []
    for index in indices:
        if shard_of[index] not in order:
            order.append(shard_of[index])
    assert plan.first_need.tolist() == order
    assert plan.remaining.tolist() == [sum(shard_of[i] == s for i in indices) for s in range(len(shard_sizes))]
    # Reading them in order finishes each shard at its last read, and upcoming() moves past finished ones.
    for position, index in enumerate(indices):
        shard = shard_of[index]
        assert plan.count_down(shard) == (shard not in [shard_of[i] for i in indices[position + 1 :]])
        rest = [shard_of[i] for i in indices[position + 1 :]]
        assert plan.upcoming(2) == [s for s in order if s in rest][:2]  # by first need, unfinished only
    if indices:
        assert not plan.count_down(shard_of[indices[0]])  # reads beyond the plan are not counted
        assert plan.remaining.sum() == 0
