"""The remote source: a ``pydeephaven.table.Table`` on a Deephaven server, read over Arrow Flight (NOTE [ Sources ]).

No JVM in this process: only ``pydeephaven`` (gRPC) and ``pyarrow`` (Flight), installed with
``pip install 'dh-tf[remote]'``. Connection options (host, port, PSK / anonymous / other auth, TLS)
are pydeephaven's own: open a ``pydeephaven.Session`` and pass one of its tables; dh_tf never
sees or parses the secret.

NOTE [ Remote pages ]
Each epoch makes one server-side ``view`` of the needed columns (of a static table, read in place),
or a static ``snapshot()`` of that view (of a refreshing table: one consistent set of rows per
epoch, see NOTE [ Refreshing tables ] in sources/protocol.py). Each span of a page is then a server-side
``slice(start, stop)`` (no copy on the server) streamed with one Flight ``DoGet``, record batch by
record batch, straight into the page's native numpy arrays; Arrow validity bits are the null masks
(the server turns Deephaven's null sentinels into Arrow nulls). Every server-side export (each
slice, each epoch's view or snapshot) is released as soon as it is read, and on every way out
(``finally``), so the server holds at most one slice per reader thread plus one table per open
epoch. Several pages are in flight at once because the loader reads pages on several reader
threads (NOTE [ Reader threads ] in reading/reader_threads.py); they share the pydeephaven Session, whose gRPC
channel and Flight client are thread-safe (its own state is under its lock), and Arrow's decode
runs without the GIL.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from dh_tf.errors import ArgumentError, ArgumentTypeError, RemoteReadError
from dh_tf.sources.column_types import COLUMN_KINDS, ColumnKind
from dh_tf.sources.protocol import Span

PAGE_MIB = 64
"""MiB of output arrays per remote page when the caller gives no ``page_rows`` (NOTE [ Page size ] in
``reading/page_size.py``): every page costs a few round trips (slice, DoGet, release), so remote
pages are twice the in-process size; 16 float32 columns give 1M-row pages, as measured best by
``benchmarks/remote.py``.
"""
DEFAULT_READ_TIMEOUT_S = 600.0
"""The longest one span's Flight ``DoGet`` may take before the read fails (a stalled server)."""

_ARROW_TYPE_NAMES = {
    "int8": "byte",
    "int16": "short",
    "int32": "int",
    "int64": "long",
    "float": "float",
    "double": "double",
    "bool": "java.lang.Boolean",
}
"""Arrow type (``str(pa.DataType)``) -> the Deephaven type name the engine source gives the same column."""
_NANOS_PER_UNIT = {"s": 10**9, "ms": 10**6, "us": 10**3}



