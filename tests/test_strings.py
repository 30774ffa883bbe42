"""String columns (NOTE [ Strings and timestamps ] in dh_tf/sources/column_types.py): numpy object arrays of
``str`` from ``TableLoader``, ``tf.string`` from ``to_dataset``, on the engine (fast and public paths), remote
(Arrow ``utf8``) and follow paths; null policies; build-time refusals (mixed lists, numeric fills, the cache).
"""

from __future__ import annotations

import itertools
import re
import sys

import numpy as np
import pytest
from test_remote import connect, publish

import dh_tf
from dh_tf.errors import ArgumentError, ArgumentTypeError, NullValueError

N = 150_003  # several engine chunks (65,536 rows) and pages
FORMULAS = [
    "D = Id * 0.5",
    "S = Id % 7 == 3 ? null : `s` + (Id % 1000)",
    "T = `t` + Id",
]
# Values the bulk conversion must keep exactly: non-ASCII (BMP and beyond, as surrogate pairs in Java), the
# empty string, the text "null" next to a real null, and a value holding the NUL separator (one chunk read
# value by value).
ODD_FORMULAS = [
    "O = Id % 8 == 0 ? new String(Character.toChars(0x1F600)) + `x` : Id % 8 == 1 ? `日本語é` : Id % 8 == 2 ? `` "
    ": Id % 8 == 3 ? `null` : Id % 8 == 4 ? null : Id % 8 == 5 ? new String(new char[]{(char)97, (char)0, (char)98}) "
    ": `plain` + Id",
    "P = Id % 3 == 0 ? `null` : Id % 3 == 1 ? null : `ü` + Id",
]
ODD = ["\U0001f600x", "日本語é", "", "null", None, "a\x00b"]
_names = itertools.count()


def expected_s(fill=None):
    return [fill if i % 7 == 3 else f"s{i % 1000}" for i in range(N)]


def expected_odd(num_rows):
    o = [ODD[i % 8] if i % 8 < 6 else f"plain{i}" for i in range(num_rows)]
    p = ["null" if i % 3 == 0 else None if i % 3 == 1 else f"ü{i}" for i in range(num_rows)]
    return o, p


@pytest.fixture(scope="module")
def table(make_table):
    return make_table(N, *FORMULAS)


@pytest.fixture(scope="module")
def odd(make_table):
    return make_table(70_000, *ODD_FORMULAS)  # more than one 65,536-row chunk


@pytest.fixture(scope="module")
def session(server, table, odd):
    publish("strings_test_table", table)
    publish("strings_test_odd", odd)
    session = connect(server.test_port)
    yield session
    session.close()


def columns_of(loader, key=None):
    """The epoch's x[key] (or x) and y, concatenated."""
    batches = list(loader)
    x = [b[0][key] if key else b[0] for b in batches]
    return np.concatenate(x), np.concatenate([b[1] for b in batches])


@pytest.mark.parametrize("read_path", ["engine", "public"])
def test_loader_yields_str_objects_in_table_order(table, read_path):
    loader = dh_tf.TableLoader(table, {"s": "S", "d": "D"}, "Id", batch_size=4096, nulls={"S": "[UNK]"},
                               read_path=read_path)
    batches = list(loader)
    s = np.concatenate([x["s"] for x, _ in batches])
    ids = np.concatenate([y for _, y in batches])
    assert np.array_equal(ids, np.arange(N))
    assert s.dtype == object and s.shape == (N,) and s.flags["C_CONTIGUOUS"]
    assert s.tolist() == expected_s("[UNK]")
    assert all(type(v) is str for v in s[:1000])
    d = np.concatenate([x["d"] for x, _ in batches])
    assert d.dtype == np.float32 and np.array_equal(d, (np.arange(N) * 0.5).astype(np.float32))


def test_a_list_of_string_columns_is_batch_by_k_and_shuffles_with_the_rows(table):
    loader = dh_tf.TableLoader(table, ["T", "S"], "Id", batch_size=1000, shuffle=True, seed=3,
                               nulls={"S": "-"}, reader_threads=2)
    x, ids = columns_of(loader)
    assert x.dtype == object and x.shape == (N, 2)
    assert sorted(ids.tolist()) == list(range(N)) and not np.array_equal(ids, np.arange(N))
    assert x[:, 0].tolist() == [f"t{i}" for i in ids]
    assert x[:, 1].tolist() == ["-" if i % 7 == 3 else f"s{i % 1000}" for i in ids]


