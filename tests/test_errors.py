"""Bad input gets a clear error before any data moves; nulls follow the null policy."""

from __future__ import annotations

import numpy as np
import pytest

import dh_tf


@pytest.fixture(scope="module")
def table(make_table):
    return make_table(
        100,
        "A = (double)i",
        "N = i % 10 == 3 ? NULL_DOUBLE : (double)i",
        "NF = i == 7 ? NULL_FLOAT : (float)i",
        "NI = i == 5 ? NULL_INT : (int)i",
        "NB = i == 9 ? null : i % 2 == 0",
        "Str = `s` + i",
        "When = '2024-01-01T00:00:00 ET'",
        "Arr = new double[]{1.0, 2.0}",
        "Ch = 'c'",
    )


COLUMNS = "['Id', 'A', 'N', 'NF', 'NI', 'NB', 'Str', 'When', 'Arr', 'Ch']"


def test_unknown_column_lists_the_table_columns(table):
    with pytest.raises(ValueError, match=r"unknown column\(s\) \['Nope'\]; the table has columns " + __import__("re").escape(COLUMNS)):
        dh_tf.TableLoader(table, ["A", "Nope"], "Id")
    with pytest.raises(ValueError, match=r"unknown column\(s\) \['Lbl'\]"):
        dh_tf.to_dataset(table, "A", "Lbl")


@pytest.mark.parametrize("column,type_name", [("Ch", "char")])
def test_non_numeric_column_is_rejected_with_its_type(table, column, type_name):
    with pytest.raises(TypeError, match=rf"column\(s\) '{column}' \({__import__('re').escape(type_name)}\) must be "
                                         r"numeric, boolean, String or a timestamp; supported types: byte, short, int, long, float, double"):
        dh_tf.TableLoader(table, ["A", column], "Id")


@pytest.mark.parametrize("value,error,shown", [(0, ValueError, "0"), (-3, ValueError, "-3"),
                                               (True, TypeError, "True of type bool"), (2.0, TypeError, "2.0 of type float"),
                                               ("8", TypeError, "'8' of type str"), (None, TypeError, "None of type NoneType")])
def test_batch_size_must_be_a_positive_int(table, value, error, shown):
    with pytest.raises(error, match=rf"TableLoader: batch_size must be an int >= 1 \(got {shown}"):
        dh_tf.TableLoader(table, "A", batch_size=value)


def test_page_rows_smaller_than_batch_size(table):
    with pytest.raises(ValueError, match=r"page_rows must be >= batch_size \(got page_rows=10, batch_size=32\)"):
        dh_tf.TableLoader(table, "A", batch_size=32, page_rows=10)


@pytest.mark.parametrize("features,message", [([], r"features must name at least one column \(got \[\]\)"),
                                              ({}, "features must name at least one column"),
                                              ("", "features must be a column name, not an empty string"),
                                              ({"a": []}, r"features\['a'\] must name at least one column")])
def test_empty_features(table, features, message):
    with pytest.raises(ValueError, match=message):
        dh_tf.TableLoader(table, features, "Id")


@pytest.mark.parametrize("features", [3, ["A", 3], None])
def test_features_of_the_wrong_type(table, features):
    with pytest.raises(TypeError, match="features must be a column name, a list of names, or a dict"):
        dh_tf.TableLoader(table, features)


@pytest.mark.parametrize("not_a_table", [None, np.zeros((3, 2)), {"A": [1.0]}, "table"])
def test_table_must_be_a_deephaven_table(server, not_a_table):
    with pytest.raises(TypeError, match=rf"table must be a deephaven.table.Table \(got {type(not_a_table).__name__}\)"):
        dh_tf.TableLoader(not_a_table, "A")
    with pytest.raises(TypeError, match="table must be a deephaven.table.Table"):
        dh_tf.to_dataset(not_a_table, "A")


@pytest.mark.parametrize("kwargs,error,message", [
    ({"shuffle": 1}, TypeError, r"shuffle must be True or False \(got 1 of type int\)"),
    ({"prefetch": -1}, ValueError, r"prefetch must be an int >= 0 \(got -1\)"),
    ({"seed": -5}, ValueError, r"seed must be an int >= 0"),
    ({"shuffle_block_rows": 100}, ValueError, r"shuffle_block_rows must be an int >= 65536"),
    ({"read_path": "fast"}, ValueError, r"read_path must be one of \['auto', 'engine', 'public'\] \(got 'fast'\)"),
    ({"nulls": "drop"}, ValueError, r"nulls must be 'error', 'nan' or a number to fill nulls with \(got 'drop' of type str\)"),
    ({"nulls": {"Zzz": 0}}, ValueError, r"nulls names unknown column\(s\) \['Zzz'\]"),
    ({"dtype": "U4"}, TypeError, "dtype must be a numeric numpy dtype"),
    ({"sample_weight": "A"}, ValueError, r"sample_weight needs a label \(got label=None\)"),
])
def test_other_bad_options(table, kwargs, error, message):
    with pytest.raises(error, match=message):
        dh_tf.TableLoader(table, "A", **kwargs)


