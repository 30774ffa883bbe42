"""dh_tf.vocabulary and dh_tf.adapt: Keras preprocessing state from engine aggregations.

Every expectation is Keras' own ``layer.adapt`` on the same (non-null) values, or numpy on them;
the tables are real embedded tables, and remote ones read through a pydeephaven Session.
"""

from __future__ import annotations

from collections import Counter

import keras
import numpy as np
import pytest
from test_remote import connect, publish, server_exports

import dh_tf
from dh_tf.errors import ArgumentError, ArgumentTypeError

NULL_LONG = -(2**63)
NULL_INT = -(2**31)
# Skewed counts with ties (30, 30, 30 / 10, 10 / 1, 1, 1), the special tokens Keras drops, the empty
# string, and a private-use character (after every other BMP character in both Java and UTF-8 order).
STRING_COUNTS = {
    "apple": 50, "pear": 30, "fig": 30, "kiwi": 30, "lime": 10, "date": 10, "\ue000": 7, "\u00e9t\u00e9": 7,
    "": 6, "[UNK]": 5, "plum": 3, "b": 1, "a": 1, "c": 1,
}
INT_COUNTS = {7: 40, -3: 25, 12: 25, 0: 25, -1: 9, 100: 9, 5: 2, 2**40: 1, -(2**35): 1, 3: 1}
NULLS = 17


def _shuffled(counts: dict, seed: int) -> list:
    values = [value for value, n in counts.items() for _ in range(n)]
    order = np.random.default_rng(seed).permutation(len(values))
    return [values[i] for i in order]


@pytest.fixture(scope="module")
def data():
    """The columns' non-null values, in table order (the nulls are mixed in the tables)."""
    return {"S": _shuffled(STRING_COUNTS, 1), "L": _shuffled(INT_COUNTS, 2)}


@pytest.fixture(scope="module")
def tokens(server, data):
    """String column S, long column L and int column I (the same values as L where they fit), nulls mixed in."""
    from deephaven import new_table
    from deephaven.column import int_col, long_col, string_col

    n = max(len(data["S"]), len(data["L"])) + NULLS
    strings = data["S"] + [None] * (n - len(data["S"]))
    longs = data["L"] + [NULL_LONG] * (n - len(data["L"]))
    rng = np.random.default_rng(3)
    strings = [strings[i] for i in rng.permutation(n)]
    longs = np.array(longs, dtype=np.int64)[rng.permutation(n)]
    ints = np.where((longs == NULL_LONG) | (np.abs(longs) >= 2**31), NULL_INT, longs).astype(np.int32)
    return new_table([string_col("S", strings), long_col("L", longs), int_col("I", ints)])


@pytest.fixture(scope="module")
def columns(data):
    """The non-null values of each column of ``tokens``."""
    longs = np.array(data["L"], dtype=np.int64)
    return {"S": list(data["S"]), "L": longs, "I": longs[np.abs(longs) < 2**31].astype(np.int32)}


def keras_vocabulary(layer, values) -> list:
    layer.adapt(np.array(values))
    return [v.item() if isinstance(v, np.generic) else v for v in layer.get_vocabulary(include_special_tokens=False)]


# --- vocabulary ---------------------------------------------------------------------------------------


def test_string_vocabulary_equals_keras_adapt_nulls_left_out(tokens, columns):
    expected = keras_vocabulary(keras.layers.StringLookup(), columns["S"])
    got = dh_tf.vocabulary(tokens, "S")
    assert "[UNK]" not in expected  # Keras drops its OOV token; vocabulary() keeps every value
    assert [v for v in got if v != "[UNK]"] == expected
    assert got.index("[UNK]") == got.index("plum") - 1
    assert None not in got and len(got) == len(set(got)) == len(STRING_COUNTS)
    assert got[1:4] == ["pear", "kiwi", "fig"]  # a tie: descending value, as Keras


