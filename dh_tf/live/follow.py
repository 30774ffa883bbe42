"""Follow a live table: batches of the rows it gains, as they arrive (docs/design.md section 4, "Live tables").

NOTE [ Follow mode ]
:func:`follow` reads only the rows a live table *adds*, each once, in arrival order, and never the
rows it had already (``start="now"``) unless asked (``start="beginning"``). Accepted tables are the
ones the engine marks as never modifying, removing or shifting rows: **append-only**
(``time_table``, ``blink_to_append_only``, Kafka in append mode, ``where`` on those), **add-only**
and **blink** (``table_publisher``, Kafka's default). How the rows are found, read and checked is
the source's (NOTE [ Following a source ] in ``sources/protocol.py``; the engine's in NOTE
[ Engine follow ] in ``sources/engine_follow.py``); this layer holds the argument checks, the
queue, batching and the flush policy, and never touches the engine.

One queue of at most ``prefetch`` pages sits between the source and the consumer (pages of at most
``page_rows`` rows: by default the page-size rule of ``reading/page_size.py``, capped at one engine
chunk), so memory is bounded whatever the rate. A slow consumer of an append-only / add-only table
leaves the rows in the table (back-pressure); a blink table cannot wait without stalling the update
graph, so rows that do not fit are dropped and counted in :attr:`Follower.dropped_rows`
(``on_overflow="drop"``) or fail the follower with :class:`FollowError` (``"error"``). Pages are
cut into batches of exactly ``batch_size`` rows, carrying the remainder; a partial batch is yielded
only when its oldest row has waited ``max_wait`` seconds, or as the last batch of ``max_rows``.

Every way out (``max_rows`` / ``max_batches``, :meth:`Follower.stop` from any thread, a ``break``,
an error, garbage collection) removes the listener and ends the reader; ``stop()`` returns promptly
even while an IDE console command holds the update graph's exclusive lock, and garbage collection
never waits on a thread.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

from dh_tf.checks import checked_keywords, choice_arg, int_arg, optional_int_arg, seconds_arg
from dh_tf.errors import ArgumentError, ArgumentTypeError, UsageError
from dh_tf.live.page_queue import ON_OVERFLOW, PageQueue
from dh_tf.live.stream import BatchCutter, FollowStream, PageConverter
from dh_tf.reading.layout import ColumnSpec, Layout, build_layout
from dh_tf.reading.null_policy import NullPolicy
from dh_tf.reading.padding import PadTo, pad_options
from dh_tf.reading.page_size import default_page_rows, row_bytes
from dh_tf.sources import engine_read
from dh_tf.sources.engine_follow import THREAD_NAME, EngineFollowSource
from dh_tf.sources.protocol import FollowableSource
from dh_tf.sources.remote_follow import RemoteFollowSource

__all__ = ["THREAD_NAME", "Follower", "follow", "follow_source"]

STARTS = ("now", "beginning")
MAX_PAGE_ROWS = engine_read.CHUNK_ROWS
"""The largest page: one engine chunk, so the update-graph lock is held for one chunk copy at most."""
DEFAULT_PREFETCH = 4
"""The default ``prefetch`` of :func:`follow`: pages queued (why not TableLoader's 2: see ``follow``'s docstring)."""
_WHERE = "follow"


@checked_keywords(_WHERE, renamed={"queue_pages": "prefetch"})
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
    prefetch: int = DEFAULT_PREFETCH,
    page_rows: int | None = None,
    on_overflow: str = "drop",
    sample_weight: str | None = None,
    nulls: NullPolicy | Mapping[str, NullPolicy] = "error",
    dtype: Any = "float32",
    label_dtype: Any = None,
    pad_to: PadTo | None = None,
    padding: str = "pre",
    truncating: str = "pre",
    pad_value: float = 0.0,
    interval_s: float | None = None,
) -> Follower:
    """Follows a live append-only, add-only or blink table: batches of its new rows as they arrive.

    See NOTE [ Follow mode ]. Batches have the structure, dtypes and null policies of
    :class:`~dh_tf.reading.loader.TableLoader` (``x``, ``(x, y)`` or ``(x, y, w)``), exactly ``batch_size``
    rows each except a flush after ``max_wait`` or the end of ``max_rows``. The returned
    :class:`Follower` is iterated once; it starts listening at ``iter(follower)`` (a ``for`` loop's
    start); closing or dropping that iterator (e.g. ``break`` out of the loop) stops it. For
    ``model.fit``, ``dh_tf.to_dataset(table, ..., follow=True)`` takes the same options.

    Args:
        table: a refreshing ``deephaven.table.Table`` with the attribute ``AppendOnly``, ``AddOnly``
            or ``BlinkTable`` (see ``table.attributes()``), a refreshing append-only or blink
            ``pydeephaven`` table (NOTE [ Remote follow ] in ``sources/remote_follow.py``), or a
            followable source (``Follower.source``: followers built from it work on any thread).
        features, label, sample_weight, nulls, dtype, label_dtype: as ``TableLoader``.
        batch_size: rows per batch (default 32, as ``TableLoader``).
        start: ``"now"``: only rows added after this call (for a blink table: after iteration
            starts); ``"beginning"``: also the rows the table has now (not for blink tables).
        max_wait: seconds a row may wait in a partial batch before that batch is yielded as it is.
            None (the default): only full batches, so rows short of a batch wait until enough
            rows arrive (or until ``max_rows`` ends the stream); pass e.g. ``max_wait=1.0`` for a
            slow table whose rows must reach the consumer within a second.
        max_rows: stop after this many rows (the last batch may be partial); None: never.
        max_batches: stop after this many batches; None: never.
        prefetch: pages queued between the table and the consumer, at most. The default, 4, is
            more than ``TableLoader``'s 2 because the two queues do different jobs: a loader reads
            ahead a static table with its reader threads (pages of ~32 MiB, and the table waits), while
            this queue absorbs bursts of a live table, whose pages are at most one engine chunk and
            whose blink rows that do not fit are dropped (``on_overflow``).
        page_rows: rows per page, at most (1 to 65536, one engine chunk); None: from the row's
            bytes (NOTE [ Page size ] in ``reading/page_size.py``: strings measured on the rows the
            table has now), so wide rows get small pages.
        on_overflow: blink tables, when the queue is full: ``"drop"`` the rows that do not fit
            (counted in ``dropped_rows``) or ``"error"`` (fail with :class:`FollowError`).
        pad_to, padding, truncating, pad_value: as ``TableLoader``; array columns are followed only
            padded (NOTE [ Ragged arrays ] in ``sources/ragged.py``; embedded tables).
        interval_s: remote append-only (``pydeephaven``) tables only: seconds between two polls of
            the table's size when it had no new rows (> 0); None: 0.5 s
            (``dh_tf.sources.remote_follow.DEFAULT_INTERVAL_S``). It bounds the latency.

    ``queue_pages=`` is the deprecated name of ``prefetch=`` (a ``DeprecationWarning``).

    Returns:
        A single-pass iterable of batches, with ``stop()`` and counters.

    Raises:
        TypeError: ``table`` is not a Deephaven table, an argument has the wrong type, a keyword is
            unknown (``ArgumentTypeError``, naming the closest ones), or a column has a type
            ``TableLoader`` refuses (strings and timestamps are followed as it reads them).
        ValueError: the table is static (use ``to_dataset``), may modify / remove / shift rows, or an
            argument is out of range (``start``, ``max_wait`` ...), or a column is unknown, or both
            ``prefetch`` and ``queue_pages`` are given, or ``interval_s`` is given for a table that
            is not a remote append-only one.

    Example:
        >>> follower = follow(ticks, ["Price", "Size"], "Up", batch_size=256, max_wait=1.0)
        >>> for x, y in follower:  # runs until follower.stop(), max_rows/max_batches or a break
        ...     model.train_on_batch(x, y)
    """
    options = {name: value for name, value in locals().items() if name not in ("table", "features", "label")}
    return Follower(table, features, label, **options)


class Follower:
    """The batches of a live table's new rows (see :func:`follow`, which builds it).

    ``Follower(...)`` takes the arguments of :func:`follow`, with the same defaults, and ``where``:
    the name its error messages give as the function the user called (``to_dataset`` builds it with
    ``where="to_dataset"``). Raises as :func:`follow`. Iterate it once, on one thread. :meth:`stop` may be called from any thread, any number of times.
    Attributes (read any time): ``kind`` (``"append-only"``, ``"add-only"`` or ``"blink"``),
    ``layout``, ``source`` (the followed source: ``follow(follower.source, ...)`` builds another
    follower on any thread), ``batch_size``, ``prefetch``, ``page_rows``, ``delivered_rows``,
    ``delivered_batches``, ``dropped_rows`` (blink rows dropped because the queue was full),
    ``max_queued_pages`` (the most pages ever queued).
    """

    @checked_keywords("Follower", renamed={"queue_pages": "prefetch"})
    def __init__(
        self, table: Any, features: ColumnSpec, label: ColumnSpec | None = None, *, batch_size: int = 32,
        start: str = "now", max_wait: float | None = None, max_rows: int | None = None, max_batches: int | None = None,
        prefetch: int = DEFAULT_PREFETCH, page_rows: int | None = None, on_overflow: str = "drop",
        sample_weight: str | None = None, nulls: NullPolicy | Mapping[str, NullPolicy] = "error",
        dtype: Any = "float32", label_dtype: Any = None, pad_to: PadTo | None = None, padding: str = "pre",
        truncating: str = "pre", pad_value: float = 0.0, interval_s: float | None = None, where: str = _WHERE,
    ) -> None:
        self.batch_size = int_arg(batch_size, "batch_size", where, minimum=1)
        self.max_wait = seconds_arg(max_wait, "max_wait", where)
        self.max_rows = optional_int_arg(max_rows, "max_rows", where, minimum=1)
        self.max_batches = optional_int_arg(max_batches, "max_batches", where, minimum=1)
        self.prefetch = int_arg(prefetch, "prefetch", where, minimum=1)
        if page_rows is not None:
            page_rows = int_arg(page_rows, "page_rows", where, minimum=1, maximum=MAX_PAGE_ROWS)
        start = choice_arg(start, "start", where, STARTS)
        self.on_overflow = choice_arg(on_overflow, "on_overflow", where, ON_OVERFLOW)
        pad = pad_options(pad_to, padding, truncating, pad_value, where)
        self.source = follow_source(table, where, interval_s=interval_s)
        self.kind: str = self.source.kind
        self.table = getattr(self.source, "table", table)
        if self.kind == "blink" and start == "beginning":
            raise ArgumentError(
                f"{where}: start='beginning' needs an append-only or add-only table, but this is a blink table "
                "(it keeps no rows of earlier update cycles); use start='now', or follow "
                "deephaven.stream.blink_to_append_only(table)"
            )
        column_types = dict(self.source.column_types)
        # Array columns not padded are refused by their type, before anything reads an array length.
        self.layout: Layout = build_layout(
            column_types, features, label, sample_weight, dtype=dtype, label_dtype=label_dtype, nulls=nulls,
            where=where, array_length=lambda column: _refuse_array(column, column_types[column], where), pad=pad,
        )
        if page_rows is None:
            page_rows = default_page_rows(row_bytes(self.layout.fields, self.source), 1, max_rows=MAX_PAGE_ROWS)
        self.page_rows: int = page_rows
        self._queue = PageQueue(self.prefetch, on_overflow=self.on_overflow, page_rows=self.page_rows)
        self._cutter = BatchCutter(
            self._queue, PageConverter(self.layout, column_types), batch_size=self.batch_size,
            max_wait=self.max_wait, max_rows=self.max_rows, max_batches=self.max_batches,
        )
        self._stopped = threading.Event()
        self._started = False
        # start="now" counts from here (the feed marks the rows already there); delivery starts at iter().
        # Only sources that follow array columns take padding= (NOTE [ Following a source ]).
        padded = {"padding": self.layout.padding} if self.layout.padding else {}
        self._feed = self.source.open_follow(
            self.layout.columns, start=start, page_rows=self.page_rows, max_rows=self.max_rows, sink=self._queue,
            **padded,
        )

    @property
    def queue_pages(self) -> int:
        """The deprecated name of :attr:`prefetch` (a ``DeprecationWarning``; it goes in the next release)."""
        warnings.warn("Follower.queue_pages is renamed Follower.prefetch; the old name goes in the next release",
                      DeprecationWarning, stacklevel=2)
        return self.prefetch

    @property
    def delivered_rows(self) -> int:
        """Rows yielded so far."""
        return self._cutter.delivered_rows

    @property
    def delivered_batches(self) -> int:
        """Batches yielded so far."""
        return self._cutter.delivered_batches

    @property
    def dropped_rows(self) -> int:
        """Blink rows dropped because the queue was full (``on_overflow="drop"``)."""
        return self._queue.dropped_rows

    @property
    def max_queued_pages(self) -> int:
        """The most pages the queue has held at once (at most ``prefetch``)."""
        return self._queue.high_water

    @property
    def queued_pages(self) -> int:
        """Pages in the queue now."""
        return len(self._queue)

    def stop(self) -> None:
        """Stops following: removes the listener and ends the reader; iteration then ends.

        Rows read but not yet delivered are discarded. Safe from any thread, safe to call twice;
        returns promptly even while another thread holds the update graph's exclusive lock (it waits
        a bounded time for the reader thread).
        """
        self._stop(wait=True)

    close = stop

    def _stop(self, wait: bool) -> None:
        self._stopped.set()
        self._queue.wake()
        feed = getattr(self, "_feed", None)  # None: __init__ raised before opening it
        if feed is not None:
            feed.stop(wait=wait)

    def __enter__(self) -> Follower:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __del__(self) -> None:
        try:
            self._stop(wait=False)  # the garbage collector's thread never waits
        except Exception:  # interpreter shutdown: the JVM may be gone already
            pass

    def __iter__(self) -> Iterator[Any]:
        """Yields batches until ``stop()``, ``max_rows``, ``max_batches`` or an error.

        Raises:
            UsageError: the follower was iterated before (it is single-pass).
            TableChangeError: the table modified, removed or shifted rows.
            FollowError: the table failed, or a blink table overflowed with ``on_overflow="error"``.
            NullValueError: a null in a column whose null policy is ``"error"``.
        """
        if self._started:
            raise UsageError(f"{_WHERE}: a Follower is iterated once; call follow(...) again for a new one")
        self._started = True
        try:
            self._feed.start()
        except BaseException:
            self.stop()
            raise
        return FollowStream(self._batches(), self._stop)

    def _batches(self) -> Iterator[Any]:
        wait = True
        try:
            for arrays in self._cutter.batches(self._stopped):
                yield self.layout.assemble(arrays)
        except GeneratorExit:  # closed: by FollowStream.close (which then stops, waiting) or by the GC (never waits)
            wait = False
            raise
        finally:
            self._stop(wait)


def follow_source(table: Any, where: str, *, interval_s: float | None = None) -> FollowableSource:
    """The followable source of ``table``: an embedded engine table, a remote append-only (polled every
    ``interval_s``) or blink (Barrage) pydeephaven table (NOTE [ Remote follow ] in
    ``sources/remote_follow.py``), or a followable source as it is.

    Raises:
        ArgumentTypeError: not a table that can be followed.
        ArgumentError: the table is static, or neither append-only, add-only nor blink (a remote
            table: neither append-only nor blink), or its pydeephaven Session is closed; ``interval_s``
            given for a table that is not a remote append-only one (or for a source, which has its own).
        MissingDependencyError: a remote blink table without pydeephaven-ticking installed.
    """
    if hasattr(table, "open_follow") and hasattr(table, "column_types") and hasattr(table, "kind"):
        if interval_s is not None:
            raise ArgumentError(
                f"{where}: interval_s must be None for a followable source (got interval_s={interval_s!r}); "
                "pass it to the source (RemoteFollowSource(table, interval_s=...)) or pass the pydeephaven table"
            )
        return table
    if type(table).__module__.startswith("pydeephaven"):  # decided without importing pydeephaven
        return RemoteFollowSource(table, where, interval_s=interval_s)
    if interval_s is not None:
        raise ArgumentError(
            f"{where}: interval_s is for remote append-only (pydeephaven) tables, which are polled (got "
            f"interval_s={interval_s!r} for an embedded table, whose new rows come with each update cycle)"
        )
    return EngineFollowSource(table, where)


def _refuse_array(column: str, type_name: str, where: str) -> int:
    """The array-length look-up of follow mode: raises ArgumentTypeError (arrays are followed padded only)."""
    raise ArgumentTypeError(
        f"{where}: follow mode reads scalar columns only; array column(s) {column!r} ({type_name}) only padded "
        f"to a length given ahead (a live table's rows are not there yet to tell it): pass pad_to=N (or "
        f"pad_to={{{column!r}: N}}), or read them with TableLoader / to_dataset (snapshot per epoch)"
    )
