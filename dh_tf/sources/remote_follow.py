"""Following a live table on a Deephaven server over pydeephaven (NOTE [ Following a source ] in protocol.py).

NOTE [ Remote follow ]
The client sees no row keys and no update notifications without a Barrage subscription, and a
Barrage subscription keeps a full client copy of the subscribed table, which for a growing table
grows without bound. So the kind, from the table's Arrow schema (where the server puts the table's
attributes ``deephaven:attribute.AppendOnly`` / ``...AddOnly`` / ``...BlinkTable``; pydeephaven
exposes the schema, not the attributes), chooses how a remote table is followed:

- **append-only**: by *polling*, below; its rows never move, so the new rows are the positions
  ``[seen, size)``.
- **blink**: by a Barrage subscription, whose client copy holds one update's rows (NOTE [ Remote
  blink follow ] in ``remote_blink.py``).
- **add-only** (``AddOnly`` without ``AppendOnly``) is refused, saying why: rows added between old
  rows move the old rows' positions, and the client sees positions, not row keys, so polling cannot
  tell new rows from old; a Barrage subscription could, but its client copy would hold every row
  the table ever had (an add-only table never removes one), which is the unbounded memory follow
  exists to avoid. Follow it inside the server (``dh_tf.follow`` on the embedded table reads the
  new row keys), or have the server publish the append-only or blink table it is derived from.
- Anything else (static, or a table that may modify / remove rows) is refused.

Append-only, by polling:

- Every ``interval_s`` seconds (which bounds the latency) a reader thread asks the size with a
  server-side count (a zero-column static snapshot: the size a new *refreshing* export reports can
  be 0 before its first update cycle, see ``RemoteSource.num_rows``), then reads the new positions
  as server-side ``slice`` + Flight ``DoGet`` pages of at most ``page_rows`` rows (fewer for long
  strings: as many as fit one engine chunk's characters, ``engine_strings.string_rows``, measured on
  the pages read so far), **only while the sink has room** (``wait_for_space``): a slow consumer
  leaves the rows on the server, nothing is copied ahead or dropped. The rows of an append-only table never change, so a slice of positions
  below a counted size always holds exactly those rows.
- Every export (the count's view and snapshot, each slice) is released as soon as it is used and on
  every way out (the ``finally`` of ``RemoteSource._exported``): the server holds at most two
  exports of the feed at a time. ``stop()`` cancels a ``DoGet`` in flight, so it returns promptly;
  from the garbage collector it does not wait, and the thread releases what it holds as it ends.
- A table marked append-only that modifies or removes rows is failed by the server, which then
  refuses its slices (gRPC ``INVALID_ARGUMENT``): that fails the stream with
  :class:`~dh_tf.errors.FollowError` saying so (the server keeps the update's details in its log,
  so the client cannot name it). A count below the rows already read fails it with
  :class:`~dh_tf.errors.TableChangeError` naming the sizes. A limit: a failed table's count stays as
  it was, so a table that fails after every counted row was read looks idle, not failed. Also, the
  refused slice's export stays on the server until the Session closes (pydeephaven does not release
  the ticket of an operation the server refused).
- A dropped connection or closed Session fails the stream with :class:`~dh_tf.errors.RemoteReadError`
  naming the server and what was being read.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dh_tf.errors import ArgumentError, ArgumentTypeError, RemoteReadError, TableChangeError
from dh_tf.sources.column_types import COLUMN_KINDS, ColumnKind
from dh_tf.sources.engine_strings import string_rows
from dh_tf.sources.protocol import PageSink, RowPage
from dh_tf.sources.remote import RemoteSource, RemoteSpanReader
from dh_tf.sources.remote_blink import RemoteBlinkFeed, failed_on_server, table_failed, ticking_module

THREAD_NAME = "dh_tf-follow-remote"
"""The name of every remote follow reader thread."""
DEFAULT_INTERVAL_S = 0.5
"""Seconds between two size polls when no new rows were found: the latency bound of a remote follow."""
POLL_S = 0.05
"""How long the reader waits for room in the sink before looking at its stop flag again."""
STOP_WAIT_S = 10.0
"""The longest ``stop()`` waits for the reader thread (a DoGet in flight is cancelled first)."""
_ATTRIBUTE = b"deephaven:attribute."


class RemoteFollowSource:
    """A live append-only or blink table on a Deephaven server, followed (NOTE [ Remote follow ]).

    A ``FollowableSource``: pass it to ``dh_tf.follow`` / ``to_dataset(..., follow=True)`` to choose
    ``interval_s`` (passing the pydeephaven table itself uses the default). Build it on any thread;
    its feeds run on their own threads and share the table's pydeephaven Session.

    Args:
        table: a refreshing ``pydeephaven.table.Table`` whose schema marks it ``AppendOnly`` or
            ``BlinkTable``.
        where: the caller's name, for error messages.
        interval_s: append-only tables: seconds between two polls of the table's size when it had no
            new rows (> 0; default :data:`DEFAULT_INTERVAL_S`). Not for blink tables, whose updates
            come at the server's Barrage update interval.

    Raises:
        ArgumentTypeError: ``table`` is not a ``pydeephaven.table.Table``, or ``interval_s`` is not a number.
        ArgumentError: the Session or table is closed, the table is static, add-only (not
            append-only) or none of these kinds, ``interval_s`` is not positive, or is given for a blink table.
        MissingDependencyError: a blink table, and pydeephaven-ticking is not installed.
    """

    def __init__(self, table: Any, where: str = "follow", *, interval_s: float | None = None) -> None:
        if interval_s is not None:
            if isinstance(interval_s, bool) or not isinstance(interval_s, (int, float)):
                raise ArgumentTypeError(
                    f"{where}: interval_s must be a number of seconds (got {type(interval_s).__name__})"
                )
            if not interval_s > 0:
                raise ArgumentError(f"{where}: interval_s must be > 0 seconds (got {interval_s!r})")
        self.remote = RemoteSource(table, where)  # checks the table, its Session, its schema
        self.table = table
        self.server = self.remote.server
        self.column_types: dict[str, str] = dict(self.remote.column_types)
        self.kind = remote_kind(table, where)
        if self.kind == "blink":
            if interval_s is not None:
                raise ArgumentError(
                    f"{where}: interval_s is for append-only tables (the size poll); a blink table's rows come in "
                    "Barrage updates, at the server's Barrage update interval (about 1 s by default)"
                )
            ticking_module()  # MissingDependencyError now, not at iteration
        self.interval_s = DEFAULT_INTERVAL_S if interval_s is None else float(interval_s)
        self._where = where

    def string_sizes(self, columns: Sequence[str], rows: int) -> dict[str, int]:
        """The largest ``str`` among the table's first ``rows`` rows of each String column, in bytes (NOTE [ Page
        size ]); from a snapshot of them. Columns with no value yet are left out.

        Raises:
            RemoteReadError: the server cannot be reached.
        """
        return self.remote.string_sizes(columns, rows)

    def open_follow(
        self, columns: Sequence[str], *, start: str, page_rows: int, max_rows: int | None, sink: PageSink
    ) -> RemoteRowFeed | RemoteBlinkFeed:
        """A feed of the rows added to ``columns`` (see ``FollowableSource.open_follow``), not started yet.

        Append-only: ``start="now"`` counts the table's rows now (one round trip). Blink: the feed
        subscribes at ``start()``, and delivers the rows of the updates after its snapshot.

        Raises:
            ArgumentTypeError: a column is an array column.
            ArgumentError: ``start="beginning"`` on a blink table.
            RemoteReadError: the server cannot be reached to count the rows.
        """
        arrays = [name for name in columns if self.column_types[name] not in COLUMN_KINDS]
        if arrays:
            listed = ", ".join(f"{name!r} ({self.column_types[name]})" for name in arrays)
            raise ArgumentTypeError(f"{self._where}: follow mode reads scalar columns only; array column(s) {listed}")
        kinds = {name: COLUMN_KINDS[self.column_types[name]] for name in columns}
        if self.kind == "blink":
            if start == "beginning":
                raise ArgumentError(f"{self._where}: start='beginning' needs an append-only table, not a blink table")
            return RemoteBlinkFeed(self.remote, kinds, page_rows=page_rows, max_rows=max_rows, sink=sink)
        first = 0 if start == "beginning" else self.remote.num_rows()
        return RemoteRowFeed(self, kinds, first=first, page_rows=page_rows, max_rows=max_rows, sink=sink)


class RemoteRowFeed:
    """The rows a remote append-only table adds, read by one thread that polls its size (NOTE [ Remote follow ]).

    A count below the rows already read fails the stream with TableChangeError.

    Attributes:
        read_rows: rows read from the server so far (delivered into the sink or being delivered).
        next_position: the first table position not read yet.
    """

    def __init__(
        self, source: RemoteFollowSource, kinds: Mapping[str, ColumnKind], *, first: int, page_rows: int,
        max_rows: int | None, sink: PageSink,
    ) -> None:
        self._source = source
        self._kinds = dict(kinds)
        self._page_rows = int(page_rows)
        self._limit = max_rows
        self._sink = sink
        self.next_position = int(first)
        self.read_rows = 0
        self._strings = [name for name, kind in self._kinds.items() if kind.is_string]
        self._chars_per_row: float | None = None  # the most characters per row of a page so far (String columns)
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._reader: RemoteSpanReader | None = None

    def start(self) -> None:
        """Starts the reader thread (once; not after ``stop``)."""
        if self._stopped.is_set() or self._thread is not None:
            return
        self._reader = RemoteSpanReader(self._source.table, self._kinds, self._source.remote)
        self._thread = threading.Thread(target=self._run, args=(self._reader,), name=THREAD_NAME, daemon=True)
        self._thread.start()

    def stop(self, wait: bool = True) -> None:
        """Stops reading: cancels a DoGet in flight; with ``wait``, joins the thread a bounded time."""
        self._stopped.set()
        reader = self._reader
        if reader is not None:
            reader.cancel()
        thread = self._thread
        if wait and thread is not None and thread is not threading.current_thread():
            thread.join(STOP_WAIT_S)

    def _halted(self) -> bool:
        return self._stopped.is_set() or self._sink.closed()

    def _run(self, reader: RemoteSpanReader) -> None:
        limit = np.inf if self._limit is None else self._limit
        size = self.next_position  # the last size counted
        next_poll = 0.0
        try:
            while not self._halted() and self.read_rows < limit:
                if size <= self.next_position:
                    delay = next_poll - time.monotonic()
                    if delay > 0:
                        self._stopped.wait(delay)
                        continue
                    next_poll = time.monotonic() + self._source.interval_s
                    size = self._count(size)
                    continue
                if not self._sink.wait_for_space(POLL_S):
                    continue
                most = string_rows(self._chars_per_row, self._page_rows) if self._strings else self._page_rows
                stop = int(min(size, self.next_position + most, self.next_position + limit - self.read_rows))
                page = self._read(reader, self.next_position, stop)
                self._measure(page)
                if self._stopped.is_set():
                    break
                self.next_position = stop
                self.read_rows += page.rows
                self._sink.put(page)
        except BaseException as error:
            if not self._stopped.is_set():
                self._sink.fail(error)
        finally:
            reader.close()

    def _measure(self, page: RowPage) -> None:
        """Counts the characters per row of ``page``'s strings: pages of long strings get fewer rows (NOTE [ Page size ])."""
        if self._strings and page.rows:
            chars = sum(len(value) for name in self._strings for value in page.arrays[name] if value is not None)
            self._chars_per_row = max(self._chars_per_row or 0.0, chars / page.rows)

    def _count(self, before: int) -> int:
        """The table's size now; TableChangeError if below ``before`` or the rows read (NOTE [ Remote follow ])."""
        size = self._source.remote.num_rows()
        if size < max(before, self.next_position):
            raise self._shrank(max(before, self.next_position), size)
        return size

    def _shrank(self, before: int, size: int) -> TableChangeError:
        return TableChangeError(
            f"follow: the append-only table on Deephaven server {self._source.server} shrank from {before} to {size} "
            "rows between two counts: it removed rows (the server fails a table marked append-only or blink that "
            "modifies or removes rows); follow reads only tables that never modify, remove or shift rows "
            "(append-only, add-only or blink)"
        )

    def _read(self, reader: RemoteSpanReader, start: int, stop: int) -> RowPage:
        """Positions ``[start, stop)`` as one page (one slice, one DoGet, released at once)."""
        rows = stop - start
        arrays = {name: np.empty(rows, dtype=kind.dtype) for name, kind in self._kinds.items()}
        try:
            masks = reader.read([(start, stop)], arrays)
        except RemoteReadError as error:  # the rows gone (a shrink), or the connection
            if self._stopped.is_set():
                raise
            try:
                size = self._source.remote.num_rows()
            except RemoteReadError:
                raise error from None
            if size < stop:
                raise self._shrank(stop, size) from error
            if failed_on_server(error):
                raise table_failed("append-only", self._source.server, error) from error
            raise
        return RowPage(arrays, masks, rows, start)


