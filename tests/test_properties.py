"""Property-based tests of the pure layers: the plan, batching, the resumable state and padding. No JVM.

Each test states a promise for every input hypothesis draws: random table sizes, page, block and
batch sizes, shard counts, resume points, ``drop_remainder``, seeds and epochs up to their extremes,
ragged rows of random lengths, dtypes and pad values. The data of a row is its table position, so
coverage and order are checked exactly. The examples are fixed in CI (the ``ci`` profile in
conftest.py); ``HYPOTHESIS_PROFILE=thorough`` searches many more.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dh_tf.errors import ArgumentError, ArgumentTypeError
from dh_tf.reading.batching import align_groups, split_batches
from dh_tf.reading.padding import check_pad_value_fits, pad_options
from dh_tf.reading.pages import deliver
from dh_tf.reading.plan import ReadPlan, read_positions
from dh_tf.reading.state import ORDER_KEYS, SHUFFLE_ORDER_KEYS, check_state, make_state
from dh_tf.sources.ragged import PAD_SIDES, Padding, pad_mask, place

MAX_ROWS = 2_000


@st.composite
def plans(draw, shuffle: bool | None = None) -> ReadPlan:
    """A ReadPlan with any sizes (small ones often: a page or block of one row, a batch bigger than the table).

    ``shuffle``: None draws it.
    """
    num_shards = draw(st.integers(1, 5))
    return ReadPlan(
        page_rows=draw(st.integers(1, 700)),
        batch_size=draw(st.integers(1, 300)),
        drop_remainder=draw(st.booleans()),
        shuffle=draw(st.booleans()) if shuffle is None else shuffle,
        seed=draw(st.integers(0, 2**64 - 1)),
        block_rows=draw(st.integers(1, 800)),
        num_shards=num_shards,
        shard_index=draw(st.integers(0, num_shards - 1)),
    )


def shard(plan: ReadPlan, index: int) -> ReadPlan:
    return ReadPlan(plan.page_rows, plan.batch_size, plan.drop_remainder, plan.shuffle, plan.seed, plan.block_rows,
                    plan.num_shards, index)


def epoch_batches(plan: ReadPlan, num_rows: int, epoch: int, skip_batches: int = 0) -> list[list[np.ndarray]]:
    """One epoch as ``TableLoader`` cuts it (``loader._groups``), each row's data its table position.

    Two fields: the positions, and ``2 * position + 1`` (the fields of a row must stay together).
    """
    skip_rows = min(skip_batches * plan.batch_size, plan.shard_rows(num_rows))
    pages = (deliver([read_positions(p), read_positions(p) * 2 + 1], p)
             for p in plan.pages(num_rows, epoch, skip_rows=skip_rows))
    return [b for g in align_groups(pages, plan.batch_size, plan.drop_remainder) for b in split_batches(g, plan.batch_size)]


def rows_of(batches: list[list[np.ndarray]]) -> np.ndarray:
    return np.concatenate([b[0] for b in batches]) if batches else np.empty(0, np.int64)


# -- plan, shards and batching ----------------------------------------------------------------------


@given(plans(), st.integers(0, MAX_ROWS), st.integers(0, 2**31))
def test_every_row_once_per_epoch_over_all_shards(plan, num_rows, epoch):
    """NOTE [ Shards ]: shard k reads rows [k * r, (k + 1) * r), each once; all shards miss at most n - 1 rows."""
    n, r = plan.num_shards, num_rows // plan.num_shards
    kept = plan.shard_rows(num_rows) // plan.batch_size * plan.batch_size if plan.drop_remainder else None
    parts = []
    for k in range(n):
        batches = epoch_batches(shard(plan, k), num_rows, epoch)
        rows = rows_of(batches)
        for ids, doubled in batches:
            np.testing.assert_array_equal(doubled, ids * 2 + 1)
        if kept is None:  # every row of the shard's part, once
            np.testing.assert_array_equal(np.sort(rows), np.arange(k * r, (k + 1) * r))
        else:  # the dropped remainder is the epoch's last rows: fewer than a batch
            assert len(rows) == kept and len(np.unique(rows)) == kept
            assert set(rows.tolist()) <= set(range(k * r, (k + 1) * r))
        parts.append(rows)
    union = np.concatenate(parts)
    assert len(np.unique(union)) == len(union)
    if kept is None:
        assert len(union) == num_rows - num_rows % n >= num_rows - (n - 1)
        if n == 1:
            np.testing.assert_array_equal(np.sort(union), np.arange(num_rows))


@given(plans(), st.integers(0, MAX_ROWS), st.integers(0, 1000))
def test_batch_count_is_len_and_only_the_last_batch_is_partial(plan, num_rows, epoch):
    """NOTE [ Only the last batch is partial ]: every batch is full but the last, which drop_remainder drops."""
    batches = epoch_batches(plan, num_rows, epoch)
    sizes = [len(ids) for ids, _ in batches]
    assert len(batches) == plan.num_batches(num_rows)
    assert sizes[:-1] == [plan.batch_size] * (len(sizes) - 1)
    shard_rows = plan.shard_rows(num_rows)
    if plan.drop_remainder:
        assert sizes == [plan.batch_size] * (shard_rows // plan.batch_size)
    else:
        assert sum(sizes) == shard_rows
        assert not sizes or 1 <= sizes[-1] <= plan.batch_size
    # Batching keeps the plan's order: the rows are the delivered pages' rows, cut, the remainder last.
    delivered = [r for p in plan.pages(num_rows, epoch) for r in deliver([read_positions(p)], p)[0].tolist()]
    assert rows_of(batches).tolist() == delivered[: sum(sizes)]


@given(plans(), st.integers(0, MAX_ROWS), st.integers(0, 2**31), st.data())
def test_resuming_at_batch_b_yields_batches_b_on_of_the_uninterrupted_epoch(plan, num_rows, epoch, data):
    """NOTE [ Resuming an epoch ]: a state saved after b batches, through JSON, resumes with batch b, in order."""
    full = epoch_batches(plan, num_rows, epoch)
    b = data.draw(st.integers(0, len(full)), label="batches received")
    state = json.loads(json.dumps(make_state(plan, epoch, b, num_rows)))
    got = check_state(state, plan, num_rows, refreshing=False, num_batches=plan.num_batches(num_rows), where="test")
    assert got == (epoch, b)
    resumed = epoch_batches(plan, num_rows, epoch, skip_batches=b)
    assert len(resumed) == len(full) - b
    for (ids, doubled), (want_ids, want_doubled) in zip(resumed, full[b:]):
        np.testing.assert_array_equal(ids, want_ids)
        np.testing.assert_array_equal(doubled, want_doubled)


@given(plans(shuffle=True), st.integers(1, MAX_ROWS), st.integers(0, 2**63), st.integers(1, 300),
       st.booleans())
def test_shuffled_order_is_a_pure_function_of_seed_epoch_and_shard(plan, num_rows, epoch, batch_size, drop_remainder):
    """NOTE [ Shuffling by blocks ]: no hidden state; batch size and remainder rule cut the order, never change it."""
    order = rows_of(epoch_batches(ReadPlan(plan.page_rows, 1, False, True, plan.seed, plan.block_rows, plan.num_shards,
                                           plan.shard_index), num_rows, epoch))
    first, r = plan.shard_index * plan.shard_rows(num_rows), plan.shard_rows(num_rows)
    np.testing.assert_array_equal(np.sort(order), np.arange(first, first + r))  # a permutation of the shard's part
    for other_shard in range(plan.num_shards):  # other shards' epochs before this one change nothing
        epoch_batches(shard(plan, other_shard), num_rows, epoch + 1)
    recut = ReadPlan(plan.page_rows, batch_size, drop_remainder, True, plan.seed, plan.block_rows, plan.num_shards,
                     plan.shard_index)
    rows = rows_of(epoch_batches(recut, num_rows, epoch))
    np.testing.assert_array_equal(rows, order[: len(rows)])


@given(plans(shuffle=False), st.integers(0, MAX_ROWS), st.integers(0, 2**31), st.integers(0, 2**64 - 1),
       st.integers(1, 700), st.integers(1, 800))
def test_an_unshuffled_epoch_is_table_order_whatever_the_seed_page_and_block_sizes(
    plan, num_rows, epoch, seed, page_rows, block_rows
):
    """Why an unshuffled state resumes whatever the seed and page size (NOTE [ Resuming an epoch ])."""
    other = ReadPlan(page_rows, plan.batch_size, plan.drop_remainder, False, seed, block_rows, plan.num_shards,
                     plan.shard_index)
    rows = rows_of(epoch_batches(plan, num_rows, epoch))
    np.testing.assert_array_equal(rows, rows_of(epoch_batches(other, num_rows, epoch + 1)))
    first = plan.shard_index * plan.shard_rows(num_rows)
    np.testing.assert_array_equal(rows, np.arange(first, first + len(rows)))
    state = make_state(plan, epoch, 0, num_rows)
    assert check_state(state, other, num_rows, refreshing=False, num_batches=len(rows), where="test") == (epoch, 0)


# -- the resumable state ----------------------------------------------------------------------------


@given(plans(), st.integers(0, MAX_ROWS), st.integers(0, 2**31), st.data())
def test_a_state_made_for_another_order_is_refused_naming_each_mismatch(plan, num_rows, epoch, data):
    key = data.draw(st.sampled_from(ORDER_KEYS + SHUFFLE_ORDER_KEYS + ("num_rows",)), label="changed key")
    state = make_state(plan, epoch, 0, num_rows)
    value = state[key]
    state[key] = (not value) if isinstance(value, bool) else value + data.draw(st.integers(1, 2**40), label="delta")
    where = "TableLoader.load_state_dict"
    args = dict(refreshing=False, num_batches=plan.num_batches(num_rows), where=where)
    if key in SHUFFLE_ORDER_KEYS and not plan.shuffle:  # an unshuffled order ignores them
        assert check_state(state, plan, num_rows, **args) == (epoch, 0)
        return
    mine = make_state(plan, epoch, 0, num_rows)[key]
    mismatch = f"{key}={state[key]!r} (this {'table' if key == 'num_rows' else 'loader'}: {mine!r})"
    with pytest.raises(ArgumentError, match=r"^" + json.dumps(where)[1:-1] + ": the state was made for another loader:") as e:
        check_state(state, plan, num_rows, **args)
    assert mismatch in str(e.value)
    if key == "num_rows":  # a refreshing table's next snapshot may have another size
        assert check_state(state, plan, num_rows, **{**args, "refreshing": True}) == (epoch, 0)


@given(plans(), st.integers(0, MAX_ROWS), st.integers(1, 2**40))
def test_a_state_past_the_end_of_an_epoch_is_refused(plan, num_rows, extra):
    num_batches = plan.num_batches(num_rows)
    state = make_state(plan, 0, num_batches + extra, num_rows)
    with pytest.raises(ArgumentError, match=rf"^w: state\['batches'\] must be <= {num_batches} batches per epoch "
                                            rf"\(got {num_batches + extra}\)$"):
        check_state(state, plan, num_rows, refreshing=False, num_batches=num_batches, where="w")


# -- padding ----------------------------------------------------------------------------------------

ELEMENT_DTYPES = ("int16", "int32", "int64", "float32", "float64")
OUTPUT_DTYPES = ("int32", "int64", "float32", "float64")


def elements(dtype: str) -> st.SearchStrategy:
    if dtype.startswith("int"):
        info = np.iinfo(dtype)
        return st.integers(int(info.min), int(info.max))
    # Finite, so that a cast to an integer output is defined (NaN/inf into an int is not, in numpy or Keras).
    return st.floats(allow_nan=False, allow_infinity=False, width=32 if dtype == "float32" else 64)


@st.composite
def ragged(draw):
    """Rows of any lengths (empty ones and null arrays too), a length, sides, dtypes and a pad value that fits."""
    element, out = draw(st.sampled_from(ELEMENT_DTYPES)), draw(st.sampled_from(OUTPUT_DTYPES))
    if element.startswith("float") and out.startswith("int"):  # a float's cast to int is defined within range
        values = st.floats(-1e9, 1e9, allow_nan=False)
    else:
        values = elements(element)
    rows = draw(st.lists(st.lists(values, max_size=12), max_size=40))
    nulls = draw(st.lists(st.booleans(), min_size=len(rows), max_size=len(rows)))
    rows = [[] if null else row for row, null in zip(rows, nulls)]
    if out.startswith("int"):
        info = np.iinfo(out)
        value = draw(st.integers(int(info.min), int(info.max)))
    else:
        value = draw(st.floats(allow_nan=True, allow_infinity=True))
    return (rows, nulls, np.dtype(element), np.dtype(out), draw(st.integers(1, 15)), draw(st.sampled_from(PAD_SIDES)),
            draw(st.sampled_from(PAD_SIDES)), value)


@given(ragged())
def test_padding_equals_keras_pad_sequences(case):
    """NOTE [ Ragged arrays ]: place, cast, pad as the page reader does == ``keras.utils.pad_sequences``."""
    from keras.utils import pad_sequences

    rows, nulls, element, out_dtype, n, padding, truncating, value = case
    arrays = [np.asarray(row, dtype=element) for row in rows]
    flat = np.concatenate(arrays) if arrays else np.empty(0, element)
    offsets = np.concatenate([[0], np.cumsum([len(a) for a in arrays], dtype=np.int64)])
    native, lengths = np.empty((len(rows), n), element), np.empty(len(rows), np.int32)
    place(flat, offsets, native, lengths, Padding(n, padding, truncating))
    np.testing.assert_array_equal(lengths, [min(len(a), n) for a in arrays])
    lengths[np.asarray(nulls, bool)] = -1  # the span reader marks a null array; a fill policy pads it whole
    check_pad_value_fits(value, out_dtype, "x", "test")
    with np.errstate(over="ignore", invalid="ignore"):
        got = np.empty((len(rows), n), out_dtype)
        got[...] = native  # cast_columns' cast
        got[pad_mask(lengths, n, padding)] = value  # PageReader._pad
        want = pad_sequences(arrays, maxlen=n, dtype=out_dtype.name, padding=padding, truncating=truncating,
                             value=value) if arrays else np.empty((0, n), out_dtype)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


@given(st.sampled_from(("int8", "int16", "int32", "int64", "uint8", "uint32")),
       st.one_of(st.integers(-(2**70), 2**70), st.floats()))
def test_an_integer_output_takes_exactly_the_pad_values_np_full_keeps(dtype, value):
    """``check_pad_value_fits``: accepted iff ``np.full(..., value, dtype)`` holds ``value`` itself."""
    dtype = np.dtype(dtype)
    info = np.iinfo(dtype)
    exact = math.isfinite(value) and float(value).is_integer() and info.min <= int(value) <= info.max
    if exact:
        check_pad_value_fits(value, dtype, "features", "w")
        assert int(np.full((), value, dtype)) == value
    else:
        with pytest.raises(ArgumentError, match=rf"^w: pad_value must be an integer that fits {dtype}, since "
                                                rf"features is an {dtype} array \(got pad_value="):
            check_pad_value_fits(value, dtype, "features", "w")


@given(st.one_of(st.integers(-(2**70), 2**70), st.booleans(), st.floats(), st.text(max_size=3)),
       st.sampled_from(("pre", "post", "mid", "", "PRE")), st.sampled_from(("pre", "post", "mid")))
def test_pad_options_accept_ints_from_1_and_sides_pre_or_post_only(pad_to, padding, truncating):
    where = "TableLoader"
    if padding not in PAD_SIDES or truncating not in PAD_SIDES:
        name, got = ("padding", padding) if padding not in PAD_SIDES else ("truncating", truncating)
        with pytest.raises(ArgumentError, match=rf"^TableLoader: {name} must be one of \['pre', 'post'\] "
                                                rf"\(got {got!r}\)$"):
            pad_options(pad_to, padding, truncating, 0.0, where)
    elif isinstance(pad_to, bool) or not isinstance(pad_to, int):
        with pytest.raises(ArgumentTypeError, match=r"^TableLoader: pad_to must be an int >= 1, or a dict of array "
                                                    r"column -> int >= 1 \(got "):
            pad_options(pad_to, padding, truncating, 0.0, where)
    elif pad_to < 1:
        with pytest.raises(ArgumentError, match=rf"^TableLoader: pad_to must be an int >= 1 \(got {pad_to}\)$"):
            pad_options(pad_to, padding, truncating, 0.0, where)
    else:
        options = pad_options(pad_to, padding, truncating, 0.0, where)
        assert (options.pad_to, options.padding, options.truncating, options.value) == (pad_to, padding, truncating, 0.0)
