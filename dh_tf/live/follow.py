"""Follow a live table: batches of the rows it gains, as they arrive (docs/design.md section 4, "Live tables").

NOTE [ Follow mode ]
:func:`follow` reads only the rows a live table *adds*, each once, in arrival order, and never the
rows it had already (``start="now"``) unless asked (``start="beginning"``). Accepted tables are the
ones the engine marks as never modifying, removing or shifting rows:

- **append-only** (attribute ``AppendOnly``: ``time_table``, ``blink_to_append_only``, Kafka in
  append mode, ``where`` on those): new rows are the positions ``[seen, size)``. A reader thread
  reads them in pages of at most ``page_rows`` rows under the update graph's *shared* lock, one page
  per lock hold (the lock is never held across a ``yield``, nor longer than one page copy). When the
  consumer is slower than the table grows, the reader simply waits: the rows stay in the table and
  are read later (back-pressure, nothing dropped, memory bounded by the queue).
- **add-only** (``AddOnly`` but not ``AppendOnly``): new rows are the row keys not seen before
  (``rowSet.minus(seen)``), in key order; otherwise as append-only.
- **blink** (``BlinkTable``: ``table_publisher``, Kafka's default): rows live for one update cycle,
  so a listener copies them *inside* that cycle, in pages. The engine cannot wait for a slow
  consumer without stalling every table of the update graph, so when the queue is full the rows that
  do not fit are dropped and counted in :attr:`Follower.dropped_rows` (``on_overflow="drop"``, the
  default), or the follower fails with :class:`FollowError` (``on_overflow="error"``).

Between the engine and the consumer sits one queue of at most ``queue_pages`` pages (each at most
``page_rows`` rows), so memory is bounded whatever the rate. The consumer cuts pages into batches of
exactly ``batch_size`` rows, carrying the remainder; a partial batch is yielded only when its oldest
row has waited ``max_wait`` seconds (``max_wait=None``: never), or as the last batch when
``max_rows`` ends the stream.

A listener on the table also checks every update: a row modified, removed (append-only / add-only
tables) or shifted fails the follower with a ``ValueError`` naming the update; the table itself
failing (the listener's ``on_error``) fails it with :class:`FollowError`. Every way out (the stream
exhausted by ``max_rows`` / ``max_batches``, :meth:`Follower.stop` from any thread, the consumer
breaking out of its loop, an error, garbage collection) removes the listener and joins the reader
thread.
"""

from __future__ import annotations

import collections
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from dh_tf.checks import int_arg, seconds_arg
from dh_tf.errors import ArgumentError, ArgumentTypeError, FollowError, UsageError
from dh_tf.reading.layout import ColumnSpec, Layout, NullPolicy, build_layout
from dh_tf.reading.pages import PageReader
from dh_tf.sources import engine_read
from dh_tf.sources.column_types import COLUMN_KINDS

STARTS = ("now", "beginning")
ON_OVERFLOW = ("drop", "error")
MAX_PAGE_ROWS = engine_read.CHUNK_ROWS
"""The largest page: one engine chunk, so the update-graph lock is held for one chunk copy at most."""
THREAD_NAME = "dh_tf-follow"
_POLL_S = 0.05



