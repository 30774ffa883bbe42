"""Ragged array columns padded with ``pad_to`` (NOTE [ Ragged arrays ] in dh_tf/sources/ragged.py), on a real server.

Every expectation is ``keras.utils.pad_sequences`` itself on the same rows: row i of a ragged column
holds ``i % 11`` values ``16 * i + j`` (lengths 0..10, so 0..N+3 for every N tested), and the label
``Id`` says which row a batch row is.
"""

from __future__ import annotations

import re
import threading
import time

import numpy as np
import pytest
import test_follow as live
from keras.utils import pad_sequences

import dh_tf
from dh_tf.errors import ArgumentError, ArgumentTypeError, ArrayLengthError, NullValueError
from dh_tf.sources.ragged import Padding, pad_mask, place

ROWS = 300
MAX_LENGTH = 10
SIDES = ["pre", "post"]
ELEMENTS = {"double": "float64", "float": "float32", "int": "int32", "long": "int64"}
NULL_ARRAY_ROW, NULL_ELEMENT_ROW = 6, 7  # modulo 13 in column NA

fast_update_graph = live.fast_update_graph


def ragged_formula(name: str, element: str = "double", sign: str = "", null_row: bool = False, i: str = "i") -> str:
    """Row i: the first ``i % 11`` of ``16 * i + j`` (j = 0..10), of ``element`` type; NA: nulls mod 13."""
    values = [f"({element})({sign}({i} * 16 + {j}))" for j in range(MAX_LENGTH + 1)]
    if null_row:
        values[0] = f"{i} % 13 == {NULL_ELEMENT_ROW} ? NULL_DOUBLE : {values[0]}"
    array = f"java.util.Arrays.copyOfRange(new {element}[]{{{', '.join(values)}}}, 0, (int)({i} % {MAX_LENGTH + 1}))"
    return f"{name} = {i} % 13 == {NULL_ARRAY_ROW} ? null : {array}" if null_row else f"{name} = {array}"


def ragged_rows(ids, dtype="float64", sign=1, nulls=False) -> list[np.ndarray]:
    """The rows ``ragged_formula`` makes, as numpy (NA: a null array is [], a null element NaN)."""
    rows = []
    for i in np.asarray(ids).tolist():
        row = sign * (16 * i + np.arange(i % (MAX_LENGTH + 1), dtype=np.float64))
        if nulls and i % 13 == NULL_ARRAY_ROW:
            row = row[:0]
        elif nulls and i % 13 == NULL_ELEMENT_ROW and len(row):
            row[0] = np.nan
        rows.append(row.astype(dtype))
    return rows


@pytest.fixture(scope="module")
def table(make_table):
    formulas = [ragged_formula("A"), ragged_formula("B", sign="-"), ragged_formula("NA", null_row=True)]
    formulas += [ragged_formula(f"E_{e}", e) for e in ELEMENTS]
    formulas += ["X = (double)i", "Fixed = new double[]{i, i + 1}"]
    return make_table(ROWS, *formulas)


def read_all(table, features, **options):
    """Every batch of one epoch, x and Id concatenated; options default to 7-row batches, 50-row pages."""
    options = {"batch_size": 7, "page_rows": 49, **options}
    batches = list(dh_tf.TableLoader(table, features, "Id", **options))
    assert [len(y) for _, y in batches[:-1]] == [7] * (len(batches) - 1)
    return np.concatenate([x for x, _ in batches]), np.concatenate([y for _, y in batches])


def keras_padded(rows, n, padding="pre", truncating="pre", value=0.0, dtype="float32"):
    return pad_sequences(rows, maxlen=n, padding=padding, truncating=truncating, value=value, dtype=dtype)