def test_nan_policy_needs_a_floating_output(table):
    with pytest.raises(ValueError, match=r"nulls=\{'NI': 'nan'\} needs a floating output, but column 'NI' goes to a "
                                         r"int32 array"):
        dh_tf.TableLoader(table, "A", "NI", nulls={"NI": "nan"})
    with pytest.raises(ValueError, match=r"null fill value for column 'NI' must be an integer that fits int32 \(got 0.5\)"):
        dh_tf.TableLoader(table, "A", "NI", nulls=0.5)


@pytest.mark.parametrize("column,kind,position", [("N", "double", 3), ("NF", "float", 7), ("NI", "int", 5),
                                                  ("NB", "java.lang.Boolean", 9)])
@pytest.mark.parametrize("read_path", ["engine", "public"])
def test_null_error_names_column_and_row_position(table, column, kind, position, read_path):
    loader = dh_tf.TableLoader(table, ["A", column], batch_size=4, page_rows=8, read_path=read_path)
    with pytest.raises(dh_tf.NullValueError, match=rf"column '{column}' \({kind}\) holds a null at row position {position} "
                                                   r"and nulls='error'.*table.where\('!isNull\(" + column):
        list(loader)


def test_null_error_position_under_shuffle_is_the_table_position(make_table):
    table = make_table(200_000, "V = i == 123456 ? NULL_DOUBLE : 1.0")
    loader = dh_tf.TableLoader(table, "V", batch_size=1000, shuffle=True, seed=4, page_rows=131072)
    with pytest.raises(dh_tf.NullValueError, match="at row position 123456 "):
        list(loader)


def test_null_error_inside_tf_data_keeps_the_message(table):
    ds = dh_tf.to_dataset(table, ["A", "N"], batch_size=4)
    with pytest.raises(Exception, match=r"column 'N' \(double\) holds a null at row position 3"):
        list(ds)


def test_nan_and_fill_policies(table, to_numpy):
    x = np.concatenate(list(dh_tf.TableLoader(table, ["N", "NF", "NB"], nulls="nan", batch_size=7, page_rows=10)))
    assert np.isnan(x[:, 0]).tolist() == [i % 10 == 3 for i in range(100)]
    assert np.isnan(x[:, 1]).tolist() == [i == 7 for i in range(100)]
    assert np.isnan(x[:, 2]).tolist() == [i == 9 for i in range(100)]
    assert np.array_equal(x[[0, 1, 2], 0], [0, 1, 2])
    batches = list(dh_tf.TableLoader(table, ["N"], "NI", nulls={"N": -1.5, "NI": -1}, batch_size=100))
    (x, y), = batches
    assert x[3, 0] == -1.5 and x[13, 0] == -1.5 and x[4, 0] == 4
    assert y.dtype == np.int32 and y[5] == -1 and y[6] == 6


def test_dql_drops_null_rows_instead(table):
    clean = table.where(["!isNull(N)", "!isNull(NB)"])
    x = np.concatenate(list(dh_tf.TableLoader(clean, ["N", "NB"], batch_size=16)))
    assert len(x) == 89 and np.isfinite(x).all()


@pytest.mark.parametrize("read_path", ["engine", "public"])
@pytest.mark.parametrize("prefetch", [0, 2])
def test_engine_error_reaches_consumer_with_type_and_context(table, read_path, prefetch):
    import sys

    from deephaven import DHError

    expected = RuntimeError if read_path == "engine" else DHError  # the type each path's engine call raises
    broken = table.update_view("Bad = i == 50 ? Double.parseDouble(`oops`) : 1.0")  # throws at row 50
    loader = dh_tf.TableLoader(broken, ["A", "Bad"], batch_size=10, page_rows=20, read_path=read_path,
                               prefetch=prefetch)
    seen = []
    with pytest.raises(expected, match="NumberFormatException") as info:
        seen.extend(loader)
    assert len(seen) == 4  # the pages before the failing one were delivered
    if sys.version_info >= (3, 11):
        assert "dh_tf: while reading column 'Bad', rows [40, 60)" in info.value.__notes__


