"""Publishing into the engine: ticking append-only tables fed through ``table_publisher``.

:func:`new_blink` is the one ``table_publisher`` + ``blink_to_append_only`` pair: the live sink of
``sinks.py`` adds whole tables to it from its scoring thread, and :class:`RowPublisher` (used by
``MetricsTable``) adds chunks of Python rows. Column names are checked here too
(:func:`column_name_problem`), since every table this package creates needs valid names.

NOTE [ Publishing rows in chunks ]
A :class:`RowPublisher` buffers rows in Python (a deque append, cheap on any thread, e.g. Keras's
training thread) and publishes them from the update graph's own flush callback, on its thread, as
one static chunk built with ``new_table`` (``table_publisher`` into a blink table, kept by
``blink_to_append_only``): at most one chunk per update-graph cycle and per ``interval_s``, never
one cycle per row. :meth:`RowPublisher.publish_soon` asks for a cycle now (``requestRefresh``) and
lifts the interval for it; :meth:`RowPublisher.flush` also waits, bounded, until the table holds
every row, except under the update graph's lock (a console command), where waiting could not end.
An exception in the callback must not reach the update graph: it is kept and reported by ``flush``.
"""

from __future__ import annotations

import collections
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from dh_tf.sources.jvm_threads import entered

ROW_TYPES = ("Instant", "int", "long", "double", "Boolean")
"""Column types a :class:`RowPublisher` builds from Python values (Instant: int nanoseconds)."""


_RESERVED_NAMES = frozenset(
    "abstract assert boolean break byte case catch char class const continue default do double else enum extends "
    "final finally float for goto if implements import instanceof int interface long native new package private "
    "protected public return short static strictfp super switch synchronized this throw throws transient try void "
    "volatile while _ true false null in not i ii k".split()
)
"""Names the engine's ``NameValidator`` refuses as columns: Java keywords and literals, DQL's own names."""


def column_name_error(name: str) -> str | None:
    """The engine's reason why ``name`` cannot be a column name (the first line of it), or None.

    In a process without a running JVM (a remote trainer) the engine's rules are applied in Python,
    with the engine's messages: a Java identifier (``$`` allowed) that is not a keyword or reserved.
    """
    try:
        import jpy

        has_jvm = jpy.has_jvm()
    except Exception:  # jpy missing, or its import fails without a JVM library
        has_jvm = False
    if not has_jvm:
        if not name:
            return "Invalid column name: name can not be null or empty"
        if not name.replace("$", "_").isidentifier():
            return f'Invalid column name "{name}"'
        if name in _RESERVED_NAMES:
            return f'Invalid column name "{name}": "{name}" is a reserved keyword'
        return None
    try:
        jpy.get_type("io.deephaven.api.util.NameValidator").validateColumnName(name)
    except Exception as e:  # jpy raises a RuntimeError carrying the Java exception's message
        return str(e).splitlines()[0]
    return None