class RemoteSource:
    """A table on a Deephaven server, read page by page over Arrow Flight (NOTE [ Remote pages ]).

    Build it on any thread; its epochs and readers may be used on any thread (they share the table's
    pydeephaven Session).

    Args:
        table: a ``pydeephaven.table.Table`` (``session.open_table(name)``, or derived from one on
            the client with ``where``, ``update_view``, ...), whose Session is open.
        where: the caller's name, for error messages.
        read_timeout_s: the longest one span's Flight ``DoGet`` may take.

    Attributes:
        page_mib: MiB per page when the caller gives no ``page_rows`` (:data:`PAGE_MIB`).
        server: ``host:port`` of the server, for messages.

    Raises:
        TypeError: ``table`` is not a ``pydeephaven.table.Table``.
        ValueError: the table's Session is closed, or the table was closed.
    """

    page_mib: float = PAGE_MIB

    def __init__(self, table: Any, where: str, *, read_timeout_s: float = DEFAULT_READ_TIMEOUT_S) -> None:
        _check_table(table, where)
        session = table.session
        self.server = f"{session.host}:{session.port}"
        if not session.is_connected:
            raise ArgumentError(
                f"{where}: the table's pydeephaven Session (server {self.server}) is closed; "
                "open a new Session and take the table from it"
            )
        if table.is_closed:
            raise ArgumentError(f"{where}: the pydeephaven table was closed (table.close()); open it again")
        if table.schema is None:
            raise ArgumentError(f"{where}: the pydeephaven table has no schema (not an exported table)")
        self.table = table
        self.column_types = {field.name: _type_name(field) for field in table.schema}
        self.is_refreshing = bool(table.is_refreshing)
        self._read_timeout_s = float(read_timeout_s)
        self._where = where

    def num_rows(self) -> int:
        """Rows in the table now: for a refreshing table, asks the server (a zero-column snapshot).

        The size the server reports for a new *refreshing* export can be 0 before its first update
        cycle (seen on a fresh ``view``), so the count comes from a static snapshot (a row set only).

        Raises:
            RemoteReadError: the server cannot be reached.
        """
        if not self.is_refreshing:
            return int(self.table.size)
        with self._exported(lambda: self.table.view([]), "counting rows") as view:
            with self._exported(view.snapshot, "counting rows") as counted:
                return int(counted.size)

    def string_sizes(self, columns: Sequence[str], rows: int) -> dict[str, int]:
        """The bytes of the largest ``str`` among the first ``rows`` rows of each String column (NOTE [ Page size ]).

        Reads those rows as an epoch does (a server-side ``head``, snapshotted if the table ticks);
        columns with no value there are left out.

        Raises:
            RemoteReadError: the server cannot be reached.
        """
        kinds = {name: COLUMN_KINDS[self.column_types[name]] for name in columns}
        doing = "measuring String columns"
        with contextlib.ExitStack() as stack:
            head = stack.enter_context(self._exported(lambda: self.table.view(list(columns)), doing))
            head = stack.enter_context(self._exported(functools.partial(head.head, rows), doing))
            if self.is_refreshing:
                head = stack.enter_context(self._exported(head.snapshot, doing))
            out = {name: np.empty(int(head.size), dtype=object) for name in columns}
            if head.size:
                RemoteSpanReader(head, kinds, self).read([(0, int(head.size))], out)
        sizes = {name: max((sys.getsizeof(v) for v in out[name] if v is not None), default=-1) for name in columns}
        return {name: size for name, size in sizes.items() if size >= 0}

    @contextlib.contextmanager
    def open_epoch(self, columns: Sequence[str]) -> Iterator[RemoteEpoch]:
        """A server-side view of ``columns`` (static) or a snapshot of it (refreshing), released on exit.

        Raises:
            RemoteReadError: the server cannot be reached or refuses the view.
        """
        kinds = {name: COLUMN_KINDS[self.column_types[name]] for name in columns}
        with self._exported(lambda: self.table.view(list(columns)), "opening the epoch") as view:
            if not self.is_refreshing:
                yield RemoteEpoch(view, kinds, self)
                return
            with self._exported(view.snapshot, "snapshotting the epoch") as snapshot:
                release_export(view)  # only the static snapshot is needed from here on
                yield RemoteEpoch(snapshot, kinds, self)

    @contextlib.contextmanager
    def _exported(self, make: Any, doing: str) -> Iterator[Any]:
        """A server-side table made by ``make()``, released on exit (whatever the way out)."""
        self.check_open(doing)
        try:
            exported = make()
        except Exception as error:
            raise self.read_error(doing, error) from error
        try:
            yield exported
        finally:
            release_export(exported)

    def check_open(self, doing: str) -> None:
        """Raises :class:`RemoteReadError` if the Session was closed."""
        if not self.table.session.is_connected:
            raise RemoteReadError(
                f"{self._where}: {doing} from Deephaven server {self.server} failed: the pydeephaven Session is closed"
            )

    def read_error(self, doing: str, error: BaseException) -> RemoteReadError:
        """The error to raise (chained to ``error``) when ``doing`` failed."""
        cause = describe_error(error)
        return RemoteReadError(f"{self._where}: {doing} from Deephaven server {self.server} failed: {cause}")