def test_pages_count_the_measured_bytes_of_strings(table, make_table):
    from dh_tf.reading.page_size import STRING_BYTES, default_page_rows

    # NOTE [ Page size ]: the largest str of the first 4096 rows ('s999': 53 bytes) plus its pointer, and a float32
    loader = dh_tf.TableLoader(table, {"s": "S", "d": "D"}, batch_size=32, nulls={"S": "?"})
    assert loader.page_rows == default_page_rows(8 + sys.getsizeof("s999") + 4, 32)
    long = make_table(5000, "L = Id == 4095 ? `y`.repeat(20000) : `x`.repeat(10000)", "M = Id < 4096 ? `m` : `z`.repeat(9)")
    loader = dh_tf.TableLoader(long, {"l": "L", "m": "M"}, batch_size=32)
    assert loader.page_rows == default_page_rows(8 + sys.getsizeof("y" * 20000) + 8 + sys.getsizeof("m"), 32) == 1664
    empty = dh_tf.TableLoader(long.where("Id < 0"), "L", batch_size=32)  # nothing to measure
    assert empty.page_rows == default_page_rows(STRING_BYTES, 32)


def test_engine_chunks_of_long_strings_hold_a_bounded_number_of_characters(make_table):
    from dh_tf.sources import engine_read, engine_strings
    from dh_tf.sources.column_types import column_kind

    long = make_table(6000, "L = `x`.repeat(10000 + (int)(Id % 3))", "S = `s` + Id")
    reader = engine_read.EngineColumnReader(long.j_table, {"L": column_kind("java.lang.String")})
    assert reader.rows_per_chunk == engine_strings.FIRST_STRING_ROWS == 1024  # before anything is measured
    out = {"L": np.empty(6000, dtype=object)}
    reader.read([(0, 6000)], out)
    assert out["L"].tolist() == ["x" * (10000 + i % 3) for i in range(6000)]
    assert reader.rows_per_chunk == engine_strings.CHUNK_CHARS // 10001 == 419  # the most characters per row seen
    reader.close()
    short = engine_read.EngineColumnReader(long.j_table, {"S": column_kind("java.lang.String")})
    short.read([(0, 6000)], {"S": np.empty(6000, dtype=object)})
    assert short.rows_per_chunk == engine_read.CHUNK_ROWS  # short strings keep whole chunks
    short.close()


@pytest.mark.parametrize("label_dtype", [None, "int64"])
def test_a_string_label_is_refused(table, label_dtype):  # Keras would fail on it in fit; the message: test_door.py
    with pytest.raises(ArgumentTypeError, match=re.escape("TableLoader: label must be numeric, boolean or a timestamp "
                                                          "(got String column(s) 'T' (java.lang.String))")):
        dh_tf.TableLoader(table, "D", "T", label_dtype=label_dtype)


@pytest.mark.parametrize("read_path", ["engine", "public"])
def test_unicode_empty_null_text_and_the_separator_survive(odd, read_path):
    loader = dh_tf.TableLoader(odd, ["O", "P"], batch_size=7000, nulls={"O": "<null>", "P": "<null>"},
                               read_path=read_path)
    x = np.concatenate(list(loader))
    o, p = expected_odd(70_000)
    assert x[:, 0].tolist() == ["<null>" if v is None else v for v in o]
    assert x[:, 1].tolist() == ["<null>" if v is None else v for v in p]


def test_null_is_an_error_by_default_naming_column_and_row(table):
    with pytest.raises(NullValueError, match=re.escape(
            "column 'S' (java.lang.String) holds a null at row position 3 and nulls='error'; pass a fill string as "
            "nulls={'S': '[UNK]'}, or drop such rows with DQL: table.where('!isNull(S)')")):
        list(dh_tf.TableLoader(table, "S", batch_size=100))


@pytest.mark.parametrize("nulls", ["nan", 0, -1.5])
def test_a_global_policy_leaves_strings_at_error(table, nulls):
    loader = dh_tf.TableLoader(table, {"s": "S", "d": "D"}, batch_size=100, nulls=nulls)
    assert [f.nulls for f in loader.layout.fields] == [("error",), (nulls,)]
    with pytest.raises(NullValueError, match="column 'S' .* at row position 3"):
        list(loader)


