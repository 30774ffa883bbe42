"""Which columns feed which model input, and how each is typed and null-checked.

This module turns the user's ``features`` / ``label`` / ``sample_weight`` specs into a flat list of
:class:`Field` objects (one output array each) and checks them against the table's column
definitions, before any data moves. It needs only the table's definition, not the engine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: A column spec: one name (an array of shape ``[batch]``), a list of names (``[batch, n]``), or a
#: dict of name -> one of those (a dict of arrays, for multi-input / multi-output Keras models).
ColumnSpec = str | Sequence[str] | Mapping[str, str | Sequence[str]]
#: A null policy: ``"error"``, ``"nan"``, or a number to fill nulls with.
NullPolicy = str | float | int

NULL_POLICIES = ("error", "nan")


@dataclass(frozen=True)
class ColumnKind:
    """How one Deephaven column type is read: its numpy dtype and its null sentinel."""

    deephaven_type: str
    dtype: np.dtype
    null_value: Any


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
SUPPORTED_TYPES = "byte, short, int, long, float, double, java.lang.Boolean"


@dataclass(frozen=True)
class Field:
    """One output array: which columns fill it, its dtype, and the null policy of each column.

    ``role`` is ``"x"``, ``"y"`` or ``"w"``; ``key`` is the dict key when the spec was a dict.
    A field built from a single name (``squeeze``) has shape ``[rows]``, otherwise ``[rows, n]``.
    """

    role: str
    key: str | None
    columns: tuple[str, ...]
    squeeze: bool
    dtype: np.dtype
    nulls: tuple[NullPolicy, ...]

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of one row of this field."""
        return () if self.squeeze else (len(self.columns),)


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
) -> Layout:
    """Checks the column specs against the table and returns the output layout.

    Args:
        table_types: column name -> Deephaven type name (``DType.j_name``), in table order.
        features: the feature column spec (see :data:`ColumnSpec`).
        label: the label column spec, or None for ``x`` alone.
        sample_weight: one column name, or None.
        dtype: the numpy dtype of features and of non-integer labels and weights.
        label_dtype: the numpy dtype of labels; None keeps integer labels integer (their common
            numpy type) and casts the others to ``dtype``.
        nulls: a null policy for every column, or a dict column -> policy (others: ``"error"``).
        where: the caller's name, for error messages.

    Returns:
        The layout: the fields in order x, y, w.

    Raises:
        ValueError: a spec is empty, names an unknown column, or a null policy is not allowed.
        TypeError: a spec has the wrong type, or a column's type is not numeric or boolean.
    """
    float_dtype = _float_dtype(dtype, "dtype", where)
    fixed_label_dtype = None if label_dtype is None else np.dtype(label_dtype)
    if sample_weight is not None and label is None:
        raise ValueError(f"{where}: sample_weight needs a label (got label=None)")
    if sample_weight is not None and not isinstance(sample_weight, str):
        raise TypeError(
            f"{where}: sample_weight must be one column name (got {sample_weight!r} of type "
            f"{type(sample_weight).__name__})"
        )
    specs = [("x", "features", features)]
    if label is not None:
        specs.append(("y", "label", label))
    if sample_weight is not None:
        specs.append(("w", "sample_weight", sample_weight))

    raw: list[tuple[str, str | None, tuple[str, ...], bool]] = []
    for role, arg, spec in specs:
        for key, columns, squeeze in _parse_spec(spec, arg, where):
            raw.append((role, key, columns, squeeze))

    _check_columns(table_types, [c for _, _, cols, _ in raw for c in cols], where)
    policies = _null_policies(nulls, table_types, where)

    fields = []
    for role, key, columns, squeeze in raw:
        kinds = [COLUMN_KINDS[table_types[c]] for c in columns]
        if role == "y" and fixed_label_dtype is not None:
            out_dtype = fixed_label_dtype
        elif role == "y" and all(k.dtype.kind == "i" and k.deephaven_type != "java.lang.Boolean" for k in kinds):
            out_dtype = np.result_type(*[k.dtype for k in kinds])
        else:
            out_dtype = float_dtype
        column_nulls = tuple(policies.get(c, "error") for c in columns)
        for column, policy in zip(columns, column_nulls):
            _check_policy_fits(policy, column, out_dtype, where)
        fields.append(Field(role, key, columns, squeeze, out_dtype, column_nulls))
    return Layout(
        fields=tuple(fields),
        has_label=label is not None,
        has_weight=sample_weight is not None,
    )


