"""Timestamps (NOTE [ Strings and timestamps ] in dh_tf/sources/column_types.py): ``Instant`` and
``ZonedDateTime`` read as exact int64 nanoseconds since the epoch, ``LocalDate`` as int32 days since
1970-01-01, on the engine (fast and public paths) and remote paths; nulls by policy; the float-output refusal.
"""

from __future__ import annotations

import re
import time

import numpy as np
import pytest
from test_remote import connect, publish

import dh_tf
from dh_tf.errors import ArgumentError, ArgumentTypeError, NullValueError

N = 100_003  # more than one engine chunk (65,536 rows)
BASE_NS = 1_700_000_000_123_456_789
FORMULAS = [
    # Before and after 1970, odd nanoseconds; a null every 9th row. Z: the same instants in two zones.
    "T = Id % 9 == 4 ? null : epochNanosToInstant(1700000000123456789L + Id * 1000003L - 3000000000000000000L * (Id % 2))",
    "Z = toZonedDateTime(T, timeZone(Id % 2 == 0 ? `America/New_York` : `Asia/Tokyo`))",
    # Days from year -768 to year 25,800 (ISO text "+25800-..." beyond 9999); a null every 9th row.
    "LD = Id % 9 == 5 ? null : java.time.LocalDate.ofEpochDay(Id * 97 - 1000000)",
    "X = Id * 0.5",
]
IDS = np.arange(N, dtype=np.int64)
NANOS = BASE_NS + IDS * 1_000_003 - 3_000_000_000_000_000_000 * (IDS % 2)
DAYS = (IDS * 97 - 1_000_000).astype(np.int32)
NULL_T = IDS % 9 == 4
NULL_D = IDS % 9 == 5


def filled(values: np.ndarray, nulls: np.ndarray, fill: int) -> np.ndarray:
    out = values.copy()
    out[nulls] = fill
    return out


@pytest.fixture(scope="module")
def table(make_table):
    return make_table(N, *FORMULAS)


def test_expected_values_are_what_the_engine_holds(table, to_numpy):
    """The reference: the public ``to_numpy`` of the same columns (Instant as datetime64[ns])."""
    reference = to_numpy(table, "T")
    assert np.array_equal(reference.view(np.int64)[~NULL_T], NANOS[~NULL_T])
    assert np.isnat(reference[NULL_T]).all()


@pytest.mark.parametrize("read_path", ["engine", "public"])
def test_instant_and_zoned_date_time_are_exact_int64_nanoseconds(table, read_path):
    loader = dh_tf.TableLoader(table, {"t": "T", "z": "Z"}, "Id", dtype="int64", nulls=-1, batch_size=10_000,
                               read_path=read_path)
    batches = list(loader)
    assert np.array_equal(np.concatenate([y for _, y in batches]), IDS)
    for key in ("t", "z"):
        got = np.concatenate([x[key] for x, _ in batches])
        assert got.dtype == np.int64 and np.array_equal(got, filled(NANOS, NULL_T, -1)), key


@pytest.mark.parametrize("read_path", ["engine", "public"])
def test_local_date_is_int32_days_since_1970(table, read_path):
    loader = dh_tf.TableLoader(table, "LD", "LD", nulls={"LD": -(2**31) + 1}, batch_size=10_000, read_path=read_path)
    batches = list(loader)
    y = np.concatenate([y for _, y in batches])
    assert y.dtype == np.int32 and np.array_equal(y, filled(DAYS, NULL_D, -(2**31) + 1))  # label: its own int type
    x = np.concatenate([x for x, _ in batches])
    assert x.dtype == np.float32 and np.array_equal(x, y.astype(np.float32))  # days fit a float exactly


def test_a_timestamp_label_stays_int64_and_the_dataset_says_so(table):
    import tensorflow as tf

    x, y = zip(*dh_tf.TableLoader(table, "X", "T", nulls={"T": 0}, batch_size=50_000))
    assert np.concatenate(y).dtype == np.int64 and np.array_equal(np.concatenate(y), filled(NANOS, NULL_T, 0))
    ds = dh_tf.to_dataset(table, {"t": "T", "d": "LD"}, "Z", dtype="int64", nulls=7, batch_size=50_000)
    x_spec, y_spec = ds.element_spec
    assert x_spec["t"].dtype == tf.int64 and x_spec["d"].dtype == tf.int64 and y_spec.dtype == tf.int64
    first_x, first_y = next(iter(ds))
    assert np.array_equal(first_y.numpy(), filled(NANOS, NULL_T, 7)[:50_000])
    assert np.array_equal(first_x["d"].numpy(), filled(DAYS, NULL_D, 7)[:50_000])