def test_string_ties_follow_keras_utf8_order_where_java_order_differs(make_table):
    # U+1F600 is after U+E000 in UTF-8 bytes (Keras' order) but before it in Java's UTF-16 order. Built
    # by DQL: a Python str above U+FFFF does not survive jpy's conversion to a Java String.
    table = make_table(14, "S = Id % 2 == 0 ? new String(Character.toChars(0x1F600)) : new String(Character.toChars(0xE000))")
    expected = keras_vocabulary(keras.layers.StringLookup(), ["\U0001f600", "\ue000"] * 7)
    assert dh_tf.vocabulary(table, "S") == expected == ["\U0001f600", "\ue000"]


@pytest.mark.parametrize("column", ["L", "I"])
def test_integer_vocabulary_equals_keras_adapt_nulls_left_out(tokens, columns, column):
    layer = keras.layers.IntegerLookup(oov_token=-999, num_oov_indices=1)
    expected = keras_vocabulary(layer, columns[column])
    got = dh_tf.vocabulary(tokens, column)
    assert got == expected
    assert all(isinstance(v, int) for v in got)
    assert got[:4] == [7, 12, 0, -3]


@pytest.mark.parametrize("max_tokens", [1, 3, 4, 6, 100])
def test_max_tokens_keeps_the_values_keras_keeps(tokens, columns, max_tokens):
    strings = keras.layers.StringLookup(max_tokens=max_tokens + 1, oov_token="<oov>")
    assert dh_tf.vocabulary(tokens, "S", max_tokens=max_tokens) == keras_vocabulary(strings, columns["S"])
    longs = keras.layers.IntegerLookup(max_tokens=max_tokens + 1, oov_token=-999)
    assert dh_tf.vocabulary(tokens, "L", max_tokens=max_tokens) == keras_vocabulary(longs, columns["L"])


@pytest.mark.parametrize("min_count", [1, 2, 10, 30, 51])
def test_min_count_drops_rare_values(tokens, columns, min_count):
    for column, oov in (("S", "<oov>"), ("L", -999)):
        counts = Counter(columns[column].tolist() if column == "L" else columns[column])
        layer = keras.layers.StringLookup(oov_token=oov) if column == "S" else keras.layers.IntegerLookup(oov_token=oov)
        expected = [v for v in keras_vocabulary(layer, columns[column]) if counts[v] >= min_count]
        assert dh_tf.vocabulary(tokens, column, min_count=min_count) == expected
    assert dh_tf.vocabulary(tokens, "S", min_count=10, max_tokens=2) == ["apple", "pear"]


# --- lookup layers ------------------------------------------------------------------------------------


LOOKUPS = [
    ("S", lambda: keras.layers.StringLookup()),
    ("S", lambda: keras.layers.StringLookup(max_tokens=6, num_oov_indices=2, mask_token="")),
    ("S", lambda: keras.layers.StringLookup(max_tokens=4, output_mode="one_hot")),
    ("S", lambda: keras.layers.StringLookup(mask_token="", output_mode="multi_hot", num_oov_indices=0)),
    ("L", lambda: keras.layers.IntegerLookup()),
    ("L", lambda: keras.layers.IntegerLookup(max_tokens=5, mask_token=0, num_oov_indices=2)),
    ("I", lambda: keras.layers.IntegerLookup(max_tokens=3, oov_token=7)),
]


@pytest.mark.parametrize("case", range(len(LOOKUPS)))
def test_lookup_layers_equal_keras_adapt(tokens, columns, case):
    column, make = LOOKUPS[case]
    reference, layer = make(), make()
    reference.adapt(np.array(columns[column]))
    assert dh_tf.adapt(layer, tokens, column) is layer
    assert layer.get_vocabulary() == reference.get_vocabulary()
    probe = [*columns[column][:200], *(["zzz", "", "[UNK]"] if column == "S" else [999, 0, -1])]
    if layer.num_oov_indices == 0:  # Keras then refuses values outside the vocabulary (or the mask)
        probe = [v for v in probe if v in reference.get_vocabulary()]
    probe = np.array(probe)
    if layer.output_mode == "multi_hot":
        probe = probe.reshape(-1, 1)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(probe)),
                                  keras.ops.convert_to_numpy(reference(probe)))


