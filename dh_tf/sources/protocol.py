"""Where rows come from: the narrow interface every source of rows implements, and the dispatch to one.

NOTE [ Sources ]
A *source* knows its column types and whether it is refreshing, and opens one *epoch view* per
epoch: a consistent set of rows (a snapshot where the table ticks, see NOTE [ Refreshing tables ]).
An epoch view opens *span readers*, one per reading thread, that read spans of row positions of
some columns into native-typed numpy arrays and return a null mask per column. Everything above
(``pages.PageReader``: null policy, casts, permutation; the plan; prefetch; batching) works on what
any source returns and never sees a table. The sources: the embedded engine
(``sources/engine.py``: fast engine path, public fallback, ExecutionContext handling), a remote
server over Arrow Flight (``sources/remote.py``), and, for pages already read once, the epoch cache
(``reading/epoch_cache.py``, which serves whole pages). The shape follows
Deephaven's own ``deephaven.experimental.table_data_service`` backend protocol and torch's
dataset/fetcher split.

NOTE [ Refreshing tables ]
Reading a ticking table page by page without the update-graph lock gives torn rows (values from
two update cycles). Holding the lock across pages would stall the engine for a whole epoch. So each
epoch of a refreshing table reads one static snapshot of just the needed columns: consistent, and
the engine keeps ticking meanwhile. The snapshot holds those columns in the server's heap, so a
refreshing table must fit the heap; static tables (e.g. Parquet-backed, filtered with ``where``)
are read in place, never copied.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

Span = tuple[int, int]
"""A half-open range of row positions ``[start, stop)``, as in ``Table.slice``."""


class SpanReader(Protocol):
    """Reads spans of row positions of one epoch view. One per thread; used and closed on that thread."""

    def read(self, spans: Sequence[Span], out: Mapping[str, np.ndarray]) -> dict[str, np.ndarray | None]:
        """Fills ``out[name][:n]`` (native dtype, n = rows of ``spans``) with the rows of ``spans``, in order.

        Returns, per column, a boolean mask of the null rows, or None when the column has no null
        in these rows.
        """
        ...

    # Optional, for sources with array columns: ``read(spans, out, padded=...)``, where ``padded``
    # maps array columns to a ``ragged.PaddedColumn``: those are read fit to ``out[name].shape[1]``
    # elements, each row's kept length written into its ``lengths`` (NOTE [ Ragged arrays ] in
    # ``sources/ragged.py``). Callers pass it only when some column is padded.
    # Optional: ``fills_strided = True`` when ``out`` arrays may be strided 1-D views (NOTE [ Filling
    # outputs in place ] in ``reading/pages.py``).

    def close(self) -> None:
        """Releases what the reader holds. Safe to call twice."""
        ...

    # Optional: ``cancel() -> None``, called from another thread to make a ``read`` in flight end
    # now (it then raises); NOTE [ Cancelling reads ] in ``reading/reader_threads.py``.


class EpochView(Protocol):
    """One epoch's consistent rows of a source."""

    num_rows: int

    def open_reader(self) -> SpanReader:
        """A new span reader for the calling thread."""
        ...


class TableSource(Protocol):
    """A table to read: its column types, whether it ticks, and one consistent view per epoch."""

    column_types: Mapping[str, str]
    """Column name -> Deephaven type name (``double``, ``java.lang.String``, ``double[]``), in table order."""
    is_refreshing: bool
    page_mib: float
    """MiB of output arrays per page when the caller gives no ``page_rows`` (NOTE [ Page size ] in
    ``reading/page_size.py``): a remote source pays round trips per page, so it wants bigger pages."""

    def num_rows(self) -> int:
        """Rows in the table now (a refreshing table can change between calls)."""
        ...

    def open_epoch(self, columns: Sequence[str]) -> contextlib.AbstractContextManager[EpochView]:
        """A consistent view of ``columns`` for one epoch (a snapshot if refreshing), released on exit."""
        ...


