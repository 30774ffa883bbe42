"""Array columns (Java arrays, Deephaven vectors) as [batch, n] and [batch, n, k] tensors, on a real server."""

from __future__ import annotations

import re

import numpy as np
import pytest

import dh_tf
from dh_tf.errors import ArrayLengthError

N = 300
READ_PATHS = ["engine", "public"]
ELEMENTS = {"byte": "int8", "short": "int16", "int": "int32", "long": "int64", "float": "float32", "double": "float64"}


@pytest.fixture(scope="module")
def table(make_table):
    formulas = ["X = Math.sin(i * 0.1)", "A = new double[]{i, i + 0.5, i + 0.25}",
                "B = new float[]{(float)-i, (float)(2 * i), (float)(3 * i)}"]
    formulas += [f"E_{e} = new {e}[]{{({e})(i % 100), ({e})(i % 7), ({e})3}}" for e in ELEMENTS]
    formulas += ["NA = i == 5 ? null : new double[]{i, 1.0}",
                 "NE = new double[]{i == 4 ? NULL_DOUBLE : i, 1.0}",
                 "R = i == 37 ? new double[]{1.0} : new double[]{1.0, 2.0}",
                 "Z = i == 137 ? new double[0] : new double[]{1.0, 2.0}",
                 "Str = new String[]{`a`}", "Bools = new boolean[]{true}"]
    return make_table(N, *formulas)


def expected_a(rows=None):
    i = np.arange(N, dtype=np.float64) if rows is None else np.asarray(rows, dtype=np.float64)
    return np.stack([i, i + 0.5, i + 0.25], axis=1)


def read(table, features, label=None, **options):
    options = {"batch_size": 7, "page_rows": 50, **options}
    batches = list(dh_tf.TableLoader(table, features, label, **options))
    if label is None:
        return np.concatenate(batches) if not isinstance(batches[0], dict) else batches
    return batches


@pytest.mark.parametrize("read_path", READ_PATHS)
def test_one_array_column_is_batch_by_n(table, read_path):
    loader = dh_tf.TableLoader(table, "A", "Id", batch_size=7, page_rows=50, read_path=read_path)
    batches = list(loader)
    assert [x.shape for x, _ in batches[:2]] == [(7, 3), (7, 3)] and batches[-1][0].shape == (N % 7, 3)
    x = np.concatenate([x for x, _ in batches])
    assert x.dtype == np.float32 and x.flags["C_CONTIGUOUS"]
    assert np.array_equal(x, expected_a().astype(np.float32))
    assert np.concatenate([y for _, y in batches]).tolist() == list(range(N))


@pytest.mark.parametrize("read_path", READ_PATHS)
def test_list_of_array_columns_is_batch_by_timesteps_by_features(table, read_path):
    x = read(table, ["A", "B"], dtype="float64", read_path=read_path)
    assert x.shape == (N, 3, 2) and x.flags["C_CONTIGUOUS"]
    i = np.arange(N, dtype=np.float64)
    assert np.array_equal(x[:, :, 0], expected_a())
    assert np.array_equal(x[:, :, 1], np.stack([-i, 2 * i, 3 * i], axis=1))
    assert x[10].tolist() == [[10, -10], [10.5, 20], [10.25, 30]]  # row 10: timestep t holds (A[t], B[t])


@pytest.mark.parametrize("element", list(ELEMENTS))
@pytest.mark.parametrize("read_path", READ_PATHS)
def test_every_element_type_reads_exactly(table, element, read_path):
    i = np.arange(N)
    expected = np.stack([i % 100, i % 7, np.full(N, 3)], axis=1)
    (x, y), = read(table, "X", f"E_{element}", batch_size=N, page_rows=N, read_path=read_path)
    integer = element not in ("float", "double")  # integer labels stay integer; others take dtype
    assert y.dtype == (np.dtype(ELEMENTS[element]) if integer else np.float32)
    assert y.shape == (N, 3) and np.array_equal(y, expected)