def follow(
    table: Any,
    features: ColumnSpec,
    label: ColumnSpec | None = None,
    *,
    batch_size: int = 32,
    start: str = "now",
    max_wait: float | None = None,
    max_rows: int | None = None,
    max_batches: int | None = None,
    queue_pages: int = 4,
    page_rows: int = MAX_PAGE_ROWS,
    on_overflow: str = "drop",
    sample_weight: str | None = None,
    nulls: NullPolicy | Mapping[str, NullPolicy] = "error",
    dtype: Any = "float32",
    label_dtype: Any = None,
) -> Follower:
    """Follows a live append-only, add-only or blink table: batches of its new rows as they arrive.

    See NOTE [ Follow mode ]. Batches have the structure, dtypes and null policies of
    :class:`~dh_tf.loader.TableLoader` (``x``, ``(x, y)`` or ``(x, y, w)``), exactly ``batch_size``
    rows each except a flush after ``max_wait`` or the end of ``max_rows``. The returned
    :class:`Follower` is iterated once; it starts listening at ``iter(follower)`` (a ``for`` loop's
    start); closing or dropping that iterator (e.g. ``break`` out of the loop) stops it.

    Args:
        table: a refreshing ``deephaven.table.Table`` with the attribute ``AppendOnly``, ``AddOnly``
            or ``BlinkTable`` (see ``table.attributes()``).
        features, label, sample_weight, nulls, dtype, label_dtype: as ``TableLoader``.
        batch_size: rows per batch.
        start: ``"now"``: only rows added after this call (for a blink table: after iteration
            starts); ``"beginning"``: also the rows the table has now (not for blink tables).
        max_wait: seconds a row may wait in a partial batch before that batch is yielded as it is;
            None: only full batches.
        max_rows: stop after this many rows (the last batch may be partial); None: never.
        max_batches: stop after this many batches; None: never.
        queue_pages: pages held between the engine and the consumer, at most.
        page_rows: rows per page, at most (1 to 65536, one engine chunk).
        on_overflow: blink tables, when the queue is full: ``"drop"`` the rows that do not fit
            (counted in ``dropped_rows``) or ``"error"`` (fail with :class:`FollowError`).

    Returns:
        A single-pass iterable of batches, with ``stop()`` and counters.

    Raises:
        TypeError: ``table`` is not a Deephaven table, an argument has the wrong type, or a column
            is not numeric or boolean.
        ValueError: the table is static (use ``to_dataset``), may modify / remove / shift rows, or an
            argument is out of range (``start``, ``max_wait`` ...), or a column is unknown.

    Example:
        >>> follower = follow(ticks, ["Price", "Size"], "Up", batch_size=256, max_wait=1.0)
        >>> for x, y in follower:  # runs until follower.stop(), max_rows/max_batches or a break
        ...     model.train_on_batch(x, y)
    """
    return Follower(
        table,
        features,
        label,
        batch_size=batch_size,
        start=start,
        max_wait=max_wait,
        max_rows=max_rows,
        max_batches=max_batches,
        queue_pages=queue_pages,
        page_rows=page_rows,
        on_overflow=on_overflow,
        sample_weight=sample_weight,
        nulls=nulls,
        dtype=dtype,
        label_dtype=label_dtype,
    )


