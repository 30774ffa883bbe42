"""Which columns feed which model input, and how each is typed and null-checked.

This module turns the user's ``features`` / ``label`` / ``sample_weight`` specs into a flat list of
:class:`Field` objects (one output array each) and checks them against the table's column
definitions, before any data moves. It needs only the table's definition (and, for array columns,
their length), not the engine.

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
from dh_tf.reading.padding import PadOptions, field_padding, padded_columns
from dh_tf.sources import column_types as types
from dh_tf.sources.column_types import ARRAY_KINDS, COLUMN_KINDS, SUPPORTED_TYPES, ColumnKind, column_kind
from dh_tf.sources.ragged import Padding

#: A column spec: one name (an array of shape ``[batch]``), a list of names (``[batch, n]``), or a
#: dict of name -> one of those (a dict of arrays, for multi-input / multi-output Keras models).
#: Array columns add a dimension (NOTE [ Array columns ]).
ColumnSpec = str | Sequence[str] | Mapping[str, str | Sequence[str]]
#: A null policy: ``"error"``, ``"nan"``, or a number to fill nulls with.
NullPolicy = str | float | int

NULL_POLICIES = ("error", "nan")
DEFAULT_DTYPE = np.dtype("float32")
"""The dtype of the features a ``dtype`` dict does not name, and of non-integer labels and weights beside one."""


@dataclass(frozen=True)
class Field:
    """One output array: which columns fill it, its dtype, and the null policy of each column.

    ``role`` is ``"x"``, ``"y"`` or ``"w"``; ``key`` is the dict key when the spec was a dict.
    A field built from a single name (``squeeze``) has shape ``[rows]``, otherwise ``[rows, k]``;
    with array columns of length ``array_length`` = n: ``[rows, n]`` and ``[rows, n, k]`` (``padding``:
    rows of any length fit to n, ``pad_value`` in the pad positions, NOTE [ Ragged arrays ]).
    ``null_fixes`` holds, per column, what its null policy was set by and what fits its output: the
    end of the :class:`~dh_tf.errors.NullValueError` for a null under ``"error"`` (:func:`null_fix`).
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
            -> dtype for the features alone (:func:`feature_dtypes`), the others :data:`DEFAULT_DTYPE`.
        label_dtype: the numpy dtype of labels; None keeps integer labels integer (their common
            numpy type) and casts the others to ``dtype`` (:data:`DEFAULT_DTYPE` beside a dict).
        nulls: a null policy for every column, or a dict column -> policy (others: ``"error"``).
            A global ``"nan"`` applies to floating outputs; integer outputs keep ``"error"`` under it
            (they raise only if a null appears, saying ``nulls='nan'`` does not apply to them and what
            does: :func:`null_fix`). A per-column ``"nan"`` on an integer output is an error.
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
    float_dtype = DEFAULT_DTYPE if isinstance(dtype, Mapping) else _numeric_dtype(dtype, "dtype", where)
    fixed_label_dtype = None if label_dtype is None else _numeric_dtype(label_dtype, "label_dtype", where)
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
    policies, global_policy = _null_policies(nulls, table_types, where)
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
            policy = policies.get(column, "error")
            if global_policy and (out_dtype.kind == "O" or policy == "nan" and out_dtype.kind != "f"):
                policy = "error"  # a global "nan" / number means: where it fits (float / numeric outputs)
            given, passed = _given(nulls, column)
            setting = types.dtype_setting(dtype_arg, dtype_key, "float32")
            _check_policy_fits(policy, column, kind, out_dtype, where, passed, setting)
            column_nulls.append(policy)
            fixes.append(null_fix(column, kind, out_dtype, given, passed, setting) if policy == "error" else "")
        fields.append(Field(
            role, key, columns, squeeze, out_dtype, tuple(column_nulls), field_length, field_pad, pad_value,
            tuple(fixes),
        ))
    return Layout(
        fields=tuple(fields),
        has_label=label is not None,
        has_weight=sample_weight is not None,
    )


FeatureInput = tuple[str | None, tuple[str, ...]]
"""A feature input: its key in a dict ``features`` spec (None for a plain spec), and its columns."""


