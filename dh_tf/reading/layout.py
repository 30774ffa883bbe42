"""Which columns feed which model input, and how each is typed and null-checked.

This module turns the user's ``features`` / ``label`` / ``sample_weight`` specs into a flat list of
:class:`Field` objects (one output array each) and checks them against the table's column
definitions, before any data moves. It needs only the table's definition (and, for array columns,
their length), not the engine. Which null policy applies to each column is ``reading/null_policy.py``;
the dtype of each feature input (a ``dtype`` dict) is ``reading/output_dtypes.py``.

NOTE [ Array columns ]
A column of fixed-length arrays (Java ``double[]``, ``float[]``, ``long[]``, ``int[]``, ``short[]``,
``byte[]``, or the Deephaven vectors ``io.deephaven.vector.DoubleVector`` ... ``ByteVector`` that
``update_by(rolling_group_tick(...))`` and ``group_by`` make) is read as a tensor: one array column
gives ``[batch, n]``; a list of k array columns of the same length gives ``[batch, n, k]``
(timesteps x features, what Keras ``LSTM`` / ``Conv1D`` take). A list cannot mix scalar and array
columns; a dict spec can hold both, one per key.

The length ``n`` is taken when the loader is built, from the first row that is not a null array
(among the first :data:`ARRAY_LENGTH_PROBE_ROWS` rows); a table with no rows there is an error,
because the output shape would be unknown. Every page checks every row again: a row of another
length is an :class:`ArrayLengthError` naming the column, the row position and both lengths,
whatever the null policy, unless the column is padded: ``pad_to=n`` fits rows of any length to n
(opt-in, NOTE [ Ragged arrays ] in ``sources/ragged.py``). Or keep rows of one length with DQL, e.g.
``where("len(W) == 32")`` after a rolling window, whose first rows are shorter.

Nulls: a null array counts as n null elements, and a null element (e.g. ``NULL_DOUBLE`` inside the
window) as a null; both follow the column's null policy: ``"error"`` raises naming the row,
``"nan"`` / a number fills those elements (a whole null row gets filled; padded: all ``pad_value``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dh_tf.errors import ArgumentError, ArgumentTypeError
from dh_tf.reading.null_policy import NullPolicy, null_policies
from dh_tf.reading.output_dtypes import DEFAULT_DTYPE, feature_dtypes, numeric_dtype
from dh_tf.reading.padding import PadOptions, field_padding, padded_columns
from dh_tf.sources import column_types as types
from dh_tf.sources.column_types import ARRAY_KINDS, COLUMN_KINDS, SUPPORTED_TYPES, ColumnKind, column_kind
from dh_tf.sources.ragged import Padding

#: A column spec: one name (an array of shape ``[batch]``), a list of names (``[batch, n]``), or a
#: dict of name -> one of those (a dict of arrays, for multi-input / multi-output Keras models).
#: Array columns add a dimension (NOTE [ Array columns ]).
ColumnSpec = str | Sequence[str] | Mapping[str, str | Sequence[str]]


@dataclass(frozen=True)
class Field:
    """One output array: which columns fill it, its dtype, and the null policy of each column.

    ``role`` is ``"x"``, ``"y"`` or ``"w"``; ``key`` is the dict key when the spec was a dict.
    A field built from a single name (``squeeze``) has shape ``[rows]``, otherwise ``[rows, k]``;
    with array columns of length ``array_length`` = n: ``[rows, n]`` and ``[rows, n, k]`` (``padding``:
    rows of any length fit to n, ``pad_value`` in the pad positions, NOTE [ Ragged arrays ]).
    ``null_fixes`` holds, per column, what its null policy was set by and what fits its output: the
    end of the :class:`~dh_tf.errors.NullValueError` for a null under ``"error"``
    (:func:`~dh_tf.reading.null_policy.null_fix`).
    """

    role: str
    key: str | None
    columns: tuple[str, ...]
    squeeze: bool
    dtype: np.dtype
    nulls: tuple[NullPolicy, ...]
    array_length: int | None = None
    padding: Padding | None = None
    pad_value: float = 0.0
    null_fixes: tuple[str, ...] = dataclasses.field(default=(), compare=False)

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of one row of this field: ``()``, ``(k,)``, ``(n,)`` or ``(n, k)``."""
        inner = () if self.array_length is None else (self.array_length,)
        return inner if self.squeeze else (*inner, len(self.columns))