@pytest.mark.parametrize("read_path", ["engine", "public"])
@pytest.mark.parametrize("padding", SIDES)
@pytest.mark.parametrize("truncating", SIDES)
@pytest.mark.parametrize("n", [1, 4, 7])
def test_equal_to_keras_pad_sequences(table, read_path, padding, truncating, n):
    x, ids = read_all(table, "A", pad_to=n, padding=padding, truncating=truncating, pad_value=-1.5,
                      read_path=read_path)
    assert ids.tolist() == list(range(ROWS))
    assert x.dtype == np.float32 and x.shape == (ROWS, n) and x.flags["C_CONTIGUOUS"]
    expected = keras_padded(ragged_rows(ids), n, padding, truncating, -1.5)
    np.testing.assert_array_equal(x, expected)


def test_defaults_are_keras_defaults(table):
    x, ids = read_all(table, "A", pad_to=4)
    np.testing.assert_array_equal(x, pad_sequences(ragged_rows(ids), maxlen=4, dtype="float32"))


@pytest.mark.parametrize("element, dtype", list(ELEMENTS.items()))
def test_output_dtype_is_kept(table, element, dtype):
    x, ids = read_all(table, f"E_{element}", pad_to=5, padding="post", pad_value=-3, dtype=dtype)
    assert x.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(x, keras_padded(ragged_rows(ids, dtype), 5, "post", "pre", -3, dtype))


def test_integer_label_arrays_stay_integer(table):
    batches = list(dh_tf.TableLoader(table, "X", "E_int", batch_size=64, pad_to=3, truncating="post"))
    y = np.concatenate([y for _, y in batches])
    assert y.dtype == np.int32 and y.shape == (ROWS, 3)
    np.testing.assert_array_equal(y, keras_padded(ragged_rows(range(ROWS), "int32"), 3, truncating="post", dtype="int32"))


@pytest.mark.parametrize("padding", SIDES)
@pytest.mark.parametrize("truncating", SIDES)
def test_list_of_array_columns_is_batch_by_n_by_k(table, padding, truncating):
    x, ids = read_all(table, ["A", "B"], pad_to=4, padding=padding, truncating=truncating, dtype="float64",
                      shuffle=True, seed=3, reader_threads=2)
    assert sorted(ids.tolist()) == list(range(ROWS)) and ids.tolist() != list(range(ROWS))
    assert x.shape == (ROWS, 4, 2) and x.dtype == np.float64 and x.flags["C_CONTIGUOUS"]
    rows = [np.stack([a, b], axis=1) for a, b in zip(ragged_rows(ids), ragged_rows(ids, sign=-1))]
    np.testing.assert_array_equal(x, keras_padded(rows, 4, padding, truncating, dtype="float64"))


def test_dict_pad_to_pads_only_the_columns_it_names(table):
    batches = list(dh_tf.TableLoader(table, {"seq": "A", "fixed": "Fixed"}, "Id", batch_size=50, pad_to={"A": 6}))
    x = {key: np.concatenate([x[key] for x, _ in batches]) for key in ("seq", "fixed")}
    np.testing.assert_array_equal(x["seq"], keras_padded(ragged_rows(range(ROWS)), 6))
    np.testing.assert_array_equal(x["fixed"], np.stack([np.arange(ROWS), np.arange(ROWS) + 1], axis=1))


def test_rolling_window_vectors(make_table):
    from deephaven.updateby import rolling_group_tick

    windows = make_table(200, "V = (double)i").update_by(rolling_group_tick(["W = V"], rev_ticks=6))
    for read_path in ("engine", "public"):
        x, ids = read_all(windows, "W", pad_to=4, padding="post", read_path=read_path, dtype="float64")
        rows = [np.arange(max(0, i - 5), i + 1, dtype=np.float64) for i in ids]
        np.testing.assert_array_equal(x, keras_padded(rows, 4, padding="post", dtype="float64"))


