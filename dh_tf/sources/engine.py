"""The embedded-engine source: a ``deephaven.table.Table`` in this process's JVM (NOTE [ Sources ]).

Reads by the fast engine path (``engine_read.py``) or, as fallback, the public
``deephaven.numpy.to_numpy``; finds nulls by Deephaven's sentinel values; opens the caller's
ExecutionContext around engine work, so readers run on threads without one (tf.data threads).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from dh_tf.errors import ArgumentError, ArgumentTypeError
from dh_tf.sources import engine_read
from dh_tf.sources.column_types import (
    ARRAY_LENGTH_PROBE_ROWS,
    ColumnKind,
    ColumnTypes,
    array_length_error,
    column_kind,
    note_read_error,
)
from dh_tf.sources.engine_strings import fix_surrogates
from dh_tf.sources.jvm_threads import entered
from dh_tf.sources.protocol import Span
from dh_tf.sources.ragged import PaddedColumn, Padding, place

PAGE_MIB = 32
"""MiB of output arrays per page when the caller gives no ``page_rows`` (NOTE [ Page size ] in
``reading/page_size.py``): large pages amortize every per-page cost."""
READ_PATHS = {"auto": None, "engine": True, "public": False}
"""read_path -> whether to use the engine fast path (None: if ``engine_read.available()``)."""


class EngineSource:
    """A table of the embedded engine, read in place (static) or from one snapshot per epoch (refreshing).

    Build it on a thread with a Deephaven ExecutionContext (the caller's); its readers may then be
    used on any thread.

    Raises:
        TypeError: ``table`` is not a ``deephaven.table.Table``, or no JVM is running.
        ValueError: ``read_path`` is not one of :data:`READ_PATHS`.
    """

    def __init__(self, table: Any, where: str, *, read_path: str = "auto") -> None:
        check_table(table, where)
        if read_path not in READ_PATHS:
            raise ArgumentError(f"{where}: read_path must be one of {list(READ_PATHS)} (got {read_path!r})")
        self.table = table
        self.column_types = ColumnTypes(
            {column.name: _type_name(column.data_type) for column in table.columns}, self.array_length
        )
        self.is_refreshing = bool(table.is_refreshing)
        self.page_mib = PAGE_MIB
        self._fast = READ_PATHS[read_path]
        self._where = where
        from deephaven.execution_context import get_exec_ctx

        self._exec_ctx = get_exec_ctx()

    def num_rows(self) -> int:
        return int(self.table.size)

    def array_length(self, column: str) -> int | None:
        """The length of the arrays of ``column``: that of its first non-null row (NOTE [ Array columns ]).

        Looks at the first :data:`~dh_tf.sources.column_types.ARRAY_LENGTH_PROBE_ROWS` rows (under the update
        graph's shared lock if the table ticks). Call it on a thread with an ExecutionContext.

        Returns:
            The length, or None when the table has no rows.

        Raises:
            ValueError: every row looked at holds a null array.
        """
        with contextlib.ExitStack() as stack:
            if self.is_refreshing:
                from deephaven.update_graph import shared_lock

                stack.enter_context(shared_lock(self.table))
            rows = self.table.j_table.getRowSet()
            if rows.isEmpty():
                return None
            source = self.table.j_table.getColumnSource(column)
            probe = min(int(rows.size()), ARRAY_LENGTH_PROBE_ROWS)
            for position in range(probe):
                value = source.get(rows.get(position))
                if value is not None:
                    return _length(value)
        raise ArgumentError(
            f"{self._where}: column {column!r} ({self.column_types[column]}) holds only null arrays in its first "
            f"{probe} rows, so its array length is unknown; drop null rows with DQL: table.where('!isNull({column})')"
        )

    def string_sizes(self, columns: Sequence[str], rows: int) -> dict[str, int]:
        """The bytes of the largest ``str`` among the first ``rows`` rows of each String column (NOTE [ Page size ]).

        Reads those rows (from a snapshot of them if the table ticks); columns with no value there are left out.
        """
        from deephaven.liveness_scope import liveness_scope

        with entered(self._exec_ctx), liveness_scope():
            head = self.table.view(list(columns)).head(rows)
            if self.is_refreshing:
                head = head.snapshot()
            return engine_read.string_sizes(head.j_table, columns, rows)

    @contextlib.contextmanager
    def open_epoch(self, columns: Sequence[str]) -> Iterator[EngineEpoch]:
        """The table itself, or a snapshot of ``columns`` if it is refreshing (NOTE [ Refreshing tables ])."""
        if not self.is_refreshing:
            yield EngineEpoch(self.table, self._kinds(columns), self._exec_ctx, self._fast)
            return
        from deephaven.liveness_scope import liveness_scope

        # The scope releases the per-epoch view (a listener on the ticking table) as soon as the
        # snapshot exists; only the static snapshot outlives it (a static table: garbage-collected as usual).
        with entered(self._exec_ctx), liveness_scope() as scope:
            snapshot = self.table.view(list(columns)).snapshot()
            scope.preserve(snapshot)
        yield EngineEpoch(snapshot, self._kinds(columns), self._exec_ctx, self._fast)

    def _kinds(self, columns: Sequence[str]) -> dict[str, ColumnKind]:
        return {name: column_kind(self.column_types[name]) for name in columns}


class EngineEpoch:
    """One epoch's static table; opens one span reader per reading thread."""

    def __init__(self, table: Any, kinds: Mapping[str, ColumnKind], exec_ctx: Any, fast: bool | None) -> None:
        self._table = table
        self._kinds = dict(kinds)
        self._exec_ctx = exec_ctx
        self._fast = engine_read.available() if fast is None else fast
        if fast is None and any(kind.is_array for kind in kinds.values()):
            self._fast = self._fast and engine_read.arrays_available()
        self.num_rows = int(table.size)

    def open_reader(self) -> EngineSpanReader:
        return EngineSpanReader(self._table, self._kinds, self._exec_ctx, self._fast)


class EngineSpanReader:
    """Reads spans of one static table; nulls found by sentinel value. One per thread (fill contexts)."""

    def __init__(self, table: Any, kinds: Mapping[str, ColumnKind], exec_ctx: Any, fast: bool) -> None:
        self._kinds = dict(kinds)
        self._exec_ctx = exec_ctx
        with entered(exec_ctx):
            self._columns: Any = (
                engine_read.EngineColumnReader(table.j_table, self._kinds) if fast else PublicColumnReader(table, kinds)
            )

    def read(
        self, spans: Sequence[Span], out: Mapping[str, np.ndarray], padded: Mapping[str, PaddedColumn] | None = None
    ) -> dict[str, np.ndarray | None]:
        # The context is thread-local and opened per read, never across a yield (docs/design.md section 2).
        with entered(self._exec_ctx):
            self._columns.read(spans, out, padded)
        masks: dict[str, np.ndarray | None] = {}
        for name, kind in self._kinds.items():
            nulls = out[name] == kind.null_value  # [rows, n] for arrays: a null array reads as n nulls
            masks[name] = nulls if nulls.any() else None
        return masks

    def close(self) -> None:
        self._columns.close()


class PublicColumnReader:
    """The fallback read path: ``deephaven.numpy.to_numpy`` on ``Table.slice`` for each span.

    Slower than the engine path (it exports Java arrays while holding the GIL), but public API.
    Boolean columns are read through a DQL view that maps true/false/null to 1/0/-128, because
    ``to_numpy`` turns a null boolean into True; timestamps and dates through views to epoch
    nanoseconds / days (NOTE [ Strings and timestamps ] in sources/column_types.py).
    """

    def __init__(self, table: Any, kinds: Mapping[str, ColumnKind]) -> None:
        self._table = table
        self._kinds = dict(kinds)

    def read(
        self, spans: Sequence[Span], out: Mapping[str, np.ndarray], padded: Mapping[str, PaddedColumn] | None = None
    ) -> None:
        """Fills ``out[name][:n]`` with each column's values at the rows of ``spans``, in order.

        The array columns in ``padded`` are fit to ``out[name].shape[1]`` (NOTE [ Ragged arrays ] in
        ``sources/ragged.py``).

        Raises:
            ArrayLengthError: a row of an array column not in ``padded`` has another length than
                ``out[name].shape[1]``.
        """
        padded = padded or {}
        from deephaven.numpy import to_numpy

        offset = 0
        for start, stop in spans:
            piece = self._table.slice(start, stop)
            for name, kind in self._kinds.items():
                if kind.is_array:
                    rows = slice(offset, offset + stop - start)
                    pad = padded.get(name)
                    if pad is None:
                        _read_public_arrays(piece, name, kind, start, out[name][rows])
                    else:
                        _read_public_padded(piece, name, kind, start, out[name][rows], pad.lengths[rows], pad.padding)
                    continue
                try:
                    formula = _PUBLIC_VIEWS.get(kind.deephaven_type)
                    view = piece if formula is None else piece.view([formula.format(c=name)])
                    values = to_numpy(view, [name])
                    if kind.is_string:  # to_numpy makes a numpy str array, with 'None' for null
                        nulls = to_numpy(piece.view([f"{name} = isNull({name})"]), [name]).reshape(-1)
                        values = np.array([fix_surrogates(v) for v in values.reshape(-1).tolist()], object)
                        values[nulls] = None
                except Exception as error:
                    note_read_error(error, name, start, stop)
                    raise
                out[name][offset : offset + stop - start] = values.reshape(-1)
            offset += stop - start

    def close(self) -> None:
        """Nothing to release; present for symmetry with the engine reader."""


_PUBLIC_VIEWS = {
    "java.lang.Boolean": "{c} = isNull({c}) ? (byte)-128 : ({c} ? (byte)1 : (byte)0)",
    "java.time.Instant": "{c} = epochNanos({c})",
    "java.time.ZonedDateTime": "{c} = epochNanos({c})",
    "java.time.LocalDate": "{c} = isNull({c}) ? NULL_INT : (int){c}.toEpochDay()",
}
"""DQL views by which the public path reads a type as the engine path does (int64 ns, int32 days, bytes)."""


def _read_public_arrays(piece: Any, name: str, kind: ColumnKind, start: int, out: np.ndarray) -> None:
    """Fills ``out`` ([rows, n]) with the arrays of column ``name`` of ``piece``, row by row (slow, public API)."""
    from deephaven.numpy import to_numpy

    try:
        values = to_numpy(piece, [name])
    except Exception as error:
        note_read_error(error, name, start, start + len(out))
        raise
    for index in range(len(out)):
        row = _public_row(values[index, 0], kind.dtype)
        if row is None:
            out[index] = kind.null_value
        elif len(row) != out.shape[1]:
            raise array_length_error(name, kind, start + index, len(row), out.shape[1])
        else:
            out[index] = row


def _read_public_padded(
    piece: Any, name: str, kind: ColumnKind, start: int, out: np.ndarray, lengths: np.ndarray, padding: Padding
) -> None:
    """Fills ``out`` ([rows, N]) with the arrays of ``name`` fit to N, ``lengths`` with the kept lengths (public API)."""
    from deephaven.numpy import to_numpy

    try:
        values = to_numpy(piece, [name])
    except Exception as error:
        note_read_error(error, name, start, start + len(out))
        raise
    rows = [_public_row(values[index, 0], kind.dtype) for index in range(len(out))]
    offsets = np.cumsum([0] + [0 if row is None else len(row) for row in rows])
    flat = np.concatenate([row for row in rows if row is not None] or [np.empty(0, dtype=kind.dtype)])
    place(flat, offsets, out, lengths, padding)
    lengths[np.array([row is None for row in rows], dtype=bool)] = -1


def _public_row(value: Any, dtype: np.dtype) -> np.ndarray | None:
    """One array cell as ``to_numpy`` returns it (a Java array, a vector, or numbers) as numpy, or None."""
    if value is None:
        return None
    if hasattr(value, "toArray"):  # a Deephaven vector
        value = value.toArray()
    if isinstance(value, np.ndarray) and value.dtype == object:
        return value.astype(dtype)
    try:
        return np.frombuffer(value, dtype=dtype).copy()  # a Java primitive array (buffer protocol)
    except TypeError:
        return np.asarray(list(value), dtype=dtype)


def _length(value: Any) -> int:
    """The length of one array cell (a Java array or a Deephaven vector)."""
    return int(value.size()) if hasattr(value, "size") and callable(value.size) else len(value)


def check_table(table: Any, where: str) -> None:
    """Raises TypeError (naming ``where``) unless ``table`` is a ``deephaven.table.Table`` of a running JVM."""
    try:
        from deephaven.table import Table
    except Exception as e:
        raise ArgumentTypeError(
            f"{where}: table must be a deephaven.table.Table (got {type(table).__name__}); "
            f"import deephaven failed ({e}), start the Deephaven server or embedded server first"
        ) from e
    if not isinstance(table, Table):
        raise ArgumentTypeError(f"{where}: table must be a deephaven.table.Table (got {type(table).__name__})")


def _type_name(data_type: Any) -> str:
    """Deephaven's type name, with Java arrays as ``double[]`` (``j_name`` reads ``[D`` for them)."""
    name = str(data_type.j_name)
    if not name.startswith("["):
        return name
    jclass = getattr(data_type.j_type, "jclass", None)
    return str(jclass.getTypeName()) if jclass is not None else name