class RemoteEpoch:
    """One epoch's static server-side table; opens one span reader per reading thread."""

    def __init__(self, table: Any, kinds: Mapping[str, ColumnKind], source: RemoteSource) -> None:
        self._table = table
        self._kinds = dict(kinds)
        self._source = source
        self.num_rows = int(table.size)

    def open_reader(self) -> RemoteSpanReader:
        return RemoteSpanReader(self._table, self._kinds, self._source)


class RemoteSpanReader:
    """Reads spans of one static server-side table by ``slice`` + Flight ``DoGet``; nulls from Arrow validity.

    One per thread; holds no server-side export between reads, so ``close()`` has nothing to release.
    ``out`` arrays may be strided views, written one record batch at a time (``fills_strided``: NOTE
    [ Filling outputs in place ] in reading/pages.py).
    """

    fills_strided = True

    def __init__(self, table: Any, kinds: Mapping[str, ColumnKind], source: RemoteSource) -> None:
        self._table = table
        self._kinds = dict(kinds)
        self._source = source
        self._lock = threading.Lock()
        self._active: Any = None  # the Flight stream being read, for cancel()
        self._cancelled = False

    def cancel(self) -> None:
        """Cancels the DoGet in flight (from another thread); ``read`` then raises. NOTE [ Cancelling reads ]."""
        with self._lock:
            self._cancelled = True
            active = self._active
        if active is not None:
            with contextlib.suppress(Exception):
                active.cancel()

    def _track(self, stream: Any) -> None:
        """Registers the Flight stream now read (None: none); cancels it at once after cancel()."""
        with self._lock:
            self._active = stream
            cancelled = self._cancelled
        if cancelled and stream is not None:
            stream.cancel()

    def read(self, spans: Sequence[Span], out: Mapping[str, np.ndarray]) -> dict[str, np.ndarray | None]:
        """Fills ``out[name][:n]`` with the rows of ``spans`` in order; returns the null masks.

        Raises:
            RemoteReadError: the connection dropped, the Session was closed or the server failed;
                the message names the server and the rows being read.
        """
        rows = sum(stop - start for start, stop in spans)
        masks: dict[str, np.ndarray | None] = dict.fromkeys(self._kinds)
        offset = 0
        for start, stop in spans:
            if stop > start:
                self._read_span(start, stop, out, offset, masks, rows)
            offset += stop - start
        return masks

    def _read_span(
        self,
        start: int,
        stop: int,
        out: Mapping[str, np.ndarray],
        offset: int,
        masks: dict[str, np.ndarray | None],
        rows: int,
    ) -> None:
        doing = f"reading rows [{start}, {stop})"
        with self._source._exported(lambda: self._table.slice(start, stop), doing) as piece:
            try:
                got = _stream_into(piece, self._kinds, out, offset, masks, rows, self._source._read_timeout_s, self._track)
            except Exception as error:
                raise self._source.read_error(doing, error) from error
        if got != stop - start:
            raise RemoteReadError(
                f"{self._source._where}: {doing} from Deephaven server {self._source.server} "
                f"returned {got} rows, not {stop - start}"
            )

    def close(self) -> None:
        """Nothing to release (every slice is released when read); present for the protocol."""


def _stream_into(
    piece: Any,
    kinds: Mapping[str, ColumnKind],
    out: Mapping[str, np.ndarray],
    offset: int,
    masks: dict[str, np.ndarray | None],
    rows: int,
    timeout_s: float,
    track: Any = None,
) -> int:
    """Streams one exported table's record batches into ``out`` from ``offset``; returns the rows read."""
    import pyarrow.flight as flight

    session = piece.session
    # The Session's own Flight client carries its TLS settings and auth middleware. Streaming batch by
    # batch reads 1M-row pages ~2x faster than ``to_arrow()`` (benchmarks/remote.py); the public
    # ``to_arrow()`` is the fallback should a later pydeephaven rename the attribute.
    client = getattr(session, "_flight_client", None)
    if client is None:
        batches = iter(piece.to_arrow().to_batches())
        reader = None
    else:
        options = flight.FlightCallOptions(headers=session.grpc_metadata, timeout=timeout_s)
        reader = client.do_get(flight.Ticket(piece.ticket.bytes), options)
        if track is not None:
            track(reader)
        batches = (chunk.data for chunk in reader)
    got = 0
    try:
        for batch in batches:
            n = batch.num_rows
            if offset + got + n > len(next(iter(out.values()))):
                raise ArgumentError(f"the server sent more rows than asked for (at least {got + n})")
            for name, kind in kinds.items():
                _fill(batch.column(name), kind, out[name], offset + got, masks, name, rows)
            got += n
    finally:
        if reader is not None:
            if track is not None:
                track(None)
            reader.cancel()
    return got