@pytest.mark.parametrize("read_path", ["engine", "public"])
def test_null_arrays_follow_the_null_policy(table, read_path):
    with pytest.raises(NullValueError, match=re.escape(
            f"column 'NA' (double[]) holds a null array at row position {NULL_ARRAY_ROW} and nulls='error'")):
        read_all(table, "NA", pad_to=4, read_path=read_path)
    for policy, fill in [("nan", np.nan), (3.0, 3.0), ({"NA": -2.0}, -2.0)]:
        x, ids = read_all(table, "NA", pad_to=4, padding="post", pad_value=-9.0, nulls=policy, read_path=read_path)
        rows = [np.where(np.isnan(row), fill, row) for row in ragged_rows(ids, nulls=True)]  # null elements: the fill
        np.testing.assert_array_equal(x, keras_padded(rows, 4, padding="post", value=-9.0))
        assert (x[ids % 13 == NULL_ARRAY_ROW] == -9.0).all()  # a null array: all pad_value


def test_epoch_cache_serves_padded_pages(table, tmp_path):
    with dh_tf.TableLoader(table, "A", "Id", batch_size=32, pad_to=4, cache=str(tmp_path), shuffle=True, seed=1) as loader:
        epochs = [list(loader) for _ in range(2)]
    for batches in epochs:
        x, ids = np.concatenate([x for x, _ in batches]), np.concatenate([y for _, y in batches])
        np.testing.assert_array_equal(x, keras_padded(ragged_rows(ids), 4))


def test_to_dataset_has_the_padded_shape(table):
    import tensorflow as tf

    ds = dh_tf.to_dataset(table, {"seq": ["A", "B"], "one": "A"}, "Id", batch_size=16, pad_to=5,
                          padding="post", truncating="post")
    x_spec, y_spec = ds.element_spec
    assert x_spec["seq"].shape.as_list() == [None, 5, 2] and x_spec["one"].shape.as_list() == [None, 5]
    assert x_spec["one"].dtype == tf.float32
    batches = list(ds.as_numpy_iterator())
    x = np.concatenate([x["one"] for x, _ in batches])
    ids = np.concatenate([y for _, y in batches])
    assert ids.tolist() == list(range(ROWS))
    np.testing.assert_array_equal(x, keras_padded(ragged_rows(ids), 5, "post", "post"))

    cached = dh_tf.to_dataset(table, "A", "Id", batch_size=32, pad_to=3, cache=True, shuffle=True, seed=2)
    for _ in range(2):  # epoch 1 reads the engine, epoch 2 the cache (NOTE [ Epoch cache ])
        batches = list(cached.as_numpy_iterator())
        x, ids = np.concatenate([x for x, _ in batches]), np.concatenate([y for _, y in batches])
        assert sorted(ids.tolist()) == list(range(ROWS))
        np.testing.assert_array_equal(x, keras_padded(ragged_rows(ids), 3))
    cached.dh_tf_loader.close()


def test_without_pad_to_a_ragged_column_is_an_array_length_error(table):
    ragged = table.where("Id % 11 != 0")  # row 0 holds 1 value (its length is read from it), row 1 two
    with pytest.raises(ArrayLengthError, match=re.escape(
            "column 'A' (double[]) holds an array of length 2 at row position 1, but its arrays have length 1 (read "
            "from its first row when the loader was built); pass pad_to=N to pad or cut every row to N as "
            "keras.utils.pad_sequences does, or keep rows of one length with DQL, e.g. table.where('len(A) == 2')")):
        read_all(ragged, "A", padding="post")  # padding without pad_to changes nothing