def feature_dtypes(
    dtype: Mapping[Any, Any], inputs: Sequence[FeatureInput], where: str
) -> dict[FeatureInput, tuple[str, np.dtype]]:
    """Input -> (the ``dtype`` key that names it, its dtype), for the inputs a ``dtype`` dict names.

    A key is an input name (a key of a dict ``features`` spec, what Keras matches to ``Input(name=...)``) or a
    feature column; it sets the dtype of the input of that name and of every input made of that column. The
    inputs it does not name keep :data:`DEFAULT_DTYPE`.

    Example: ``features={"num": ["A", "B"], "cat": "CatCode"}, dtype={"cat": "int32"}``: ``num`` float32,
    ``cat`` int32, so integer codes stay exact past 2**24 (a float32 holds integers exactly up to 2**24 only).

    Raises:
        ArgumentError: a key names neither a feature input nor a feature column (the message lists both); or
            the keys give one input two dtypes, or name some of the columns of a list and not the others.
        ArgumentTypeError: a value is not a numeric numpy dtype.
    """
    allowed = list(dict.fromkeys([k for k, _ in inputs if k is not None] + [c for _, cs in inputs for c in cs]))
    unknown = [k for k in dtype if k not in allowed]
    if unknown:
        raise ArgumentError(
            f"{where}: dtype names {unknown}, neither a feature input nor a feature column; its keys can be "
            f"{allowed} (the label's dtype is label_dtype)"
        )
    checked = {k: _numeric_dtype(v, f"dtype[{k!r}]", where) for k, v in dtype.items()}
    result: dict[FeatureInput, tuple[str, np.dtype]] = {}
    for key, columns in inputs:
        names = [n for n in dict.fromkeys(columns if key is None else (key, *columns)) if n in checked]
        if not names:
            continue
        missing = [] if key in checked else [c for c in columns if c not in checked]
        if missing or len({checked[n] for n in names}) > 1:
            arg = "features" if key is None else f"features[{key!r}]"
            given = ", ".join(f"{n!r}: {checked[n]}" for n in names)
            raise ArgumentError(
                f"{where}: {arg} (columns {list(columns)}) is one array of one dtype, but dtype gives {given}"
                + (f" and nothing for {missing}" if missing else "")
                + "; give the input one dtype, by its name or the same for each of its columns"
            )
        result[(key, columns)] = (names[0], checked[names[0]])
    return result


def _numeric_dtype(dtype: Any, arg: str, where: str) -> np.dtype:
    try:
        result = np.dtype(dtype)
    except (TypeError, ValueError) as e:
        raise ArgumentTypeError(
            f"{where}: {arg} must be a numeric numpy dtype, e.g. 'float32' or 'int64' (got {dtype!r} of type "
            f"{type(dtype).__name__})"
        ) from e
    if result.kind not in "fiu":
        raise ArgumentTypeError(
            f"{where}: {arg} must be a numeric numpy dtype (int, uint or float kinds), e.g. 'float32' or "
            f"'int64' (got {dtype!r}: {result})"
        )
    return result


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


def _null_policies(
    nulls: NullPolicy | Mapping[str, NullPolicy], table_types: Mapping[str, str], where: str
) -> tuple[dict[str, NullPolicy], bool]:
    """Column -> policy, and whether it came from one global policy (not a per-column dict)."""
    if isinstance(nulls, Mapping):
        unknown = [c for c in nulls if c not in table_types]
        if unknown:
            raise ArgumentError(
                f"{where}: nulls names unknown column(s) {unknown}; the table has columns {list(table_types)}"
            )
        return {c: _check_policy(p, f"nulls[{c!r}]", where, text=True) for c, p in nulls.items()}, False
    policy = _check_policy(nulls, "nulls", where)
    return dict.fromkeys(table_types, policy), True


