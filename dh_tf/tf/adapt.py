"""Keras preprocessing layers adapted from engine aggregations: ``vocabulary``, ``integer_codes`` and ``adapt``.

The statistics are computed server-side by ``sources/statistics.py`` (only their small results
reach Python); this module only talks to Keras, imported when first called.

NOTE [ Adapting from the engine ]
``adapt(layer, table, columns)`` gives the layer the state ``layer.adapt(rows)`` would give it on the
table's rows, without reading the rows:

* ``Normalization``: each column's mean and population variance (engine ``avg`` / ``var``,
  NOTE [ Engine statistics ]) go where Keras' own ``adapt`` puts them (``adapt_mean``,
  ``adapt_variance``, then ``finalize_state()``); ``count`` gets the most non-null values of any
  column. ``axis=-1`` gives one mean and variance per column (inputs ``[batch, k]``, what
  ``to_dataset(table, columns)`` makes for a list of ``k`` columns); ``axis=None`` gives one over
  the values of all the columns (pooled exactly from the per-column figures), for any input shape.
* ``StringLookup`` / ``IntegerLookup``: the column's values by descending count, ties by descending
  value (Keras' own order), the mask and OOV tokens left out and cut at ``max_tokens`` minus the
  OOV and mask indices, exactly as ``finalize_state`` does, then ``layer.set_vocabulary``.
* ``Discretization(num_bins=k)``: the ``k - 1`` cut points are the engine's exact quantiles at
  ``1/k, ..., (k-1)/k``, so each bin holds an equal share of the rows (up to ties); Keras' own adapt
  computes approximate quantiles (``epsilon``), so its boundaries differ slightly.

Nulls are left out of every statistic (a null is no value; Keras has no nulls to see): filter or
fill them with DQL first to count them otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from dh_tf.checks import int_arg, optional_int_arg
from dh_tf.errors import ArgumentError, ArgumentTypeError, MissingDependencyError
from dh_tf.sources import statistics
from dh_tf.sources.column_types import STRING_TYPE
from dh_tf.sources.statistics import INTEGER_TYPES

SUPPORTED_LAYERS = ("Normalization", "StringLookup", "IntegerLookup", "Discretization")


def vocabulary(table: Any, column: str, *, max_tokens: int | None = None, min_count: int = 1) -> list[Any]:
    """The distinct non-null values of ``column`` by descending count, ties as Keras breaks them.

    Computed by the engine (``count_by`` + ``sort``, server-side for a remote table); only the
    vocabulary, one row per value, reaches Python (NOTE [ Engine statistics ]).

    Args:
        table: an embedded ``deephaven.table.Table`` or a ``pydeephaven.table.Table``.
        column: a String or integer (``byte``, ``short``, ``int``, ``long``) column.
        max_tokens: at most this many values (the most frequent); unlike a Keras layer's
            ``max_tokens`` it counts no OOV or mask index. None: all.
        min_count: only values seen at least this many times.

    Returns:
        A list of str (String column) or int, most frequent first; ties by descending value, as
        ``StringLookup.adapt`` / ``IntegerLookup.adapt`` order them.

    Raises:
        ArgumentTypeError: ``table`` is not a table, ``column`` not a str or of another type,
            ``max_tokens`` / ``min_count`` not ints.
        ArgumentError: no such column, ``max_tokens`` or ``min_count`` < 1.
        RemoteReadError: the remote server failed.
    """
    max_tokens = optional_int_arg(max_tokens, "max_tokens", "vocabulary", minimum=1)
    min_count = int_arg(min_count, "min_count", "vocabulary", minimum=1)
    values, _ = statistics.value_counts(table, column, "vocabulary", max_values=max_tokens, min_count=min_count)
    return values


def integer_codes(table: Any, column: str, *, vocabulary: Sequence[Any] | None = None, name: str | None = None) -> Any:
    """``table`` with an int32 column of codes for ``column``'s values, computed in the engine.

    The code of a row is 1 + the index of its value in ``vocabulary``, and 0 for a null or a value
    not in it: exactly what ``keras.layers.StringLookup(vocabulary=vocabulary)`` (or
    ``IntegerLookup(vocabulary=vocabulary, mask_token=None)``) returns for that value, so
    ``keras.layers.Embedding(len(vocabulary) + 1, d)`` takes the codes as they come. Reading an
    int32 column is much cheaper than reading a String (``benchmarks/strings.py``) and the epoch
    cache can hold it (NOTE [ Integer codes ]).

    Args:
        table: an embedded ``deephaven.table.Table`` or a ``pydeephaven.table.Table``.
        column: a String or integer (``byte``, ``short``, ``int``, ``long``) column.
        vocabulary: the values to code; None: ``dh_tf.vocabulary(table, column)`` (computed in the engine).
        name: the new column's name; None: ``column + "Code"``.

    Returns:
        A new table of the same kind: ``table``'s columns and the codes (``natural_join`` + ``update_view``).

    Raises:
        ArgumentTypeError: ``table`` is not a table, ``column`` is not a str or of another type,
            ``name`` is not a str, or a vocabulary value does not fit the column's type.
        ArgumentError: no such column, or ``name`` is already one.
        RemoteReadError: the remote server failed.

    Example:
        >>> trades = dh_tf.integer_codes(trades, "Sym")              # adds SymCode: 1.. by frequency, 0 = null
        >>> ds = dh_tf.to_dataset(trades, {"sym": "SymCode", "num": ["Price"]}, "Label", cache=True)
    """
    if name is None:
        name = f"{column}Code" if isinstance(column, str) else ""
    if not isinstance(name, str) or not name.isidentifier():
        raise ArgumentTypeError(f"integer_codes: name must be a column name (a str identifier), got {name!r}")
    if vocabulary is None:
        vocabulary = statistics.value_counts(table, column, "integer_codes")[0]
    elif isinstance(vocabulary, (str, bytes)) or not isinstance(vocabulary, Sequence):
        raise ArgumentTypeError(
            f"integer_codes: vocabulary must be a list of the column's values (got {type(vocabulary).__name__})"
        )
    return statistics.with_codes(table, column, vocabulary, name, "integer_codes")


def adapt(layer: Any, table: Any, columns: str | Sequence[str]) -> Any:
    """Adapts a Keras preprocessing layer from engine aggregations of ``table`` and returns it.

    The layer gets the state its own ``layer.adapt`` would compute from the same rows (NOTE
    [ Adapting from the engine ]); the table's rows are never read into Python.

    Args:
        layer: a ``keras.layers.Normalization``, ``StringLookup``, ``IntegerLookup`` or
            ``Discretization`` (made with ``num_bins``).
        table: an embedded ``deephaven.table.Table`` or a ``pydeephaven.table.Table``.
        columns: one column name, or a list of them. Normalization takes numeric columns
            (``byte short int long float double``); StringLookup one String column; IntegerLookup
            one integer column; Discretization one numeric column.

    Returns:
        ``layer``, adapted.

    Raises:
        ArgumentTypeError: another kind of layer (naming the supported ones), a bad table, a
            column name that is not a str, a column of a type the layer cannot take (naming it).
        ArgumentError: no such column, no columns, several columns for a one-column layer, a
            column without a non-null value, a layer that cannot be adapted as it is made
            (Normalization with fixed ``mean``, Discretization with ``bin_boundaries``, a
            ``tf_idf`` lookup, ``max_tokens`` leaving no room for a value).
        MissingDependencyError: Keras is not installed.
        RemoteReadError: the remote server failed.
    """
    keras = _keras()
    names = _column_names(columns)
    layers = keras.layers
    if isinstance(layer, layers.Normalization):
        _adapt_normalization(layer, table, names, single=isinstance(columns, str))
    elif isinstance(layer, (layers.StringLookup, layers.IntegerLookup)):
        _adapt_lookup(layer, table, _one(names, type(layer).__name__), isinstance(layer, layers.StringLookup))
    elif isinstance(layer, layers.Discretization):
        _adapt_discretization(layer, table, _one(names, "Discretization"))
    else:
        raise ArgumentTypeError(f"adapt: layer must be one of {', '.join(SUPPORTED_LAYERS)} (got {type(layer).__name__})")
    return layer


def _adapt_normalization(layer: Any, table: Any, columns: list[str], *, single: bool) -> None:
    if getattr(layer, "input_mean", None) is not None:
        raise ArgumentError(
            "adapt: this Normalization layer was made with mean= and variance=; make it without them to adapt it"
        )
    axis = tuple(layer.axis)
    if axis not in ((), (-1,), (1,)):
        raise ArgumentError(
            "adapt: Normalization axis must be -1 (one mean and variance per column) or None (one over all "
            f"columns) (got axis={layer.axis})"
        )
    k = len(columns)
    if layer.built and axis and tuple(layer._build_input_shape[d] for d in layer._keep_axis) != (k,):
        raise ArgumentError(
            f"adapt: the Normalization layer was built for inputs of shape {tuple(layer._build_input_shape)}, "
            f"which do not have one feature per column of {columns}"
        )
    found = statistics.moments(table, columns, "adapt")  # checks the columns before the layer changes
    _require_values(columns, found.count)
    if not layer.built:
        layer.build((None,) if single and not axis else (None, k))
    mean, variance = found.mean, found.variance
    if not axis:  # one mean and variance over every value of every column, pooled exactly
        weights = found.count / found.count.sum()
        mean = np.array(np.sum(weights * found.mean))
        variance = np.array(np.sum(weights * (found.variance + (found.mean - mean) ** 2)))
    layer.adapt_mean.assign(np.asarray(mean, dtype=layer.adapt_mean.dtype))
    layer.adapt_variance.assign(np.asarray(variance, dtype=layer.adapt_variance.dtype))
    layer.count.assign(np.asarray(found.count.max(), dtype=layer.count.dtype))
    layer.finalize_state()


def _adapt_lookup(layer: Any, table: Any, column: str, is_string: bool) -> None:
    if layer.output_mode == "tf_idf":
        raise ArgumentError(
            "adapt: a lookup layer with output_mode='tf_idf' needs document frequencies, which adapt does not "
            "compute; use output_mode 'int', 'one_hot', 'multi_hot' or 'count'"
        )
    allowed = (STRING_TYPE,) if is_string else INTEGER_TYPES
    statistics.check_column(statistics.column_types(table, "adapt"), column, allowed, type(layer).__name__, "adapt")
    # Keras' IndexLookup: index 0 is the mask when there is a mask token (output_mode "int"), then the OOV indices.
    token_start = (1 if layer.mask_token is not None and layer.output_mode == "int" else 0) + layer.num_oov_indices
    max_values = layer.max_tokens - token_start if layer.max_tokens else None
    if max_values is not None and max_values < 1:
        raise ArgumentError(
            f"adapt: {type(layer).__name__} max_tokens={layer.max_tokens} leaves no room for a value after its "
            f"{token_start} mask and OOV indices"
        )
    special = [token for token in (layer.mask_token, layer.oov_token) if token is not None]
    values, _ = statistics.value_counts(table, column, "adapt", max_values=max_values, exclude=special)
    if not values:
        raise ArgumentError(f"adapt: column {column!r} has no non-null value to make a vocabulary of")
    layer.set_vocabulary(values)


def _adapt_discretization(layer: Any, table: Any, column: str) -> None:
    if layer.num_bins is None:
        raise ArgumentError(
            "adapt: this Discretization layer was made with bin_boundaries=; make it with num_bins= to adapt it"
        )
    bins = int(layer.num_bins)
    values, count = statistics.quantiles(table, column, [k / bins for k in range(1, bins)], "adapt")
    _require_values([column], np.array([count]))
    layer.bin_boundaries = [float(v) for v in values]


def _column_names(columns: Any) -> list[str]:
    if isinstance(columns, str):
        return [columns]
    if not isinstance(columns, (list, tuple)) or not all(isinstance(c, str) for c in columns):
        raise ArgumentTypeError(f"adapt: columns must be a column name or a list of them (got {columns!r})")
    if not columns:
        raise ArgumentError("adapt: columns must name at least one column (got an empty list)")
    if len(set(columns)) != len(columns):
        raise ArgumentError(f"adapt: columns must not repeat a column (got {list(columns)})")
    return list(columns)


def _one(columns: list[str], layer_name: str) -> str:
    if len(columns) != 1:
        raise ArgumentError(f"adapt: a {layer_name} layer is adapted from one column (got {columns})")
    return columns[0]


def _require_values(columns: Sequence[str], counts: np.ndarray) -> None:
    empty = [c for c, n in zip(columns, counts) if n == 0]
    if empty:
        raise ArgumentError(f"adapt: column {empty[0]!r} has no non-null value (a table with no rows, or only nulls)")


def _keras() -> Any:
    try:
        import keras
    except ImportError as e:
        raise MissingDependencyError("dh_tf.adapt adapts Keras layers: pip install tensorflow (or keras)") from e
    return keras