def _float_dtype(dtype: Any, arg: str, where: str) -> np.dtype:
    try:
        result = np.dtype(dtype)
    except TypeError as e:
        raise TypeError(f"{where}: {arg} must be a numpy dtype (got {dtype!r})") from e
    if result.kind not in "fiu":
        raise TypeError(f"{where}: {arg} must be a numeric numpy dtype (got {result})")
    return result


def _parse_spec(spec: Any, arg: str, where: str) -> list[tuple[str | None, tuple[str, ...], bool]]:
    """Splits one spec into (dict key or None, column names, squeeze) entries."""
    if isinstance(spec, Mapping):
        if not spec:
            raise ValueError(f"{where}: {arg} must name at least one column (got an empty dict)")
        entries = []
        for key, sub in spec.items():
            if not isinstance(key, str):
                raise TypeError(f"{where}: {arg} dict keys must be str (got {key!r} of type {type(key).__name__})")
            (_, columns, squeeze), = _parse_spec(sub, f"{arg}[{key!r}]", where)
            entries.append((key, columns, squeeze))
        return entries
    if isinstance(spec, str):
        if not spec:
            raise ValueError(f"{where}: {arg} must be a column name, not an empty string")
        return [(None, (spec,), True)]
    if isinstance(spec, Sequence) and all(isinstance(c, str) for c in spec):
        if not spec:
            raise ValueError(f"{where}: {arg} must name at least one column (got {spec!r})")
        if len(set(spec)) != len(spec):
            raise ValueError(f"{where}: {arg} names a column twice (got {list(spec)!r})")
        return [(None, tuple(spec), False)]
    raise TypeError(
        f"{where}: {arg} must be a column name, a list of names, or a dict of name -> names "
        f"(got {spec!r} of type {type(spec).__name__})"
    )


def _check_columns(table_types: Mapping[str, str], columns: list[str], where: str) -> None:
    missing = [c for c in dict.fromkeys(columns) if c not in table_types]
    if missing:
        raise ValueError(
            f"{where}: unknown column(s) {missing}; the table has columns {list(table_types)}"
        )
    bad = {c: table_types[c] for c in dict.fromkeys(columns) if table_types[c] not in COLUMN_KINDS}
    if bad:
        listed = ", ".join(f"{c!r} ({t})" for c, t in bad.items())
        raise TypeError(
            f"{where}: column(s) {listed} must be numeric or boolean; supported types: {SUPPORTED_TYPES}"
        )


def _null_policies(
    nulls: NullPolicy | Mapping[str, NullPolicy], table_types: Mapping[str, str], where: str
) -> dict[str, NullPolicy]:
    if isinstance(nulls, Mapping):
        unknown = [c for c in nulls if c not in table_types]
        if unknown:
            raise ValueError(
                f"{where}: nulls names unknown column(s) {unknown}; the table has columns {list(table_types)}"
            )
        return {c: _check_policy(p, f"nulls[{c!r}]", where) for c, p in nulls.items()}
    policy = _check_policy(nulls, "nulls", where)
    return dict.fromkeys(table_types, policy)


def _check_policy(policy: Any, arg: str, where: str) -> NullPolicy:
    if isinstance(policy, str) and policy in NULL_POLICIES:
        return policy
    if isinstance(policy, (int, float, np.integer, np.floating)) and not isinstance(policy, bool):
        return policy
    raise ValueError(
        f"{where}: {arg} must be 'error', 'nan' or a number to fill nulls with "
        f"(got {policy!r} of type {type(policy).__name__})"
    )


def _check_policy_fits(policy: NullPolicy, column: str, out_dtype: np.dtype, where: str) -> None:
    if policy == "nan" and out_dtype.kind != "f":
        raise ValueError(
            f"{where}: nulls='nan' needs a floating output, but column {column!r} goes to a {out_dtype} "
            "array; use 'error' or a number for it (nulls={column: value})"
        )
    if isinstance(policy, str):
        return
    if out_dtype.kind in "iu" and (not float(policy).is_integer() or not _fits(policy, out_dtype)):
        raise ValueError(
            f"{where}: the null fill value for column {column!r} must be an integer that fits "
            f"{out_dtype} (got {policy!r})"
        )


def note_read_error(error: BaseException, column: str | None, start: int, stop: int) -> None:
    """Adds which column and rows were being read to an engine error (Python >= 3.11 notes)."""
    if hasattr(error, "add_note"):
        error.add_note(f"dh_tf: while reading column {column!r}, rows [{start}, {stop})")


def _fits(value: Any, dtype: np.dtype) -> bool:
    info = np.iinfo(dtype)
    return info.min <= int(value) <= info.max
