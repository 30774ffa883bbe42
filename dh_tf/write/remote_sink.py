"""Results back to a Deephaven server: the sinks of ``predict_table`` / ``predict_follow`` for pydeephaven tables.

NOTE [ Remote write-back ]
A trainer on another machine scores a ``pydeephaven`` table with the same output spec and scoring
loop as an embedded one (``output_spec.py``, ``scoring.py``, NOTE [ Sinks ] in ``sinks.py``); only
the sink differs, and it keeps everything on the server:

- **Static** (:class:`RemoteTableSink`, ``predict_table``): each scored group goes up as one Arrow
  table (``session.import_table``: one Flight ``DoPut``), so the trainer holds one group, never the
  result. With ``keep``, the group carries its row positions (``__dh_tf_row``) and is paired on the
  server with the same positions of the input: ``slice(offset, offset + rows).view([*keep,
  "__dh_tf_row = ii"]).natural_join(piece, on="__dh_tf_row")``, so kept columns of any type (String,
  Instant, arrays) never leave the server. ``finish`` merges the pieces (``merge_tables``: one
  server-side table, row ``i`` = input row ``i``), drops the position column and, with ``bind_as``,
  binds the result in the server's scope. Every temporary export (slice, view, piece, join, merge)
  is released as soon as a later table holds it (the server keeps what a result depends on), and
  all of them on every error (``abort``): a failure, or a connection that drops mid-upload, leaves
  nothing bound, since binding is the very last step.
- **Live** (:class:`RemoteLiveSink`, ``predict_follow``): an append-only input table
  (``session.input_table(schema)``; its schema marks it ``AppendOnly``, so it ticks like
  ``blink_to_append_only`` does embedded) gets each scored batch with ``add`` (``import_table``, then
  ``AddTableToInputTable``, then the upload is released): rows appear in scoring order, the trainer
  holds one batch. A client cannot fail a server table, so an error stops scoring and is kept in
  ``LivePredictions.error``.

Column types: predictions as NOTE [ Output column types ] (numpy -> Arrow -> the same Deephaven
type), kept live columns as read by the follower (Boolean as 1 / 0 / null, Instant as epoch
nanoseconds) and sent back as Arrow ``bool`` / ``timestamp[ns, UTC]``. Numeric values equal to
Deephaven's null sentinels read as null on the server, as embedded.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from dh_tf.errors import ArgumentError, ArgumentTypeError, RemoteWriteError
from dh_tf.sources.column_types import COLUMN_KINDS, arrow_type
from dh_tf.sources.remote import describe_error, release_export

ROW_COLUMN = "__dh_tf_row"
"""The position column a static piece carries to be paired with the kept columns (dropped from the result)."""


def is_remote(table: Any) -> bool:
    """Whether ``table`` is a pydeephaven object (decided without importing pydeephaven)."""
    return type(table).__module__.startswith("pydeephaven")


def bind_as_arg(bind_as: Any, where: str) -> str | None:
    """``bind_as`` checked: None or a Python identifier (the name a server-side table is bound to).

    Raises:
        ArgumentTypeError: not a string or None.
        ArgumentError: not an identifier.
    """
    if bind_as is None:
        return None
    if not isinstance(bind_as, str):
        raise ArgumentTypeError(f"{where}: bind_as must be a name or None (got {bind_as!r} of type {type(bind_as).__name__})")
    if not bind_as.isidentifier():
        raise ArgumentError(f"{where}: bind_as must be a Python identifier (got {bind_as!r})")
    return bind_as


def server_of(session: Any) -> str:
    """``host:port`` of a pydeephaven Session, for messages."""
    return f"{session.host}:{session.port}"


def write_error(where: str, session: Any, doing: str, error: BaseException) -> RemoteWriteError:
    """The error to raise (chained to ``error``) when ``doing`` on the server failed."""
    return RemoteWriteError(
        f"{where}: {doing} on Deephaven server {server_of(session)} failed: {describe_error(error)}"
    )


def call(where: str, session: Any, doing: str, make: Any) -> Any:
    """``make()`` (a pydeephaven call), its errors raised as :class:`RemoteWriteError` naming the server."""
    if not session.is_connected:
        raise RemoteWriteError(
            f"{where}: {doing} on Deephaven server {server_of(session)} failed: the pydeephaven Session is closed"
        )
    try:
        return make()
    except Exception as error:
        raise write_error(where, session, doing, error) from error


def arrow_table(columns: Mapping[str, np.ndarray], kinds: Mapping[str, str] | None = None) -> Any:
    """The columns as one Arrow table; ``kinds`` (name -> Deephaven type) for Boolean / Instant columns.

    Numeric arrays go as they are (no copy); Boolean values are 1 / 0 / Deephaven's byte null,
    Instant values epoch nanoseconds / ``NULL_LONG`` (NOTE [ Remote write-back ]).
    """
    import pyarrow as pa

    arrays, fields = [], []
    for name, values in columns.items():
        kind = (kinds or {}).get(name)
        if kind == "java.lang.Boolean":
            null = COLUMN_KINDS["byte"].null_value
            array = pa.array(values == 1, type=pa.bool_(), mask=values == null)
        elif kind == "java.time.Instant":
            array = pa.array(values, type=arrow_type(kind), mask=values == COLUMN_KINDS["long"].null_value)
        else:
            array = pa.array(values)
        arrays.append(array)
        fields.append(pa.field(name, array.type))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


@contextlib.contextmanager
def remote_static(table: Any, columns: list[str], where: str) -> Iterator[Any]:
    """The table itself if static, else one server-side snapshot of ``columns``, released on exit."""
    if not table.is_refreshing:
        yield table
        return
    session = table.session
    view = call(where, session, "snapshotting the input", lambda: table.view(columns))
    try:
        snapshot = call(where, session, "snapshotting the input", view.snapshot)
    finally:
        release_export(view)
    try:
        yield snapshot
    finally:
        release_export(snapshot)


class RemoteTableSink:
    """Scored groups uploaded page by page, paired with the kept columns on the server (NOTE [ Remote write-back ]).

    ``write`` / ``finish`` / ``abort`` as the static sinks of ``sinks.py``; one thread.

    Args:
        static: the static pydeephaven table being scored (the input or its snapshot).
        keep: input columns carried into the result, any type.
        where: the caller's name, for messages.
        bind_as: a name to bind the result to in the server's scope, or None.
    """

    def __init__(self, static: Any, keep: list[str], where: str, *, bind_as: str | None = None) -> None:
        self._static, self._keep, self._where, self._bind_as = static, keep, where, bind_as
        self._session = static.session
        self._row = ROW_COLUMN
        while self._row in keep:
            self._row += "_"
        self._pieces: list[Any] = []
        self._temporary: list[Any] = []  # exports made by the step in progress, released by abort

    def _call(self, doing: str, make: Any) -> Any:
        made = call(self._where, self._session, doing, make)
        self._temporary.append(made)
        return made

    def write(self, offset: int, columns: Mapping[str, np.ndarray]) -> None:
        """Uploads one group (its rows are input positions ``[offset, offset + rows)``).

        Raises:
            RemoteWriteError: the upload or the server-side pairing failed (names the server and rows).
        """
        rows = len(next(iter(columns.values())))
        doing = f"uploading the predictions of rows [{offset}, {offset + rows})"
        data = dict(columns)
        if self._keep:
            data = {self._row: np.arange(rows, dtype=np.int64), **data}
        piece = self._call(doing, lambda: self._session.import_table(arrow_table(data)))
        if self._keep:
            part = self._call(doing, lambda: self._static.slice(offset, offset + rows))
            left = self._call(doing, lambda: part.view([*self._keep, f"{self._row} = ii"]))
            piece = self._call(doing, lambda: left.natural_join(piece, on=self._row))
        self._pieces.append(piece)
        self._temporary.remove(piece)
        self._release_temporary()

    def finish(self) -> Any:
        """The result: one server-side table (bound as ``bind_as`` if given); the pieces are released.

        Raises:
            RemoteWriteError: merging or binding failed (nothing is left bound).
        """
        doing = "merging the predictions"
        if len(self._pieces) == 1:
            merged = self._pieces.pop()
            self._temporary.append(merged)
        else:
            merged = self._call(doing, lambda: self._session.merge_tables(self._pieces))
            self._release_pieces()
        result = self._call(doing, lambda: merged.drop_columns(self._row)) if self._keep else merged
        if result is not merged:
            self._temporary.remove(merged)
            release_export(merged)
        if self._bind_as is not None:
            call(self._where, self._session, f"binding the result as {self._bind_as!r}",
                 lambda: self._session.bind_table(self._bind_as, result))
        self._temporary.clear()
        return result

    def abort(self) -> None:
        """Releases every export made so far; nothing was bound."""
        self._release_temporary()
        self._release_pieces()

    def _release_temporary(self) -> None:
        while self._temporary:
            release_export(self._temporary.pop())

    def _release_pieces(self) -> None:
        while self._pieces:
            release_export(self._pieces.pop())


class RemoteLiveSink:
    """Live scores added batch by batch to an append-only input table on the server (NOTE [ Remote write-back ]).

    ``write`` from one thread (the scoring thread).

    Args:
        session: the pydeephaven Session of the followed table.
        types: column name -> Deephaven type name (numeric, ``java.lang.Boolean``, ``java.time.Instant``).
        where: the caller's name, for messages.
        bind_as: a name to bind the table to in the server's scope, or None.

    Raises (in ``__init__``):
        RemoteWriteError: the server refused the table or the binding.
    """

    blink = None  # no blink twin remotely: the input table itself ticks

    def __init__(self, session: Any, types: Mapping[str, str], where: str, *, bind_as: str | None = None) -> None:
        import pyarrow as pa

        self.types = dict(types)
        self._session, self._where = session, where
        schema = pa.schema([pa.field(name, arrow_type(kind)) for name, kind in self.types.items()])
        self.table = call(where, session, "creating the result table", lambda: session.input_table(schema=schema))
        if bind_as is not None:
            try:
                call(where, session, f"binding the result as {bind_as!r}", lambda: session.bind_table(bind_as, self.table))
            except BaseException:
                release_export(self.table)
                raise

    def write(self, offset: int, columns: Mapping[str, np.ndarray]) -> None:
        """Adds one batch (every column of ``types``).

        Raises:
            RemoteWriteError: the upload or the add failed.
        """
        rows = len(next(iter(columns.values())))
        doing = f"adding {rows} scored rows (from row {offset})"
        data = {name: np.ascontiguousarray(columns[name]) for name in self.types}
        piece = call(self._where, self._session, doing, lambda: self._session.import_table(arrow_table(data, self.types)))
        try:
            call(self._where, self._session, doing, lambda: self.table.add(piece))
        finally:
            release_export(piece)

    def fail(self, error: BaseException) -> None:
        """Nothing to do: a client cannot fail a server table (the error is kept by the caller)."""