@pytest.fixture(scope="module")
def windows(server):
    from deephaven import empty_table
    from deephaven.updateby import rolling_group_tick

    base = empty_table(N).update(["Id = (long)i", "X = Math.sin(i * 0.1)", "Y = (float)(i * 2)"])
    return base, base.update_by(rolling_group_tick(["WX = X", "WY = Y"], rev_ticks=4)).where("len(WX) == 4")


@pytest.mark.parametrize("read_path", READ_PATHS)
def test_rolling_window_vectors_equal_the_windows_of_the_column(windows, to_numpy, read_path):
    base, rolled = windows
    assert [c.data_type.j_name for c in rolled.columns if c.name.startswith("W")] == [
        "io.deephaven.vector.DoubleVector", "io.deephaven.vector.FloatVector"]
    x = read(rolled, ["WX", "WY"], dtype="float64", read_path=read_path)
    column_x, column_y = to_numpy(base, "X"), to_numpy(base, "Y")
    assert x.shape == (N - 3, 4, 2)
    for row in (0, 1, 150, N - 4):  # the window ending at row + 3, oldest first
        assert np.array_equal(x[row, :, 0], column_x[row : row + 4])
        assert np.array_equal(x[row, :, 1], column_y[row : row + 4])
    assert np.array_equal(x[:, :, 0], np.lib.stride_tricks.sliding_window_view(column_x, 4))


def test_group_by_vectors_and_parquet_arrays_read_in_place(server, tmp_path):
    from deephaven import empty_table, parquet

    grouped = empty_table(3 * N).update(["G = (long)(i / 3)", "V = (double)i"]).group_by("G")
    assert np.array_equal(read(grouped, "V", dtype="float64"), np.arange(3 * N, dtype=np.float64).reshape(N, 3))
    path = str(tmp_path / "arrays.parquet")
    parquet.write(empty_table(100_000).update(["Id = (long)i", "A = new double[]{i, i + 0.5, i + 0.25}"]), path,
                  target_page_size=1 << 14)
    filtered = parquet.read(path).where("Id % 3 != 1")
    rows = [i for i in range(100_000) if i % 3 != 1]
    x = read(filtered, "A", batch_size=1000, page_rows=20_000, dtype="float64", read_path="engine")
    assert np.array_equal(x, expected_a(rows))


@pytest.mark.parametrize("read_path", READ_PATHS)
def test_ragged_row_is_an_error_naming_column_position_and_lengths(table, windows, read_path):
    with pytest.raises(ArrayLengthError, match=re.escape(
            "column 'R' (double[]) holds an array of length 1 at row position 37, but its arrays have length 2 (read "
            "from its first row when the loader was built); pass pad_to=N to pad or cut every row to N as "
            "keras.utils.pad_sequences does, or keep rows of one length with DQL, e.g. table.where('len(R) == 2')")):
        read(table, "R", read_path=read_path, nulls="nan")  # whatever the null policy
    with pytest.raises(ArrayLengthError, match=re.escape("column 'Z' (double[]) holds an array of length 0 at row "
                                                         "position 137, but its arrays have length 2")):
        read(table, "Z", read_path=read_path)
    base, _ = windows
    from deephaven.updateby import rolling_group_tick

    unfiltered = base.update_by(rolling_group_tick(["WX = X"], rev_ticks=4))  # row 0 holds 1 value, row 1 two
    with pytest.raises(ArrayLengthError, match=re.escape(
            "column 'WX' (io.deephaven.vector.DoubleVector) holds an array of length 2 at row position 1, but its "
            "arrays have length 1") + ".*" + re.escape("table.where('len(WX) == 2') (a rolling window's first rows")):
        read(unfiltered, "WX", read_path=read_path)


def test_ragged_row_under_shuffle_names_the_table_position(make_table):
    table = make_table(140_000, "A = i == 123_456 ? new double[]{1.0} : new double[]{1.0, 2.0}")
    loader = dh_tf.TableLoader(table, "A", batch_size=1000, shuffle=True, seed=3, page_rows=65536, reader_threads=2)
    with pytest.raises(ArrayLengthError, match="length 1 at row position 123456, "):
        list(loader)


