"""Pure-numpy unit tests of the epoch plan (plan.py) and the batching rule (batching.py)."""

from __future__ import annotations

import numpy as np
import pytest

from dh_tf.batching import align_groups, num_batches, split_batches
from dh_tf.plan import page_permutation, page_positions, plan_epoch


def delivered_positions(num_rows, page_rows, **kw):
    return np.concatenate([page_positions(p) for p in plan_epoch(num_rows, page_rows, **kw)] or [np.empty(0, int)])


@pytest.mark.parametrize("num_rows,page_rows", [(0, 5), (1, 5), (10, 4), (12, 4), (100, 7)])
def test_plan_in_order_covers_every_row_once_in_table_order(num_rows, page_rows):
    plans = plan_epoch(num_rows, page_rows)
    assert [p.num_rows for p in plans[:-1]] == [page_rows] * (len(plans) - 1)
    assert np.array_equal(delivered_positions(num_rows, page_rows), np.arange(num_rows))


@pytest.mark.parametrize("num_rows,page_rows,block_rows", [(1000, 300, 100), (1000, 50, 100), (999, 256, 64), (5, 10, 3)])
def test_shuffled_plan_is_a_permutation_and_pure_function_of_seed_and_epoch(num_rows, page_rows, block_rows):
    kw = dict(shuffle=True, block_rows=block_rows)
    first = delivered_positions(num_rows, page_rows, seed=7, epoch=0, **kw)
    assert np.array_equal(np.sort(first), np.arange(num_rows))
    assert np.array_equal(first, delivered_positions(num_rows, page_rows, seed=7, epoch=0, **kw))
    assert not np.array_equal(first, delivered_positions(num_rows, page_rows, seed=7, epoch=1, **kw))
    assert not np.array_equal(first, delivered_positions(num_rows, page_rows, seed=8, epoch=0, **kw))


def test_shuffled_pages_gather_whole_blocks():
    plans = plan_epoch(1000, 300, shuffle=True, seed=1, block_rows=100)
    assert all(len(p.spans) == 3 for p in plans[:-1])
    assert all((b - a) == 100 and a % 100 == 0 for p in plans for a, b in p.spans)


def test_shuffle_quality_position_and_order_uncorrelated_and_neighbours_split():
    # Blocks move as units, so the correlation's noise is about 1/sqrt(num_blocks): 1000 blocks here.
    order = delivered_positions(1_000_000, 10_000, shuffle=True, seed=3, block_rows=1000)
    assert abs(np.corrcoef(order, np.arange(len(order)))[0, 1]) < 0.1
    still_adjacent = np.mean(np.abs(np.diff(order)) == 1)
    assert still_adjacent < 0.01


def test_in_order_pages_have_no_permutation():
    assert page_permutation(plan_epoch(10, 4)[0]) is None


def test_plan_rejects_bad_sizes():
    with pytest.raises(ValueError, match="num_rows must be >= 0"):
        plan_epoch(-1, 4)
    with pytest.raises(ValueError, match="page_rows and block_rows must be >= 1"):
        plan_epoch(10, 0)


def pages_of(sizes):
    start = 0
    for size in sizes:
        yield [np.arange(start, start + size), np.arange(start, start + size) * 10]
        start += size


def batches(page_sizes, batch_size, drop_remainder):
    out = []
    for group in align_groups(pages_of(page_sizes), batch_size, drop_remainder):
        out.extend(split_batches(group, batch_size))
    return out


@pytest.mark.parametrize("page_sizes", [[34], [20, 14], [5, 5, 5, 5, 14], [16, 16, 2], [1] * 34, [0, 34, 0]])
def test_34_rows_at_batch_16_give_16_16_2(page_sizes):
    got = batches(page_sizes, 16, drop_remainder=False)
    assert [len(b[0]) for b in got] == [16, 16, 2]
    assert np.array_equal(np.concatenate([b[0] for b in got]), np.arange(34))
    assert np.array_equal(np.concatenate([b[1] for b in got]), np.arange(34) * 10)
    assert [len(b[0]) for b in batches(page_sizes, 16, drop_remainder=True)] == [16, 16]


@pytest.mark.parametrize("page_sizes,batch_size", [([32], 16), ([7] * 9, 9), ([100, 3, 50], 10), ([10], 3)])
def test_only_the_last_batch_is_partial(page_sizes, batch_size):
    total = sum(page_sizes)
    got = batches(page_sizes, batch_size, drop_remainder=False)
    sizes = [len(b[0]) for b in got]
    assert sizes[:-1] == [batch_size] * (len(sizes) - 1)
    assert len(sizes) == num_batches(total, batch_size, False)
    assert np.array_equal(np.concatenate([b[0] for b in got]), np.arange(total))


def test_groups_are_whole_batches_until_the_last():
    groups = list(align_groups(pages_of([100, 3, 50]), 10, False))
    assert [len(g[0]) for g in groups] == [100, 10, 40, 3]


def test_num_batches():
    assert [num_batches(n, 16, False) for n in (0, 1, 16, 17, 34)] == [0, 1, 1, 2, 3]
    assert [num_batches(n, 16, True) for n in (0, 1, 16, 17, 34)] == [0, 0, 1, 1, 2]