@dataclass(frozen=True)
class Layout:
    """The fields of a loader and how to assemble them into ``x``, ``(x, y)`` or ``(x, y, w)``."""

    fields: tuple[Field, ...]
    has_label: bool
    has_weight: bool

    @property
    def columns(self) -> tuple[str, ...]:
        """Every column read, each once, in first-use order."""
        return tuple(dict.fromkeys(c for f in self.fields for c in f.columns))

    @property
    def array_lengths(self) -> dict[str, int]:
        """Array column -> its length, for the array columns read."""
        return {c: f.array_length for f in self.fields if f.array_length is not None for c in f.columns}

    @property
    def padding(self) -> dict[str, Padding]:
        """Padded array column -> its padding (NOTE [ Ragged arrays ]), for the columns read."""
        return {c: f.padding for f in self.fields if f.padding is not None for c in f.columns}

    def assemble(self, arrays: Sequence[Any]) -> Any:
        """Nests one array per field (in field order) into ``x``, ``(x, y)`` or ``(x, y, w)``."""
        parts: dict[str, Any] = {"x": {}, "y": {}, "w": None}
        for field, array in zip(self.fields, arrays):
            if field.key is None:
                parts[field.role] = array
            else:
                parts[field.role][field.key] = array
        if not self.has_label:
            return parts["x"]
        if not self.has_weight:
            return parts["x"], parts["y"]
        return parts["x"], parts["y"], parts["w"]