def test_bad_padding_arguments_are_build_time_errors(table):
    def build(**options):
        return dh_tf.TableLoader(table, ["A", "B"], "Id", **options)

    cases = [
        (dict(pad_to=0), ArgumentError, "TableLoader: pad_to must be an int >= 1 (got 0)"),
        (dict(pad_to=2.5), ArgumentTypeError,
         "TableLoader: pad_to must be an int >= 1, or a dict of array column -> int >= 1 (got 2.5 of type float)"),
        (dict(pad_to=True), ArgumentTypeError, "pad_to must be an int >= 1, or a dict of array column -> int >= 1 "
                                               "(got True of type bool)"),
        (dict(pad_to={"A": 0, "B": 0}), ArgumentError, "TableLoader: pad_to['A'] must be an int >= 1 (got 0)"),
        (dict(pad_to={}), ArgumentError, "TableLoader: pad_to must name at least one array column (got an empty dict)"),
        (dict(pad_to=4, padding="middle"), ArgumentError,
         "TableLoader: padding must be one of ['pre', 'post'] (got 'middle')"),
        (dict(pad_to=4, truncating="both"), ArgumentError,
         "TableLoader: truncating must be one of ['pre', 'post'] (got 'both')"),
        (dict(pad_to=4, pad_value="0"), ArgumentTypeError, "TableLoader: pad_value must be a number (got '0' of type str)"),
        (dict(pad_to={"X": 4}), ArgumentError,
         "TableLoader: pad_to names column 'X' (double), which is not an array column; pad_to pads array columns"),
        (dict(pad_to={"Nope": 4}), ArgumentError, "TableLoader: pad_to names unknown column 'Nope'; the table has columns"),
        (dict(pad_to={"A": 4, "B": 4, "NA": 4}), ArgumentError,
         "TableLoader: pad_to names array column 'NA', which is not read (features, label and sample_weight read "
         "['A', 'B', 'Id'])"),
        (dict(pad_to={"A": 4, "B": 5}), ArgumentError,
         "TableLoader: features lists array columns of different lengths ('A': 4, 'B': 5); the columns of one list "
         "must have the same length (they become [batch, n, k])"),
        (dict(pad_to=4, dtype="int32", pad_value=0.5), ArgumentError,
         "TableLoader: pad_value must be an integer that fits int32, since features is an int32 array (got "
         "pad_value=0.5)"),
        (dict(pad_to=4, dtype="int64", pad_value=float("nan")), ArgumentError,
         "pad_value must be an integer that fits int64"),
    ]
    for options, error, message in cases:
        with pytest.raises(error, match=re.escape(message)):
            build(**options)
    with pytest.raises(ArgumentError, match=re.escape(
            "TableLoader: features pads some of its array columns and not others ('A': 2, 'Fixed': not padded); "
            "the columns of one list become one [batch, n, k] array, so pad them all alike, e.g. "
            "pad_to={'A': 2, 'Fixed': 2}")):
        dh_tf.TableLoader(table, ["A", "Fixed"], pad_to={"A": 2})  # Fixed: length 2 too, not padded
    with pytest.raises(ArgumentError, match=re.escape(
            "TableLoader: pad_to pads array columns, but none of the columns read is one ('X' (double), 'Id' (long))")):
        dh_tf.TableLoader(table, "X", "Id", pad_to=3)
    with pytest.raises(ArgumentError, match=re.escape("to_dataset") + "|" + re.escape("TableLoader: pad_to must")):
        dh_tf.to_dataset(table, "A", pad_to=-1)


# -- follow mode ---------------------------------------------------------------------------------------


def ragged_live_table(source):
    """The publisher's table with ragged columns: in row Id, A holds ``Id % 11`` values ``16 * Id + j``, B their negatives."""
    return source.table.update_view([ragged_formula("A", i="Id"), ragged_formula("B", sign="-", i="Id")])


def collect(follower, rows, iterator=None):
    timer = threading.Timer(live.DEADLINE_S, follower.stop)  # a bound on the test, not part of it
    timer.start()
    try:
        batches = live.collect(follower if iterator is None else iterator)
    finally:
        timer.cancel()
    assert sum(len(y) for _, y in batches) == rows
    return np.concatenate([x for x, _ in batches]), np.concatenate([y for _, y in batches])