@pytest.mark.parametrize("read_path", READ_PATHS)
def test_null_arrays_and_elements_follow_the_null_policy(table, read_path):
    with pytest.raises(dh_tf.NullValueError, match=re.escape(
            "column 'NA' (double[]) holds a null array (or 2 null elements) at row position 5 and nulls='error'; "
            "pass nulls='nan' or a fill number (for all columns or as nulls={'NA': ...}), or drop such rows with "
            "DQL: table.where('!isNull(NA)')")):
        read(table, "NA", read_path=read_path)
    with pytest.raises(dh_tf.NullValueError, match=re.escape(
            "column 'NE' (double[]) holds a null element (index 0 of 2) at row position 4 and nulls='error'")):
        read(table, "NE", read_path=read_path)
    x = read(table, ["NA", "NE"], read_path=read_path, nulls="nan")
    assert np.isnan(x[5, :, 0]).all() and np.isnan(x[4, 0, 1]) and not np.isnan(x[4, 1, 1])
    assert np.isnan(x).sum() == 3
    x = read(table, "NA", read_path=read_path, nulls={"NA": -1})
    assert x[5].tolist() == [-1, -1] and x[6].tolist() == [6, 1]


def test_array_length_comes_from_the_first_non_null_row(server):
    from deephaven import empty_table

    late = empty_table(10).update(["A = i < 3 ? null : new long[]{i, i, i, i}"])
    loader = dh_tf.TableLoader(late.where("i >= 3"), "A", batch_size=2)
    assert loader.layout.fields[0].shape == (4,)
    with pytest.raises(ValueError, match=re.escape(
            "TableLoader: column 'A' (long[]) holds only null arrays in its first 3 rows, so its array length is "
            "unknown; drop null rows with DQL: table.where('!isNull(A)')")):
        dh_tf.TableLoader(late.head(3), "A")
    with pytest.raises(ValueError, match=re.escape(
            "TableLoader: column 'A' (long[]) is an array column whose length is read from the first rows, but the "
            "table has no rows")):
        dh_tf.TableLoader(late.where("false"), "A")


def test_unsupported_element_types_are_rejected_listing_the_supported_ones(table, server):
    supported = "supported types: byte, short, int, long, float, double, java.lang.Boolean; arrays: byte[], short[], "
    with pytest.raises(TypeError, match=re.escape("column(s) 'Str' (java.lang.String[]) must be numeric, boolean, String "
                                                  "or a timestamp; "
                                                  + supported)):
        dh_tf.TableLoader(table, "Str")
    with pytest.raises(TypeError, match=re.escape("column(s) 'Bools' (boolean[]) must be numeric, boolean, "
                                                  "String or a timestamp; ")):
        dh_tf.TableLoader(table, ["Bools"])
    strings = table.view(["S = `s` + i", "G = i % 2"]).group_by("G")
    with pytest.raises(TypeError, match=re.escape("column(s) 'S' (io.deephaven.vector.ObjectVector) must be "
                                                  "numeric, boolean, String")):
        dh_tf.TableLoader(strings, "S")


def test_scalar_and_array_columns_in_one_list_or_of_two_lengths(table):
    with pytest.raises(ValueError, match=re.escape("TableLoader: features mixes scalar column(s) ['X'] and array "
                                                   "column(s) ['A'] in one list")):
        dh_tf.TableLoader(table, ["X", "A"])
    with pytest.raises(ValueError, match=re.escape("TableLoader: features lists array columns of different lengths "
                                                   "('A': 3, 'NA': 2)")):
        dh_tf.TableLoader(table, ["A", "NA"])


def test_dict_spec_combines_array_and_scalar_columns(table):
    batches = list(dh_tf.TableLoader(table, {"seq": ["A", "B"], "x": ["X", "Id"], "one": "A"}, "Id", batch_size=16,
                                     page_rows=64))
    x, y = batches[1]
    assert {k: v.shape for k, v in x.items()} == {"seq": (16, 3, 2), "x": (16, 2), "one": (16, 3)}
    assert np.array_equal(x["one"], expected_a(range(16, 32)).astype(np.float32))
    assert np.array_equal(x["seq"][:, :, 0], x["one"]) and x["x"][:, 1].tolist() == y.tolist() == list(range(16, 32))


