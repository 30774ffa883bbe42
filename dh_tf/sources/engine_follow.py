"""Following a live table of the embedded engine: the rows it adds (NOTE [ Following a source ] in protocol.py).

NOTE [ Engine follow ]
The kind comes from ``table.attributes()`` (docs/design.md section 4, "Live tables"):

- **append-only** (``AppendOnly``): the new rows are the positions ``[seen, size)``. A reader thread
  reads them a page at a time under the update graph's *shared* lock, one page per hold, only when
  the sink has room (the rows wait in the table: back-pressure, nothing dropped).
- **add-only** (``AddOnly`` only): the new rows are the row keys not seen before
  (``rowSet.minus(seen)``), in key order, read at their current positions (``rowSet.invert``).
- **blink** (``BlinkTable``): rows live for one update cycle, so the listener copies them inside
  the cycle, as many pages as the sink has room for; the rest go to ``sink.overflow``.

The listener checks every update: a modified, removed (not blink) or shifted row fails the stream
with :class:`~dh_tf.errors.TableChangeError` naming the update; the table failing fails it with
:class:`~dh_tf.errors.FollowError`. Pages are read by ``engine_rows.RowsReader``, the engine read path
(``engine_read.EngineColumnReader``) over chosen row keys or positions of the table itself; a page
holds at most one engine chunk (``RowsReader.rows_per_chunk``: fewer rows for long strings, NOTE
[ Engine internals ]), so one hold of the lock copies one chunk and a page of strings stays small.

**The lock is taken with tryLock.** A thread blocked in Java's ``Lock.lock()`` cannot be signalled
from Python, and an IDE console command holds the update graph's *exclusive* lock while it runs:
a reader blocked in ``lock()`` made ``follower.stop()`` typed in that console wait forever. So the
reader takes the shared lock with ``tryLock(50 ms)`` in a loop that checks the stop flag,
``stop()`` waits for the reader a bounded time (and not at all from ``__del__``), and each reader
frees its own Java objects (fill contexts, chunks, row sets) on its own thread as it ends. The
blink listener's reader is closed by whichever ends last: ``stop()`` or the update cycle using it.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dh_tf.errors import ArgumentError, ArgumentTypeError, FollowError, TableChangeError, UsageError
from dh_tf.sources import engine_read
from dh_tf.sources.column_types import COLUMN_KINDS, ColumnKind, column_kind
from dh_tf.sources.engine import EngineSource
from dh_tf.sources.engine_rows import RowsReader
from dh_tf.sources.jvm_threads import entered, java_type
from dh_tf.sources.protocol import PageSink, RowPage
from dh_tf.sources.ragged import Padding

THREAD_NAME = "dh_tf-follow"
"""The name of every follow reader thread."""
LOCK_POLL_MS = 50
"""How long one ``tryLock`` waits for the shared lock before the reader looks at its stop flag again."""
POLL_S = 0.05
"""How long the reader waits for rows (or room in the sink) before looking again."""
STOP_WAIT_S = 5.0
"""The longest ``stop()`` waits for the reader thread (it ends within one poll unless a page is being read)."""


class EngineFollowSource:
    """A live table of the embedded engine, followed (NOTE [ Engine follow ]); a ``FollowableSource``.

    Build it on a thread with a Deephaven ExecutionContext (it keeps that context); its feeds may
    then be opened and used on any thread (tf.data threads included).

    Raises:
        ArgumentTypeError: ``table`` is not a ``deephaven.table.Table``.
        ArgumentError: the table is static, or neither append-only, add-only nor blink.
        UsageError: the engine read path does not work in this JVM.
    """

    def __init__(self, table: Any, where: str = "follow") -> None:
        self._engine = EngineSource(table, where, read_path="engine")  # checks the table
        self.table = table
        self.column_types: dict[str, str] = dict(self._engine.column_types)
        self.kind = table_kind(table, where)
        if not engine_read.available():
            raise UsageError(f"{where}: needs the engine read path (Arrow's MemoryUtil), which does not work here")
        self._where = where
        from deephaven.execution_context import get_exec_ctx

        self.exec_ctx = get_exec_ctx()
        """The caller's ExecutionContext, opened around the engine work of every feed."""

    def string_sizes(self, columns: Sequence[str], rows: int) -> dict[str, int]:
        """The largest ``str`` among the table's first ``rows`` rows of each String column, in bytes (NOTE [ Page
        size ]); from a snapshot of them. Columns with no value yet are left out."""
        return self._engine.string_sizes(columns, rows)

    def open_follow(
        self, columns: Sequence[str], *, start: str, page_rows: int, max_rows: int | None, sink: PageSink,
        padding: Mapping[str, Padding] | None = None,
    ) -> EngineRowFeed:
        """A feed of the rows added to ``columns`` (see ``FollowableSource.open_follow``), not started yet.

        Array columns must be in ``padding`` (NOTE [ Ragged arrays ] in ``ragged.py``).
        """
        padding = dict(padding or {})
        arrays = [name for name in columns if self.column_types[name] not in COLUMN_KINDS and name not in padding]
        if arrays:
            listed = ", ".join(f"{name!r} ({self.column_types[name]})" for name in arrays)
            raise ArgumentTypeError(
                f"{self._where}: follow mode reads scalar columns only; array column(s) {listed} only padded (pad_to=N)"
            )
        if start == "beginning" and self.kind == "blink":
            raise ArgumentError(f"{self._where}: start='beginning' needs an append-only or add-only table")
        kinds = {name: column_kind(self.column_types[name]) for name in columns}
        with entered(self.exec_ctx):
            return EngineRowFeed(
                self, kinds, start=start, page_rows=page_rows, max_rows=max_rows, sink=sink, padding=padding
            )


