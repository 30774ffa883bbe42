"""The padding options (``pad_to``, ``padding``, ``truncating``, ``pad_value``): checks, and which columns they pad.

Padding is opt-in (NOTE [ Ragged arrays ] in ``sources/ragged.py``): without ``pad_to`` an array
column's length is fixed (NOTE [ Array columns ] in ``reading/layout.py``). Every check here runs
when a loader or follower is built, before any data moves.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dh_tf.checks import choice_arg, int_arg
from dh_tf.errors import ArgumentError, ArgumentTypeError
from dh_tf.sources.column_types import ARRAY_KINDS
from dh_tf.sources.ragged import PAD_SIDES, Padding

#: ``pad_to``: one length for every array column read, or a dict column -> length.
PadTo = int | Mapping[str, int]


@dataclass(frozen=True)
class PadOptions:
    """The checked padding options of one loader or follower (``pad_to`` given)."""

    pad_to: int | Mapping[str, int]
    padding: str
    truncating: str
    value: float


def pad_options(pad_to: Any, padding: Any, truncating: Any, pad_value: Any, where: str) -> PadOptions | None:
    """Checks the padding options; None when ``pad_to`` is None (no padding: lengths are fixed).

    ``padding``, ``truncating`` and ``pad_value`` are checked even without ``pad_to``.

    Raises:
        ArgumentTypeError: ``pad_to`` is not an int or a dict of column name -> int (bools are not
            ints), or ``pad_value`` is not a number.
        ArgumentError: a length < 1, or ``padding`` / ``truncating`` not ``"pre"`` or ``"post"``.
    """
    padding = choice_arg(padding, "padding", where, PAD_SIDES)
    truncating = choice_arg(truncating, "truncating", where, PAD_SIDES)
    if isinstance(pad_value, bool) or not isinstance(pad_value, (int, float, np.integer, np.floating)):
        raise ArgumentTypeError(
            f"{where}: pad_value must be a number (got {pad_value!r} of type {type(pad_value).__name__})"
        )
    if pad_to is None:
        return None
    if isinstance(pad_to, Mapping):
        if not pad_to:
            raise ArgumentError(f"{where}: pad_to must name at least one array column (got an empty dict)")
        lengths = {}
        for column, length in pad_to.items():
            if not isinstance(column, str):
                raise ArgumentTypeError(
                    f"{where}: pad_to dict keys must be column names (got {column!r} of type {type(column).__name__})"
                )
            lengths[column] = int_arg(length, f"pad_to[{column!r}]", where, minimum=1)
        return PadOptions(lengths, padding, truncating, pad_value)
    if isinstance(pad_to, bool) or not isinstance(pad_to, (int, np.integer)):
        raise ArgumentTypeError(
            f"{where}: pad_to must be an int >= 1, or a dict of array column -> int >= 1 (got {pad_to!r} of type "
            f"{type(pad_to).__name__})"
        )
    return PadOptions(int_arg(pad_to, "pad_to", where, minimum=1), padding, truncating, pad_value)


def padded_columns(
    options: PadOptions | None, table_types: Mapping[str, str], columns: Sequence[str], where: str
) -> dict[str, Padding]:
    """Array column -> its :class:`Padding`, for the columns read (``columns``) that ``options`` pads.

    Raises:
        ArgumentError: an int ``pad_to`` while no array column is read, or a ``pad_to`` dict naming
            a column that is unknown, not an array column, or not read.
    """
    if options is None:
        return {}
    read = list(dict.fromkeys(columns))
    arrays = [c for c in read if table_types[c] in ARRAY_KINDS]
    if not isinstance(options.pad_to, Mapping):
        if not arrays:
            listed = ", ".join(f"{c!r} ({table_types[c]})" for c in read)
            raise ArgumentError(
                f"{where}: pad_to pads array columns, but none of the columns read is one ({listed}); "
                "drop pad_to, or read an array column"
            )
        lengths = dict.fromkeys(arrays, options.pad_to)
    else:
        lengths = dict(options.pad_to)
        for column in lengths:
            if column not in table_types:
                raise ArgumentError(
                    f"{where}: pad_to names unknown column {column!r}; the table has columns {list(table_types)}"
                )
            if table_types[column] not in ARRAY_KINDS:
                raise ArgumentError(
                    f"{where}: pad_to names column {column!r} ({table_types[column]}), which is not an array column; "
                    f"pad_to pads array columns (e.g. double[], io.deephaven.vector.DoubleVector): {arrays or 'none'} "
                    "here"
                )
            if column not in read:
                raise ArgumentError(
                    f"{where}: pad_to names array column {column!r}, which is not read (features, label and "
                    f"sample_weight read {read})"
                )
    return {c: Padding(n, options.padding, options.truncating) for c, n in lengths.items()}


def field_padding(
    arg: str, columns: Sequence[str], padded: Mapping[str, Padding], options: PadOptions | None,
    out_dtype: np.dtype, where: str,
) -> tuple[Padding | None, float]:
    """The padding and pad value of one field (``(None, 0.0)``: not padded), checking its columns pad alike.

    Raises:
        ArgumentError: the field's list pads some of its array columns and not others (its columns
            become one ``[batch, n, k]`` array), or ``pad_value`` does not fit the field's integer
            dtype (:func:`check_pad_value_fits`). Lengths that differ are ``build_layout``'s error.
    """
    paddings = [padded[c] for c in columns if c in padded]
    if not paddings or options is None:
        return None, 0.0
    if len(paddings) < len(columns):
        listed = ", ".join(f"{c!r}: {padded[c].length if c in padded else 'not padded'}" for c in columns)
        raise ArgumentError(
            f"{where}: {arg} pads some of its array columns and not others ({listed}); the columns of one list "
            f"become one [batch, n, k] array, so pad them all alike, e.g. "
            f"pad_to={dict.fromkeys(columns, paddings[0].length)}"
        )
    check_pad_value_fits(options.value, out_dtype, arg, where)
    return paddings[0], options.value


def check_pad_value_fits(value: float, out_dtype: np.dtype, arg: str, where: str) -> None:
    """Raises ArgumentError unless ``value`` can fill an ``out_dtype`` array exactly.

    An integer output takes an integer that fits it (no NaN, no fraction: ``np.full`` would wrap or
    truncate it silently).
    """
    if out_dtype.kind not in "iu":
        return
    info = np.iinfo(out_dtype)
    if not math.isfinite(value) or not float(value).is_integer() or not info.min <= int(value) <= info.max:
        raise ArgumentError(
            f"{where}: pad_value must be an integer that fits {out_dtype}, since {arg} is an {out_dtype} array "
            f"(got pad_value={value!r})"
        )