def _check_policy(policy: Any, arg: str, where: str, text: bool = False) -> NullPolicy:
    if isinstance(policy, str) and (policy in NULL_POLICIES or text):  # text: a fill string (String columns)
        return policy
    if isinstance(policy, (int, float, np.integer, np.floating)) and not isinstance(policy, bool):
        return policy
    raise ArgumentError(
        f"{where}: {arg} must be 'error', 'nan' or a number to fill nulls with "
        f"(got {policy!r} of type {type(policy).__name__})"
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


def _given(nulls: NullPolicy | Mapping[str, NullPolicy], column: str) -> tuple[NullPolicy, str]:
    """The null policy the caller gave ``column``, and how the caller wrote it (``"nulls='nan'"``), for messages."""
    if not isinstance(nulls, Mapping):
        return nulls, f"nulls={nulls!r}"
    if column in nulls:
        return nulls[column], f"nulls={{{column!r}: {nulls[column]!r}}}"
    return "error", "nulls='error' (the default for a column the nulls dict does not name)"


def null_fix(
    column: str, kind: ColumnKind, out_dtype: np.dtype, given: NullPolicy, passed: str, float_setting: str
) -> str:
    """The end of the NullValueError for a null in ``column`` under ``"error"``: what was passed and what fits.

    ``given`` is the policy the caller gave the column and ``passed`` how they wrote it (:func:`_given`): a
    global ``"nan"`` keeps ``"error"`` for an integer output, where NaN does not exist, so the message says
    ``nulls='nan'`` was passed and offers a fill number or a float output (``float_setting``, e.g.
    ``"label_dtype='float32'"``).
    """
    if out_dtype.kind == "O":
        why = "" if given == "error" else f", which fits numeric outputs only, not String column {column!r}"
        return f"{passed}{why}; pass a fill string as nulls={{{column!r}: '[UNK]'}}"
    if out_dtype.kind == "f":
        return f"{passed}; pass nulls='nan' or a fill number (for all columns or as nulls={{{column!r}: ...}})"
    why = ", which cannot apply to it" if given == "nan" else ""
    fill = f"a fill number as nulls={{{column!r}: {-1 if out_dtype.kind == 'i' else 0}}}"
    floats = "" if kind.is_timestamp else f", or a float output, e.g. {float_setting}, with nulls='nan'"
    return f"{passed}{why}: NaN does not exist in its {out_dtype} output; pass {fill}{floats}"


def _check_policy_fits(
    policy: NullPolicy, column: str, kind: ColumnKind, out_dtype: np.dtype, where: str, passed: str, float_setting: str
) -> None:
    """Raises ArgumentError unless ``policy`` fits ``column``'s output (the other arguments: :func:`null_fix`)."""
    if out_dtype.kind == "O" and (policy == "nan" or not isinstance(policy, str)):
        raise ArgumentError(
            f"{where}: nulls={{{column!r}: {policy!r}}} does not fit String column {column!r}; its nulls can be "
            f"'error' or a fill string, e.g. nulls={{{column!r}: '[UNK]'}}"
        )
    if out_dtype.kind != "O" and isinstance(policy, str) and policy not in NULL_POLICIES:
        raise ArgumentError(
            f"{where}: nulls={{{column!r}: {policy!r}}}: a fill string fits String columns only, and column "
            f"{column!r} goes to a {out_dtype} array; use 'error', 'nan' or a number"
        )
    if policy == "nan" and out_dtype.kind != "f":
        raise ArgumentError(
            f"{where}: nulls={{{column!r}: 'nan'}} needs a floating output, but column {column!r} goes to a "
            f"{out_dtype} array; use 'error' or a number for it (nulls={{{column!r}: value}})"
            + ("" if kind.is_timestamp else f", or a float output for NaN, e.g. {float_setting}")
        )
    if isinstance(policy, str):
        return
    if out_dtype.kind in "iu" and (not float(policy).is_integer() or not _fits(policy, out_dtype)):
        raise ArgumentError(
            f"{where}: the null fill value for column {column!r} must be an integer that fits "
            f"{out_dtype} (got {policy!r}), set by {passed}"
        )


def _fits(value: Any, dtype: np.dtype) -> bool:
    info = np.iinfo(dtype)
    return info.min <= int(value) <= info.max