@pytest.mark.parametrize("policy", ["nan", 0, 2.5])
def test_nan_or_a_number_for_a_string_column_is_refused_naming_it(table, policy):
    with pytest.raises(ArgumentError, match=re.escape(
            f"TableLoader: nulls={{'S': {policy!r}}} does not fit String column 'S'; its nulls can be 'error' or a "
            "fill string, e.g. nulls={'S': '[UNK]'}")):
        dh_tf.TableLoader(table, {"s": "S", "d": "D"}, nulls={"S": policy})


def test_a_fill_string_for_a_numeric_column_is_refused(table):
    with pytest.raises(ArgumentError, match=re.escape(
            "TableLoader: nulls={'D': 'zero'}: a fill string fits String columns only, and column 'D' goes to a "
            "float32 array; use 'error', 'nan' or a number")):
        dh_tf.TableLoader(table, {"s": "S", "d": "D"}, nulls={"S": "x", "D": "zero"})
    with pytest.raises(ArgumentError, match=r"nulls must be 'error', 'nan' or a number to fill nulls with \(got 'x'"):
        dh_tf.TableLoader(table, "S", nulls="x")  # a fill string is per column only


def test_a_list_mixing_strings_and_numbers_is_a_type_error(table):
    with pytest.raises(ArgumentTypeError, match=re.escape(
            "TableLoader: features mixes String column(s) ['S', 'T'] and non-String column(s) ['D'] in one list "
            "(one array holds one dtype); put them under separate keys of a dict spec, e.g. {'text': ['S', 'T'], "
            "'numbers': ['D']}")):
        dh_tf.TableLoader(table, ["S", "D", "T"])
    with pytest.raises(TypeError, match=r"label\['y'\] mixes String column\(s\) \['T'\]"):
        dh_tf.to_dataset(table, "D", {"y": ["Id", "T"]})


def test_cache_is_refused_before_anything_is_created(table, tmp_path):
    message = re.escape("TableLoader: cache= cannot hold String column(s) ['S']: they are read as Python str objects")
    with pytest.raises(ArgumentTypeError, match=message):
        dh_tf.TableLoader(table, {"s": "S", "d": "D"}, nulls={"S": "x"}, cache=str(tmp_path))
    with pytest.raises(ArgumentTypeError, match=message):
        dh_tf.to_dataset(table, {"s": "S", "d": "D"}, nulls={"S": "x"}, cache=True)
    assert list(tmp_path.iterdir()) == []
    dh_tf.TableLoader(table, "D", cache=str(tmp_path)).close()  # numbers still cache


def test_dataset_gives_tf_string_and_string_lookup_works(table):
    import keras
    import tensorflow as tf

    ds = dh_tf.to_dataset(table, {"s": "S", "t": ["T", "S"]}, "Id", batch_size=5000, nulls={"S": "[UNK]"})
    x_spec, y_spec = ds.element_spec
    assert x_spec["s"] == tf.TensorSpec((None,), tf.string) and x_spec["t"] == tf.TensorSpec((None, 2), tf.string)
    assert y_spec.dtype == tf.int64
    got = [(x["s"].numpy(), x["t"].numpy(), y.numpy()) for x, y in ds]
    assert np.array_equal(np.concatenate([y for *_, y in got]), np.arange(N))
    assert [v.decode() for v in np.concatenate([s for s, *_ in got])] == expected_s("[UNK]")
    assert [v.decode() for v in np.concatenate([t for _, t, _ in got])[:, 0]] == [f"t{i}" for i in range(N)]

    vocabulary = [f"s{i}" for i in range(1000)]
    lookup = keras.layers.StringLookup(vocabulary=vocabulary)  # index 0: out of vocabulary ("[UNK]")
    ids = np.concatenate([lookup(x["s"]).numpy() for x, _ in ds])
    rows = np.arange(N)
    assert np.array_equal(ids, np.where(rows % 7 == 3, 0, rows % 1000 + 1))

    inputs = keras.Input(shape=(), dtype="string", name="s")
    hidden = keras.layers.Embedding(1001, 4)(keras.layers.StringLookup(vocabulary=vocabulary)(inputs))
    model = keras.Model({"s": inputs}, keras.layers.Dense(1)(hidden))
    model.compile("sgd", "mse")
    train = dh_tf.to_dataset(table, {"s": "S"}, "D", batch_size=4096, nulls={"S": "[UNK]"})
    history = model.fit(train.map(lambda x, y: (x, y / N)), epochs=1, verbose=0, shuffle=False)
    assert np.isfinite(history.history["loss"][0])