def remote_kind(table: Any, where: str) -> str:
    """``"append-only"`` or ``"blink"`` from the schema's table attributes; ArgumentError for every other table.

    See NOTE [ Remote follow ] (add-only tables are refused there, saying why).
    """
    if not table.is_refreshing:
        raise ArgumentError(
            f"{where}: table must be a refreshing (live) table, but it is static; read a static table with "
            "dh_tf.to_dataset(...) or dh_tf.TableLoader(...)"
        )
    metadata = table.schema.metadata or {}
    attributes = {key[len(_ATTRIBUTE) :].decode() for key, value in metadata.items()
                  if key.startswith(_ATTRIBUTE) and value.lower() == b"true"}
    if "BlinkTable" in attributes:
        return "blink"
    if "AppendOnly" in attributes:
        return "append-only"
    if "AddOnly" in attributes:
        raise ArgumentError(
            f"{where}: a remote add-only table cannot be followed: rows added between old rows move the old rows' "
            "positions, and a pydeephaven client sees positions, not row keys, so polling cannot tell the new rows; "
            "a Barrage subscription could, but would keep a client copy of every row the table ever had. Follow "
            "it inside the server (dh_tf.follow on the embedded table), or follow the append-only or blink table "
            "it is derived from (time_table, table_publisher, Kafka, blink_to_append_only)"
        )
    raise ArgumentError(
        f"{where}: a remote table must be append-only or blink to be followed (its schema's table attributes: "
        f"{sorted(attributes)}), because follow reads each new row once and refuses tables that modify or remove "
        "rows; follow the append-only or blink source it is derived from, or use to_dataset for snapshots"
    )