def test_an_adapted_lookup_feeds_a_model(tokens):
    layer = dh_tf.adapt(keras.layers.StringLookup(output_mode="one_hot"), tokens, ["S"])
    inputs = keras.Input(shape=(1,), dtype="string")
    model = keras.Model(inputs, keras.layers.Dense(1)(layer(inputs)))
    assert model(np.array([["apple"], ["nope"]])).shape == (2, 1)


# --- integer codes ------------------------------------------------------------------------------------


def _lookup_codes(vocabulary, values, layer):
    """What a Keras lookup layer built on ``vocabulary`` returns for ``values`` (a null is code 0)."""
    known = [v for v in values if v is not None]
    codes = iter(keras.ops.convert_to_numpy(layer(vocabulary=vocabulary)(np.array(known))).tolist())
    return [0 if v is None else next(codes) for v in values]


def test_integer_codes_equal_string_lookup_on_its_vocabulary(tokens, to_numpy):
    vocabulary = dh_tf.vocabulary(tokens, "S")
    coded = dh_tf.integer_codes(tokens, "S")
    assert coded.columns[-1].name == "SCode" and str(coded.columns[-1].data_type) == "int"
    values = list(to_numpy(tokens, "S"))
    expected = _lookup_codes(vocabulary, values, keras.layers.StringLookup)
    assert to_numpy(coded, "SCode").tolist() == expected
    assert set(expected) == set(range(len(vocabulary) + 1))  # every code, 0 for the nulls
    with dh_tf.TableLoader(coded, "SCode", batch_size=64, dtype="int32", cache=True) as loader:  # cacheable
        for _ in range(2):
            assert np.concatenate(list(loader)).tolist() == expected


def test_integer_codes_of_a_given_vocabulary_code_unseen_values_zero(tokens, to_numpy):
    vocabulary = [7, 100, 5, -(2**35)]  # a part of L's values, in an order of our own
    coded = dh_tf.integer_codes(tokens, "L", vocabulary=vocabulary, name="Code")
    values = [None if v == NULL_LONG else int(v) for v in to_numpy(tokens, "L")]
    layer = lambda vocabulary: keras.layers.IntegerLookup(vocabulary=vocabulary, mask_token=None)  # noqa: E731
    assert to_numpy(coded, "Code").tolist() == _lookup_codes(vocabulary, values, layer)


def test_integer_codes_refuse_bad_arguments(tokens):
    with pytest.raises(ArgumentError, match=r"integer_codes: the table already has a column 'L'; pass another name="):
        dh_tf.integer_codes(tokens, "S", name="L")
    with pytest.raises(ArgumentTypeError, match=r"integer_codes: column 'S' has type java.lang.String; integer codes "
                                                r"needs one of .*|integer_codes: the vocabulary does not fit column 'S'"):
        dh_tf.integer_codes(tokens, "S", vocabulary=[1, 2])
    with pytest.raises(ArgumentTypeError, match=r"integer_codes: the vocabulary does not fit column 'I' \(int\)"):
        dh_tf.integer_codes(tokens, "I", vocabulary=[2**40])
    with pytest.raises(ArgumentTypeError, match=r"integer_codes: name must be a column name \(a str identifier\), "
                                                r"got 'a b'"):
        dh_tf.integer_codes(tokens, "S", name="a b")
    with pytest.raises(ArgumentTypeError, match=r"integer_codes: vocabulary must be a list of the column's values "
                                                r"\(got str\)"):
        dh_tf.integer_codes(tokens, "S", vocabulary="apple")


# --- Normalization ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def numbers(server):
    """Columns of several types and scales (no nulls), and their values as a [n, 4] float64 array."""
    from deephaven import new_table
    from deephaven.column import double_col, float_col, int_col, long_col

    rng = np.random.default_rng(11)
    n = 50_003
    values = {
        "D": rng.normal(3.5, 2.0, n),
        "F": rng.exponential(0.01, n).astype(np.float32),
        "I": rng.integers(-1000, 5000, n).astype(np.int32),
        "L": rng.integers(0, 10**7, n).astype(np.int64),
    }
    makers = {"D": double_col, "F": float_col, "I": int_col, "L": long_col}
    table = new_table([makers[c](c, v) for c, v in values.items()])
    return table, np.stack([v.astype(np.float64) for v in values.values()], axis=1)