def test_global_nan_fills_float_outputs_and_keeps_error_for_integer_labels(table):
    # NaN where a null appears in float features; the integer label keeps "error" and has no null here.
    (x, y), = list(dh_tf.TableLoader(table, ["N", "NF"], "Id", nulls="nan", batch_size=100))
    assert np.isnan(x[:, 0]).tolist() == [i % 10 == 3 for i in range(100)]
    assert y.dtype == np.int64 and y.tolist() == list(range(100))
    # An integer label that does hold a null raises, naming it, only when the null is read.
    loader = dh_tf.TableLoader(table, ["N"], "NI", nulls="nan", batch_size=4, page_rows=8)
    assert loader.layout.fields[1].nulls == ("error",)
    with pytest.raises(dh_tf.NullValueError, match=r"column 'NI' \(int\) holds a null at row position 5 and nulls='nan', "
                                                   r"which cannot apply to it: NaN does not exist in its int32 output; "
                                                   r"pass a fill number as nulls=\{'NI': -1\}"):
        list(loader)


@pytest.mark.parametrize("features", [{"a": {"b": "A"}}, {"a": {"b": "A", "c": "N"}}])
def test_nested_dict_spec_is_rejected(table, features):
    with pytest.raises(TypeError, match=r"TableLoader: features\['a'\] must be a column name or a list of names; "
                                        "nested dicts are not supported"):
        dh_tf.TableLoader(table, features, "Id")
    with pytest.raises(TypeError, match=r"TableLoader: label\['a'\] must be a column name or a list of names"):
        dh_tf.TableLoader(table, "A", features)


@pytest.mark.parametrize("label_dtype,error,message", [
    ("U4", TypeError, r"TableLoader: label_dtype must be a numeric numpy dtype \(int, uint or float kinds\), e.g. "
                      r"'float32' or 'int64' \(got 'U4': <U4\)"),
    ("nope", TypeError, r"TableLoader: label_dtype must be a numeric numpy dtype, e.g. 'float32' or 'int64' "
                        r"\(got 'nope' of type str\)"),
])
def test_label_dtype_is_validated(table, label_dtype, error, message):
    with pytest.raises(error, match=message):
        dh_tf.TableLoader(table, "A", "Id", label_dtype=label_dtype)


def test_every_error_class_is_a_dh_tf_error_and_keeps_its_builtin_base():
    """NOTE [ Errors ]: ``except dh_tf.Error`` catches what dh_tf raises; ``except ValueError`` keeps working."""
    import dh_tf.errors as errors

    builtin = {
        "ArgumentError": ValueError, "ArgumentTypeError": TypeError, "UsageError": RuntimeError,
        "MissingDependencyError": ImportError, "NullValueError": ValueError, "ArrayLengthError": ValueError,
        "TableChangeError": ValueError, "FollowError": RuntimeError, "CacheError": OSError,
        "CacheSpaceError": OSError, "RemoteReadError": ConnectionError, "RemoteWriteError": ConnectionError,
    }
    classes = {name: obj for name, obj in vars(errors).items() if isinstance(obj, type) and issubclass(obj, Exception)}
    assert set(classes) == {"Error", *builtin}
    for name, base in builtin.items():
        assert issubclass(classes[name], dh_tf.Error) and issubclass(classes[name], base), name
    assert set(builtin) <= set(dh_tf.__all__)


def test_an_argument_error_is_caught_both_ways(make_table):
    table = make_table(10, "A = (double)i")
    for caught in (dh_tf.Error, ValueError):
        with pytest.raises(caught, match=r"TableLoader: batch_size must be an int >= 1 \(got 0\)"):
            dh_tf.TableLoader(table, "A", batch_size=0)
    with pytest.raises(dh_tf.ArgumentTypeError, match=r"batch_size must be an int >= 1 \(got '8' of type str\)"):
        dh_tf.TableLoader(table, "A", batch_size="8")


def test_internal_names_leave_the_public_api_with_a_deprecation_warning():
    from dh_tf.reading.layout import Field, Layout

    for name, obj in (("Field", Field), ("Layout", Layout)):
        assert name not in dh_tf.__all__
        with pytest.warns(DeprecationWarning, match=rf"dh_tf.{name} is internal"):
            assert getattr(dh_tf, name) is obj
    with pytest.raises(AttributeError):
        dh_tf.NoSuchName  # noqa: B018