class Follower:
    """The batches of a live table's new rows (see :func:`follow`, which builds it).

    Iterate it once, on one thread. :meth:`stop` may be called from any thread, any number of times.
    Attributes (read any time): ``kind`` (``"append-only"``, ``"add-only"`` or ``"blink"``),
    ``layout``, ``delivered_rows``, ``delivered_batches``, ``dropped_rows`` (blink rows dropped
    because the queue was full), ``max_queued_pages`` (the most pages ever queued).
    """

    def __init__(
        self,
        table: Any,
        features: ColumnSpec,
        label: ColumnSpec | None,
        *,
        batch_size: int,
        start: str,
        max_wait: float | None,
        max_rows: int | None,
        max_batches: int | None,
        queue_pages: int,
        page_rows: int,
        on_overflow: str,
        sample_weight: str | None,
        nulls: NullPolicy | Mapping[str, NullPolicy],
        dtype: Any,
        label_dtype: Any,
    ) -> None:
        where = "follow"
        from dh_tf.sources.engine import EngineSource

        self.batch_size = int_arg(batch_size, "batch_size", where, minimum=1)
        self.max_wait = seconds_arg(max_wait, "max_wait", where)
        self.max_rows = None if max_rows is None else int_arg(max_rows, "max_rows", where, minimum=1)
        self.max_batches = None if max_batches is None else int_arg(max_batches, "max_batches", where, minimum=1)
        self.queue_pages = int_arg(queue_pages, "queue_pages", where, minimum=1)
        self.page_rows = int_arg(page_rows, "page_rows", where, minimum=1)
        if self.page_rows > MAX_PAGE_ROWS:
            raise ArgumentError(f"{where}: page_rows must be an int in [1, {MAX_PAGE_ROWS}] (got {page_rows!r})")
        if not isinstance(start, str) or start not in STARTS:
            raise ArgumentError(f"{where}: start must be one of {list(STARTS)} (got {start!r})")
        if not isinstance(on_overflow, str) or on_overflow not in ON_OVERFLOW:
            raise ArgumentError(f"{where}: on_overflow must be one of {list(ON_OVERFLOW)} (got {on_overflow!r})")
        self.on_overflow = on_overflow
        source = EngineSource(table, where, read_path="engine")
        self.kind = _table_kind(table, where)
        if self.kind == "blink" and start == "beginning":
            raise ArgumentError(
                f"{where}: start='beginning' needs an append-only or add-only table, but this is a blink table "
                "(it keeps no rows of earlier update cycles); use start='now', or follow "
                "deephaven.stream.blink_to_append_only(table)"
            )
        self.layout: Layout = build_layout(
            source.column_types,
            features,
            label,
            sample_weight,
            dtype=dtype,
            label_dtype=label_dtype,
            nulls=nulls,
            where=where,
        )
        if not engine_read.available():
            raise UsageError(f"{where}: needs the engine read path (Arrow's MemoryUtil), which does not work here")
        self.table = table
        self.delivered_rows = 0
        self.delivered_batches = 0
        self.dropped_rows = 0
        self._column_types = dict(source.column_types)
        arrays = [name for name in self.layout.columns if self._column_types[name] not in COLUMN_KINDS]
        if arrays:
            listed = ", ".join(f"{name!r} ({self._column_types[name]})" for name in arrays)
            raise ArgumentTypeError(
                f"{where}: follow mode reads scalar columns only; array column(s) {listed} are read by "
                "TableLoader / to_dataset (snapshot per epoch)"
            )
        self._kinds = {name: COLUMN_KINDS[self._column_types[name]] for name in self.layout.columns}
        from deephaven.execution_context import get_exec_ctx

        self._exec_ctx = get_exec_ctx()
        self._queue = _PageQueue(self.queue_pages)
        self._stopped = threading.Event()  # stop(): end now
        self._failed = threading.Event()  # an error is queued: read no more rows
        self._wake = threading.Event()
        self._teardown_lock = threading.Lock()
        self._started = False
        self._handle: Any = None
        self._thread: threading.Thread | None = None
        self._seen_rows: Any = None  # add-only: the row keys seen (a Java WritableRowSet)
        self._next_position = 0  # append-only: the first position not read yet
        if self.kind != "blink":
            self._mark_start(start)

    @property
    def max_queued_pages(self) -> int:
        """The most pages the queue has held at once (at most ``queue_pages``)."""
        return self._queue.high_water

    @property
    def queued_pages(self) -> int:
        """Pages in the queue now."""
        return len(self._queue)

    def stop(self) -> None:
        """Stops following: removes the listener, joins the reader thread; iteration then ends.

        Rows read but not yet delivered are discarded. Safe from any thread, safe to call twice.
        """
        self._stopped.set()
        self._queue.wake()
        self._teardown()

    close = stop

    def __enter__(self) -> Follower:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __del__(self) -> None:
        try:
            self.stop()
        except Exception:  # interpreter shutdown: the JVM may be gone already
            pass

    def __iter__(self) -> Iterator[Any]:
        """Yields batches until ``stop()``, ``max_rows``, ``max_batches`` or an error.

        Raises:
            RuntimeError: the follower was iterated before (it is single-pass).
            ValueError: the table modified, removed or shifted rows.
            FollowError: the table failed, or a blink table overflowed with ``on_overflow="error"``.
            NullValueError: a null in a column whose null policy is ``"error"``.
        """
        if self._started:
            raise UsageError("follow: a Follower is iterated once; call follow(...) again for a new one")
        self._started = True
        try:
            self._begin()
        except BaseException:
            self.stop()
            raise
        return _Stream(self, self._batches())

    # -- consumer side ---------------------------------------------------------------------------

    def _batches(self) -> Iterator[Any]:
        try:
            pending: list[list[np.ndarray]] = []
            times: list[float] = []  # when each pending page was queued
            pending_rows = 0
            while not self._stopped.is_set() and not self._done():
                timeout = _POLL_S
                if pending_rows and self.max_wait is not None:
                    timeout = min(timeout, max(0.0, times[0] + self.max_wait - time.monotonic()))
                page = self._queue.get(timeout)
                if page is not None:
                    times.append(page[0])
                    pending.append(page[1])
                    pending_rows += len(page[1][0])
                if not pending_rows:
                    continue
                flush = self.max_wait is not None and time.monotonic() - times[0] >= self.max_wait
                if pending_rows < self.batch_size and not flush and pending_rows < self._rows_left():
                    continue
                sizes = [len(arrays[0]) for arrays in pending]
                merged = [np.concatenate(parts) if len(parts) > 1 else parts[0] for parts in zip(*pending)]
                offset = 0
                while offset < pending_rows and not self._done():
                    take = int(min(self.batch_size, pending_rows - offset, self._rows_left()))
                    if take < self.batch_size and not flush and take < self._rows_left():
                        break  # a partial batch waits for more rows (or for max_wait)
                    batch = [a[offset : offset + take] for a in merged]
                    offset += take
                    self.delivered_rows += take
                    self.delivered_batches += 1
                    yield self.layout.assemble(batch)
                    if self._stopped.is_set():
                        return
                # The rest keeps the arrival time of the page its first row came from.
                if offset < pending_rows:
                    times = [times[int(np.searchsorted(np.cumsum(sizes), offset, side="right"))]]
                    pending = [[a[offset:] for a in merged]]
                else:
                    times, pending = [], []
                pending_rows -= offset
        finally:
            self.stop()

    def _rows_left(self) -> float:
        return math.inf if self.max_rows is None else self.max_rows - self.delivered_rows

    def _done(self) -> bool:
        return self._rows_left() <= 0 or (self.max_batches is not None and self.delivered_batches >= self.max_batches)

    # -- engine side -----------------------------------------------------------------------------

    def _mark_start(self, start: str) -> None:
        """Records which rows are already there (append-only: a position; add-only: the row keys)."""
        import jpy

        j_table = self.table.j_table
        with _SharedLock(self.table):
            if self.kind == "append-only":
                self._next_position = 0 if start == "beginning" else int(j_table.size())
            else:
                factory = jpy.get_type("io.deephaven.engine.rowset.RowSetFactory")
                self._seen_rows = factory.empty() if start == "beginning" else j_table.getRowSet().copy()

    def _begin(self) -> None:
        """Starts the listener (and, for append-only / add-only tables, the reader thread)."""
        from deephaven.table_listener import listen

        listener = _Listener(self)
        _check_not_failed(self.table)
        try:
            with self._exec_ctx:
                self._handle = listen(self.table, listener.on_update, description="dh_tf.follow", on_error=listener.on_error)
        except Exception as error:
            _check_not_failed(self.table)  # failed in between: say so plainly
            raise FollowError(f"follow: could not listen to the table: {error}") from error
        if self.kind != "blink":
            self._thread = threading.Thread(target=self._read_added, name=THREAD_NAME, daemon=True)
            self._thread.start()

    def _teardown(self) -> None:
        with self._teardown_lock:
            handle, self._handle = self._handle, None
            thread, self._thread = self._thread, None
            if handle is not None:
                handle.stop()
            if thread is not None and thread is not threading.current_thread():
                while thread.is_alive():
                    thread.join(_POLL_S)
            seen, self._seen_rows = self._seen_rows, None
            if seen is not None:
                seen.close()

    def _fail(self, error: BaseException) -> None:
        """Ends the stream with ``error`` after the pages queued before it; no more rows are read (any thread)."""
        self._queue.fail(error)
        self._failed.set()

    def _halted(self) -> bool:
        return self._stopped.is_set() or self._failed.is_set()

    def _read_added(self) -> None:
        """The reader thread of append-only / add-only tables: reads new rows a page at a time."""
        rows = _ChosenRows(self.table.j_table)
        pages = PageReader(_RowsSpanReader(rows, self._kinds, self._exec_ctx), self.layout, self._column_types)
        limit = math.inf if self.max_rows is None else self.max_rows
        read = 0
        try:
            while not self._halted() and read < limit:
                if not self._queue.wait_for_space(self._halted):
                    return
                self._wake.clear()
                arrays = self._read_page(rows, pages, int(min(self.page_rows, limit - read)))
                if arrays is None:
                    self._wake.wait(_POLL_S)  # the listener sets it when rows arrive
                    continue
                read += len(arrays[0])
                self._queue.put(arrays)
        except BaseException as error:
            self._fail(error)
        finally:
            pages.close()

    def _read_page(self, rows: _ChosenRows, pages: PageReader, most: int) -> list[np.ndarray] | None:
        """Reads up to ``most`` new rows under the shared lock (one page), or None when there are none."""
        j_table = self.table.j_table
        with _SharedLock(self.table):
            if self.kind == "append-only":
                size = int(j_table.size())
                if size <= self._next_position:
                    return None
                stop = min(size, self._next_position + most)
                rows.row_set = None  # the table's own row set, by position
                arrays = pages.read_spans([(self._next_position, stop)])
                self._next_position = stop
                return arrays
            new = j_table.getRowSet().minus(self._seen_rows)
            try:
                if new.isEmpty():
                    return None
                chosen = new.subSetByPositionRange(0, most)
                try:
                    rows.row_set = chosen
                    arrays = pages.read_spans([(0, int(chosen.size()))])
                    self._seen_rows.insert(chosen)
                finally:
                    rows.row_set = None
                    chosen.close()
                return arrays
            finally:
                new.close()

    def _copy_blink(self, added: Any, pages: PageReader, rows: _ChosenRows) -> None:
        """Inside the update cycle: copies a blink table's added rows into the queue, page by page."""
        total = int(added.size())
        offset = 0
        rows.row_set = added
        try:
            while offset < total and not self._halted():
                if self._queue.free() == 0:
                    break
                stop = min(total, offset + self.page_rows)
                self._queue.put(pages.read_spans([(offset, stop)]))
                offset = stop
        finally:
            rows.row_set = None
        lost = total - offset
        if lost and not self._halted():
            self.dropped_rows += lost
            if self.on_overflow == "error":
                self._fail(
                    FollowError(
                        f"follow: the consumer fell behind a blink table; {lost} rows of one update cycle did not "
                        f"fit the queue ({self.queue_pages} pages of up to {self.page_rows} rows) and "
                        "on_overflow='error'; consume faster, raise queue_pages / page_rows, or pass "
                        "on_overflow='drop'"
                    )
                )


