"""Pure-numpy unit tests of the epoch plan (plan.py) and the batching rule (batching.py)."""

from __future__ import annotations

import numpy as np
import pytest

from dh_tf.reading.batching import align_groups, num_batches, split_batches
from dh_tf.reading.plan import page_permutation, page_positions, plan_epoch


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
    assert [p.num_rows for p in plans] == [300, 300, 300, 100]
    assert all(a % 100 == 0 and b % 100 == 0 for p in plans for a, b in p.spans)
    assert all(list(p.spans) == sorted(p.spans) for p in plans)  # read in table order


@pytest.mark.parametrize("page_rows", [30, 64, 100, 250])
def test_shuffled_pages_hold_page_rows_even_below_the_block_size(page_rows):
    # The memory bound is page_rows rows per page, whatever the block size (it used to be a block).
    plans = plan_epoch(1000, page_rows, shuffle=True, seed=2, block_rows=100)
    assert all(p.num_rows == page_rows for p in plans[:-1]) and plans[-1].num_rows <= page_rows
    positions = np.concatenate([page_positions(p) for p in plans])
    assert np.array_equal(np.sort(positions), np.arange(1000))


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


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("num_rows,num_shards", [(1000, 2), (1003, 2), (999, 4), (10, 3), (2, 3)])
def test_shards_are_disjoint_equal_sized_and_cover_all_but_the_leftover(num_rows, num_shards, shuffle):
    parts = [delivered_positions(num_rows, 64, shuffle=shuffle, seed=4, block_rows=100, num_shards=num_shards,
                                 shard_index=k) for k in range(num_shards)]
    assert [len(p) for p in parts] == [num_rows // num_shards] * num_shards
    union = np.concatenate(parts)
    assert len(np.unique(union)) == len(union)
    assert len(union) == num_rows - num_rows % num_shards


@pytest.mark.parametrize("shuffle", [False, True])
def test_each_shard_owns_a_fixed_part_of_the_table_every_epoch(shuffle):
    """NOTE [ Shards ]: shard k reads rows [k * r, (k + 1) * r) every epoch; the last num_rows % n are never read."""
    for k in range(4):
        parts = [delivered_positions(1003, 64, shuffle=shuffle, seed=9, epoch=e, block_rows=100, num_shards=4,
                                     shard_index=k) for e in range(3)]
        for part in parts:
            assert np.array_equal(np.sort(part), np.arange(250 * k, 250 * k + 250))
        if shuffle:  # a new order within the part every epoch, and other shards' orders differ
            assert not np.array_equal(parts[0], parts[1]) and not np.array_equal(parts[1], parts[2])
        else:
            assert all(np.array_equal(part, np.arange(250 * k, 250 * k + 250)) for part in parts)


def test_a_shuffled_shard_permutes_its_own_blocks_then_rows_within_pages():
    # Shard 1 of 2 over 1000 rows in 100-row blocks: its blocks are rows 500..999, in a seeded order.
    blocks = np.random.default_rng([3, 0, 2, 1]).permutation(5)
    order = np.concatenate([np.arange(500 + b * 100, 600 + b * 100) for b in blocks])
    pages = plan_epoch(1000, 200, shuffle=True, seed=3, block_rows=100, num_shards=2, shard_index=1)
    for index, page in enumerate(pages):
        assert set(page_positions(page).tolist()) == set(order[200 * index : 200 * index + 200].tolist())


def test_one_shard_keeps_the_unsharded_order():
    assert np.array_equal(
        delivered_positions(1000, 64, shuffle=True, seed=3, block_rows=100),
        delivered_positions(1000, 64, shuffle=True, seed=3, block_rows=100, num_shards=1, shard_index=0),
    )


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("skip_rows", [0, 1, 63, 64, 300, 999, 1000])
def test_skipping_rows_resumes_the_uninterrupted_order(skip_rows, shuffle):
    kw = dict(shuffle=shuffle, seed=5, epoch=2, block_rows=100)
    full = delivered_positions(1000, 64, **kw)
    resumed = delivered_positions(1000, 64, skip_rows=skip_rows, **kw)
    assert np.array_equal(resumed, full[skip_rows:])


def test_read_plan_counts_batches_per_shard():
    from dh_tf.reading.plan import ReadPlan

    assert ReadPlan(page_rows=64, batch_size=16).num_batches(1003) == 63
    assert ReadPlan(page_rows=64, batch_size=16, num_shards=4, shard_index=3).num_batches(1003) == 16
    assert ReadPlan(page_rows=64, batch_size=16, drop_remainder=True, num_shards=3).num_batches(1003) == 20


def test_plan_rejects_bad_shards_and_skips():
    with pytest.raises(ValueError, match=r"shard_index must be in \[0, num_shards\)"):
        plan_epoch(10, 4, num_shards=2, shard_index=2)
    with pytest.raises(ValueError, match=r"skip_rows must be in \[0, 5\]"):
        plan_epoch(10, 4, num_shards=2, skip_rows=6)