def test_normalization_equals_keras_adapt(numbers):
    table, x = numbers
    reference = keras.layers.Normalization(axis=-1)
    reference.adapt(x.astype(np.float32))
    layer = dh_tf.adapt(keras.layers.Normalization(), table, ["D", "F", "I", "L"])
    mean, variance = layer.adapt_mean.numpy(), layer.adapt_variance.numpy()
    np.testing.assert_allclose(mean, x.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(variance, x.var(axis=0), rtol=1e-5)
    np.testing.assert_allclose(mean, reference.adapt_mean.numpy(), rtol=1e-4)
    np.testing.assert_allclose(variance, reference.adapt_variance.numpy(), rtol=1e-3)
    assert int(layer.count.numpy()) == len(x)
    probe = x[:100].astype(np.float32)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(probe)),
                               keras.ops.convert_to_numpy(reference(probe)), rtol=1e-3, atol=1e-3)


def test_normalization_of_one_column_and_over_all_columns(numbers):
    table, x = numbers
    one = dh_tf.adapt(keras.layers.Normalization(), table, "D")
    assert one.adapt_mean.shape == (1,)
    np.testing.assert_allclose(one.adapt_mean.numpy(), [x[:, 0].mean()], rtol=1e-6)
    assert keras.ops.convert_to_numpy(one(x[:5, :1].astype(np.float32))).shape == (5, 1)
    pooled = keras.layers.Normalization(axis=None)
    pooled.adapt(x[:, :2].astype(np.float32))
    layer = dh_tf.adapt(keras.layers.Normalization(axis=None), table, ["D", "F"])
    np.testing.assert_allclose(layer.adapt_mean.numpy(), x[:, :2].mean(), rtol=1e-6)
    np.testing.assert_allclose(layer.adapt_variance.numpy(), x[:, :2].var(), rtol=1e-6)
    np.testing.assert_allclose(layer.adapt_variance.numpy(), pooled.adapt_variance.numpy(), rtol=1e-3)
    scalar = dh_tf.adapt(keras.layers.Normalization(axis=None), table, "I")
    assert keras.ops.convert_to_numpy(scalar(x[:7, 2].astype(np.float32))).shape == (7,)


def test_normalization_leaves_nulls_out_per_column(make_table, to_numpy):
    table = make_table(10_001, "A = Id % 7 == 2 ? NULL_DOUBLE : Math.sin(Id) * 10", "B = Id % 3 == 0 ? NULL_INT : (int)(Id % 101)")
    layer = dh_tf.adapt(keras.layers.Normalization(), table, ["A", "B"])
    a, b = to_numpy(table, "A"), to_numpy(table, "B")
    a, b = a[a != -np.finfo(np.float64).max], b[b != NULL_INT].astype(np.float64)
    np.testing.assert_allclose(layer.adapt_mean.numpy(), [a.mean(), b.mean()], rtol=1e-6)
    np.testing.assert_allclose(layer.adapt_variance.numpy(), [a.var(), b.var()], rtol=1e-5)
    assert int(layer.count.numpy()) == max(len(a), len(b))


# --- Discretization -----------------------------------------------------------------------------------


@pytest.mark.parametrize("bins", [2, 4, 10])
def test_discretization_bins_hold_equal_shares(server, bins):
    from deephaven import new_table
    from deephaven.column import double_col

    rng = np.random.default_rng(5)
    x = rng.lognormal(0.0, 1.5, 100_001)
    table = new_table([double_col("X", x)])
    layer = dh_tf.adapt(keras.layers.Discretization(num_bins=bins), table, "X")
    assert len(layer.bin_boundaries) == bins - 1
    counts = np.bincount(keras.ops.convert_to_numpy(layer(x.astype(np.float32))).ravel(), minlength=bins)
    assert counts.sum() == len(x)
    np.testing.assert_array_less(np.abs(counts / len(x) - 1 / bins), 0.01)
    reference = keras.layers.Discretization(num_bins=bins)
    reference.adapt(x)
    assert len(reference.bin_boundaries) == len(layer.bin_boundaries)