@pytest.mark.parametrize("padding", SIDES)
@pytest.mark.parametrize("truncating", SIDES)
def test_follow_append_only_pads_like_keras(fast_update_graph, padding, truncating):
    source = live.Publisher(chunks=1, rows=1)
    source.publish(150)
    table = ragged_live_table(source)
    live.wait_for(lambda: table.size == 150, "the published rows did not arrive")
    follower = dh_tf.follow(table, "A", "Id", batch_size=16, start="beginning", max_rows=150, page_rows=40,
                            pad_to=4, padding=padding, truncating=truncating, pad_value=-1.0)
    x, ids = collect(follower, 150)
    assert ids.tolist() == list(range(150)) and x.shape == (150, 4) and x.dtype == np.float32
    np.testing.assert_array_equal(x, keras_padded(ragged_rows(ids), 4, padding, truncating, -1.0))
    live.assert_clean(table)


def test_follow_blink_and_to_dataset_follow(fast_update_graph):
    import tensorflow as tf

    source = live.Publisher(chunks=4, rows=25, append_only=False)
    table = ragged_live_table(source)
    follower = dh_tf.follow(table, ["A", "B"], "Id", batch_size=10, max_rows=100, pad_to=6, padding="post")
    iterator = iter(follower)
    source.start()
    try:
        x, ids = collect(follower, 100, iterator)
    finally:
        source.stop()
    assert ids.tolist() == list(range(100)) and x.shape == (100, 6, 2)
    expected = keras_padded(ragged_rows(ids), 6, "post")
    np.testing.assert_array_equal(x, np.stack([expected, -expected], axis=2))

    appended = live.Publisher(chunks=1, rows=1)
    ds = dh_tf.to_dataset(ragged_live_table(appended), "A", "Id", follow=True, batch_size=8, max_rows=40,
                          start="beginning", pad_to=3)
    assert ds.element_spec[0].shape.as_list() == [None, 3] and ds.element_spec[0].dtype == tf.float32
    appended.publish(40)
    deadline = time.monotonic() + live.DEADLINE_S
    batches = []
    for batch in ds.as_numpy_iterator():
        batches.append(batch)
        assert time.monotonic() < deadline
    x, ids = np.concatenate([x for x, _ in batches]), np.concatenate([y for _, y in batches])
    assert ids.tolist() == list(range(40))
    np.testing.assert_array_equal(x, keras_padded(ragged_rows(ids), 3))


def test_follow_refuses_unpadded_arrays_and_bad_padding(fast_update_graph):
    source = live.Publisher(chunks=1, rows=1)
    table = ragged_live_table(source)
    with pytest.raises(ArgumentTypeError, match=re.escape(
            "follow: follow mode reads scalar columns only; array column(s) 'A' (double[]) only padded to a length "
            "given ahead") + ".*" + re.escape("pass pad_to=N (or pad_to={'A': N})")):
        dh_tf.follow(table, "A")
    with pytest.raises(ArgumentError, match=re.escape("follow: truncating must be one of ['pre', 'post'] (got 'mid')")):
        dh_tf.follow(table, "A", pad_to=3, truncating="mid")
    with pytest.raises(ArgumentError, match=re.escape("follow: pad_to names column 'X' (double), which is not an array")):
        dh_tf.follow(table, "A", pad_to={"X": 3})
    with pytest.raises(ArgumentError, match=re.escape("to_dataset: pad_to must be an int >= 1 (got 0)")):
        dh_tf.to_dataset(table, "A", follow=True, pad_to=0)


# -- the placement itself, without a server ------------------------------------------------------------


def test_place_equals_pad_sequences_on_random_rows():
    rng = np.random.default_rng(0)
    for n in (1, 3, 8):
        lengths = rng.integers(0, n + 4, size=200)
        rows = [rng.normal(size=length) for length in lengths]
        flat, offsets = np.concatenate(rows), np.concatenate([[0], np.cumsum(lengths)])
        for padding in SIDES:
            for truncating in SIDES:
                out, kept = np.full((200, n), np.nan), np.empty(200, dtype=np.int32)
                place(flat, offsets, out, kept, Padding(n, padding, truncating))
                np.testing.assert_array_equal(kept, np.minimum(lengths, n))
                out[pad_mask(kept, n, padding)] = 7.0
                np.testing.assert_array_equal(out, keras_padded(rows, n, padding, truncating, 7.0, "float64"))