def column_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a Deephaven column name, as a clause, or None if it can (needs the JVM)."""
    error = column_name_error(name)
    return None if error is None else f"it is not a valid Deephaven column name ({error})"


def new_blink(
    name: str, definition: Mapping[str, Any], exec_ctx: Any, on_flush: Callable[[Any], None] | None = None
) -> tuple[Any, Any, Any]:
    """A ``table_publisher`` blink table and the append-only table that keeps its rows.

    Args:
        name: the publisher's name, shown in engine logs.
        definition: column name -> ``deephaven.dtypes`` type, in order.
        exec_ctx: the execution context the tables are made in.
        on_flush: called by the update graph at the start of each cycle, on its thread, with the
            publisher (it must not raise).

    Returns:
        ``(blink, publisher, append_only)``.
    """
    from deephaven.stream import blink_to_append_only
    from deephaven.stream.table_publisher import table_publisher

    with entered(exec_ctx):
        blink, publisher = table_publisher(name, dict(definition), on_flush_callback=on_flush)
        return blink, publisher, blink_to_append_only(blink)


class RowPublisher:
    """Rows (dicts of column -> value) into a ticking append-only table, in chunks (NOTE [ Publishing rows in chunks ]).

    ``add`` is cheap and safe from any thread (a deque append); chunks are built and published on
    the update graph's thread, at most one per cycle and per ``interval_s``, or at the next cycle
    after :meth:`publish_soon`. A value a row lacks (or None) is null.

    Args:
        name: the publisher's name, shown in engine logs.
        columns: column name -> one of :data:`ROW_TYPES`, in order.
        exec_ctx: the execution context (``deephaven.execution_context.get_exec_ctx()``).
        interval_s: the shortest time between two chunks unless :meth:`publish_soon` is called.
        where: the prefix of warnings.
    """

    def __init__(self, name: str, columns: Mapping[str, str], exec_ctx: Any, *, interval_s: float, where: str) -> None:
        from deephaven import dtypes

        types = {"Instant": dtypes.Instant, "int": dtypes.int32, "long": dtypes.int64, "double": dtypes.double,
                 "Boolean": dtypes.bool_}
        self.columns = dict(columns)
        self.interval_s = interval_s
        self._where = where
        self._exec_ctx = exec_ctx
        self._update_graph = exec_ctx.update_graph.j_update_graph
        self._queue: collections.deque[Mapping[str, Any]] = collections.deque()
        self._num_added = 0
        self._force = False
        self._last_publish = 0.0
        self.failure: BaseException | None = None
        definition = {column: types[kind] for column, kind in self.columns.items()}
        _, _, self.table = new_blink(name, definition, exec_ctx, on_flush=self._on_flush)

    def add(self, row: Mapping[str, Any]) -> None:
        """Queues one row; it is published within ``interval_s`` (plus one update cycle)."""
        self._queue.append(row)  # deque.append: safe against the update graph's popleft
        self._num_added += 1

    def publish_soon(self) -> None:
        """Publishes the queued rows at the next update cycle, whatever the interval."""
        self._force = True
        self._update_graph.requestRefresh()

    def flush(self, timeout_s: float) -> bool:
        """Publishes the queued rows now and waits (at most ``timeout_s``) until the table holds them.

        Safe from any thread except the update graph's own (it would wait for itself). Holding the
        update graph's lock (a console command) returns False at once: the rows tick when it is
        released (NOTE [ Console lock ] in ``metrics_table.py``).

        Returns:
            True if the table holds every added row; False on timeout, under the lock, or after a
            publishing error (also reported as a ``RuntimeWarning``).
        """
        self.publish_soon()
        graph = self._update_graph
        if graph.exclusiveLock().isHeldByCurrentThread() or graph.sharedLock().isHeldByCurrentThread():
            return False
        deadline = time.monotonic() + timeout_s
        while self.table.size < self._num_added and self.failure is None and time.monotonic() < deadline:
            time.sleep(0.005)
        if self.failure is not None:
            warnings.warn(f"{self._where}: publishing rows failed: {self.failure!r}", RuntimeWarning, stacklevel=3)
        return self.table.size >= self._num_added

    def _on_flush(self, publisher: Any) -> None:
        """Called by the update graph at the start of each cycle, on its thread."""
        if not self._queue:
            return
        now = time.monotonic()
        if not self._force and now - self._last_publish < self.interval_s:
            return
        self._force = False
        self._last_publish = now
        rows = []
        while self._queue:
            rows.append(self._queue.popleft())
        try:
            with entered(self._exec_ctx):
                publisher.add(self._chunk(rows))
        except Exception as e:  # an exception must not escape into the update graph
            self.failure = e

    def _chunk(self, rows: list[Mapping[str, Any]]) -> Any:
        """A static table of ``rows`` with the publisher's columns (None or missing: null)."""
        from deephaven import new_table
        from deephaven.column import bool_col, datetime_col, double_col, int_col, long_col
        from deephaven.constants import NULL_DOUBLE, NULL_INT, NULL_LONG

        n = len(rows)
        makers = {
            "Instant": (datetime_col, np.int64, NULL_LONG),
            "int": (int_col, np.int32, NULL_INT),
            "long": (long_col, np.int64, NULL_LONG),
            "double": (double_col, np.float64, NULL_DOUBLE),
        }
        columns = []
        for name, kind in self.columns.items():
            values = [row.get(name) for row in rows]
            if kind == "Boolean":
                columns.append(bool_col(name, values))
                continue
            maker, dtype, null = makers[kind]
            columns.append(maker(name, np.fromiter((null if v is None else v for v in values), dtype, n)))
        return new_table(columns)