class EngineRowFeed:
    """The rows a live engine table adds, into a sink: a listener, and a reader thread unless blink."""

    def __init__(
        self, source: EngineFollowSource, kinds: Mapping[str, ColumnKind], *, start: str, page_rows: int,
        max_rows: int | None, sink: PageSink, padding: Mapping[str, Padding] | None = None,
    ) -> None:

        self._table, self._kind, self._kinds, self._exec_ctx = source.table, source.kind, dict(kinds), source.exec_ctx
        self._padding = dict(padding or {})
        self._page_rows, self._limit, self._sink = page_rows, max_rows, sink
        self._lock = self._table.update_graph.j_update_graph.sharedLock()
        self._millis = java_type("java.util.concurrent.TimeUnit").MILLISECONDS
        self._stopped = threading.Event()
        self._wake = threading.Event()  # the listener saw rows: read now
        self._handle: Any = None
        self._thread: threading.Thread | None = None
        self._blink_lock = threading.Lock()  # held by the update cycle while it uses the blink reader
        self._blink_reader: RowsReader | None = None
        self._next_position = 0  # append-only: the first position not read yet
        self._seen: Any = None  # add-only: the row keys seen (a Java WritableRowSet, freed by the reader)
        if self._kind != "blink":
            self._mark_start(start)

    def start(self) -> None:
        if self._stopped.is_set() or self._handle is not None:
            return
        from deephaven.table_listener import listen

        _check_not_failed(self._table)
        try:
            with entered(self._exec_ctx):
                self._handle = listen(self._table, self._on_update, description="dh_tf.follow", on_error=self._on_error)
        except Exception as error:
            _check_not_failed(self._table)  # failed in between: say so plainly
            raise FollowError(f"follow: could not listen to the table: {error}") from error
        if self._kind != "blink":
            self._thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
            self._thread.start()

    def stop(self, wait: bool = True) -> None:
        self._stopped.set()
        self._wake.set()
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.stop()  # removes the listener; needs no lock
        thread = self._thread
        if thread is None:
            self._free_seen()  # never started: no reader uses it
        elif wait and thread is not threading.current_thread():
            thread.join(STOP_WAIT_S)
        self._free_blink_reader(STOP_WAIT_S if wait else 0)

    def _halted(self) -> bool:
        return self._stopped.is_set() or self._sink.closed()

    def _lock_shared(self) -> bool:
        """Takes the shared lock, ``tryLock`` by ``tryLock`` (NOTE [ Engine follow ]); False if stopped meanwhile."""
        while not self._lock.tryLock(LOCK_POLL_MS, self._millis):
            if self._halted():
                return False
        return True

    def _mark_start(self, start: str) -> None:
        """Records the rows already there (append-only: a position; add-only: the row keys)."""

        j_table = self._table.j_table
        if not self._lock_shared():
            return
        try:
            if self._kind == "append-only":
                self._next_position = 0 if start == "beginning" else int(j_table.size())
            else:
                factory = java_type("io.deephaven.engine.rowset.RowSetFactory")
                self._seen = factory.empty() if start == "beginning" else j_table.getRowSet().copy()
        finally:
            self._lock.unlock()

    def _run(self) -> None:
        """The reader thread of append-only / add-only tables: new rows, a page at a time."""
        reader = None
        read = 0
        limit = np.inf if self._limit is None else self._limit
        try:
            with entered(self._exec_ctx):
                reader = RowsReader(self._table.j_table, self._kinds, self._padding)
                while not self._halted() and read < limit:
                    if not self._sink.wait_for_space(POLL_S):
                        continue
                    self._wake.clear()
                    page = self._read_page(reader, int(min(self._page_rows, reader.rows_per_chunk, limit - read)))
                    if page is None:
                        self._wake.wait(POLL_S)  # the listener sets it when rows arrive
                        continue
                    read += page.rows
                    self._sink.put(page)
        except BaseException as error:
            if not self._stopped.is_set():
                self._sink.fail(error)
        finally:
            if reader is not None:
                reader.close()
            self._free_seen()

    def _read_page(self, reader: RowsReader, most: int) -> RowPage | None:
        """Up to ``most`` new rows, read under the shared lock (one page); None when there are none."""
        if not self._lock_shared():
            return None
        try:
            j_table = self._table.j_table
            if self._kind == "append-only":
                size = int(j_table.size())
                if size <= self._next_position:
                    return None
                stop = min(size, self._next_position + most)
                page = reader.read_positions(self._next_position, stop)
                self._next_position = stop
                return page
            new = j_table.getRowSet().minus(self._seen)
            try:
                if new.isEmpty():
                    return None
                chosen = new.subSetByPositionRange(0, most)
                try:
                    page = reader.read_keys(chosen)
                    self._seen.insert(chosen)
                finally:
                    chosen.close()
                return page
            finally:
                new.close()
        finally:
            self._lock.unlock()

    def _on_update(self, update: Any, is_replay: bool) -> None:
        """The listener, inside the update cycle: checks the update, wakes the reader or copies blink rows."""
        if self._halted():
            return
        try:
            j_update = update.j_table_update
            problem = refused_change(j_update, self._kind)
            if problem:
                self._sink.fail(
                    TableChangeError(
                        f"follow: the {self._kind} table {problem} in one update; follow reads only tables "
                        "that never modify, remove or shift rows (append-only, add-only or blink)"
                    )
                )
            elif self._kind == "blink":
                self._copy_blink(j_update.added())
            else:
                self._wake.set()
        except BaseException as error:  # never into the engine: the consumer gets it
            self._sink.fail(error)

    def _on_error(self, error: Exception) -> None:
        self._sink.fail(FollowError(f"follow: the table failed: {error}"))

    def _copy_blink(self, added: Any) -> None:
        """Copies a blink table's added rows into the sink, page by page, while it has room."""
        total = int(added.size())
        offset = 0
        with self._blink_lock:
            if self._blink_reader is None and not self._stopped.is_set():
                with entered(self._exec_ctx):
                    self._blink_reader = RowsReader(self._table.j_table, self._kinds, self._padding)
            while offset < total and not self._halted() and self._sink.free() > 0:
                reader: RowsReader = self._blink_reader  # type: ignore[assignment]
                stop = min(total, offset + self._page_rows, offset + reader.rows_per_chunk)
                keys = added.subSetByPositionRange(offset, stop)
                try:
                    page = reader.read_keys(keys)
                finally:
                    keys.close()
                self._sink.put(page)
                offset = stop
            if offset < total and not self._halted():
                self._sink.overflow(total - offset)
        if self._stopped.is_set():  # stop() may have found the lock held and left the reader to this cycle
            self._free_blink_reader(0)

    def _free_blink_reader(self, timeout: float) -> None:
        """Frees the blink reader, unless an update cycle holds it past ``timeout`` (that cycle then frees it)."""
        if not self._blink_lock.acquire(timeout=timeout):
            return
        try:
            reader, self._blink_reader = self._blink_reader, None
        finally:
            self._blink_lock.release()
        if reader is not None:
            reader.close()

    def _free_seen(self) -> None:
        seen, self._seen = self._seen, None
        if seen is not None:
            seen.close()


