"""build_layout on its own (no engine): field shapes, array columns, null policies, spec and dtype checks."""

from __future__ import annotations

import re

import numpy as np
import pytest

import dh_tf
from dh_tf.reading.layout import Field, build_layout
from dh_tf.sources.column_types import ARRAY_KINDS, ColumnTypes, column_kind

TYPES = {
    "X": "double",
    "I": "int",
    "L": "long",
    "A": "double[]",
    "B": "float[]",
    "C": "long[]",
    "W": "io.deephaven.vector.DoubleVector",
    "S": "java.lang.String[]",
}
LENGTHS = {"A": 3, "B": 3, "C": 2, "W": 3}


def layout(features, label=None, *, lengths=LENGTHS, dtype="float32", label_dtype=None, nulls="error", types=TYPES):
    return build_layout(
        ColumnTypes(types, lengths.get), features, label, None, dtype=dtype, label_dtype=label_dtype, nulls=nulls
    )


@pytest.mark.parametrize("features,shape", [("X", ()), (["X", "L"], (2,)), ("A", (3,)), (["A"], (3, 1)),
                                            (["A", "B", "W"], (3, 3)), ("C", (2,))])
def test_field_shape_is_the_per_row_shape(features, shape):
    (field,) = layout(features).fields
    assert field.shape == shape


def test_dict_spec_combines_array_and_scalar_columns():
    result = layout({"seq": ["A", "W"], "x": "X", "c": "C"}, "I")
    assert [(f.role, f.key, f.shape, f.dtype) for f in result.fields] == [
        ("x", "seq", (3, 2), np.dtype("float32")),
        ("x", "x", (), np.dtype("float32")),
        ("x", "c", (2,), np.dtype("float32")),
        ("y", None, (), np.dtype("int32")),
    ]
    assert result.array_lengths == {"A": 3, "W": 3, "C": 2}


def test_integer_array_label_keeps_its_integer_type():
    (_, label) = layout("X", "C").fields
    assert (label.shape, label.dtype) == ((2,), np.dtype("int64"))


def test_mixing_scalar_and_array_columns_in_one_list_is_rejected():
    with pytest.raises(ValueError, match=re.escape("TableLoader: features mixes scalar column(s) ['X'] and array "
                                                   "column(s) ['A'] in one list; put them under separate keys")):
        layout(["X", "A"])
    with pytest.raises(ValueError, match=re.escape("features['s'] mixes scalar column(s) ['L']")):
        layout({"s": ["A", "L"]})


def test_array_columns_of_different_lengths_in_one_list_are_rejected():
    with pytest.raises(ValueError, match=re.escape("features lists array columns of different lengths ('A': 3, "
                                                   "'C': 2); the columns of one list must have the same length")):
        layout(["A", "C"])


def test_unknown_array_length_and_empty_arrays():
    with pytest.raises(ValueError, match=re.escape("column 'A' (double[]) is an array column whose length is read "
                                                   "from the first rows, but the table has no rows")):
        layout("A", lengths={})
    with pytest.raises(ValueError, match=re.escape("column 'A' (double[]) holds empty arrays (row 0 has length 0)")):
        layout("A", lengths={"A": 0})


def test_a_source_that_cannot_tell_lengths_cannot_feed_arrays():
    with pytest.raises(TypeError, match=re.escape("column 'A' (double[]) is an array column, and this source "
                                                  "cannot tell array lengths")):
        build_layout(dict(TYPES), "A", None, None, dtype="float32", label_dtype=None, nulls="error")
    # Scalars still work from a plain dict; array_length= overrides the mapping's.
    assert build_layout(dict(TYPES), "X", None, None, dtype="float32", label_dtype=None, nulls="error").fields
    (field,) = build_layout(dict(TYPES), "A", None, None, dtype="float32", label_dtype=None, nulls="error",
                            array_length=lambda c: 5).fields
    assert field.shape == (5,)


