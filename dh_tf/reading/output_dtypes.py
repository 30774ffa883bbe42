"""The numpy dtype of each feature input: the default, checked ``dtype`` values, and a ``dtype`` dict per input.

:func:`~dh_tf.reading.layout.build_layout` asks this module which dtype an argument names
(:func:`numeric_dtype`) and which feature inputs a ``dtype`` dict gives which dtype (:func:`feature_dtypes`);
the rules of labels, String and timestamp columns stay in the layout and in ``sources/column_types.py``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dh_tf.errors import ArgumentError, ArgumentTypeError

DEFAULT_DTYPE = np.dtype("float32")
"""The dtype of the features a ``dtype`` dict does not name, and of non-integer labels and weights beside one."""

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
    checked = {k: numeric_dtype(v, f"dtype[{k!r}]", where) for k, v in dtype.items()}
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


def numeric_dtype(dtype: Any, arg: str, where: str) -> np.dtype:
    """``dtype`` as a numpy dtype; ``arg`` names the argument that passed it and ``where`` the caller, for messages.

    Raises:
        ArgumentTypeError: ``dtype`` is not a numpy dtype, or not of the int, uint or float kinds.
    """
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