def test_discretization_leaves_nulls_out(make_table):
    table = make_table(1000, "X = Id % 2 == 0 ? NULL_DOUBLE : (double)Id")
    layer = dh_tf.adapt(keras.layers.Discretization(num_bins=5), table, "X")
    values = np.arange(1, 1000, 2, dtype=np.float32)
    counts = np.bincount(keras.ops.convert_to_numpy(layer(values)).ravel(), minlength=5)
    assert np.abs(counts - 100).max() <= 1 and counts.sum() == 500  # pct's rank is round(p * (n - 1))


# --- remote tables ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def session(server, tokens, numbers):
    publish("adapt_test_tokens", tokens)
    publish("adapt_test_numbers", numbers[0])
    session = connect(server.test_port)
    yield session
    session.close()


def test_remote_vocabulary_and_normalization_equal_the_embedded_ones(session, tokens, numbers):
    remote_tokens = session.open_table("adapt_test_tokens")
    remote_numbers = session.open_table("adapt_test_numbers")
    before = server_exports(session)
    for column in ("S", "L", "I"):
        assert dh_tf.vocabulary(remote_tokens, column) == dh_tf.vocabulary(tokens, column)
    filtered = remote_tokens.where("L > 0")  # client-side DQL, run by the server
    assert dh_tf.vocabulary(filtered, "S", max_tokens=3, min_count=2) == \
        dh_tf.vocabulary(tokens.where("L > 0"), "S", max_tokens=3, min_count=2)
    filtered.close()
    far = dh_tf.adapt(keras.layers.Normalization(), remote_numbers, ["D", "F", "I", "L"])
    near = dh_tf.adapt(keras.layers.Normalization(), numbers[0], ["D", "F", "I", "L"])
    np.testing.assert_allclose(far.adapt_mean.numpy(), near.adapt_mean.numpy(), rtol=1e-7)
    np.testing.assert_allclose(far.adapt_variance.numpy(), near.adapt_variance.numpy(), rtol=1e-7)
    lookup = dh_tf.adapt(keras.layers.StringLookup(max_tokens=5), remote_tokens, "S")
    assert lookup.get_vocabulary() == dh_tf.adapt(keras.layers.StringLookup(max_tokens=5), tokens, "S").get_vocabulary()
    bins = dh_tf.adapt(keras.layers.Discretization(num_bins=4), remote_numbers, "D")
    assert bins.bin_boundaries == dh_tf.adapt(keras.layers.Discretization(num_bins=4), numbers[0], "D").bin_boundaries
    assert server_exports(session) == before  # every intermediate export released


# --- errors -------------------------------------------------------------------------------------------


def test_remote_integer_codes_equal_the_embedded_ones(session, tokens, to_numpy):
    table = session.open_table("adapt_test_tokens")
    before = server_exports(session)
    remote = dh_tf.integer_codes(table, "S")
    assert server_exports(session) == before + 1  # the result, the caller's: the upload and the join were released
    got = remote.to_arrow().column("SCode").to_pylist()
    assert got == to_numpy(dh_tf.integer_codes(tokens, "S"), "SCode").tolist()


def test_an_unsupported_layer_names_the_supported_ones(tokens):
    with pytest.raises(ArgumentTypeError) as error:
        dh_tf.adapt(keras.layers.Dense(3), tokens, "L")
    assert str(error.value) == (
        "adapt: layer must be one of Normalization, StringLookup, IntegerLookup, Discretization (got Dense)"
    )
    assert isinstance(error.value, TypeError)