def test_to_dataset_output_signature_has_the_array_shapes(table):
    import tensorflow as tf

    ds = dh_tf.to_dataset(table, {"seq": ["A", "B"], "x": "X"}, "E_int", batch_size=8, page_rows=64)
    assert ds.element_spec == (
        {"seq": tf.TensorSpec((None, 3, 2), tf.float32), "x": tf.TensorSpec((None,), tf.float32)},
        tf.TensorSpec((None, 3), tf.int32),
    )
    x, y = next(iter(ds))
    assert x["seq"].shape == (8, 3, 2) and y.shape == (8, 3)
    assert np.array_equal(x["seq"].numpy()[:, :, 0], expected_a(range(8)).astype(np.float32))


def test_shuffle_with_two_reader_threads_is_exact_with_arrays(make_table):
    num_rows = 150_001
    table = make_table(num_rows, "A = new double[]{i, -i, 0.5 * i}")
    loader = dh_tf.TableLoader(table, "A", "Id", batch_size=1000, shuffle=True, seed=11, page_rows=65536,
                               reader_threads=2)
    epochs = []
    for _ in range(2):
        batches = list(loader)
        x = np.concatenate([x for x, _ in batches])
        y = np.concatenate([y for _, y in batches])
        assert sorted(y.tolist()) == list(range(num_rows))  # each row exactly once
        assert np.array_equal(x, np.stack([y, -y, 0.5 * y], axis=1).astype(np.float32))  # rows stay whole
        epochs.append(y)
    assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[0], np.arange(num_rows))
    again = dh_tf.TableLoader(table, "A", "Id", batch_size=1000, shuffle=True, seed=11, page_rows=65536,
                              reader_threads=1)
    assert np.array_equal(np.concatenate([y for _, y in again]), epochs[0])


def test_epoch_cache_holds_array_rows(table):
    with dh_tf.TableLoader(table, ["A", "B"], "E_long", batch_size=7, page_rows=50, cache=True) as loader:
        first = [(x.copy(), y.copy()) for x, y in loader]
        second = list(loader)
    assert len(first) == len(second) == 43
    for (x1, y1), (x2, y2) in zip(first, second):
        assert x2.shape == x1.shape and np.array_equal(x1, x2) and np.array_equal(y1, y2)


def test_ticking_table_with_array_columns_reads_a_snapshot(server):
    import time

    from deephaven import time_table

    ticking = time_table("PT0.005S").update(["A = new long[]{ii, 2 * ii, 7}"])
    deadline = time.monotonic() + 30
    while ticking.size < 5:
        assert time.monotonic() < deadline, "the time table did not tick"
        time.sleep(0.05)
    loader = dh_tf.TableLoader(ticking, "A", batch_size=4)  # the length is read under the shared lock
    assert loader.layout.fields[0].shape == (3,)
    x = np.concatenate(list(loader))
    assert len(x) >= 5 and np.array_equal(x, np.stack([np.arange(len(x)), 2 * np.arange(len(x)), np.full(len(x), 7)],
                                                      axis=1).astype(np.float32))


def test_wide_array_rows_get_pages_of_bounded_bytes(server):
    """Bug 2: a 65,536-row floor made a page of 16 x 128-float arrays 512 MiB; pages are now ~32 MiB."""
    from deephaven import empty_table

    table = empty_table(10).update([f"W{k} = new float[128]" for k in range(16)])
    loader = dh_tf.TableLoader(table, [f"W{k}" for k in range(16)], batch_size=32)
    assert loader.layout.fields[0].shape == (128, 16)
    assert loader.page_rows == 4096  # 32 MiB / (16 * 128 * 4 bytes), a multiple of the batch
    assert dh_tf.TableLoader(table, [f"W{k}" for k in range(16)], batch_size=5000).page_rows == 5000  # one batch