def test_null_timestamps_follow_the_null_policy(table):
    with pytest.raises(NullValueError, match=re.escape(
            "column 'T' (java.time.Instant) holds a null at row position 4 and nulls='error': NaN does not exist in "
            "its int64 output; pass a fill number as nulls={'T': -1}, or drop such rows")):
        list(dh_tf.TableLoader(table, "T", dtype="int64", batch_size=100))
    with pytest.raises(NullValueError, match=re.escape("column 'LD' (java.time.LocalDate) holds a null at row "
                                                       "position 5")):
        list(dh_tf.TableLoader(table, "LD", batch_size=100))
    loader = dh_tf.TableLoader(table, {"t": "T", "d": "LD"}, dtype="int64", nulls="nan", batch_size=100)
    assert [f.nulls for f in loader.layout.fields] == [("error",), ("error",)]  # a global "nan" fits no int64 output
    floats = dh_tf.TableLoader(table, "LD", nulls="nan", batch_size=N)
    (x,) = list(floats)
    assert np.isnan(x[NULL_D]).all() and np.array_equal(x[~NULL_D], DAYS[~NULL_D].astype(np.float32))
    with pytest.raises(ArgumentError, match=re.escape("nulls={'T': 'nan'} needs a floating output, but column 'T' "
                                                      "goes to a int64 array")):
        dh_tf.TableLoader(table, "T", dtype="int64", nulls={"T": "nan"})
    with pytest.raises(ArgumentError, match=re.escape("the null fill value for column 'T' must be an integer that "
                                                      "fits int64 (got 0.5)")):
        dh_tf.TableLoader(table, "T", dtype="int64", nulls={"T": 0.5})


@pytest.mark.parametrize("column,kind", [("T", "java.time.Instant"), ("Z", "java.time.ZonedDateTime")])
def test_a_timestamp_into_a_float_output_is_refused_suggesting_int64(table, column, kind):
    message = (f"TableLoader: column '{column}' ({kind}) is read as int64 nanoseconds since the epoch, which a "
               "float32 output cannot hold exactly (a float64 keeps 15-16 digits, today's nanoseconds have 19); pass "
               f"dtype='int64' (exact), or convert it in DQL first, e.g. table.update_view('{column}Seconds = "
               f"epochNanos({column}) / 1e9')")
    with pytest.raises(ArgumentTypeError, match=re.escape(message)):
        dh_tf.TableLoader(table, ["X", column])
    with pytest.raises(TypeError, match=re.escape("which a float64 output cannot hold exactly") + ".*"
                       + re.escape("pass label_dtype='int64'")):
        dh_tf.to_dataset(table, "X", column, label_dtype="float64")
    with pytest.raises(TypeError, match=re.escape("which a int32 output cannot hold exactly")):
        dh_tf.TableLoader(table, column, dtype="int32")
    # A label list of integer columns stays integer (int64 here), so it is accepted.
    assert dh_tf.TableLoader(table, "X", ["LD", column], nulls=0).layout.fields[1].dtype == np.int64


def test_remote_timestamps_equal_the_embedded_ones(server, table):
    publish("timestamps_test", table)
    session = connect(server.test_port)
    try:
        remote = session.open_table("timestamps_test")
        loader = dh_tf.TableLoader(remote, {"t": "T", "z": "Z", "d": "LD"}, "Id", dtype="int64", nulls=-1,
                                   batch_size=10_000, page_rows=30_000)
        assert {c: loader.source.column_types[c] for c in ("T", "Z", "LD")} == {
            "T": "java.time.Instant", "Z": "java.time.ZonedDateTime", "LD": "java.time.LocalDate"}
        batches = list(loader)
        assert np.array_equal(np.concatenate([y for _, y in batches]), IDS)
        for key in ("t", "z"):
            assert np.array_equal(np.concatenate([x[key] for x, _ in batches]), filled(NANOS, NULL_T, -1)), key
        assert np.array_equal(np.concatenate([x["d"] for x, _ in batches]), filled(DAYS, NULL_D, -1).astype(np.int64))
        with pytest.raises(NullValueError, match=re.escape("column 'T' (java.time.Instant) holds a null at row "
                                                           "position 4")):
            list(dh_tf.TableLoader(remote, "T", dtype="int64", batch_size=100))
        remote.close()
    finally:
        session.close()


def test_follow_reads_a_live_timestamp_column(server):
    from deephaven import time_table

    ticking = time_table("PT0.01S")
    before = time.time_ns()
    batches = list(dh_tf.follow(ticking, "Timestamp", batch_size=5, dtype="int64", max_rows=20))
    x = np.concatenate(batches)
    assert x.dtype == np.int64 and len(x) == 20
    steps = np.diff(x)
    assert (steps > 0).all() and (steps % 10_000_000 == 0).all()  # 10 ms apart, exactly
    assert abs(int(x[0]) - before) < 60 * 10**9