class _Stream:
    """The iterator of a :class:`Follower`: its batches; closing it (or dropping it) stops the follower."""

    def __init__(self, follower: Follower, batches: Iterator[Any]) -> None:
        self._follower = follower
        self._batches = batches

    def __iter__(self) -> _Stream:
        return self

    def __next__(self) -> Any:
        return next(self._batches)

    def close(self) -> None:
        """Stops the follower (removes the listener, joins the thread). Safe to call twice."""
        self._batches.close()
        self._follower.stop()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: the JVM may be gone already
            pass


class _Listener:
    """The table listener: checks each update, wakes the reader or copies blink rows (NOTE [ Follow mode ])."""

    def __init__(self, follower: Follower) -> None:
        self._follower = follower
        self._blink_pages: PageReader | None = None
        self._rows: _ChosenRows | None = None
        if follower.kind == "blink":
            self._rows = _ChosenRows(follower.table.j_table)
            self._blink_pages = PageReader(
                _RowsSpanReader(self._rows, follower._kinds, follower._exec_ctx),
                follower.layout,
                follower._column_types,
            )

    def on_update(self, update: Any, is_replay: bool) -> None:
        follower = self._follower
        if follower._halted():
            return
        try:
            j_update = update.j_table_update
            problem = _refused_change(j_update, follower.kind)
            if problem:
                follower._fail(
                    ValueError(
                        f"follow: the {follower.kind} table {problem} in one update; follow reads only tables "
                        "that never modify, remove or shift rows (append-only, add-only or blink)"
                    )
                )
            elif self._blink_pages is not None and self._rows is not None:
                follower._copy_blink(j_update.added(), self._blink_pages, self._rows)
            else:
                follower._wake.set()
        except BaseException as error:  # never into the engine: the consumer gets it
            follower._fail(error)

    def on_error(self, error: Exception) -> None:
        follower = self._follower
        follower._fail(FollowError(f"follow: the table failed: {error}"))