def _fill(
    array: Any,
    kind: ColumnKind,
    out: np.ndarray,
    at: int,
    masks: dict[str, np.ndarray | None],
    name: str,
    rows: int,
) -> None:
    """Copies one Arrow array into ``out[at:at + len]`` (native dtype) and records its nulls.

    Timestamps arrive as Arrow ``timestamp[ns]`` (int64 values) and ``LocalDate`` as ``date64[ms]``
    (int64 milliseconds, made days): NOTE [ Strings and timestamps ] in sources/column_types.py.
    """
    n = len(array)
    if n == 0:
        return
    buffers = array.buffers()
    if kind.is_string:  # Arrow utf8: pyarrow makes the str objects (None for null) in C++
        values = array.to_numpy(zero_copy_only=False)
    elif kind.deephaven_type == "java.lang.Boolean":
        bits = np.frombuffer(buffers[1], dtype=np.uint8)
        values = np.unpackbits(bits, bitorder="little", count=array.offset + n)[array.offset :]
    elif str(array.type).startswith(("timestamp", "date64")):  # int64 in the type's unit
        raw = np.frombuffer(buffers[1], dtype=np.int64, count=n, offset=array.offset * 8)
        unit = "day" if str(array.type).startswith("date64") else array.type.unit
        values = raw if unit == "ns" else raw // 86_400_000 if unit == "day" else raw * _NANOS_PER_UNIT[unit]
    else:
        values = np.frombuffer(buffers[1], dtype=kind.dtype, count=n, offset=array.offset * kind.dtype.itemsize)
    out[at : at + n] = values
    if array.null_count:
        mask = masks[name]
        if mask is None:
            mask = masks[name] = np.zeros(rows, dtype=bool)
        mask[at : at + n] = array.is_null().to_numpy(zero_copy_only=False)


def release_export(table: Any) -> None:
    """Releases a server-side export; quietly nothing when None, already released, or the connection is gone."""
    if table is None or table.is_closed:
        return
    with contextlib.suppress(Exception):  # a dropped connection: the server frees the session's exports itself
        table.close()


def describe_error(error: BaseException) -> str:
    """One line about ``error`` and its causes (pydeephaven wraps gRPC / Flight errors in DHError)."""
    parts = []
    seen: BaseException | None = error
    while seen is not None and len(parts) < 4:
        text = str(seen).strip().splitlines()[0] if str(seen).strip() else ""
        parts.append(f"{type(seen).__name__}: {text}" if text else type(seen).__name__)
        seen = seen.__cause__ or seen.__context__
    return "; caused by ".join(parts)


def _type_name(field: Any) -> str:
    """The Deephaven type name of one Arrow field of a pydeephaven schema, as the engine source names it."""
    name = _ARROW_TYPE_NAMES.get(str(field.type))
    if name is not None:
        return name
    metadata = field.metadata or {}
    deephaven_type = metadata.get(b"deephaven:type")
    return deephaven_type.decode() if deephaven_type else f"arrow:{field.type}"


def _check_table(table: Any, where: str) -> None:
    from pydeephaven.table import Table

    if not isinstance(table, Table):
        raise ArgumentTypeError(f"{where}: table must be a pydeephaven.table.Table (got {type(table).__name__})")
