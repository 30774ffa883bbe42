"""Deephaven column types as dh_tf reads them: numpy dtype, null sentinel, array element type.

The one home of the type tables: every source reports Deephaven type names (``double``,
``java.lang.Boolean``, ``double[]``, ``io.deephaven.vector.DoubleVector``), and everything above the
sources looks them up here. Array columns: NOTE [ Array columns ] in ``reading/layout.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
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


def _kind(deephaven_type: str, dtype: str, null_value: Any) -> ColumnKind:
    return ColumnKind(deephaven_type, np.dtype(dtype), np.array(null_value, dtype=dtype)[()])


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
)
ARRAY_LENGTH_PROBE_ROWS = 1000
"""Rows looked at for the first non-null array when a loader is built (NOTE [ Array columns ])."""


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
        f"but its arrays have length {expected} (read from its first row when the loader was built); rows of "
        f"another length are never padded: keep rows of one length with DQL, e.g. table.where('len({column}) == "
        f"{max(length, expected)}') (a rolling window's first rows are shorter than the window)"
    )


def note_read_error(error: BaseException, column: str | None, start: int, stop: int) -> None:
    """Adds which column and rows were being read to an engine error (Python >= 3.11 notes)."""
    if hasattr(error, "add_note"):
        error.add_note(f"dh_tf: while reading column {column!r}, rows [{start}, {stop})")
