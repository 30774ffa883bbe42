"""Deephaven column types as dh_tf reads them: numpy dtype, null sentinel, array element type.

The one home of the type tables: every source reports Deephaven type names (``double``,
``java.lang.Boolean``, ``double[]``, ``io.deephaven.vector.DoubleVector``), and everything above the
sources looks them up here. Array columns: NOTE [ Array columns ] in ``reading/layout.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dh_tf.errors import ArgumentTypeError, ArrayLengthError


@dataclass(frozen=True)
class ColumnKind:
    """How one Deephaven column type is read: its numpy dtype and its null sentinel.

    For an array column, ``dtype`` and ``null_value`` are those of its elements and
    ``element_type`` names the element's Deephaven type (None for scalar columns).
    """

    deephaven_type: str
    dtype: np.dtype
    null_value: Any
    element_type: str | None = None

    @property
    def is_array(self) -> bool:
        """True for a column of arrays or vectors."""
        return self.element_type is not None

    @property
    def is_string(self) -> bool:
        """True for a ``java.lang.String`` column (read as Python ``str``, None for null)."""
        return self.deephaven_type == STRING_TYPE

    @property
    def is_timestamp(self) -> bool:
        """True for ``Instant`` / ``ZonedDateTime`` columns: int64 nanoseconds, exact only in int64 outputs."""
        return self.deephaven_type in TIMESTAMP_TYPES


def _kind(deephaven_type: str, dtype: str, null_value: Any) -> ColumnKind:
    return ColumnKind(deephaven_type, np.dtype(dtype), np.array(null_value, dtype=dtype)[()])


STRING_TYPE = "java.lang.String"
TIMESTAMP_TYPES = ("java.time.Instant", "java.time.ZonedDateTime")
"""Read as int64 nanoseconds since the epoch (UTC), NULL_LONG for null (NOTE [ Strings and timestamps ])."""
LOCAL_DATE_TYPE = "java.time.LocalDate"

# NOTE [ Strings and timestamps ]
# A String column is read as a numpy object array of Python ``str`` (None for null; ``to_dataset``
# makes ``tf.string`` of it); no fixed-size sentinel exists, so it never goes into the epoch cache.
# ``Instant`` and ``ZonedDateTime`` are read as int64 nanoseconds since 1970-01-01T00:00Z (the zone
# is dropped: the same instant gives the same number), ``LocalDate`` as int32 days since
# 1970-01-01; their nulls are Deephaven's NULL_LONG / NULL_INT, so null policies work as for
# integers. Nanoseconds of today need 61 bits: a float64 keeps 53, so a timestamp goes only into an
# int64 output (``build_layout`` refuses the others); days fit any float exactly.
#
# Deephaven's null sentinels (io.deephaven.util.QueryConstants). Boolean columns are read as bytes
# (io.deephaven.util.BooleanUtils: true 1, false 0, null -128).
COLUMN_KINDS: dict[str, ColumnKind] = {
    kind.deephaven_type: kind
    for kind in (
        _kind("byte", "int8", -128),
        _kind("short", "int16", -32768),
        _kind("int", "int32", -(2**31)),
        _kind("long", "int64", -(2**63)),
        _kind("float", "float32", -np.finfo(np.float32).max),
        _kind("double", "float64", -np.finfo(np.float64).max),
        _kind("java.lang.Boolean", "int8", -128),
        _kind("java.time.Instant", "int64", -(2**63)),
        _kind("java.time.ZonedDateTime", "int64", -(2**63)),
        _kind(LOCAL_DATE_TYPE, "int32", -(2**31)),
        ColumnKind(STRING_TYPE, np.dtype(object), None),
    )
}
_ARRAY_ELEMENTS = {"byte": "Byte", "short": "Short", "int": "Int", "long": "Long", "float": "Float", "double": "Double"}
#: Array column type -> how its elements are read (NOTE [ Array columns ]).
ARRAY_KINDS: dict[str, ColumnKind] = {
    name: ColumnKind(name, COLUMN_KINDS[element].dtype, COLUMN_KINDS[element].null_value, element)
    for element, boxed in _ARRAY_ELEMENTS.items()
    for name in (f"{element}[]", f"io.deephaven.vector.{boxed}Vector")
}
SUPPORTED_TYPES = (
    "byte, short, int, long, float, double, java.lang.Boolean; arrays: "
    + ", ".join(f"{e}[]" for e in _ARRAY_ELEMENTS)
    + "; vectors: "
    + ", ".join(f"io.deephaven.vector.{b}Vector" for b in _ARRAY_ELEMENTS.values())
    + f"; strings: {STRING_TYPE}; times: {', '.join(TIMESTAMP_TYPES)} (int64 ns), {LOCAL_DATE_TYPE} (int32 days)"
)
ARRAY_LENGTH_PROBE_ROWS = 1000
"""Rows looked at for the first non-null array when a loader is built (NOTE [ Array columns ])."""


def arrow_type(kind: str) -> Any:
    """The Arrow type that the server reads as the Deephaven type ``kind`` (a type name or a RowPublisher kind)."""
    import pyarrow as pa

    types = {
        "byte": pa.int8(), "short": pa.int16(), "int": pa.int32(), "long": pa.int64(), "float": pa.float32(),
        "double": pa.float64(), "java.lang.Boolean": pa.bool_(), "Boolean": pa.bool_(),
        "java.time.Instant": pa.timestamp("ns", tz="UTC"), "Instant": pa.timestamp("ns", tz="UTC"),
        STRING_TYPE: pa.string(),
    }
    return types[kind]


def column_kind(deephaven_type: str) -> ColumnKind:
    """The kind of a supported scalar or array column type.

    Raises:
        ArgumentTypeError: the type is not supported (``build_layout`` rejects such columns first,
            naming them).
    """
    kind = COLUMN_KINDS.get(deephaven_type) or ARRAY_KINDS.get(deephaven_type)
    if kind is None:
        raise ArgumentTypeError(f"column type {deephaven_type!r} is not supported; supported types: {SUPPORTED_TYPES}")
    return kind


def is_string_field(arg: str, columns: Sequence[str], kinds: Sequence[ColumnKind], where: str) -> bool:
    """True when the columns of one output are all String columns (a ``[batch]`` / ``[batch, k]`` of str).

    Raises:
        ArgumentTypeError: the list mixes String and other columns.
    """
    strings = [c for c, k in zip(columns, kinds) if k.is_string]
    if not strings or len(strings) == len(columns):
        return bool(strings)
    others = [c for c in columns if c not in strings]
    raise ArgumentTypeError(
        f"{where}: {arg} mixes String column(s) {strings} and non-String column(s) {others} in one list (one "
        f"array holds one dtype); put them under separate keys of a dict spec, e.g. "
        f"{{'text': {strings!r}, 'numbers': {others!r}}}"
    )


def dtype_setting(dtype_arg: str, dtype_key: str | None, value: str) -> str:
    """How a caller passes ``value`` as an output's dtype: ``dtype='int64'``; for a key, ``dtype={'c': 'int64'}``."""
    return f"{dtype_arg}={value!r}" if dtype_key is None else f"{dtype_arg}={{{dtype_key!r}: {value!r}}}"