# -- following the rows a live source adds (NOTE [ Following a source ]) -------------------------------
#
# NOTE [ Following a source ]
# Beside reading epochs, a live source can be *followed*: it reports its ``kind`` (``"append-only"``,
# ``"add-only"`` or ``"blink"``) and opens a :class:`RowFeed` for some columns (scalars, or arrays
# padded as NOTE [ Ragged arrays ] says), which delivers the rows the table adds, each once, in
# arrival order, as :class:`RowPage` s (native arrays and null masks, as ``SpanReader.read`` returns
# them) into a :class:`PageSink`: the bounded queue of the consumer (``live/``), which applies null
# policies and casts, batches and flushes. This is the shape of Deephaven's own
# ``deephaven.experimental.table_data_service`` (subscribe beside fetch).
# Everything that touches the engine is the feed's: telling the kind, refusing updates that modify,
# remove or shift rows (``TableChangeError`` naming the update), the listener, reading under the
# update graph's lock, copying blink rows inside the update cycle, the ExecutionContext. Its memory
# is the sink's: at most ``prefetch`` pages.
#
# Nothing in the protocol needs a local copy of the table, so a remote (pydeephaven) source can
# follow with bounded memory:
# - append-only: poll ``table.size`` and read the new positions ``[seen, size)`` as server-side
#   ``slice(seen, stop)`` pages of at most ``page_rows`` rows (Arrow Flight), only while the sink has
#   room (``wait_for_space``): a slow consumer leaves the rows on the server, nothing is dropped;
# - blink: a Barrage subscription whose client copy holds one update cycle; each cycle's rows become
#   pages offered while ``free()`` allows, the rest reported to ``overflow`` (as the engine does);
# - add-only: not followable remotely (old rows move between positions and the client sees no row
#   keys); such a source refuses it with ``ArgumentError``, and ``blink_to_append_only`` or an
#   append-only view of the table is followed instead.


@dataclass(frozen=True)
class RowPage:
    """Added rows of some columns, in arrival order: native arrays and null masks (as ``SpanReader.read``)."""

    arrays: Mapping[str, np.ndarray]
    """Column name -> ``[rows]`` array of the column's native dtype (Deephaven's null sentinels kept)."""
    masks: Mapping[str, np.ndarray | None]
    """Column name -> boolean mask of the null rows, or None when the column has no null in these rows."""
    rows: int
    first_position: int | None = None
    """The table position of the first row when the rows are positions ``[first, first + rows)`` (append-only)."""
    lengths: Mapping[str, np.ndarray] = field(default_factory=dict)
    """Padded array column -> each row's kept length, -1 for a null array (NOTE [ Ragged arrays ])."""


class PageSink(Protocol):
    """Where a :class:`RowFeed` delivers pages: a bounded queue, drained by the consumer (``live/``).

    One feed delivers into one sink, from one thread at a time (its reader thread or the update cycle).
    """

    def free(self) -> int:
        """Pages that fit now (never blocks: the update cycle asks it)."""
        ...

    def wait_for_space(self, timeout: float) -> bool:
        """Waits at most ``timeout`` seconds for room for one page; True when one fits."""
        ...

    def put(self, page: RowPage) -> None:
        """Queues ``page``; the feed made sure it fits."""
        ...

    def overflow(self, rows: int) -> None:
        """Reports ``rows`` blink rows that did not fit (the sink counts them, or fails by its policy)."""
        ...

    def fail(self, error: BaseException) -> None:
        """Ends the stream with ``error``, after the pages queued before it."""
        ...

    def closed(self) -> bool:
        """True once the stream has ended (an error is queued): the feed delivers nothing more."""
        ...


class RowFeed(Protocol):
    """The rows a followed source adds, delivered into a :class:`PageSink` from :meth:`start` to :meth:`stop`."""

    def start(self) -> None:
        """Starts delivering (listening; a reader thread where the source needs one). Call once.

        Raises:
            FollowError: the table failed, or could not be listened to.
        """
        ...

    def stop(self, wait: bool = True) -> None:
        """Stops delivering; safe from any thread (the garbage collector's included), safe to call twice.

        Never blocks on the engine: with ``wait`` it waits a bounded time for its reader to end;
        without, it returns at once. Whatever the feed holds is freed on the thread that used it.
        """
        ...


class FollowableSource(Protocol):
    """A live table whose added rows can be followed (NOTE [ Following a source ])."""

    column_types: Mapping[str, str]
    """Column name -> Deephaven type name, in table order (as :attr:`TableSource.column_types`)."""
    kind: str
    """``"append-only"``, ``"add-only"`` or ``"blink"``."""

    def open_follow(
        self, columns: Sequence[str], *, start: str, page_rows: int, max_rows: int | None, sink: PageSink
    ) -> RowFeed:
        """A feed of the rows added to ``columns`` (scalars, or padded arrays), not started yet; any thread.

        ``start="now"`` counts from this call (a blink table: from ``RowFeed.start``);
        ``"beginning"`` also delivers the rows the table has now. Pages hold at most ``page_rows``
        rows, and no more than ``max_rows`` rows are read in all (None: no limit). Optional, for
        sources that follow array columns: ``padding=`` maps array columns among ``columns`` to a
        ``ragged.Padding``; they arrive ``[rows, N]`` with ``RowPage.lengths`` (NOTE [ Ragged arrays ]);
        callers pass it only when some column is padded.

        Raises:
            ArgumentError: ``start="beginning"`` on a blink table.
            ArgumentTypeError: a column is an array column not in ``padding``.
        """
        ...
