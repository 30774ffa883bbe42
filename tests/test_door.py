"""Right at the door: what Keras would fail on, or get silently wrong, is refused or explained when the loader is built.

A String label or weight is refused naming the column and pointing to ``integer_codes`` / ``StringLookup``; a null
in an integer output says which ``nulls=`` was passed and what fits (NaN does not exist for integers); ``dtype``
takes a dict per input, so integer codes stay exact integers (past 2**24, where float32 rounds them).
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import dh_tf
from dh_tf.errors import ArgumentError, ArgumentTypeError, NullValueError

N = 40
BIG = 2**24 + 1  # float32 rounds BIG + every even number: only an int32 output keeps these codes exact


@pytest.fixture(scope="module")
def table(make_table):
    return make_table(
        N,
        "X = Id * 0.5",
        "Code = (int)(" + str(BIG) + " + Id)",
        "Y = i == 7 ? NULL_INT : (int)(Id % 3)",
        "S = `s` + Id",
        "F = (double)(Id % 3)",
    )


def test_a_string_label_or_weight_is_refused_when_the_loader_is_built(table):
    label = re.escape(
        "TableLoader: label must be numeric, boolean or a timestamp (got String column(s) 'S' (java.lang.String)); "
        "Keras cannot take strings as targets (fit fails with 'Cast string to float is not supported'); make integer "
        "codes in the engine and pass those as the label: dh_tf.integer_codes(table, 'S') adds the int32 column "
        "'SCode' (1 + the value's index in dh_tf.vocabulary(table, 'S'), 0 for a null or unseen value); a String "
        "feature is fine as it is: keras.layers.StringLookup takes it"
    )
    with pytest.raises(ArgumentTypeError, match=label):
        dh_tf.TableLoader(table, "X", "S")
    with pytest.raises(ArgumentTypeError, match=label.replace("label", re.escape("label['y']"), 1)):
        dh_tf.to_dataset(table, "X", {"y": "S"})
    with pytest.raises(ArgumentTypeError, match=re.escape(
            "TableLoader: sample_weight must be numeric, boolean or a timestamp (got String column(s) 'S' "
            "(java.lang.String)); Keras cannot take strings as targets")):
        dh_tf.TableLoader(table, "X", "Id", sample_weight="S")
    assert dh_tf.TableLoader(table, {"s": "S"}, "Id").layout.fields[0].dtype == object  # a String feature is fine


def test_follow_refuses_a_string_label_the_same_way(server):
    from deephaven import dtypes
    from deephaven.stream.table_publisher import table_publisher

    blink, _ = table_publisher("dh_tf-test-door", {"X": dtypes.double, "S": dtypes.string})
    with pytest.raises(ArgumentTypeError, match=re.escape(
            "follow: label must be numeric, boolean or a timestamp (got String column(s) 'S' (java.lang.String))")):
        dh_tf.follow(blink, "X", "S")


def test_an_integer_label_null_under_global_nan_says_nan_was_passed_and_what_fits(table):
    loader = dh_tf.TableLoader(table, "X", "Y", nulls="nan", batch_size=8)
    with pytest.raises(NullValueError, match=re.escape(
            "column 'Y' (int) holds a null at row position 7 and nulls='nan', which cannot apply to it: NaN does not "
            "exist in its int32 output; pass a fill number as nulls={'Y': -1}, or a float output, e.g. "
            "label_dtype='float32', with nulls='nan', or drop such rows with DQL: table.where('!isNull(Y)')")):
        list(loader)
    # Both fixes it names work: the fill number, and the float label that nulls='nan' then fills.
    (_, y), = list(dh_tf.TableLoader(table, "X", "Y", nulls={"Y": -1}, batch_size=N))
    assert y.dtype == np.int32 and y.tolist() == [-1 if i == 7 else i % 3 for i in range(N)]
    (_, y), = list(dh_tf.TableLoader(table, "X", "Y", nulls="nan", label_dtype="float32", batch_size=N))
    assert np.isnan(y).tolist() == [i == 7 for i in range(N)]


def test_an_integer_null_under_the_default_does_not_suggest_nan_alone(table):
    with pytest.raises(NullValueError, match=re.escape(
            "column 'Y' (int) holds a null at row position 7 and nulls='error': NaN does not exist in its int32 "
            "output; pass a fill number as nulls={'Y': -1}, or a float output, e.g. label_dtype='float32', with "
            "nulls='nan', or drop")):
        list(dh_tf.TableLoader(table, "X", "Y", batch_size=8))


def test_an_integer_feature_null_names_the_nulls_and_the_dtype_entry_passed(table):
    with pytest.raises(NullValueError, match=re.escape(
            "column 'Y' (int) holds a null at row position 7 and nulls='nan', which cannot apply to it: NaN does not "
            "exist in its int64 output; pass a fill number as nulls={'Y': -1}, or a float output, e.g. "
            "dtype={'y': 'float32'}, with nulls='nan', or drop")):
        list(dh_tf.TableLoader(table, {"x": "X", "y": "Y"}, dtype={"y": "int64"}, nulls="nan", batch_size=8))
    with pytest.raises(ArgumentError, match=re.escape(
            "TableLoader: nulls={'Y': 'nan'} needs a floating output, but column 'Y' goes to a int64 array; use "
            "'error' or a number for it (nulls={'Y': value}), or a float output for NaN, e.g. dtype={'Y': 'float32'}")):
        dh_tf.TableLoader(table, {"x": "X", "y": "Y"}, dtype={"Y": "int64"}, nulls={"Y": "nan"})
    with pytest.raises(ArgumentError, match=re.escape(
            "TableLoader: the null fill value for column 'Y' must be an integer that fits int32 (got 0.5), set by "
            "nulls=0.5")):
        dh_tf.TableLoader(table, "X", "Y", nulls=0.5)


@pytest.mark.parametrize("key", ["cat", "Code"])  # an input name, or its column
def test_a_dtype_dict_keeps_integer_codes_exact_through_to_dataset(table, key):
    import tensorflow as tf

    features = {"num": ["X", "F"], "cat": "Code"}
    ds = dh_tf.to_dataset(table, features, "Id", batch_size=16, dtype={key: "int32"})
    x_spec, y_spec = ds.element_spec
    assert x_spec == {"num": tf.TensorSpec((None, 2), tf.float32), "cat": tf.TensorSpec((None,), tf.int32)}
    assert y_spec == tf.TensorSpec((None,), tf.int64)
    batches = [(x["num"].numpy(), x["cat"].numpy()) for x, _ in ds]
    assert [len(c) for _, c in batches] == [16, 16, 8]
    codes = np.concatenate([c for _, c in batches])
    assert codes.dtype == np.int32 and codes.tolist() == [BIG + i for i in range(N)]
    assert int(np.float32(BIG)) == BIG - 1  # what the float32 default would have given for row 0
    num = np.concatenate([n for n, _ in batches])
    assert num.dtype == np.float32 and num.tolist() == [[i * 0.5, i % 3] for i in range(N)]


def test_a_dtype_dict_through_the_loader(table):
    loader = dh_tf.TableLoader(table, {"num": ["X", "F"], "cat": "Code"}, "Y", batch_size=N, nulls={"Y": 9},
                               dtype={"num": "float64", "cat": "int32"})
    (x, y), = list(loader)
    assert x["cat"].dtype == np.int32 and x["cat"].tolist() == [BIG + i for i in range(N)]
    assert x["num"].dtype == np.float64 and x["num"][:, 0].tolist() == [i * 0.5 for i in range(N)]
    assert y.dtype == np.int32 and y[7] == 9  # the label keeps its own rule (label_dtype)
    unnamed = dh_tf.TableLoader(table, {"num": "X", "cat": "Code"}, dtype={"cat": "int64"})
    assert [f.dtype for f in unnamed.layout.fields] == [np.float32, np.int64]  # an unnamed input: float32


def test_a_dtype_dict_key_that_names_no_input_is_refused(table):
    message = re.escape("dtype names ['Y'], neither a feature input nor a feature column; its keys can be "
                        "['num', 'cat', 'X', 'F', 'Code'] (the label's dtype is label_dtype)")
    with pytest.raises(ArgumentError, match="TableLoader: " + message):
        dh_tf.TableLoader(table, {"num": ["X", "F"], "cat": "Code"}, "Y", dtype={"cat": "int32", "Y": "int32"})
    with pytest.raises(ArgumentError, match=message):
        dh_tf.to_dataset(table, {"num": ["X", "F"], "cat": "Code"}, "Y", dtype={"Y": "int32"})
    with pytest.raises(ArgumentError, match=re.escape(
            "TableLoader: features['num'] (columns ['X', 'F']) is one array of one dtype, but dtype gives 'F': float64 "
            "and nothing for ['X']; give the input one dtype, by its name or the same for each of its columns")):
        dh_tf.TableLoader(table, {"num": ["X", "F"]}, dtype={"F": "float64"})
    with pytest.raises(ArgumentTypeError, match=re.escape("TableLoader: dtype['cat'] must be a numeric numpy dtype")):
        dh_tf.TableLoader(table, {"cat": "Code"}, dtype={"cat": "U4"})


def test_a_float_column_into_an_integer_output_is_refused(table):
    with pytest.raises(ArgumentTypeError, match=re.escape(
            "TableLoader: column 'X' (double) holds floating values, which an integer output (int32) would truncate "
            "(2.7 -> 2, NaN to an arbitrary integer); pass a float output, e.g. dtype={'x': 'float32'}, or convert it "
            "in DQL first if truncation is what you want, e.g. table.update_view('XInt = (long)X')")):
        dh_tf.TableLoader(table, {"x": "X", "cat": "Code"}, dtype={"x": "int32", "cat": "int32"})
    with pytest.raises(ArgumentTypeError, match=re.escape("column 'F' (double) holds floating values, which an integer "
                                                          "output (int64) would truncate")):
        dh_tf.TableLoader(table, "X", "F", label_dtype="int64")