def build_layout(
    table_types: Mapping[str, str],
    features: ColumnSpec,
    label: ColumnSpec | None,
    sample_weight: str | None,
    *,
    dtype: Any,
    label_dtype: Any,
    nulls: NullPolicy | Mapping[str, NullPolicy],
    where: str = "TableLoader",
    array_length: Callable[[str], int | None] | None = None,
    pad: PadOptions | None = None,
) -> Layout:
    """Checks the column specs against the table and returns the output layout.

    Args:
        table_types: column name -> Deephaven type name (``DType.j_name``), in table order.
        features: the feature column spec (see :data:`ColumnSpec`).
        label: the label column spec, or None for ``x`` alone.
        sample_weight: one column name, or None.
        dtype: the numpy dtype of features and of non-integer labels and weights; or a dict input
            -> dtype for the features alone (:func:`~dh_tf.reading.output_dtypes.feature_dtypes`), the others
            :data:`~dh_tf.reading.output_dtypes.DEFAULT_DTYPE`.
        label_dtype: the numpy dtype of labels; None keeps integer labels integer (their common
            numpy type) and casts the others to ``dtype`` (:data:`DEFAULT_DTYPE` beside a dict).
        nulls: a null policy for every column, or a dict column -> policy (others: ``"error"``).
            A global ``"nan"`` applies to floating outputs; integer outputs keep ``"error"`` under it
            (they raise only if a null appears, saying ``nulls='nan'`` does not apply to them and what
            does: :func:`~dh_tf.reading.null_policy.null_fix`). A per-column ``"nan"`` on an integer output is an
            error.
            String outputs take ``"error"`` or a per-column fill string (a global policy leaves them at ``"error"``).
        where: the caller's name, for error messages.
        array_length: column name -> length of its arrays (None: the table has no rows), for array
            columns (NOTE [ Array columns ]); default: ``table_types.array_length`` when
            ``table_types`` is a :class:`ColumnTypes`.
        pad: the checked padding options (``padding.pad_options``), or None: array lengths are fixed.

    Returns:
        The layout: the fields in order x, y, w.

    Raises:
        ValueError: a spec is empty, names an unknown column, mixes scalar and array columns in one
            list, holds arrays of different lengths, or of unknown length (no rows); or a null
            policy is not allowed or does not fit a column; or ``pad`` does not fit (``reading/padding.py``);
            or a ``dtype`` dict names no feature input or column, or gives one input two dtypes.
        TypeError: a spec has the wrong type (nested dicts included), ``dtype`` / ``label_dtype`` is
            not a numeric numpy dtype, a column's type is not supported, a list mixes String and other
            columns, the label or sample_weight is a String column, a timestamp goes to an output other
            than int64 (NOTE [ Strings and timestamps ]), or a float column to an integer output.
    """
    float_dtype = DEFAULT_DTYPE if isinstance(dtype, Mapping) else numeric_dtype(dtype, "dtype", where)
    fixed_label_dtype = None if label_dtype is None else numeric_dtype(label_dtype, "label_dtype", where)
    if sample_weight is not None and label is None:
        raise ArgumentError(f"{where}: sample_weight needs a label (got label=None)")
    if sample_weight is not None and not isinstance(sample_weight, str):
        raise ArgumentTypeError(
            f"{where}: sample_weight must be one column name (got {sample_weight!r} of type "
            f"{type(sample_weight).__name__})"
        )
    specs = [("x", "features", features)]
    if label is not None:
        specs.append(("y", "label", label))
    if sample_weight is not None:
        specs.append(("w", "sample_weight", sample_weight))

    raw: list[tuple[str, str, str | None, tuple[str, ...], bool]] = []
    for role, arg, spec in specs:
        for key, columns, squeeze in _parse_spec(spec, arg, where):
            raw.append((role, arg if key is None else f"{arg}[{key!r}]", key, columns, squeeze))

    _check_columns(table_types, [c for *_, cols, _ in raw for c in cols], where)
    policies = null_policies(nulls, table_types, where)
    if array_length is None:
        array_length = getattr(table_types, "array_length", None)
    padded = padded_columns(pad, table_types, [c for *_, cols, _ in raw for c in cols], where)
    lengths = _array_lengths(table_types, [c for *_, cs, _ in raw for c in cs if c not in padded], array_length, where)
    lengths.update({c: p.length for c, p in padded.items()})  # padded: n is pad_to, not read from the table

    inputs = [(key, columns) for role, _, key, columns, _ in raw if role == "x"]
    named = feature_dtypes(dtype, inputs, where) if isinstance(dtype, Mapping) else {}
    fields = []
    for role, arg, key, columns, squeeze in raw:
        kinds = [column_kind(table_types[c]) for c in columns]
        field_length = _field_array_length(arg, columns, kinds, lengths, where)
        by_dict = named.get((key, columns)) if role == "x" else None
        dtype_key, out_dtype = by_dict or (None, float_dtype)
        dtype_arg = "label_dtype" if role == "y" else "dtype"
        if types.is_string_field(arg, columns, kinds, where):  # NOTE [ Strings and timestamps ] in column_types.py
            if role != "x":
                raise ArgumentTypeError(_string_target_message(arg, columns, table_types, where))
            if by_dict:
                raise ArgumentTypeError(
                    f"{where}: dtype[{dtype_key!r}] sets a dtype for {arg}, a String input {list(columns)}; String "
                    "columns are read as str (tf.string): leave them out of the dtype dict"
                )
            out_dtype = np.dtype(object)
        elif role == "y" and fixed_label_dtype is not None:
            out_dtype = fixed_label_dtype
        elif role == "y" and all(k.dtype.kind == "i" and k.deephaven_type != "java.lang.Boolean" for k in kinds):
            out_dtype = np.result_type(*[k.dtype for k in kinds])
        field_pad, pad_value = field_padding(arg, columns, padded, pad, out_dtype, where)
        column_nulls, fixes = [], []
        for column, kind in zip(columns, kinds):
            types.check_output_dtype(column, kind, out_dtype, dtype_arg, where, dtype_key)
            policy, fix = policies.for_column(column, kind, out_dtype, types.dtype_setting(dtype_arg, dtype_key, "float32"))
            column_nulls.append(policy)
            fixes.append(fix)
        fields.append(Field(
            role, key, columns, squeeze, out_dtype, tuple(column_nulls), field_length, field_pad, pad_value,
            tuple(fixes),
        ))
    return Layout(
        fields=tuple(fields),
        has_label=label is not None,
        has_weight=sample_weight is not None,
    )


def _parse_spec(spec: Any, arg: str, where: str) -> list[tuple[str | None, tuple[str, ...], bool]]:
    """Splits one spec into (dict key or None, column names, squeeze) entries."""
    if isinstance(spec, Mapping):
        if not spec:
            raise ArgumentError(f"{where}: {arg} must name at least one column (got an empty dict)")
        entries = []
        for key, sub in spec.items():
            if not isinstance(key, str):
                raise ArgumentTypeError(f"{where}: {arg} dict keys must be str (got {key!r} of type {type(key).__name__})")
            if isinstance(sub, Mapping):
                raise ArgumentTypeError(
                    f"{where}: {arg}[{key!r}] must be a column name or a list of names; nested dicts are not "
                    f"supported (got {sub!r}); use one flat dict of name -> names"
                )
            ((_, columns, squeeze),) = _parse_spec(sub, f"{arg}[{key!r}]", where)
            entries.append((key, columns, squeeze))
        return entries
    if isinstance(spec, str):
        if not spec:
            raise ArgumentError(f"{where}: {arg} must be a column name, not an empty string")
        return [(None, (spec,), True)]
    if isinstance(spec, Sequence) and all(isinstance(c, str) for c in spec):
        if not spec:
            raise ArgumentError(f"{where}: {arg} must name at least one column (got {spec!r})")
        if len(set(spec)) != len(spec):
            raise ArgumentError(f"{where}: {arg} names a column twice (got {list(spec)!r})")
        return [(None, tuple(spec), False)]
    raise ArgumentTypeError(
        f"{where}: {arg} must be a column name, a list of names, or a dict of name -> names "
        f"(got {spec!r} of type {type(spec).__name__})"
    )


