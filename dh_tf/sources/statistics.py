"""Engine-side statistics of a table's columns: value counts, mean and variance, quantiles; integer codes.

Every statistic is computed by server-side queries (``count_by`` + ``sort``, or ``agg_by`` of
``avg`` / ``var`` / ``count_where`` / ``pct``) on an embedded ``deephaven.table.Table`` or a
remote ``pydeephaven.table.Table``; only their results (one row, or one row per distinct value) are
pulled into Python, over Arrow, never the table's rows. ``tf/adapt.py`` turns them into Keras
preprocessing state.

NOTE [ Engine statistics ]
* Nulls are left out of every statistic: ``count_by`` counts them as one group, dropped from its
  small result (cheaper than filtering every row first);
  Deephaven's ``avg``, ``var`` and ``pct`` skip nulls themselves, and ``count_where(!isNull)``
  gives each column's own count of values. The query language keeps a null null through ``(double)``
  and ``-``. NaN is a value (it makes a mean and variance NaN, as in numpy).
* Value counts are sorted by the engine by count, then value, both descending: the order of Keras'
  ``IndexLookup.finalize_state`` (``np.lexsort((tokens, counts))[::-1]``). Strings compare as Java
  Strings (UTF-16 code units) in the engine and as UTF-8 bytes in Keras; the two orders differ only
  between characters above U+FFFF and characters U+E000-U+FFFF, so the vocabulary pulled is sorted
  again by UTF-8 bytes (cheap: one row per value). Where ``max_values`` cuts through a run of equal
  counts holding both kinds of characters, which values make the cut follows the engine's order.
* Moments are never the engine's ``avg`` / ``var`` of a column itself: ``avg`` of a ``long`` sums in
  a Java long, which wraps (200K values near 1.7e18 gave a mean of 4.03e13), and ``var`` is
  ``(sum(x**2) - sum(x)**2 / n) / (n - 1)`` in doubles, which cancels when the mean is far from zero
  next to the spread (``1e9 + {0, 1}`` gave 21642.6 for 0.25). :func:`moments` shifts first: a pilot
  ``p`` per column, the mean of the first ``PILOT_ROWS`` rows as doubles, goes to the server as a
  one-row table joined onto every row (the formula text stays the same: compiled once), and one
  ``agg_by`` takes ``avg``, ``var`` and ``count_where(!isNull)`` of ``D = (double)X - p``. In
  ``sources/moment_sums.py``: mean ``p + avg(D)``, population variance ``var(D) * (n - 1) / n``, never
  negative; where ``avg(D)**2 / var`` (the rounding's growth) passes ``PILOT_SPREAD``, the mean is the
  pilot of another pass. So the precision does not depend on the pilot: numpy float64's mean and
  variance, also for longs near 2^63 (each converted to a double first, as numpy's ``astype``).
  The shift costs a formula per value: ``adapt(Normalization)`` of 8 double columns of 2M rows took
  0.25 s instead of 0.095 s of the engine's own ``avg`` / ``var`` (median of 10 calls, 2 cores).
* ``pct(p)`` is the value at 0-based rank ``round(p * (n - 1))`` of the sorted non-null values
  (measured: ``pct(0.5)`` of ten values is the sixth, ``pct(0.6)`` of 500 the 300th), so cut points
  at ``k / bins`` give equal-frequency bins under ``numpy.digitize`` up to one row per bin (and up to
  ties). It is exact (the engine keeps the sorted values of the column: memory grows with its
  distinct values); pydeephaven has no ``approx_pct``, so both sources use ``pct``.
* A refreshing table is aggregated as it is (the engine keeps the aggregation consistent) and the
  small result is snapshotted before it is read: one consistent set of rows per statistic. The
  moments of all columns are one ``agg_by`` (every pass reduces every column), so they are of one
  update cycle; the pilot may be of an earlier one (it only shifts).
* Intermediate tables are released at once: embedded ones by a liveness scope, remote exports one
  by one (``close()``) on every way out.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from dh_tf.errors import ArgumentError, ArgumentTypeError
from dh_tf.sources import open_source
from dh_tf.sources.column_types import STRING_TYPE, arrow_type
from dh_tf.sources.moment_sums import Moments, converged_moments
from dh_tf.sources.remote import release_export

INTEGER_TYPES = ("byte", "short", "int", "long")
NUMERIC_TYPES = (*INTEGER_TYPES, "float", "double")
VOCABULARY_TYPES = (STRING_TYPE, *INTEGER_TYPES)
PILOT_ROWS = 65_536
"""The first rows, whose mean is the first shift of :func:`moments` (NOTE [ Engine statistics ])."""


def column_types(table: Any, where: str) -> dict[str, str]:
    """Column name -> Deephaven type name (``double``, ``java.lang.String``, ...) of ``table``.

    Raises:
        ArgumentTypeError: ``table`` is not a ``deephaven.table.Table`` or ``pydeephaven.table.Table``.
        ArgumentError: a pydeephaven table whose Session or table is closed.
    """
    return dict(_Query(table, where).types)


def check_column(types: dict[str, str], column: Any, allowed: Sequence[str], what: str, where: str) -> str:
    """``column`` if ``types`` has it with one of the ``allowed`` types.

    Raises:
        ArgumentTypeError: ``column`` is not a str, or its type is not allowed (naming both).
        ArgumentError: no such column (the message lists the table's columns).
    """
    if not isinstance(column, str):
        raise ArgumentTypeError(f"{where}: a column name must be a str (got {column!r} of type {type(column).__name__})")
    if column not in types:
        raise ArgumentError(f"{where}: no column {column!r} in the table (its columns: {list(types)})")
    if types[column] not in allowed:
        raise ArgumentTypeError(
            f"{where}: column {column!r} has type {types[column]}; {what} needs one of {', '.join(allowed)}"
        )
    return column


def value_counts(
    table: Any, column: str, where: str, *, max_values: int | None = None, min_count: int = 1,
    exclude: Sequence[Any] = (),
) -> tuple[list[Any], np.ndarray]:
    """The distinct non-null values of ``column`` and their counts, by descending count then value.

    Args:
        table: an embedded or pydeephaven table.
        column: a String or integer column (checked).
        where: the caller's name, for messages.
        max_values: at most this many values (the first ones), or all.
        min_count: only values seen at least this often.
        exclude: values left out before ``max_values`` is applied (Keras' mask and OOV tokens).

    Returns:
        ``(values, counts)``: a list of str or int, and an int64 array of the same length.

    Raises:
        ArgumentTypeError, ArgumentError: see :func:`check_column`; a bad table.
        RemoteReadError: a remote server failed.
    """
    query = _Query(table, where)
    check_column(query.types, column, VOCABULARY_TYPES, "a vocabulary", where)
    count = "Count" if column != "Count" else "CountOf"
    # Nulls are one group of count_by, dropped from the small result below: a filter over every row first
    # took 25-30% longer (1.35 vs 1.0 s on 20M Strings, NOTE [ Engine statistics ]).
    steps: list[Callable[[Any], Any]] = [lambda t: t.count_by(count, by=[column])]
    if min_count > 1:
        steps.append(lambda t: t.where(f"{count} >= {int(min_count)}"))
    steps.append(lambda t: query.sort_descending(t, [count, column]))
    if max_values is not None:
        steps.append(lambda t: t.head(int(max_values) + len(exclude) + 1))  # + 1: the nulls' group
    result = query.run(steps, f"counting the values of column {column!r}")
    values = result.column(column).to_pylist()
    counts = result.column(count).to_numpy().astype(np.int64)
    excluded = set(exclude)
    pairs = [(value, int(n)) for value, n in zip(values, counts) if value is not None and value not in excluded]
    if query.types[column] == STRING_TYPE:  # NOTE [ Engine statistics ]: Keras orders strings by UTF-8 bytes
        pairs.sort(key=lambda pair: (pair[1], pair[0].encode("utf-8")), reverse=True)
    if max_values is not None:
        pairs = pairs[:max_values]
    return [value for value, _ in pairs], np.array([n for _, n in pairs], dtype=np.int64)


def moments(table: Any, columns: Sequence[str], where: str) -> Moments:
    """Each numeric column's non-null count, mean and population variance, computed stably in the engine.

    The values are shifted by a pilot (the mean of the table's first rows) and reduced as doubles
    (NOTE [ Engine statistics ]): the result equals numpy float64 ``mean`` / ``var`` of the non-null
    values, also for longs near 2^63 and for doubles far from zero. NaN is a value (it makes the mean
    and variance NaN); a column with no values has a NaN mean and variance.

    Example:
        ``moments(table, ["Price"], "adapt")`` of prices ``1e9`` and ``1e9 + 1`` is count 2, mean
        ``1e9 + 0.5``, variance 0.25.

    Raises:
        ArgumentTypeError, ArgumentError: see :func:`check_column`; a bad table.
        RemoteReadError: a remote server failed.
    """
    query = _Query(table, where)
    for column in columns:
        check_column(query.types, column, NUMERIC_TYPES, "a mean and variance", where)
    if not columns:
        return Moments(count=np.zeros(0, dtype=np.int64), mean=np.zeros(0), variance=np.zeros(0))
    prefix = _unused_prefix(query.types)
    agg = query.agg
    refreshing = bool(query.table.is_refreshing)
    doubles = [f"{prefix}X{i} = (double){column}" for i, column in enumerate(columns)]
    head = query.aggregate(
        [agg.avg([f"{prefix}X{i}" for i in range(len(columns))])], f"averaging the first rows of columns {list(columns)}",
        before=[lambda t: t.head(PILOT_ROWS), lambda t: t.update_view(doubles)],
    )
    pilot = np.array([np.nan if head[f"{prefix}X{i}"] is None else head[f"{prefix}X{i}"] for i in range(len(columns))])

    def aggregate(pilot: np.ndarray, part: np.ndarray) -> dict[str, Any]:
        import pyarrow as pa

        shifts = pa.table({f"{prefix}Pilot{i}": pa.array([float(pilot[i])], type=pa.float64()) for i in part})
        shifted = [f"{prefix}D{i} = (double){columns[i]} - {prefix}Pilot{i}" for i in part]
        aggregations = [
            agg.avg([f"{prefix}Mean{i} = {prefix}D{i}" for i in part]),
            agg.var([f"{prefix}Var{i} = {prefix}D{i}" for i in part]),
            *(agg.count_where(f"{prefix}Count{i}", f"!isNull({columns[i]})") for i in part),
        ]
        return query.aggregate(aggregations, f"averaging columns {[columns[i] for i in part]}", constants=shifts,
                               before=[lambda t: t.update_view(shifted)])

    def shifted_pass(pilot: np.ndarray, which: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # NOTE [ Parallel moments ]: one aggregation per core over its share of the columns of a static
        # embedded table; one aggregation of a refreshing table's columns (one update cycle).
        parts = 1 if query.remote is not None or refreshing else min(len(which), os.cpu_count() or 1)
        row: dict[str, Any] = {}
        for result in _on_threads(lambda part: aggregate(pilot, part), [which[k::parts] for k in range(parts)]):
            row.update(result)

        def values(name: str, missing: float) -> np.ndarray:  # None: no rows (or only nulls)
            return np.array([missing if row[f"{prefix}{name}{i}"] is None else row[f"{prefix}{name}{i}"] for i in which],
                            dtype=np.float64)

        return values("Count", 0).astype(np.int64), values("Mean", np.nan), values("Var", np.nan)

    return converged_moments(shifted_pass, pilot, all_columns=refreshing)


def with_codes(table: Any, column: str, values: Sequence[Any], name: str, where: str) -> Any:
    """``table`` with an int32 column ``name``: 1 + the index of the row's ``column`` value in ``values``,
    0 for a null or a value not in ``values``; computed in the engine (NOTE [ Integer codes ]).

    NOTE [ Integer codes ]
    The codes are what ``StringLookup(vocabulary=values)`` / ``IntegerLookup(vocabulary=values,
    mask_token=None)`` return (one OOV index, 0, no mask), but made by the engine: ``values`` go to
    the server as a two-column table (one Arrow upload, one row per value), and ``natural_join`` plus
    one ``update_view`` add the code to every row. Reading an int32 column costs a fraction of
    reading a String one (no Python object per row, and the epoch cache can hold it): the fast path
    for a categorical feature when the read path is the bottleneck. The result is a table like any
    other (filter it, read it, follow it if the source ticks).

    Raises:
        ArgumentTypeError, ArgumentError: see :func:`check_column`; ``name`` is already a column; a
            value of ``values`` does not fit the column's type; a bad table.
        RemoteReadError: a remote server failed.
    """
    import pyarrow as pa

    query = _Query(table, where)
    check_column(query.types, column, VOCABULARY_TYPES, "integer codes", where)
    if name in query.types:
        raise ArgumentError(f"{where}: the table already has a column {name!r}; pass another name=")
    try:
        keys = pa.array(list(values), type=arrow_type(query.types[column]))
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as error:
        raise ArgumentTypeError(
            f"{where}: the vocabulary does not fit column {column!r} ({query.types[column]}): {error}"
        ) from error
    lookup = pa.table({column: keys, name: pa.array(range(1, len(keys) + 1), type=pa.int32())})
    coalesce = f"{name} = isNull({name}) ? (int)0 : {name}"
    if query.remote is None:
        from deephaven.arrow import to_table

        return table.natural_join(to_table(lookup), on=[column], joins=[name]).update_view([coalesce])
    with query.released() as keep:
        try:
            uploaded = keep(table.session.import_table(lookup))
            joined = keep(table.natural_join(uploaded, on=[column], joins=[name]))
            return joined.update_view([coalesce])  # the caller's; the upload and the join are released
        except Exception as error:
            raise query.remote.read_error(f"joining integer codes of column {column!r}", error) from error


def _unused_prefix(types: dict[str, str]) -> str:
    """A prefix of the columns a query adds that no column of the table starts with."""
    prefix = "DhTf"
    while any(name.startswith(prefix) for name in types):
        prefix += "_"
    return prefix


def _on_threads(work: Callable[[Any], Any], parts: Sequence[Any]) -> list[Any]:
    """``[work(part) for part in parts]``, each part on a thread of its own (in this thread's execution context).

    NOTE [ Parallel moments ]
    One ``agg_by`` runs on one engine thread, and a table bigger than the heap is decoded from
    Parquet column by column as the aggregation reads it, so on a static embedded table the mean and
    variance of many columns are one aggregation per core over its share of the columns, run at
    once (Java releases the GIL): measured 1.5x faster for 16 float32 columns of a 20M-row Parquet
    table on 2 cores (2.03 s vs 3.02 s, before the shift of NOTE [ Engine statistics ]). Not a
    refreshing table: aggregations started apart see different update cycles, so its columns are one
    aggregation. A remote table is left to its server (one request).
    The first error of any part is raised, after every thread has ended.
    """
    if len(parts) == 1:
        return [work(parts[0])]
    from deephaven.execution_context import get_exec_ctx

    from dh_tf.sources.jvm_threads import entered

    context = get_exec_ctx()
    results: list[Any] = [None] * len(parts)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            with entered(context):
                results[index] = work(parts[index])
        except BaseException as error:  # re-raised on the calling thread below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(index,), name=f"dh_tf-moments-{index}") for index in range(len(parts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


def quantiles(table: Any, column: str, fractions: Sequence[float], where: str) -> tuple[np.ndarray, int]:
    """The engine's exact ``pct`` of ``column`` at each fraction, and the column's non-null count.

    Returns:
        ``(values, count)``: float64 values (NaN when the column has no values), in ``fractions`` order.

    Raises:
        ArgumentTypeError, ArgumentError: see :func:`check_column`; a bad table.
        RemoteReadError: a remote server failed.
    """
    query = _Query(table, where)
    check_column(query.types, column, NUMERIC_TYPES, "quantiles", where)
    agg = query.agg
    aggregations = [agg.pct(float(p), [f"DhTfPct{i} = {column}"]) for i, p in enumerate(fractions)]
    aggregations.append(agg.count_where("DhTfCount", f"!isNull({column})"))
    row = query.aggregate(aggregations, f"quantiles of column {column!r}")
    values = [row[f"DhTfPct{i}"] for i in range(len(fractions))]
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64), int(row["DhTfCount"] or 0)


class _Query:
    """One statistic's server-side query on an embedded or remote table (NOTE [ Engine statistics ])."""

    def __init__(self, table: Any, where: str) -> None:
        source = open_source(table, where)
        if source is table:  # open_source passes a TableSource through: not a table
            raise ArgumentTypeError(
                f"{where}: table must be a deephaven.table.Table or pydeephaven.table.Table "
                f"(got {type(table).__name__})"
            )
        self.table = table
        self.types = dict(source.column_types)
        self.remote = source if type(table).__module__.startswith("pydeephaven") else None
        if self.remote is None:
            from deephaven import agg
        else:
            from pydeephaven import agg
        self.agg = agg

    def sort_descending(self, table: Any, columns: list[str]) -> Any:
        """``table`` sorted by ``columns``, each descending.

        pydeephaven's own ``sort_descending`` makes only the first column descending (it pairs one
        direction with the first name), so remote tables name a direction per column.
        """
        if self.remote is None:
            return table.sort_descending(columns)
        from pydeephaven import SortDirection

        return table.sort(columns, [SortDirection.DESCENDING] * len(columns))

    def aggregate(
        self, aggregations: list[Any], doing: str, *, before: Sequence[Callable[[Any], Any]] = (),
        constants: Any = None,
    ) -> dict[str, Any]:
        """The one row of ``agg_by(aggregations)`` over the table after ``before``, as a dict (see :meth:`run`)."""
        result = self.run([*before, lambda t: t.agg_by(aggregations, by=[])], doing, constants=constants)
        return {name: values[0] if values else None for name, values in result.to_pydict().items()}

    def run(self, steps: Sequence[Callable[[Any], Any]], doing: str, *, constants: Any = None) -> Any:
        """Applies ``steps`` to the table server-side and returns the (small) result as a pyarrow Table.

        ``constants``, a one-row pyarrow Table, is uploaded and joined onto every row first, so that
        formulas read numbers as columns: the formula text stays the same and is compiled once.
        """
        if self.remote is None:
            from deephaven.arrow import to_arrow, to_table
            from deephaven.liveness_scope import liveness_scope

            with liveness_scope():
                result = self.table
                if constants is not None:
                    result = result.natural_join(to_table(constants), on=[])
                for step in steps:
                    result = step(result)
                return to_arrow(result.snapshot() if result.is_refreshing else result)
        with self.released() as keep:
            try:
                result = self.table
                if constants is not None:
                    result = keep(result.natural_join(keep(self.table.session.import_table(constants)), on=[]))
                for step in steps:
                    result = keep(step(result))
                if result.is_refreshing:
                    result = keep(result.snapshot())
                return result.to_arrow()
            except Exception as error:
                raise self.remote.read_error(doing, error) from error

    @contextlib.contextmanager
    def released(self) -> Iterator[Callable[[Any], Any]]:
        """Yields ``keep(export)``, which records a server-side export to release on exit."""
        self.remote.check_open("reading statistics")
        exports: list[Any] = []

        def keep(exported: Any) -> Any:
            exports.append(exported)
            return exported

        try:
            yield keep
        finally:
            for exported in reversed(exports):
                release_export(exported)