def test_bad_columns_name_the_column_and_its_type(tokens, numbers):
    with pytest.raises(ArgumentError, match=r"adapt: no column 'Nope' in the table \(its columns: \['S', 'L', 'I'\]\)"):
        dh_tf.adapt(keras.layers.Normalization(), tokens, ["L", "Nope"])
    layer = keras.layers.Normalization()
    with pytest.raises(ArgumentTypeError, match=r"adapt: column 'S' has type java.lang.String; a mean and variance "
                                                r"needs one of byte, short, int, long, float, double"):
        dh_tf.adapt(layer, tokens, ["L", "S"])
    assert not layer.built  # checked before the layer changes
    with pytest.raises(ArgumentTypeError, match=r"column 'D' has type double; StringLookup needs one of java.lang.String"):
        dh_tf.adapt(keras.layers.StringLookup(), numbers[0], "D")
    with pytest.raises(ArgumentTypeError, match=r"column 'S' has type java.lang.String; IntegerLookup needs one of byte"):
        dh_tf.adapt(keras.layers.IntegerLookup(), tokens, "S")
    with pytest.raises(ArgumentTypeError, match=r"vocabulary: column 'D' has type double; a vocabulary needs one of "
                                                r"java.lang.String, byte, short, int, long"):
        dh_tf.vocabulary(numbers[0], "D")
    with pytest.raises(ArgumentTypeError, match=r"column 'S' has type java.lang.String; quantiles needs"):
        dh_tf.adapt(keras.layers.Discretization(num_bins=3), tokens, "S")
    with pytest.raises(ArgumentError, match=r"a StringLookup layer is adapted from one column \(got \['S', 'S2'\]\)"):
        dh_tf.adapt(keras.layers.StringLookup(), tokens, ["S", "S2"])
    with pytest.raises(ArgumentTypeError, match="vocabulary: a column name must be a str"):
        dh_tf.vocabulary(tokens, 3)
    with pytest.raises(ArgumentError, match="adapt: columns must name at least one column"):
        dh_tf.adapt(keras.layers.Normalization(), tokens, [])


def test_bad_arguments_and_layers_are_refused(tokens, numbers, make_table):
    with pytest.raises(ArgumentTypeError, match="vocabulary: table must be a deephaven.table.Table"):
        dh_tf.vocabulary([1, 2], "S")
    with pytest.raises(ArgumentError, match=r"vocabulary: max_tokens must be an int >= 1 \(got 0\)"):
        dh_tf.vocabulary(tokens, "S", max_tokens=0)
    with pytest.raises(ArgumentTypeError, match="vocabulary: min_count must be an int >= 1"):
        dh_tf.vocabulary(tokens, "S", min_count=True)
    with pytest.raises(ArgumentError, match="made with mean= and variance="):
        dh_tf.adapt(keras.layers.Normalization(mean=0.0, variance=1.0), numbers[0], "D")
    with pytest.raises(ArgumentError, match="axis must be -1"):
        dh_tf.adapt(keras.layers.Normalization(axis=(1, 2)), numbers[0], "D")
    with pytest.raises(ArgumentError, match="made with bin_boundaries="):
        dh_tf.adapt(keras.layers.Discretization(bin_boundaries=[0.0, 1.0]), numbers[0], "D")
    with pytest.raises(ArgumentError, match="tf_idf"):
        dh_tf.adapt(keras.layers.StringLookup(output_mode="tf_idf"), tokens, "S")
    built = keras.layers.Normalization()
    built.build((None, 3))
    with pytest.raises(ArgumentError, match=r"built for inputs of shape \(None, 3\)"):
        dh_tf.adapt(built, numbers[0], ["D", "F"])
    empty = make_table(0, "X = 1.5", "S = `a`")
    with pytest.raises(ArgumentError, match="adapt: column 'X' has no non-null value"):
        dh_tf.adapt(keras.layers.Normalization(), empty, "X")
    with pytest.raises(ArgumentError, match="adapt: column 'S' has no non-null value"):
        dh_tf.adapt(keras.layers.StringLookup(), empty, "S")
    with pytest.raises(ArgumentError, match="adapt: column 'X' has no non-null value"):
        dh_tf.adapt(keras.layers.Discretization(num_bins=3), empty, "X")
    assert dh_tf.vocabulary(empty, "S") == []


def test_a_refreshing_table_is_aggregated_from_one_consistent_state(server):
    import time

    from deephaven import time_table

    ticking = time_table("PT0.005S").update(["S = `v` + (ii % 3)", "X = (double)(ii % 10)"])
    deadline = time.monotonic() + 30
    while ticking.size < 50 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert set(dh_tf.vocabulary(ticking, "S")) == {"v0", "v1", "v2"}
    layer = dh_tf.adapt(keras.layers.Normalization(), ticking, "X")
    assert 0.0 <= float(layer.adapt_mean.numpy()[0]) <= 9.0 and int(layer.count.numpy()) >= 50