def _array_lengths(
    table_types: Mapping[str, str],
    columns: list[str],
    array_length: Callable[[str], int | None] | None,
    where: str,
) -> dict[str, int]:
    """Array column -> its length, for the array columns among ``columns`` (NOTE [ Array columns ])."""
    lengths = {}
    for column in dict.fromkeys(columns):
        type_name = table_types[column]
        if type_name not in ARRAY_KINDS:
            continue
        if array_length is None:
            raise ArgumentTypeError(
                f"{where}: column {column!r} ({type_name}) is an array column, and this source cannot tell "
                "array lengths; array columns are read from tables of the embedded engine"
            )
        length = array_length(column)
        if length is None:
            raise ArgumentError(
                f"{where}: column {column!r} ({type_name}) is an array column whose length is read from the "
                "first rows, but the table has no rows; build the loader once the table has rows"
            )
        if length < 1:
            raise ArgumentError(
                f"{where}: column {column!r} ({type_name}) holds empty arrays (row 0 has length {length}); "
                "array columns need arrays of length >= 1"
            )
        lengths[column] = int(length)
    return lengths


def _field_array_length(
    arg: str, columns: tuple[str, ...], kinds: list[ColumnKind], lengths: Mapping[str, int], where: str
) -> int | None:
    """The array length of a field's columns (None: scalar columns), checking they agree."""
    arrays = [c for c, k in zip(columns, kinds) if k.is_array]
    if not arrays:
        return None
    if len(arrays) != len(columns):
        scalars = [c for c in columns if c not in arrays]
        raise ArgumentError(
            f"{where}: {arg} mixes scalar column(s) {scalars} and array column(s) {arrays} in one list; "
            f"put them under separate keys of a dict spec, e.g. {{'sequence': {arrays!r}, 'scalars': {scalars!r}}}"
        )
    distinct = {lengths[c] for c in arrays}
    if len(distinct) > 1:
        listed = ", ".join(f"{c!r}: {lengths[c]}" for c in arrays)
        raise ArgumentError(
            f"{where}: {arg} lists array columns of different lengths ({listed}); the columns of one "
            "list must have the same length (they become [batch, n, k])"
        )
    return lengths[arrays[0]]


def _check_columns(table_types: Mapping[str, str], columns: list[str], where: str) -> None:
    missing = [c for c in dict.fromkeys(columns) if c not in table_types]
    if missing:
        raise ArgumentError(
            f"{where}: unknown column(s) {missing}; the table has columns {list(table_types)}"
        )
    bad = {
        c: table_types[c]
        for c in dict.fromkeys(columns)
        if table_types[c] not in COLUMN_KINDS and table_types[c] not in ARRAY_KINDS
    }
    if bad:
        listed = ", ".join(f"{c!r} ({t})" for c, t in bad.items())
        raise ArgumentTypeError(
            f"{where}: column(s) {listed} must be numeric, boolean, String or a timestamp; supported types: "
            f"{SUPPORTED_TYPES}"
        )


def _string_target_message(arg: str, columns: tuple[str, ...], table_types: Mapping[str, str], where: str) -> str:
    """The refusal of a String label or sample weight, which Keras would fail on deep in ``fit``."""
    listed = ", ".join(f"{c!r} ({table_types[c]})" for c in columns)
    head = (
        f"{where}: {arg} must be numeric, boolean or a timestamp (got String column(s) {listed}); Keras cannot take "
        "strings as targets (fit fails with 'Cast string to float is not supported')"
    )
    first = columns[0]
    if arg == "sample_weight":
        return f"{head}; compute numeric weights in DQL, e.g. table.update_view('W = Double.parseDouble({first})')"
    return (
        f"{head}; make integer codes in the engine and pass those as the label: dh_tf.integer_codes(table, {first!r}) "
        f"adds the int32 column {first + 'Code'!r} (1 + the value's index in dh_tf.vocabulary(table, {first!r}), "
        "0 for a null or unseen value); a String feature is fine as it is: keras.layers.StringLookup takes it"
    )