def refused_change(j_update: Any, kind: str) -> str:
    """What an update does that follow refuses ('' if nothing): modifies, removes (not blink), shifts rows."""
    parts = []
    if not j_update.modified().isEmpty():
        parts.append(f"modified {int(j_update.modified().size())} rows")
    if kind != "blink" and not j_update.removed().isEmpty():
        parts.append(f"removed {int(j_update.removed().size())} rows")
    if j_update.shifted().nonempty():
        parts.append("shifted rows")
    return " and ".join(parts)


def _check_not_failed(table: Any) -> None:  # FollowError
    if table.j_table.isFailed():
        raise FollowError("follow: the table failed (an update to it or to a table it derives from raised an error)")


def table_kind(table: Any, where: str) -> str:
    """``"append-only"``, ``"add-only"`` or ``"blink"``, from ``table.attributes()``; ArgumentError for others."""
    if not table.is_refreshing:
        raise ArgumentError(
            f"{where}: table must be a refreshing (live) table, but it is static; read a static table with "
            "dh_tf.to_dataset(...) or dh_tf.TableLoader(...)"
        )
    attributes = table.attributes()
    if attributes.get("BlinkTable"):
        return "blink"
    if attributes.get("AppendOnly"):
        return "append-only"
    if attributes.get("AddOnly"):
        return "add-only"
    raise ArgumentError(
        f"{where}: table must be append-only, add-only or blink (table.attributes() with AppendOnly, AddOnly or "
        f"BlinkTable), because follow reads each new row once and refuses tables that modify, remove or shift "
        f"rows; this refreshing table has none of these (attributes: {sorted(attributes)}). Follow the "
        "append-only / blink source it is derived from (time_table, table_publisher, Kafka), or use to_dataset "
        "for snapshots"
    )
