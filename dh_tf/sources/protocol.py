"""Where rows come from: the narrow interface every source of rows implements, and the dispatch to one.

NOTE [ Sources ]
A *source* knows its column types and whether it is refreshing, and opens one *epoch view* per
epoch: a consistent set of rows (a snapshot where the table ticks, see NOTE [ Refreshing tables ]).
An epoch view opens *span readers*, one per reading thread, that read spans of row positions of
some columns into native-typed numpy arrays and return a null mask per column. Everything above
(``pages.PageReader``: null policy, casts, permutation; the plan; prefetch; batching) works on what
any source returns and never sees a table. The sources: the embedded engine
(``engine_source.py``: fast engine path, public fallback, ExecutionContext handling), a remote
server over Arrow Flight (``remote_source.py``), and, for pages already read once, the epoch cache
(``cache.py``, which serves whole pages). The shape follows
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

    def close(self) -> None:
        """Releases what the reader holds. Safe to call twice."""
        ...


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

    def num_rows(self) -> int:
        """Rows in the table now (a refreshing table can change between calls)."""
        ...

    # Optional: ``default_page_rows: int``, the page size a loader uses when its caller gives none
    # (a remote source pays round trips per page, so it wants bigger pages than the engine).

    def open_epoch(self, columns: Sequence[str]) -> contextlib.AbstractContextManager[EpochView]:
        """A consistent view of ``columns`` for one epoch (a snapshot if refreshing), released on exit."""
        ...