def test_remote_strings_equal_the_embedded_ones(table, odd, session):
    from dh_tf.reading.page_size import default_page_rows

    remote = session.open_table("strings_test_table")
    assert dh_tf.TableLoader(remote, "T").source.column_types["S"] == "java.lang.String"
    measured = dh_tf.TableLoader(remote, {"s": "S", "d": "D"}, batch_size=32, nulls={"S": "?"})
    assert measured.page_rows == default_page_rows(8 + sys.getsizeof("s999") + 4, 32, page_mib=64)
    loader = dh_tf.TableLoader(remote, {"s": "S", "d": "D"}, "Id", batch_size=4096, nulls={"S": "[UNK]"},
                               page_rows=40_960, reader_threads=2)
    s, ids = columns_of(loader, "s")
    assert np.array_equal(ids, np.arange(N)) and s.dtype == object and s.tolist() == expected_s("[UNK]")
    with pytest.raises(NullValueError, match=re.escape("column 'S' (java.lang.String) holds a null at row position 3")):
        list(dh_tf.TableLoader(remote, "S", batch_size=100))
    x = np.concatenate(list(dh_tf.TableLoader(session.open_table("strings_test_odd"), ["O", "P"], batch_size=7000,
                                              nulls={"O": "<null>", "P": "<null>"})))
    o, p = expected_odd(70_000)
    assert x[:, 0].tolist() == ["<null>" if v is None else v for v in o]
    assert x[:, 1].tolist() == ["<null>" if v is None else v for v in p]
    ds = dh_tf.to_dataset(remote, "S", "Id", batch_size=1000, nulls={"S": "?"})
    assert ds.element_spec[0].dtype.name == "string"
    first = next(iter(ds))[0].numpy()
    assert [v.decode() for v in first] == expected_s("?")[:1000]
    remote.close()


class StringFeed:
    """A live append-only table (``blink_to_append_only`` of a ``table_publisher``) with Id and a String S."""

    def __init__(self) -> None:
        from deephaven import dtypes
        from deephaven.stream import blink_to_append_only
        from deephaven.stream.table_publisher import table_publisher

        self.name = f"strings_follow_{next(_names)}"
        self.blink, self.publisher = table_publisher(self.name, {"Id": dtypes.int64, "S": dtypes.string})
        self.table = blink_to_append_only(self.blink)
        publish(self.name, self.table)
        self.rows = 0

    def add(self, rows: int) -> None:
        from deephaven import new_table
        from deephaven.column import long_col, string_col

        ids = list(range(self.rows, self.rows + rows))
        self.publisher.add(new_table([long_col("Id", ids), string_col("S", [follow_value(i) for i in ids])]))
        self.rows += rows


def follow_value(i: int) -> str | None:
    return None if i % 5 == 2 else f"v{i}é"


def test_follow_reads_strings_embedded_and_remote(server, session):
    import tensorflow as tf

    feed = StringFeed()
    feed.add(1500)
    expected = ["?" if follow_value(i) is None else follow_value(i) for i in range(3000)]
    remote = session.open_table(feed.name)
    followers = [dh_tf.follow(t, {"s": "S"}, "Id", batch_size=500, start="beginning", max_rows=3000, nulls={"S": "?"})
                 for t in (feed.table, remote)]
    feed.add(1500)
    for follower in followers:
        batches = list(follower)  # ends after max_rows
        assert np.array_equal(np.concatenate([y for _, y in batches]), np.arange(3000))
        s = np.concatenate([x["s"] for x, _ in batches])
        assert s.dtype == object and s.tolist() == expected
    with pytest.raises(NullValueError, match="column 'S' .* holds a null"):
        list(dh_tf.follow(feed.table, "S", batch_size=10, start="beginning", max_rows=100))
    ds = dh_tf.to_dataset(feed.table, "S", "Id", follow=True, batch_size=100, start="beginning", max_batches=2,
                          nulls={"S": "?"})
    assert ds.element_spec[0] == tf.TensorSpec((None,), tf.string)
    ((x0, y0), (x1, y1)) = list(ds)
    assert [v.decode() for v in [*x0.numpy(), *x1.numpy()]] == expected[:200]
    assert np.array_equal(np.concatenate([y0, y1]), np.arange(200))
    remote.close()