def check_output_dtype(
    column: str, kind: ColumnKind, out_dtype: np.dtype, dtype_arg: str, where: str, dtype_key: str | None = None
) -> None:
    """Checks that a column's values fit its output dtype: timestamps only int64, floats no integer output.

    ``dtype_arg`` (and ``dtype_key``, for an entry of a ``dtype`` dict) name how the caller sets this
    output's dtype, for the message (:func:`dtype_setting`).

    Raises:
        ArgumentTypeError: a timestamp column goes to an output other than int64 (a float would round
            its nanoseconds), or a float column to an integer output (which would truncate it: 2.7 -> 2,
            NaN to an arbitrary number); the message suggests the dtype to pass or a DQL conversion.
    """
    if kind.is_timestamp and out_dtype != np.int64:
        raise ArgumentTypeError(
            f"{where}: column {column!r} ({kind.deephaven_type}) is read as int64 nanoseconds since the epoch, "
            f"which a {out_dtype} output cannot hold exactly (a float64 keeps 15-16 digits, today's nanoseconds "
            f"have 19); pass {dtype_setting(dtype_arg, dtype_key, 'int64')} (exact), or convert it in DQL first, e.g. "
            f"table.update_view('{column}Seconds = epochNanos({column}) / 1e9')"
        )
    if kind.dtype.kind == "f" and out_dtype.kind in "iu":
        example = "" if kind.is_array else f", e.g. table.update_view('{column}Int = (long){column}')"
        raise ArgumentTypeError(
            f"{where}: column {column!r} ({kind.deephaven_type}) holds floating values, which an integer output "
            f"({out_dtype}) would truncate (2.7 -> 2, NaN to an arbitrary integer); pass a float output, e.g. "
            f"{dtype_setting(dtype_arg, dtype_key, 'float32')}, or convert it in DQL first if truncation is what you "
            f"want{example}"
        )


class ColumnTypes(dict):  # type: ignore[type-arg]
    """Column name -> Deephaven type name, as a source reports them, plus array lengths if it can tell.

    ``array_length(name)`` returns the length of the arrays in column ``name`` (None when the
    table has no row to look at); a plain dict (a source without it) cannot feed array columns.
    """

    def __init__(self, types: Mapping[str, str], array_length: Callable[[str], int | None] | None = None) -> None:
        super().__init__(types)
        self.array_length = array_length


def array_length_error(column: str, kind: ColumnKind, position: int, length: int, expected: int) -> ArrayLengthError:
    """The error for a row of array column ``column`` whose length is not the column's."""
    return ArrayLengthError(
        f"column {column!r} ({kind.deephaven_type}) holds an array of length {length} at row position {position}, "
        f"but its arrays have length {expected} (read from its first row when the loader was built); pass pad_to=N "
        f"to pad or cut every row to N as keras.utils.pad_sequences does, or keep rows of one length with DQL, e.g. "
        f"table.where('len({column}) == {max(length, expected)}') (a rolling window's first rows are shorter than "
        f"the window)"
    )


def note_read_error(error: BaseException, column: str | None, start: int, stop: int) -> None:
    """Adds which column and rows were being read to an engine error (Python >= 3.11 notes)."""
    if hasattr(error, "add_note"):
        error.add_note(f"dh_tf: while reading column {column!r}, rows [{start}, {stop})")