def _refused_change(j_update: Any, kind: str) -> str:
    """What an update does that follow refuses ('' if nothing): modifies, removes (not blink), shifts."""
    parts = []
    if not j_update.modified().isEmpty():
        parts.append(f"modified {int(j_update.modified().size())} rows")
    if kind != "blink" and not j_update.removed().isEmpty():
        parts.append(f"removed {int(j_update.removed().size())} rows")
    if j_update.shifted().nonempty():
        parts.append("shifted rows")
    return " and ".join(parts)


class _PageQueue:
    """A bounded FIFO of pages, then at most one error; the only thing engine and consumer share."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._pages: collections.deque[tuple[float, list[np.ndarray]]] = collections.deque()
        self._error: BaseException | None = None
        self._ready = threading.Condition()
        self.high_water = 0

    def __len__(self) -> int:
        return len(self._pages)

    def free(self) -> int:
        with self._ready:
            return self._capacity - len(self._pages)

    def wait_for_space(self, halted: Callable[[], bool]) -> bool:
        """Waits until a page fits (True) or ``halted()`` (False)."""
        with self._ready:
            while len(self._pages) >= self._capacity:
                if halted():
                    return False
                self._ready.wait(_POLL_S)
            return not halted()

    def put(self, arrays: list[np.ndarray]) -> None:
        """Adds a page; the caller made sure it fits (one producer per queue)."""
        with self._ready:
            self._pages.append((time.monotonic(), arrays))
            self.high_water = max(self.high_water, len(self._pages))
            self._ready.notify_all()

    def fail(self, error: BaseException) -> None:
        with self._ready:
            if self._error is None:
                self._error = error
            self._ready.notify_all()

    def wake(self) -> None:
        with self._ready:
            self._ready.notify_all()

    def get(self, timeout: float) -> tuple[float, list[np.ndarray]] | None:
        """The oldest page, or None after ``timeout`` seconds; raises the error once the pages before it are out."""
        with self._ready:
            if not self._pages and self._error is None:
                self._ready.wait(timeout)
            if self._pages:
                page = self._pages.popleft()
                self._ready.notify_all()
                return page
            if self._error is not None:
                raise self._error
            return None


class _ChosenRows:
    """What ``EngineColumnReader`` needs of a Java table, over the row set we choose.

    ``row_set`` None: the table's own row set (positions are table positions); else a row set of
    some of its keys (positions are positions in it). Values are read from the table's sources.
    """

    def __init__(self, j_table: Any) -> None:
        self._j_table = j_table
        self.row_set: Any = None

    def getColumnSource(self, name: str) -> Any:
        return self._j_table.getColumnSource(name)

    def getRowSet(self) -> Any:
        return self._j_table.getRowSet() if self.row_set is None else self.row_set


class _RowsSpanReader:
    """A span reader (NOTE [ Sources ]) over :class:`_ChosenRows`; nulls found by sentinel value."""

    def __init__(self, rows: _ChosenRows, kinds: Mapping[str, Any], exec_ctx: Any) -> None:
        self._kinds = dict(kinds)
        self._exec_ctx = exec_ctx
        with exec_ctx:
            self._columns = engine_read.EngineColumnReader(rows, self._kinds)

    def read(self, spans: Any, out: Mapping[str, np.ndarray]) -> dict[str, np.ndarray | None]:
        with self._exec_ctx:
            self._columns.read(spans, out)
        masks: dict[str, np.ndarray | None] = {}
        for name, kind in self._kinds.items():
            nulls = out[name] == kind.null_value
            masks[name] = nulls if nulls.any() else None
        return masks

    def close(self) -> None:
        self._columns.close()


class _SharedLock:
    """The update graph's shared lock (held for one page), without ``deephaven.update_graph``'s error wrapping."""

    def __init__(self, table: Any) -> None:
        self._lock = table.update_graph.j_update_graph.sharedLock()

    def __enter__(self) -> None:
        self._lock.lock()

    def __exit__(self, *exc_info: object) -> None:
        self._lock.unlock()


def _check_not_failed(table: Any) -> None:
    if table.j_table.isFailed():
        raise FollowError("follow: the table failed (an update to it or to a table it derives from raised an error)")


def _table_kind(table: Any, where: str) -> str:
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
    shown = sorted(attributes)
    raise ArgumentError(
        f"{where}: table must be append-only, add-only or blink (table.attributes() with AppendOnly, AddOnly or "
        f"BlinkTable), because follow reads each new row once and refuses tables that modify, remove or shift "
        f"rows; this refreshing table has none of these (attributes: {shown}). Follow the append-only / blink "
        "source it is derived from (time_table, table_publisher, Kafka), or use to_dataset for snapshots"
    )