def test_unsupported_array_element_type_lists_the_supported_types():
    with pytest.raises(TypeError, match=re.escape("column(s) 'S' (java.lang.String[]) must be numeric, boolean, String "
                                                  "or a timestamp; "
                                                  "supported types: byte, short, int, long, float, "
                                                  "double, java.lang.Boolean; arrays: byte[], short[], int[], long[], "
                                                  "float[], double[]; vectors: io.deephaven.vector.ByteVector")):
        layout("S")


def test_array_kinds_read_their_elements():
    assert set(ARRAY_KINDS) == {f"{e}[]" for e in ("byte", "short", "int", "long", "float", "double")} | {
        f"io.deephaven.vector.{b}Vector" for b in ("Byte", "Short", "Int", "Long", "Float", "Double")}
    kind = column_kind("io.deephaven.vector.FloatVector")
    assert (kind.is_array, kind.element_type, kind.dtype, kind.null_value) == (
        True, "float", np.dtype("float32"), np.float32(-np.finfo(np.float32).max))
    assert not column_kind("double").is_array
    with pytest.raises(dh_tf.ArgumentTypeError, match="column type 'char' is not supported; supported types: byte, short"):
        column_kind("char")


def test_global_nan_keeps_error_for_integer_outputs():
    features, label = layout(["X", "A"][:1], "I", nulls="nan").fields
    assert features.nulls == ("nan",) and label.nulls == ("error",)
    # A float label (label_dtype) takes the global nan too.
    (_, label) = layout("X", "I", nulls="nan", label_dtype="float32").fields
    assert label.nulls == ("nan",)


def test_per_column_nan_on_an_integer_output_is_an_error():
    with pytest.raises(ValueError, match=re.escape("nulls={'I': 'nan'} needs a floating output, but column 'I' goes "
                                                   "to a int32 array; use 'error' or a number for it")):
        layout("X", "I", nulls={"I": "nan"})


@pytest.mark.parametrize("spec", [{"a": {"b": "X"}}, {"a": {"b": "X", "c": "L"}}, {"a": "X", "b": {"c": ["X"]}}])
def test_nested_dict_specs_are_rejected(spec):
    inner = next(k for k, v in spec.items() if isinstance(v, dict))
    with pytest.raises(TypeError, match=re.escape(f"TableLoader: features[{inner!r}] must be a column name or a list of "
                                                  "names; nested dicts are not supported")):
        layout(spec)


@pytest.mark.parametrize("label_dtype,shown", [("U4", "'U4': <U4"), ("bool", "'bool': bool"), (object, "<class 'object'>: object"),
                                               ("complex64", "'complex64': complex64")])
def test_label_dtype_must_be_numeric(label_dtype, shown):
    with pytest.raises(TypeError, match=re.escape(f"TableLoader: label_dtype must be a numeric numpy dtype (int, uint or "
                                                  f"float kinds), e.g. 'float32' or 'int64' (got {shown})")):
        layout("X", "I", label_dtype=label_dtype)


@pytest.mark.parametrize("arg", ["dtype", "label_dtype"])
def test_unknown_dtype_name_gets_the_caller_prefix(arg):
    with pytest.raises(TypeError, match=re.escape(f"TableLoader: {arg} must be a numeric numpy dtype, e.g. 'float32' or "
                                                  "'int64' (got 'flaot32' of type str)")):
        layout("X", "I", **{arg: "flaot32"})


def test_label_dtype_is_applied():
    (_, label) = layout("X", "I", label_dtype="int16").fields
    assert label == Field("y", None, ("I",), True, np.dtype("int16"), ("error",))


def test_engine_chunks_get_shorter_for_wide_rows():
    from dh_tf.sources.column_types import COLUMN_KINDS
    from dh_tf.sources.engine_read import CHUNK_ROWS, chunk_rows

    assert chunk_rows({f"F{i}": COLUMN_KINDS["float"] for i in range(16)}) == CHUNK_ROWS == 65536
    assert chunk_rows({f"D{i}": COLUMN_KINDS["double"] for i in range(80)}) == 12288  # 640 B rows: 13107 -> 12288
    assert chunk_rows({f"D{i}": COLUMN_KINDS["double"] for i in range(2000)}) == 4096  # at least 4096 rows
